//! Sensitivity: how far the model's outputs move when one weight alone is decomposed
//! at a given setting, measured in tract on the calibration samples.
//!
//! For every probed weight and every setting (bits 1..=8, per tensor and per channel)
//! the weight is decomposed and its decoding fed to the [`Probe`] in place of the
//! original; the output error is `mean over outputs of sum ||y - y0||^2 / sum ||y0||^2`
//! over the samples (a relative squared error: errors of different weights add up
//! nearly linearly). Samples are streamed: each weight's pass reruns the original
//! model per sample rather than keeping its outputs, so memory does not grow with the
//! number of samples.

use std::sync::Arc;

use indicatif::ProgressBar;
use rayon::prelude::*;
use tract_onnx::prelude::Tensor;

use super::probe::Probe;
use crate::config::{Config, Form, QDQ_BITS};
use crate::error::Result;
use crate::fit::{Compensation, Fit, Fits, fit_values, matrix};
use crate::graph::Graph;
use crate::inputs::Samples;
use crate::onnx::tensor::float_values;
use crate::particles::Granularity;
use crate::plan::{Setting, WeightPlan};
use crate::runtime::values_f64;
use crate::stats::{Stats, weight_hessian};

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

/// Rounds of compensation in a sensitivity trial (the rewrite runs up to
/// [`ROUNDS`](crate::particles::compensate::ROUNDS)). On minilm_l3's `--preset small`,
/// one round instead of four cut the whole run from 200 s to 109 s, and the embedding
/// cosine moved from 0.9881 to 0.9877.
const SENSITIVITY_ROUNDS: usize = 1;

/// A setting, the bytes it stores, what the probe is fed for it, and its fit if kept.
type Trial = (Setting, usize, Vec<Arc<Tensor>>, Option<Arc<Fit>>);

/// Most bytes of particle indices the fits kept for the rewrite may hold (a byte per
/// weight per setting); past it, nothing is kept and the rewrite fits again.
pub const MAX_KEPT_FIT_BYTES: usize = 1 << 28;

/// The settings measured for a weight: `min_bits..=8` bits (from 1) per tensor, and per
/// channel when the weight has more than one channel; under `--form qdq`, 4 and 8 bits
/// (those of at least `min_bits`) on each block
/// [`qdq_blocks`](crate::config::GranularityChoice::qdq_blocks) gives.
pub fn candidate_settings(w: &WeightPlan, config: &Config, min_bits: u32) -> Vec<Setting> {
    if config.form == Form::Qdq {
        // min_bits is at most 8, so 8 bits are always measured.
        let bits: Vec<u32> = QDQ_BITS
            .into_iter()
            .filter(|&b| b >= min_bits.min(8))
            .collect();
        return (config.granularity.qdq_blocks().into_iter())
            .flat_map(|granularity| bits.iter().map(move |&bits| Setting { bits, granularity }))
            .collect();
    }
    let low = min_bits.clamp(1, 8);
    let p = w.first();
    let channels = p.shape[p.channel_axis];
    let granularities: &[Granularity] = if channels > 1 {
        &[Granularity::Tensor, Granularity::Channel]
    } else {
        &[Granularity::Tensor]
    };
    granularities
        .iter()
        .flat_map(|&granularity| (low..=8).map(move |bits| Setting { bits, granularity }))
        .collect()
}

/// Measures every candidate setting of every probed weight, fitted as the rewrite
/// will fit it (see [`fit_values`]; with compensation when `stats` hold `H`), on the
/// first `samples` calibration samples; `progress` ticks once per weight and sample.
/// Keeps the fits the rewrite can reuse: uncompensated ones (a compensated trial
/// runs fewer rounds than the rewrite), within [`MAX_KEPT_FIT_BYTES`].
pub fn measure(
    graph: &Graph,
    weights: &[WeightPlan],
    config: &Config,
    probe: &Probe,
    (calibration, samples, min_bits): (&Samples, usize, u32),
    stats: Option<&Stats>,
    progress: &ProgressBar,
) -> Result<(Vec<Curve>, Fits)> {
    let mut curves = Vec::new();
    let mut kept = Fits::default();
    let trials: usize = (probe.weights.iter())
        .map(|p| {
            let w = &weights[p.plan_index];
            w.elements() * candidate_settings(w, config, min_bits).len()
        })
        .sum();
    let keep = !config.compensate && trials <= MAX_KEPT_FIT_BYTES;
    for (i, probed) in probe.weights.iter().enumerate() {
        let w = &weights[probed.plan_index];
        let patch = w.first();
        let values = float_values(patch.weight.tensor, None)?;
        let names = graph.names();
        let settings = candidate_settings(w, config, min_bits);
        let hessian = stats
            .filter(|_| config.compensate)
            .and_then(|s| weight_hessian(w, s));
        let compensation = hessian.as_ref().map(|hessian| Compensation {
            hessian,
            rounds: SENSITIVITY_ROUNDS,
        });
        let fits: Vec<Option<Result<Trial>>> = settings
            .par_iter()
            .map(|&setting| {
                let w = &WeightPlan {
                    setting,
                    ..w.clone()
                };
                let fit = fit_values(w, &values, config, None, compensation).ok()?;
                let bytes = fit.emit(w, graph, &mut names.clone(), None).stored_bytes();
                let decoded = fit.decoded(&matrix(w, &values), patch.float_type);
                let fit = keep.then(|| Arc::new(fit));
                Some(probed.swapped(&decoded).map(|t| (setting, bytes, t, fit)))
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
                .map(|(_, _, decoded, _)| {
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
        let mut points = Vec::with_capacity(fits.len());
        for ((setting, bytes, _, fit), d) in fits.into_iter().zip(diff) {
            if let Some(fit) = fit {
                kept.insert(w.name(), setting, fit);
            }
            points.push(Point {
                setting,
                bytes,
                error: relative_error(&d, &norm),
            });
        }
        curves.push(Curve {
            weight: patch.weight.name.to_string(),
            plan_index: probed.plan_index,
            elements: w.elements(),
            points,
        });
    }
    Ok((curves, kept))
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
