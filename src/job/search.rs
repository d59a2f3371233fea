//! `--auto`: the smallest allocation whose proof meets the bound.

use crate::calibrate::Calibrated;
use crate::calibrate::budget::rewrite_to_bits;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::plan::Plan;
use crate::prove::{ProofConfig, Validation, Verdict, validate};
use crate::rewrite::Rewritten;

/// The smallest allocated model whose proof passes `proof.max_rel_error`: a binary
/// search over target bits per weight (1 to 8 in steps of 1/8), one rewrite and proof
/// per step. Returns the model, its proof and the number of proofs run.
pub fn smallest_passing(
    graph: &Graph,
    plan: &Plan,
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
        let out = rewrite_to_bits(graph, plan, config, calibrated, bits)?;
        let validation = validate(graph.model, &out.model, proof)?;
        if validation.verdict == Verdict::Unproven {
            return Err(Error::Config(format!(
                "--auto needs the proof to run, and it could not: {}",
                validation.reason.as_deref().unwrap_or("no reason given")
            )));
        }
        Ok((out, validation))
    };
    let (mut lo, mut hi) = (0, steps.len() - 1);
    let mut best = try_bits(steps[hi])?;
    if best.1.verdict != Verdict::Proved {
        return Err(Error::Config(format!(
            "--auto: even 8 bits per weight misses --max-rel-error {bound}"
        )));
    }
    // Invariant: steps[hi] passes; steps below lo are not tried (lo may pass).
    while lo < hi {
        let mid = (lo + hi) / 2;
        let attempt = try_bits(steps[mid])?;
        if attempt.1.verdict == Verdict::Proved {
            hi = mid;
            best = attempt;
        } else {
            lo = mid + 1;
        }
    }
    Ok((best.0, best.1, proofs))
}
