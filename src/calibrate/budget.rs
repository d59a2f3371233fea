//! Rewriting to a size: the knapsack of [`super::allocate`] over the measured curves
//! gives each weight its setting for a byte budget, and the rewrite is checked against
//! the target, every stored byte counted.

use std::collections::HashMap;

use super::Calibrated;
use super::allocate::{Choice, allocate};
use super::sensitivity::Curve;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fit::fit_values;
use crate::graph::Graph;
use crate::onnx::tensor::float_values;
use crate::plan::{Plan, Setting};
use crate::rewrite::{Rewritten, rewrite_plan};

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

/// Refuses a config whose weights do not take per-weight settings.
pub fn check_allocatable(config: &Config) -> Result<()> {
    if config.fits_own_way() {
        return Err(Error::Config(
            "per-weight bits (--target-bits, --auto, presets) take scalar codebooks in the decode form, without --lossless, --outliers or --share alike".into(),
        ));
    }
    Ok(())
}

/// Carries out `plan` so that the rewritten weights average at most `target_bits` bits
/// per weight (every stored byte counted), with bits and granularity allocated from
/// the measured curves. Weights without a curve keep their setting; their bytes come
/// out of the budget. Retries with a smaller budget if the emitted bytes exceed the
/// estimate (names and bias corrections add a few bytes).
pub fn rewrite_to_bits(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    calibrated: &Calibrated,
    target_bits: f64,
) -> Result<Rewritten> {
    check_allocatable(config)?;
    let measured: HashMap<&str, &Curve> = calibrated
        .curves
        .iter()
        .map(|c| (c.weight.as_str(), c))
        .collect();
    let names = graph.names();
    let (mut elements, mut fixed) = (0, 0);
    for w in &plan.weights {
        elements += w.elements();
        if measured.contains_key(w.name()) {
            continue;
        }
        let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())?;
        if let Ok(fit) = fit_values(w, &values, config, None, None) {
            fixed += fit.emit(w, graph, &mut names.clone(), None).stored_bytes();
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
        let allocated = plan.with_settings(&settings);
        let mut out = rewrite_plan(graph, &allocated, config, Some(calibrated.measured()))?;
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
