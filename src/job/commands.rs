//! The entry points of `sweep` and `validate`.

use std::path::Path;
use std::sync::Arc;

use super::{Note, Tuning, calibrated, in_memory};
use crate::calibrate::budget::check_allocatable;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::inputs::{SampleSource, Samples};
use crate::onnx::proto::ModelProto;
use crate::plan::Plan;
use crate::prove::{EXTERNAL_LIMIT, ProofConfig, Validation, load_for_proof, validate};
use crate::sweep::{SweepRow, sweep};

/// Output error against size: `model` calibrated as `tuning` says, rewritten at each
/// of `uniform` bits and each of `targets` bits per weight, each proved with `proof`
/// (on `eval` samples if given). Returns the rows and the calibration's notes.
pub fn run_sweep(
    model: &ModelProto,
    config: &Config,
    tuning: &Tuning,
    proof: &ProofConfig,
    eval: Option<&SampleSource>,
    (uniform, targets): (&[u32], &[f64]),
) -> Result<(Vec<SweepRow>, Vec<Note>)> {
    check_allocatable(config)?;
    let model = in_memory(model, config, "calibration")?;
    let graph = Graph::new(&model)?;
    let plan = Plan::new(&graph, config)?;
    let mut notes = Vec::new();
    let calibrated = calibrated(&graph, &plan, config, (tuning, true), proof, &mut notes)?;
    let mut proof = proof.clone();
    if let Some(eval) = eval {
        let samples = Samples::load(&model, eval, proof.feeding(), proof.seed)?;
        proof.inputs = Some(std::sync::Arc::new(samples));
    }
    let points = (uniform, targets);
    let rows = sweep(&graph, &plan, config, &calibrated, points, &proof)?;
    Ok((rows, notes))
}

/// Compares model `b` with model `a` (each with the folder of its external data) as
/// the proof does, on `inputs` (samples made for `a`) or random ones.
pub fn run_validate(
    (a, a_dir): (&ModelProto, &Path),
    (b, b_dir): (&ModelProto, &Path),
    proof: &ProofConfig,
    inputs: Option<&SampleSource>,
) -> Result<Validation> {
    let too_big = |which: &str| {
        Error::Config(format!(
            "model {which} keeps more than {} GiB of external data, more than the proof loads into memory",
            EXTERNAL_LIMIT >> 30
        ))
    };
    let a_in_memory = load_for_proof(a, a_dir)?.ok_or_else(|| too_big("a"))?;
    let b_in_memory = load_for_proof(b, b_dir)?.ok_or_else(|| too_big("b"))?;
    let mut proof = proof.clone();
    if let Some(source) = inputs {
        let samples = Samples::load(a, source, proof.feeding(), proof.seed)?;
        proof.inputs = Some(Arc::new(samples));
    }
    validate(&a_in_memory, &b_in_memory, &proof)
}
