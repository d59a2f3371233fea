//! Sensitivity: how far the model's outputs move when one weight alone is decomposed
//! at a given setting, measured in tract on the calibration samples.
//!
//! For every probed weight and every setting (bits 1..=8, per tensor and per channel)
//! the weight is decomposed and its decoding fed to the [`Probe`] in place of the
//! original; the output error is `mean over outputs of sum ||y - y0||^2 / sum ||y0||^2`
//! over the samples (a relative squared error: errors of different weights add up
//! nearly linearly). Samples are streamed: each weight's pass reruns the original
//! model per sample rather than keeping its outputs, so memory does not grow with the
//! number of samples. A first pass gathers the activation statistics.

use std::collections::HashMap;
use std::sync::Arc;

use indicatif::ProgressBar;
use rayon::prelude::*;
use tract_onnx::prelude::{TValue, Tensor};

use crate::calibration::Calibration;
use crate::config::{Config, Setting};
use crate::error::{Error, Result};
use crate::fit::{fit_values, matrix};
use crate::graph::Graph;
use crate::onnx::proto::NodeProto;
use crate::onnx::tensor::float_values;
use crate::particles::Granularity;
use crate::particles::compensate::Hessian;
use crate::plan::WeightPlan;
use crate::probe::{ActivationKey, Probe, activation_of};
use crate::prove::values_f64;
use crate::stats::ActivationStats;

/// One measured setting of one weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    /// Bits and granularity.
    pub setting: Setting,
    /// Bytes the weight's decode subgraph stores at this setting.
    pub bytes: usize,
    /// Output error with only this weight decomposed (see the module doc).
    pub error: f64,
}

/// The measured settings of one weight.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Curve {
    /// The weight's name.
    pub weight: String,
    /// Its position in the plan.
    #[serde(skip)]
    pub plan_index: usize,
    /// Number of weights in it.
    pub elements: usize,
    /// Every setting measured.
    pub points: Vec<Point>,
}

/// Statistics of every activation a rewritten MatMul/Gemm multiplies by its weight.
pub type Stats = HashMap<ActivationKey, ActivationStats>;

/// Rounds of compensation in a sensitivity trial (the rewrite runs up to
/// [`ROUNDS`](crate::particles::compensate::ROUNDS)). On minilm_l3's `--preset small`,
/// one round instead of four cut the whole run from 200 s to 109 s, and the embedding
/// cosine moved from 0.9881 to 0.9877.
const SENSITIVITY_ROUNDS: usize = 1;

/// A setting, the bytes it stores and what the probe is fed for it.
type Trial = (Setting, usize, Vec<Arc<Tensor>>);

/// The settings measured for a weight: 1..=8 bits per tensor, and per channel when
/// the weight has more than one channel.
pub fn candidate_settings(w: &WeightPlan) -> Vec<Setting> {
    let p = w.first();
    let channels = p.shape[p.channel_axis];
    let granularities: &[Granularity] = if channels > 1 {
        &[Granularity::Tensor, Granularity::Channel]
    } else {
        &[Granularity::Tensor]
    };
    granularities
        .iter()
        .flat_map(|&granularity| (1..=8).map(move |bits| Setting { bits, granularity }))
        .collect()
}

/// Ops whose output saturates, so that most of a weight's effect on their input is gone
/// from their output.
const SATURATING: [&str; 2] = ["Softmax", "Sigmoid"];

/// Ops that only move values around, looked through on the way back from an output.
const LAYOUT_ONLY: [&str; 6] = [
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
];

/// The values sensitivity compares when none are named: every model output, except
/// that an output made by a Softmax or Sigmoid, or by a softmax written out as
/// `Div(Exp(z), ...)` (through layout-only ops), is replaced by the logits before it.
/// A saturated probability hides the errors the allocator has to weigh.
pub fn default_compared(graph: &Graph) -> Vec<String> {
    graph.scopes[0]
        .graph
        .output
        .iter()
        .map(|output| {
            let mut name = output.name();
            while let Some(node) = graph.producer(0, name) {
                if let Some(logits) = logits_before(graph, node) {
                    return logits.to_string();
                }
                if !LAYOUT_ONLY.contains(&node.op_type()) || node.input.is_empty() {
                    break;
                }
                name = &node.input[0];
            }
            output.name().to_string()
        })
        .collect()
}

/// The logits `node` squashes, if it is a Softmax or Sigmoid, or the `Div(Exp(z), _)`
/// of a written-out softmax: then `z`, or `l` where `z = Sub(l, _)` (the max
/// subtracted for stability, which the softmax does not see).
fn logits_before<'m>(graph: &Graph<'m>, node: &'m NodeProto) -> Option<&'m str> {
    let first = |n: &'m NodeProto| n.input.first().map(String::as_str);
    if SATURATING.contains(&node.op_type()) {
        return first(node);
    }
    if node.op_type() != "Div" {
        return None;
    }
    let exp = graph
        .producer(0, first(node)?)
        .filter(|n| n.op_type() == "Exp")?;
    let z = first(exp)?;
    match graph.producer(0, z) {
        Some(sub) if sub.op_type() == "Sub" => first(sub),
        _ => Some(z),
    }
}

/// The most memory `X^T X` of every activation may take together (`f64`s), checked
/// before any is allocated.
pub const MAX_GRAM_BYTES: u64 = 8 << 30;

/// Runs the original model on every sample and gathers the statistics of every
/// exposed activation (with `H = X^T X` when `gram`). With `gram`, refuses before
/// allocating if the `H`s would pass [`MAX_GRAM_BYTES`] together.
pub fn gather_stats(probe: &Probe, calibration: &Calibration, gram: bool) -> Result<Stats> {
    let activations: Vec<(&ActivationKey, usize)> =
        probe.activations.iter().map(|(k, &p)| (k, p)).collect();
    let mut gathered: Option<Vec<Option<ActivationStats>>> = None;
    for sample in &calibration.samples {
        let out = probe.run(sample, None)?;
        let stats = match &mut gathered {
            Some(stats) => stats,
            None => gathered.insert(empty_stats(&activations, &out, gram)?),
        };
        stats.par_iter_mut().zip(&activations).try_for_each(
            |(stats, &(key, position))| -> Result<()> {
                if let Some(stats) = stats {
                    stats.add(&values_f64(&out[position])?, key.transposed);
                }
                Ok(())
            },
        )?;
    }
    Ok(activations
        .into_iter()
        .zip(gathered.unwrap_or_default())
        .filter_map(|((key, _), stats)| Some((key.clone(), stats?)))
        .collect())
}

/// Empty statistics for every activation whose features the first run's `out` shows,
/// after checking that their `H`s (with `gram`) fit in [`MAX_GRAM_BYTES`].
fn empty_stats(
    activations: &[(&ActivationKey, usize)],
    out: &[TValue],
    gram: bool,
) -> Result<Vec<Option<ActivationStats>>> {
    let features: Vec<Option<usize>> = activations
        .iter()
        .map(
            |&(key, position)| match (key.transposed, out[position].shape()) {
                (true, [rows, _]) => Some(*rows),
                (false, [.., last]) => Some(*last),
                _ => None,
            },
        )
        .collect();
    let bytes: u128 = features
        .iter()
        .flatten()
        .map(|&n| (n as u128).pow(2) * 8)
        .sum();
    let largest = activations
        .iter()
        .zip(&features)
        .filter_map(|(&(key, _), n)| Some((key, (*n)?)))
        .max_by_key(|&(_, n)| n);
    if let (true, Some((key, n))) = (gram && bytes > MAX_GRAM_BYTES as u128, largest) {
        return Err(Error::Config(format!(
            "--compensate: X^T X of {} activations would take {:.1} GiB (limit {} GiB; \
             the largest, '{}', has {n} features); compensate fewer weights (--exclude)",
            features.iter().flatten().count(),
            bytes as f64 / (1u64 << 30) as f64,
            MAX_GRAM_BYTES >> 30,
            key.name,
        )));
    }
    Ok(features
        .into_iter()
        .map(|n| n.map(|n| ActivationStats::new(n, gram)))
        .collect())
}

/// Damping of `H` for error-compensating rounding: this fraction of its mean diagonal
/// is added to the diagonal (GPTQ's usual 1%).
const DAMPING: f64 = 0.01;

/// `H` for a weight, factored: the sum of `X^T X` over the activations its readers
/// multiply it by, when every reader has one gathered.
pub fn weight_hessian(graph: &Graph, w: &WeightPlan, stats: &Stats) -> Option<Hessian> {
    let mut total: Option<Vec<f64>> = None;
    for i in 0..w.patches.len() {
        let h = stats.get(&activation_of(graph, w, i)?)?.hessian()?;
        match &mut total {
            Some(t) if t.len() == h.len() => t.iter_mut().zip(&h).for_each(|(a, b)| *a += b),
            Some(_) => return None,
            None => total = Some(h),
        }
    }
    Some(Hessian::new(total?, DAMPING))
}

/// Measures every candidate setting of every probed weight, fitted as the rewrite
/// will fit it (see [`fit_values`]; with compensation when `stats` hold `H`), on the
/// first `samples` calibration samples; `progress` ticks once per weight and sample.
pub fn measure(
    graph: &Graph,
    weights: &[WeightPlan],
    config: &Config,
    probe: &Probe,
    (calibration, samples): (&Calibration, usize),
    stats: Option<&Stats>,
    progress: &ProgressBar,
) -> Result<Vec<Curve>> {
    let mut curves = Vec::new();
    for (i, probed) in probe.weights.iter().enumerate() {
        let w = &weights[probed.plan_index];
        let patch = w.first();
        let values = float_values(patch.weight.tensor, None)?;
        let names = graph.names();
        let settings = candidate_settings(w);
        let hessian = stats
            .filter(|_| config.compensate)
            .and_then(|s| weight_hessian(graph, w, s));
        let fits: Vec<Option<Result<Trial>>> = settings
            .par_iter()
            .map(|&setting| {
                let mut config = config.clone();
                config.compensate_rounds = SENSITIVITY_ROUNDS;
                config
                    .settings
                    .insert(patch.weight.name.to_string(), setting);
                let fit = fit_values(w, &values, &config, None, hessian.as_ref()).ok()?;
                let bytes = fit.emit(w, graph, &mut names.clone(), None).stored_bytes();
                let decoded = fit.decoded(&matrix(w, &values), patch.float_type);
                Some(probed.swapped(&decoded).map(|t| (setting, bytes, t)))
            })
            .collect();
        let fits: Vec<_> = fits.into_iter().flatten().collect::<Result<_>>()?;
        let compared = probe.compared.len();
        let mut diff = vec![vec![0.0; compared]; fits.len()];
        let mut norm = vec![0.0; compared];
        for sample in &calibration.samples[..samples.min(calibration.samples.len())] {
            let out = probe.run(sample, None)?;
            let reference: Vec<Vec<f64>> = probe
                .compared
                .iter()
                .map(|&p| values_f64(&out[p]))
                .collect::<Result<_>>()?;
            for (n, r) in norm.iter_mut().zip(&reference) {
                *n += r.iter().map(|v| v * v).sum::<f64>();
            }
            let errors: Vec<Vec<f64>> = fits
                .par_iter()
                .map(|(_, _, decoded)| {
                    let out = probe.run(sample, Some((i, decoded)))?;
                    probe
                        .compared
                        .iter()
                        .zip(&reference)
                        .map(|(&p, r)| {
                            Ok(values_f64(&out[p])?
                                .iter()
                                .zip(r)
                                .map(|(a, b)| (a - b) * (a - b))
                                .sum())
                        })
                        .collect()
                })
                .collect::<Result<_>>()?;
            for (d, e) in diff.iter_mut().zip(errors) {
                d.iter_mut().zip(e).for_each(|(a, b)| *a += b);
            }
            progress.inc(1);
        }
        let points = fits
            .into_iter()
            .zip(diff)
            .map(|((setting, bytes, _), d)| Point {
                setting,
                bytes,
                error: relative_error(&d, &norm),
            })
            .collect();
        curves.push(Curve {
            weight: patch.weight.name.to_string(),
            plan_index: probed.plan_index,
            elements: w.elements(),
            points,
        });
    }
    Ok(curves)
}

/// Mean over outputs of the squared error relative to the output's squared norm.
fn relative_error(diff: &[f64], norm: &[f64]) -> f64 {
    let terms: Vec<f64> = diff
        .iter()
        .zip(norm)
        .map(|(&d, &n)| {
            if d == 0.0 {
                0.0
            } else {
                d / n.max(f64::MIN_POSITIVE)
            }
        })
        .collect();
    terms.iter().sum::<f64>() / terms.len().max(1) as f64
}
