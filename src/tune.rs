//! Calibrated rewriting: run the original model on calibration samples, measure each
//! weight's sensitivity, and choose bits and granularity per weight for a size target
//! (`--target-bits`) or an error bound (`--max-rel-error E --auto`).

use std::collections::HashMap;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::allocate::{Choice, allocate};
use crate::calibration::Calibration;
use crate::config::{Config, Setting, Share};
use crate::error::{Error, Result};
use crate::fit::fit_values;
use crate::graph::Graph;
use crate::onnx::proto::ModelProto;
use crate::onnx::tensor::float_values;
use crate::plan::plan;
use crate::probe::Probe;
use crate::prove::{ProofConfig, Validation, validate};
use crate::relation::relate;
use crate::rewrite::{Rewritten, rewrite_calibrated};
use crate::sensitivity::{Curve, Stats, default_compared, gather_stats, measure};

/// What calibration found.
#[derive(Clone, Debug)]
pub struct Calibrated {
    /// The samples run.
    pub calibration: Arc<Calibration>,
    /// Activation statistics of every rewritable MatMul/Gemm.
    pub stats: Stats,
    /// Sensitivity curves of the weights the probe could swap (empty unless asked).
    pub curves: Vec<Curve>,
    /// Model runs made.
    pub runs: usize,
    /// The values sensitivity was measured on (see [`default_compared`]).
    pub compared: Vec<String>,
}

impl Calibrated {
    /// The activations whose `H = X^T X` was gathered from fewer rows than they have
    /// features, as (name, rows, features), fewest rows per feature first: each such
    /// `H` is singular, and compensation there rests on its damping, not on the data.
    pub fn singular_hessians(&self) -> Vec<(&str, usize, usize)> {
        let mut short: Vec<_> = self
            .stats
            .iter()
            .filter(|(_, s)| s.gram.is_some() && s.rows < s.features as f64)
            .map(|(key, s)| (key.name.as_str(), s.rows as usize, s.features))
            .collect();
        short.sort_unstable_by_key(|&(name, rows, features)| (rows * 1_000_000 / features, name));
        short
    }
}

/// Runs `model` (external data inlined) on `calibration`: gathers activation statistics
/// (with `H = X^T X` when `config.compensate`) on every sample and, with
/// `sensitivity_samples > 0`, measures every weight's sensitivity on that many of
/// them. Draws a progress bar when `config.progress`.
pub fn calibrate(
    model: &ModelProto,
    config: &Config,
    calibration: Calibration,
    sensitivity_samples: usize,
) -> Result<Calibrated> {
    config.validate()?;
    let graph = Graph::new(model)?;
    let mut plan = plan(&graph, config);
    relate(&mut plan, config, config.share != Share::None)?;
    let compared = if config.sensitivity_outputs.is_empty() {
        default_compared(&graph)
    } else {
        config.sensitivity_outputs.clone()
    };
    let probe = Probe::new(
        model,
        &graph,
        &plan.weights,
        &calibration,
        (true, &compared),
    )?;
    let stats = gather_stats(&probe, &calibration, config.compensate)?;
    let mut runs = calibration.samples.len();
    let samples = sensitivity_samples.min(calibration.samples.len());
    let measured = if samples > 0 {
        let progress = if config.progress {
            ProgressBar::new((probe.weights.len() * samples) as u64)
        } else {
            ProgressBar::hidden()
        };
        progress.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} sensitivity runs, {elapsed}")
                .unwrap_or(ProgressStyle::default_bar()),
        );
        let measured = measure(
            &graph,
            &plan.weights,
            config,
            &probe,
            (&calibration, samples),
            Some(&stats),
            &progress,
        )?;
        progress.finish_and_clear();
        runs += measured
            .iter()
            .map(|c| samples * (c.points.len() + 1))
            .sum::<usize>();
        measured
    } else {
        Vec::new()
    };
    Ok(Calibrated {
        calibration: Arc::new(calibration),
        stats,
        curves: measured,
        runs,
        compared,
    })
}

/// The setting of every measured weight that minimises the summed measured error
/// within `budget` bytes for all of them.
pub fn allocate_bytes(curves: &[Curve], budget: usize) -> Option<HashMap<String, Setting>> {
    let items: Vec<Vec<Choice>> = curves
        .iter()
        .map(|c| {
            c.points
                .iter()
                .map(|p| Choice {
                    bytes: p.bytes,
                    error: p.error,
                })
                .collect()
        })
        .collect();
    let chosen = allocate(&items, budget)?;
    Some(
        curves
            .iter()
            .zip(chosen)
            .map(|(c, k)| (c.weight.clone(), c.points[k].setting))
            .collect(),
    )
}

/// Rewrites `model` so that the rewritten weights average at most `target_bits` bits
/// per weight (every stored byte counted), with bits and granularity allocated from
/// the measured curves. Weights without a curve keep the common setting; their bytes
/// come out of the budget. Retries with a smaller budget if the emitted bytes exceed
/// the estimate (names and bias corrections add a few bytes).
pub fn rewrite_to_bits(
    model: &ModelProto,
    config: &Config,
    calibrated: &Calibrated,
    target_bits: f64,
) -> Result<Rewritten> {
    let measured: HashMap<&str, &Curve> = calibrated
        .curves
        .iter()
        .map(|c| (c.weight.as_str(), c))
        .collect();
    let graph = Graph::new(model)?;
    let mut plan = plan(&graph, config);
    relate(&mut plan, config, config.share != Share::None)?;
    let names = graph.names();
    let (mut elements, mut fixed) = (0, 0);
    for w in &plan.weights {
        elements += w.elements();
        if measured.contains_key(w.first().weight.name) {
            continue;
        }
        let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())?;
        if let Ok(fit) = fit_values(w, &values, config, None, None) {
            fixed += fit.emit(w, &graph, &mut names.clone(), None).stored_bytes();
        }
    }
    let target = (target_bits * elements as f64 / 8.0).floor() as usize;
    let mut budget = target.saturating_sub(fixed);
    for _ in 0..4 {
        let settings = allocate_bytes(&calibrated.curves, budget).ok_or_else(|| {
            Error::Config(format!(
                "--target-bits {target_bits}: even 1 bit per weight takes more than the {target} bytes it allows"
            ))
        })?;
        let config = Config {
            settings,
            ..config.clone()
        };
        let mut out = rewrite_calibrated(model, &config, Some(&calibrated.stats))?;
        let stored: usize = out.report.tensors.iter().map(|t| t.bytes_after).sum();
        if stored <= target {
            annotate(&mut out, &calibrated.curves);
            return Ok(out);
        }
        budget = budget.saturating_sub(stored - target);
    }
    Err(Error::Config(format!(
        "--target-bits {target_bits}: no allocation met the target after 4 tries"
    )))
}

/// Fills each tensor report's measured sensitivity at its setting and its share of
/// the summed sensitivities.
pub fn annotate(out: &mut Rewritten, curves: &[Curve]) {
    let by_name: HashMap<&str, &Curve> = curves.iter().map(|c| (c.weight.as_str(), c)).collect();
    for t in &mut out.report.tensors {
        t.sensitivity = by_name.get(t.name.as_str()).and_then(|c| {
            c.points
                .iter()
                .find(|p| p.setting.bits == t.bits && p.setting.granularity == t.granularity)
                .map(|p| p.error)
        });
    }
    let total: f64 = out
        .report
        .tensors
        .iter()
        .filter_map(|t| t.sensitivity)
        .sum();
    for t in &mut out.report.tensors {
        t.error_share = t
            .sensitivity
            .map(|s| if total > 0.0 { s / total } else { 0.0 });
    }
}

/// The smallest allocated model whose proof passes `proof.max_rel_error`: a binary
/// search over target bits per weight (1 to 8 in steps of 1/8), one rewrite and proof
/// per step. Returns the model, its proof and the number of proofs run.
pub fn smallest_passing(
    model: &ModelProto,
    config: &Config,
    calibrated: &Calibrated,
    proof: &ProofConfig,
) -> Result<(Rewritten, Validation, usize)> {
    let bound = proof
        .max_rel_error
        .ok_or_else(|| Error::Config("--auto needs --max-rel-error E, the bound to meet".into()))?;
    let steps: Vec<f64> = (8..=64).map(|k| k as f64 / 8.0).collect();
    let mut proofs = 0;
    let mut try_bits = |bits: f64| -> Result<(Rewritten, Validation)> {
        proofs += 1;
        let out = rewrite_to_bits(model, config, calibrated, bits)?;
        let validation = validate(model, &out.model, proof)?;
        Ok((out, validation))
    };
    let (mut lo, mut hi) = (0, steps.len() - 1);
    let mut best = try_bits(steps[hi])?;
    if !best.1.passed {
        return Err(Error::Config(format!(
            "--auto: even 8 bits per weight misses --max-rel-error {bound}"
        )));
    }
    // Invariant: steps[hi] passes; steps below lo are not tried (lo may pass).
    while lo < hi {
        let mid = (lo + hi) / 2;
        let attempt = try_bits(steps[mid])?;
        if attempt.1.passed {
            hi = mid;
            best = attempt;
        } else {
            lo = mid + 1;
        }
    }
    Ok((best.0, best.1, proofs))
}
