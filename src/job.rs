//! One entry point per command, for the command line, the sweep and the Python
//! bindings alike: a [`RewriteJob`] runs calibration (if asked), allocation, the
//! rewrite and the proof, and returns the rewritten model, its report and the notes
//! a user should read.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use crate::calibrate::budget::{check_allocatable, rewrite_to_bits};
use crate::calibrate::{Calibrated, Sensitivity, calibrate};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::inputs::{SampleSource, Samples};
use crate::onnx::proto::ModelProto;
use crate::plan::Plan;
use crate::prove::{EXTERNAL_LIMIT, ProofConfig, Validation, Verdict, load_for_proof, validate};
use crate::rewrite::{Rewritten, rewrite, rewrite_plan};
use crate::sweep::{SweepRow, sweep};

/// Salt of the seed random calibration samples are drawn with, so they differ from
/// the proof's random inputs.
const CALIBRATION_SEED: u64 = 0x5eed_ca1b;

/// What calibration decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Every weight at the common setting, with bias correction and compensation.
    Common,
    /// Settings allocated per weight for this average of bits per weight.
    Bits(f64),
    /// The smallest allocation whose proof meets the proof's `max_rel_error`.
    Auto,
}

/// The calibration a job runs.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Where the samples come from.
    pub source: SampleSource,
    /// What the sensitivity stage measures (only for [`Target::Bits`] and
    /// [`Target::Auto`]).
    pub sensitivity: Sensitivity,
    /// What calibration decides.
    pub target: Target,
}

/// A rewrite, from options to a proved model.
#[derive(Clone, Debug)]
pub struct RewriteJob {
    /// What the rewrite does.
    pub config: Config,
    /// Calibration, if any.
    pub tuning: Option<Tuning>,
    /// The inputs (symbolic dims, seed) for calibration and the proof, and how to prove.
    pub proof: ProofConfig,
    /// Whether to run the proof.
    pub prove: bool,
}

/// Something the user should read, besides the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// What happened (printed on stdout).
    Status(String),
    /// Advice about the options or the data (printed on stderr as `note:`).
    Advice(String),
}

/// What a job produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The rewritten model and its report, with the proof if it ran.
    pub rewritten: Rewritten,
    /// Notes, in the order they arose.
    pub notes: Vec<Note>,
}

impl Outcome {
    /// What the proof established, if it ran.
    pub fn verdict(&self) -> Option<Verdict> {
        self.rewritten.report.validation.as_ref().map(|v| v.verdict)
    }
}

/// `model` with its external data (from `config.external_dir`) in memory, or an error
/// saying `what` needs it there.
fn in_memory<'a>(
    model: &'a ModelProto,
    config: &Config,
    what: &str,
) -> Result<Cow<'a, ModelProto>> {
    let dir = config.external_dir.as_deref().unwrap_or(Path::new("."));
    load_for_proof(model, dir)?.ok_or_else(|| {
        Error::Config(format!(
            "{what} needs the model in memory, and it keeps more than {} GiB in external data",
            EXTERNAL_LIMIT >> 30
        ))
    })
}

/// Runs `job` on `model` (its external data in `job.config.external_dir`).
pub fn run_rewrite(model: &ModelProto, job: &RewriteJob) -> Result<Outcome> {
    let mut notes = Vec::new();
    let mut rewritten = match &job.tuning {
        None => rewrite(model, &job.config)?,
        Some(tuning) => tuned(model, job, tuning, &mut notes)?,
    };
    let report = &mut rewritten.report;
    if report.tensors.is_empty() {
        notes.push(Note::Status(
            "nothing to rewrite: writing an unchanged copy".into(),
        ));
    } else if job.prove && report.validation.is_none() {
        let start = Instant::now();
        let dir = job.config.external_dir.as_deref().unwrap_or(Path::new("."));
        let original = load_for_proof(model, dir)?;
        let candidate = load_for_proof(&rewritten.model, dir)?;
        if let (Some(original), Some(candidate)) = (original, candidate) {
            let validation = validate(&original, &candidate, &job.proof)
                .map_err(|e| Error::Proof(Box::new(e)))?;
            report.validation = Some(validation);
        } else {
            notes.push(Note::Status(format!(
                "proof skipped: the model keeps more than {} GiB in external data, more than the proof loads into memory",
                EXTERNAL_LIMIT >> 30
            )));
        }
        report.seconds += start.elapsed().as_secs_f64();
    }
    Ok(Outcome { rewritten, notes })
}

/// The calibrated rewrite: calibration, then a target size, an error bound, or the
/// common bits with bias correction (and compensation). With [`Target::Auto`], also
/// the proof of the model chosen.
fn tuned(
    model: &ModelProto,
    job: &RewriteJob,
    tuning: &Tuning,
    notes: &mut Vec<Note>,
) -> Result<Rewritten> {
    let config = &job.config;
    if tuning.target != Target::Common {
        check_allocatable(config)?;
    }
    let model = in_memory(model, config, "calibration")?;
    let graph = Graph::new(&model)?;
    let plan = Plan::new(&graph, config)?;
    let proof = &job.proof;
    let curves = tuning.target != Target::Common;
    let calibrated = calibrated(&graph, &plan, config, (tuning, curves), proof, notes)?;
    let rewritten = match tuning.target {
        Target::Common => rewrite_plan(&graph, &plan, config, Some(calibrated.measured()))?,
        Target::Bits(bits) => rewrite_to_bits(&graph, &plan, config, &calibrated, bits)?,
        Target::Auto => {
            let (mut rewritten, validation, proofs) =
                smallest_passing(&graph, &plan, config, &calibrated, proof)?;
            notes.push(Note::Status(format!("--auto: {proofs} proofs run")));
            rewritten.report.validation = Some(validation);
            rewritten
        }
    };
    Ok(rewritten)
}

/// Loads the samples `tuning` names and calibrates the `plan` on them, measuring
/// sensitivity curves if `curves`; notes the run, logits measured in place of a
/// Softmax/Sigmoid output, and a compensation that had too few calibration rows.
fn calibrated(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    (tuning, curves): (&Tuning, bool),
    proof: &ProofConfig,
    notes: &mut Vec<Note>,
) -> Result<Calibrated> {
    let seed = proof.seed ^ CALIBRATION_SEED;
    let samples = Samples::load(graph.model, &tuning.source, &proof.input_dims, seed)?;
    let sensitivity = Sensitivity {
        samples: if curves {
            tuning.sensitivity.samples
        } else {
            0
        },
        ..tuning.sensitivity.clone()
    };
    let calibrated = calibrate(graph, plan, config, samples, &sensitivity)?;
    let outputs: Vec<&str> = graph.scopes[0]
        .graph
        .output
        .iter()
        .map(|o| o.name())
        .collect();
    let logits: Vec<String> = (calibrated.compared.iter())
        .filter(|name| !outputs.contains(&name.as_str()))
        .map(|name| format!("`{name}`"))
        .collect();
    if curves && sensitivity.outputs.is_empty() && !logits.is_empty() {
        notes.push(Note::Advice(format!(
            "sensitivity measured on {} (the logits before the output's softmax or \
             sigmoid, whose saturated values hide errors); --sensitivity-output NAME chooses",
            logits.join(", ")
        )));
    }
    let short = calibrated.singular_hessians();
    if let Some((name, rows, features)) = short.first() {
        notes.push(Note::Advice(format!(
            "--compensate: {} activation(s) had fewer calibration rows than features \
             (`{name}`: {rows} rows, {features} features), so their H = X^T X is singular; \
             more calibration samples make the compensation better",
            short.len()
        )));
    }
    notes.push(Note::Status(format!(
        "calibration: {} samples, {} model runs, {} weights measured",
        calibrated.samples.samples.len(),
        calibrated.runs,
        calibrated.curves.len()
    )));
    Ok(calibrated)
}

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
        let samples = Samples::load(&model, eval, &proof.input_dims, proof.seed)?;
        proof.inputs = Some(std::sync::Arc::new(samples));
    }
    let points = (uniform, targets);
    let rows = sweep(&graph, &plan, config, &calibrated, points, &proof)?;
    Ok((rows, notes))
}
