//! One entry point per command, for the command line, the sweep and the Python
//! bindings alike: a [`RewriteJob`] runs calibration (if asked), allocation, the
//! rewrite and the proof, and returns the rewritten model, its report and the notes
//! a user should read.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::calibrate::budget::{check_allocatable, rewrite_to_bits};
use crate::calibrate::{Calibrated, Sensitivity, calibrate};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fit::Fits;
use crate::forms::qdq;
use crate::graph::Graph;
use crate::guard::{Guarded, guard};
use crate::inputs::{SampleSource, Samples};
use crate::onnx::proto::ModelProto;
use crate::plan::Plan;
use crate::prove::{EXTERNAL_LIMIT, ProofConfig, Verdict, load_for_proof, validate};
use crate::rewrite::{Measured, Rewritten, rewrite_plan};
use crate::stats::Stats;

mod commands;
mod search;

pub use commands::{run_sweep, run_validate};
pub use search::smallest_passing;

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
    /// The default on real inputs: settings allocated from measured sensitivity for the
    /// size the data-free guard chose (at least 4 bits each, sensitivity within its
    /// time budget), or the guard's own settings when sensitivity does not fit the
    /// budget; bias correction either way.
    Guarded,
}

/// The calibration a job runs.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Where the samples come from; `None`: the job's real inputs.
    pub source: Option<SampleSource>,
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
    /// Real inputs: every fourth sample feeds the proof, the others calibration.
    pub inputs: Option<SampleSource>,
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

/// Samples per held-out proof sample when real inputs are split.
pub const PROOF_EVERY: usize = 4;

/// Runs `job` on `input` (its external data in `job.config.external_dir`); under
/// `--form qdq` on the input upgraded to opset 21 (see [`qdq::upgraded`]).
pub fn run_rewrite(input: &ModelProto, job: &RewriteJob) -> Result<Outcome> {
    let start = Instant::now();
    let mut notes = Vec::new();
    let upgraded = qdq::upgraded(input, &job.config)?;
    if let Some((_, changed)) = &upgraded {
        notes.push(Note::Status(format!(
            "--form qdq needs opset {}: upgraded {changed}",
            qdq::MIN_OPSET
        )));
    }
    let model = upgraded.as_ref().map_or(input, |(m, _)| m);
    let mut job = job.clone();
    if let Some(source) = &job.inputs {
        let real = Samples::load(model, source, job.proof.feeding(), job.proof.seed)?;
        notes.extend(real.notes.iter().map(|n| Note::Advice(n.clone())));
        let (held_out, rest) = real.split(PROOF_EVERY);
        notes.push(Note::Status(match held_out.samples.len() == real.samples.len() {
            true => format!("real inputs: {} samples, for calibration and the proof alike (fewer than {PROOF_EVERY})", real.samples.len()),
            false => format!("real inputs: {} samples, {} for calibration and {} held out for the proof", real.samples.len(), rest.samples.len(), held_out.samples.len()),
        }));
        job.proof.inputs = Some(Arc::new(held_out));
        if let Some(tuning) = job.tuning.as_mut().filter(|t| t.source.is_none()) {
            tuning.source = Some(SampleSource::Given(Arc::new(rest)));
        }
    }
    let job = &job;
    let mut rewritten = match &job.tuning {
        None => {
            let graph = Graph::new(model)?;
            let plan = Plan::new(&graph, &job.config)?;
            guarded(&graph, &plan, &job.config, None)?
        }
        Some(tuning) => tuned(model, job, tuning, &mut notes)?,
    };
    let report = &mut rewritten.report;
    report.seconds = start.elapsed().as_secs_f64();
    report.opset_upgrade = upgraded.map(|(_, changed)| changed);
    if report.tensors.is_empty() {
        notes.push(Note::Status(
            "nothing to rewrite: writing an unchanged copy".into(),
        ));
        report.opset_upgrade = None;
        rewritten.model = input.clone();
    } else if job.prove && report.validation.is_none() {
        let proving = Instant::now();
        let dir = job.config.external_dir.as_deref().unwrap_or(Path::new("."));
        // The proof compares with the model as given, so it covers the upgrade too.
        let original = load_for_proof(input, dir)?;
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
        report.seconds += proving.elapsed().as_secs_f64();
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
        Target::Common => guarded(&graph, &plan, config, Some(&calibrated))?,
        Target::Guarded if calibrated.curves.is_empty() => {
            guarded(&graph, &plan, config, Some(&calibrated))?
        }
        Target::Guarded => {
            let chosen = guard(
                &graph,
                &plan,
                config,
                config.guard.as_ref().expect("guarded"),
            )?;
            let size = rewrite_guarded(&graph, &plan, config, Some(&calibrated), &chosen)?;
            let bits = size.report.bits_per_weight;
            notes.push(Note::Status(format!(
                "allocated from measured sensitivity for the data-free default's {bits:.2} bits per weight"
            )));
            // Weights without a measured curve keep the guard's setting, and those it
            // left dense stay dense.
            let plan = guarded_plan(&graph, &plan, &chosen);
            rewrite_to_bits(&graph, &plan, config, &calibrated, bits)?
        }
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

/// Carries out `plan` at the common setting, or with `config.guard` at the settings
/// the guard chooses (its fits reused, and each weight's target in the report); with
/// what calibration measured if given (bias correction, compensation).
fn guarded(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    calibrated: Option<&Calibrated>,
) -> Result<Rewritten> {
    let Some(g) = &config.guard else {
        let measured = calibrated.map(Calibrated::measured);
        return rewrite_plan(graph, plan, config, measured);
    };
    let chosen = guard(graph, plan, config, g)?;
    rewrite_guarded(graph, plan, config, calibrated, &chosen)
}

/// `plan` at the settings the guard `chose`, without the weights it left dense.
fn guarded_plan<'m>(graph: &Graph<'m>, plan: &Plan<'m>, chosen: &Guarded) -> Plan<'m> {
    plan.with_settings(&chosen.settings)
        .without(graph, &chosen.skipped)
}

/// Carries out `plan` as the guard `chose` (its fits reused, and each weight's target
/// in the report), with what calibration measured if given.
fn rewrite_guarded(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    calibrated: Option<&Calibrated>,
    chosen: &Guarded,
) -> Result<Rewritten> {
    let no_stats = Stats::default();
    let stats = calibrated.map_or(&no_stats, |c| &c.stats);
    let no_fits = Fits::default();
    // Compensated fits differ from the guard's nearest-particle fits.
    let fits = if config.compensate {
        &no_fits
    } else {
        &chosen.fits
    };
    let measured = Measured { stats, fits };
    let plan = guarded_plan(graph, plan, chosen);
    let mut out = rewrite_plan(graph, &plan, config, Some(measured))?;
    for t in &mut out.report.tensors {
        t.target_sqnr_db = chosen.targets.get(&t.name).copied();
    }
    Ok(out)
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
    let source = tuning.source.as_ref().ok_or_else(|| {
        Error::Config("calibration on real inputs needs --images, --text or --audio".into())
    })?;
    let samples = Samples::load(graph.model, source, proof.feeding(), seed)?;
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
    let proxied = (calibrated.curves.iter())
        .filter(|c| c.anchor.is_some())
        .count();
    let proxied = match proxied {
        0 => String::new(),
        n => format!(
            " ({n} at one setting, the rest scaled by the per-layer proxy; --full-sensitivity runs them all)"
        ),
    };
    notes.push(Note::Status(format!(
        "calibration: {} samples, {} model runs, {} weights measured{proxied}",
        calibrated.samples.samples.len(),
        calibrated.runs,
        calibrated.curves.len()
    )));
    Ok(calibrated)
}
