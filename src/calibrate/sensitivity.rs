//! Sensitivity: how far the model's outputs move when one weight alone is decomposed
//! at a given setting, measured in tract on the calibration samples.
//!
//! For every probed weight and every setting (bits 1..=8, per tensor and per channel)
//! the weight is decomposed and its decoding fed to the [`Probe`] in place of the
//! original; the output error is `mean over outputs of sum ||y - y0||^2 / sum ||y0||^2`
//! over the samples (a relative squared error: errors of different weights add up
//! nearly linearly). The original model's outputs on each sample are kept while they
//! fit in [`MAX_REFERENCE_BYTES`], else run again for each weight, so memory does not
//! grow past that with the number of samples. With the per-layer [`proxy`](super::proxy), a weight
//! whose `H` was gathered is run at one setting only.

use std::sync::Arc;

use indicatif::ProgressBar;
use rayon::prelude::*;
use tract_onnx::prelude::Tensor;

use super::probe::Probe;
use super::proxy::{anchor, output_error, scaled};
use crate::config::{Config, Form, QDQ_BITS};
use crate::error::{Error, Result};
use crate::fit::{Compensation, Fit, Fits, fit_values, matrix};
use crate::graph::Graph;
use crate::inputs::Samples;
use crate::onnx::tensor::float_values;
use crate::particles::Granularity;
use crate::plan::{Setting, WeightPlan};
use crate::runtime::values_f64;
use crate::stats::{Stats, weight_gram, weight_hessian};

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
    /// The one setting measured end to end when the others' errors were scaled from
    /// the per-layer proxy; `None` when every setting was measured.
    pub anchor: Option<Setting>,
}

/// Rounds of compensation in a sensitivity trial (the rewrite runs up to
/// [`ROUNDS`](crate::particles::compensate::ROUNDS)). On minilm_l3's `--preset small`,
/// one round instead of four cut the whole run from 200 s to 109 s, and the embedding
/// cosine moved from 0.9881 to 0.9877.
const SENSITIVITY_ROUNDS: usize = 1;

/// A setting, the bytes it stores, its fit if kept for the rewrite, its proxy error
/// when the weight's `H` was gathered, and else what the probe is fed for it.
type Trial = (
    Setting,
    usize,
    Option<Arc<Fit>>,
    Option<f64>,
    Option<Result<Vec<Arc<Tensor>>>>,
);

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

/// What [`measure`] runs on and how.
#[derive(Clone, Copy, Debug)]
pub struct Measurement<'a> {
    /// The calibration samples.
    pub calibration: &'a Samples,
    /// How many of them (the first ones) each weight is measured on.
    pub samples: usize,
    /// The fewest bits a setting measured may have.
    pub min_bits: u32,
    /// Whether a weight whose `H` was gathered is measured end to end at its anchor
    /// setting only, the rest scaled from the per-layer proxy (see [`super::proxy`]).
    pub proxy: bool,
}

/// Bits of the setting the proxy is anchored on (or the fewest a weight may take).
const ANCHOR_BITS: u32 = 4;

/// Most bytes the original model's compared outputs may take, kept for every sample
/// measured instead of run again for every weight.
const MAX_REFERENCE_BYTES: usize = 1 << 28;

/// Measures every candidate setting of every probed weight, fitted as the rewrite
/// will fit it (see [`fit_values`]; with compensation when `stats` hold `H`), on the
/// first `samples` calibration samples; `progress` ticks once per weight and sample.
/// With `proxy`, a weight whose `H` the `stats` hold is fitted without compensation at
/// every setting, run at its anchor setting only (fitted as the rewrite fits it), and
/// the other settings' errors follow from the proxy. Keeps the fits the rewrite
/// can reuse: uncompensated ones (a compensated trial runs fewer rounds than the
/// rewrite), within [`MAX_KEPT_FIT_BYTES`]. Returns the curves, the fits kept and the
/// model runs made.
pub fn measure(
    graph: &Graph,
    weights: &[WeightPlan],
    config: &Config,
    probe: &Probe,
    how: Measurement,
    stats: Option<&Stats>,
    progress: &ProgressBar,
) -> Result<(Vec<Curve>, Fits, usize)> {
    let min_bits = how.min_bits;
    let mut curves = Vec::new();
    let mut kept = Fits::default();
    let trials: usize = (probe.weights.iter())
        .map(|p| {
            let w = &weights[p.plan_index];
            w.elements() * candidate_settings(w, config, min_bits).len()
        })
        .sum();
    let keep = !config.compensate && trials <= MAX_KEPT_FIT_BYTES;
    let samples = &how.calibration.samples[..how.samples.min(how.calibration.samples.len())];
    let (references, mut runs) = References::new(probe, samples)?;
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
        let gram = stats.filter(|_| how.proxy).and_then(|s| weight_gram(w, s));
        let matrix = matrix(w, &values);
        let at = |setting| WeightPlan {
            setting,
            ..w.clone()
        };
        // Under the proxy the settings are fitted without compensation, which is
        // most of a trial's cost; the anchor's measurement, fitted as the rewrite
        // fits it, carries compensation's gain into every setting's estimate.
        let trial_compensation = compensation.filter(|_| gram.is_none());
        let proxied = gram.is_some();
        // Each setting's fit is dropped once measured (8-bit grids of a large table
        // take gigabytes): under the proxy the anchor is fitted again, else the probe's
        // input is made here.
        let mut fits: Vec<Trial> = settings
            .par_iter()
            .filter_map(|&setting| {
                let w = &at(setting);
                let fit = fit_values(w, &values, config, None, trial_compensation).ok()?;
                let bytes = fit.emit(w, graph, &mut names.clone(), None).stored_bytes();
                let decoded = fit.decoded(&matrix, patch.float_type);
                let proxy = (gram.as_ref())
                    .map(|h| output_error(&values, &decoded, patch.shape, patch.channel_axis, h));
                let fed = (!proxied).then(|| probed.swapped(&decoded));
                Some((setting, bytes, keep.then(|| Arc::new(fit)), proxy, fed))
            })
            .collect();
        let proxies: Option<Vec<f64>> = fits.iter().map(|t| t.3).collect();
        let bits: Vec<u32> = fits.iter().map(|t| t.0.bits).collect();
        let anchored = (proxies.as_ref())
            .and_then(|p| Some((p, anchor(p, &bits, ANCHOR_BITS.max(min_bits))?)));
        let fed: Vec<Vec<Arc<Tensor>>> = match anchored {
            Some((_, a)) => {
                let w = &at(fits[a].0);
                let fit = fit_values(w, &values, config, None, compensation)
                    .or_else(|_| fit_values(w, &values, config, None, None))
                    .map_err(|reason| Error::invalid(format!("'{}': {reason}", w.name())))?;
                vec![probed.swapped(&fit.decoded(&matrix, patch.float_type))?]
            }
            None => (fits.iter_mut())
                .filter_map(|t| t.4.take())
                .collect::<Result<_>>()?,
        };
        let compared = probe.compared.len();
        // Samples in parallel (one trial per weight under the proxy), trials within.
        let per_sample: Vec<(Vec<f64>, Vec<Vec<f64>>)> = (samples.par_iter().enumerate())
            .map(|(s, sample)| {
                let reference = match references.get(s) {
                    Some(kept) => kept.clone(),
                    None => Arc::new(original_outputs(probe, sample)?),
                };
                let norm = reference
                    .iter()
                    .map(|r| r.iter().map(|v| v * v).sum())
                    .collect();
                let diffs = (fed.par_iter())
                    .map(|fed| {
                        let out = probe.run(sample, Some((i, fed)))?;
                        (probe.compared.iter().zip(reference.iter()))
                            .map(|(&p, r)| {
                                let y = values_f64(&out[p])?;
                                Ok(y.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum())
                            })
                            .collect()
                    })
                    .collect::<Result<_>>()?;
                progress.inc(1);
                Ok((norm, diffs))
            })
            .collect::<Result<_>>()?;
        runs += samples.len() * fed.len() + references.missing();
        let mut diff = vec![vec![0.0; compared]; fed.len()];
        let mut norm = vec![0.0; compared];
        for (n, d) in per_sample {
            norm.iter_mut().zip(n).for_each(|(a, b)| *a += b);
            for (total, d) in diff.iter_mut().zip(d) {
                total.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        }
        let measured: Vec<f64> = diff.iter().map(|d| relative_error(d, &norm)).collect();
        let errors = match anchored {
            Some((proxies, at)) => scaled(proxies, at, measured[0]),
            None => measured,
        };
        let anchor = anchored.map(|(_, at)| fits[at].0);
        let mut points = Vec::with_capacity(fits.len());
        for ((setting, bytes, fit, _, _), error) in fits.into_iter().zip(errors) {
            if let Some(fit) = fit {
                kept.insert(w.name(), setting, fit);
            }
            points.push(Point {
                setting,
                bytes,
                error,
            });
        }
        curves.push(Curve {
            weight: patch.weight.name.to_string(),
            plan_index: probed.plan_index,
            elements: w.elements(),
            points,
            anchor,
        });
    }
    Ok((curves, kept, runs))
}

/// The original model's compared values on `sample`.
fn original_outputs(probe: &Probe, sample: &[Tensor]) -> Result<Vec<Vec<f64>>> {
    let out = probe.run(sample, None)?;
    (probe.compared.iter())
        .map(|&p| values_f64(&out[p]))
        .collect()
}

/// The original model's compared values on each sample measured, run once up front
/// when they fit in [`MAX_REFERENCE_BYTES`] together (judged from the first), else
/// run again for every weight.
struct References {
    kept: Vec<Arc<Vec<Vec<f64>>>>,
    samples: usize,
}

impl References {
    fn new(probe: &Probe, samples: &[Vec<Tensor>]) -> Result<(Self, usize)> {
        let Some(first) = samples.first() else {
            return Ok((
                References {
                    kept: Vec::new(),
                    samples: 0,
                },
                0,
            ));
        };
        let first = original_outputs(probe, first)?;
        let bytes: usize = first.iter().map(|o| o.len() * 8).sum();
        if bytes.saturating_mul(samples.len()) > MAX_REFERENCE_BYTES {
            return Ok((
                References {
                    kept: Vec::new(),
                    samples: samples.len(),
                },
                1,
            ));
        }
        let rest: Vec<_> = (samples[1..].par_iter())
            .map(|s| original_outputs(probe, s).map(Arc::new))
            .collect::<Result<_>>()?;
        let kept = std::iter::once(Arc::new(first)).chain(rest).collect();
        Ok((
            References {
                kept,
                samples: samples.len(),
            },
            samples.len(),
        ))
    }

    /// Sample `s`'s values, if kept.
    fn get(&self, s: usize) -> Option<&Arc<Vec<Vec<f64>>>> {
        self.kept.get(s)
    }

    /// How many samples' values are run again for each weight.
    fn missing(&self) -> usize {
        self.samples - self.kept.len()
    }
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
