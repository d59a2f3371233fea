//! The proof: tract loads the original and the rewritten model, runs both on the same
//! inputs (given samples, or seeded random ones drawn as [`crate::inputs`] says), and
//! every output is compared.
//!
//! The proof never blocks the user: tract runs in a worker thread (each call behind
//! the ladder and `catch_unwind` of [`crate::runtime`]) under a time budget. Samples
//! stop when the next would pass the budget; when tract cannot load or run a model, or
//! the budget runs out before one sample, the verdict is [`Verdict::Unproven`] with
//! the reason in one line. Only a missed bound fails.

mod metrics;
mod twin;
mod worker;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message;

pub use metrics::{DIVERGING_AGREEMENT, DIVERGING_REL_L2, OutputMetrics, Sums};
pub use twin::decoded_twin;

use crate::error::Result;
use crate::inputs::{InputDims, InputValues, Samples, input_specs};
use crate::onnx::proto::ModelProto;
use crate::onnx::{external_bytes, inline_external};
use crate::runtime::Level;
use worker::{Feeds, Progress, worker};

/// Most bytes of external data the proof reads into memory for one model.
pub const EXTERNAL_LIMIT: u64 = 1 << 30;

/// `model` ready for [`validate`], which runs models from memory: its external data
/// (if any) read from the model folder `dir`. `None` when that data is more than
/// [`EXTERNAL_LIMIT`] bytes, in which case the proof is skipped.
pub fn load_for_proof<'a>(
    model: &'a ModelProto,
    dir: &Path,
) -> Result<Option<Cow<'a, ModelProto>>> {
    match external_bytes(model) {
        0 => Ok(Some(Cow::Borrowed(model))),
        n if n <= EXTERNAL_LIMIT => Ok(Some(Cow::Owned(inline_external(model, dir)?))),
        _ => Ok(None),
    }
}

/// How to run the proof.
#[derive(Clone, Debug)]
pub struct ProofConfig {
    /// Values of symbolic dims, by name; a dim not named here is 1.
    pub input_dims: InputDims,
    /// Inputs fixed to these values instead of drawn (`--input-value`).
    pub input_values: InputValues,
    /// Seed of the random inputs.
    pub seed: u64,
    /// How many random input sets to run.
    pub samples: usize,
    /// Largest relative L2 error any output may have; `None` only measures.
    pub max_rel_error: Option<f64>,
    /// Run on these samples instead of random inputs (`samples` and `seed` unused).
    pub inputs: Option<Arc<Samples>>,
    /// Wall time the proof may take, loading included.
    pub budget: Duration,
}

impl ProofConfig {
    /// How inputs are bound and fixed, for [`Samples::load`].
    pub fn feeding(&self) -> (&InputDims, &InputValues) {
        (&self.input_dims, &self.input_values)
    }
}

/// The proof's default time budget.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            input_dims: InputDims::new(),
            input_values: InputValues::new(),
            seed: 0,
            samples: 4,
            max_rel_error: None,
            inputs: None,
            budget: DEFAULT_BUDGET,
        }
    }
}

/// What a proof established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A bound was given and every output met it.
    Proved,
    /// No bound was given: the figures only (and warnings where an output diverges).
    Measured,
    /// tract could not run the models (or not within the budget): no figures.
    Unproven,
    /// The bound was missed, or the rewritten model's outputs do not match the
    /// original's in number or shape.
    Failed,
}

/// The outcome of a proof.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Validation {
    /// What the proof established.
    pub verdict: Verdict,
    /// Why it is unproven or failed, or why fewer samples ran than planned.
    pub reason: Option<String>,
    /// The bound checked, if any.
    pub max_rel_error: Option<f64>,
    /// Whether the inputs were the given samples (else seeded random ones).
    pub given_inputs: bool,
    /// Number of input sets run.
    pub samples: usize,
    /// Number of input sets planned.
    pub samples_planned: usize,
    /// Wall time of the proof, in seconds.
    pub seconds: f64,
    /// The rung of tract's ladder the original and the rewritten model ran at.
    pub levels: Option<(Level, Level)>,
    /// The shapes fed, by input name.
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// One entry per model output, in declaration order (empty when unproven).
    pub outputs: Vec<OutputMetrics>,
    /// One line per output that clearly diverges.
    pub warnings: Vec<String>,
    /// `DequantizeLinear` nodes of constant integers folded into the decoded twin the
    /// proof ran instead (tract cannot load 4-bit integers; see [`decoded_twin`]); 0
    /// when the models ran as they are.
    pub folded_dequantize: usize,
}

impl Validation {
    /// Whether the proof did not fail (proved, measured or unproven).
    pub fn passed(&self) -> bool {
        self.verdict != Verdict::Failed
    }

    /// The verdict in a word, with what it rests on.
    pub fn headline(&self) -> String {
        let inputs = if self.given_inputs { "given" } else { "random" };
        let ran = if self.samples == self.samples_planned {
            format!("{} {inputs} samples", self.samples)
        } else {
            format!(
                "{} of {} {inputs} samples",
                self.samples, self.samples_planned
            )
        };
        let verdict = match (self.verdict, self.max_rel_error) {
            (Verdict::Proved, Some(bound)) => {
                format!("proved (every output within rel_l2 {bound})")
            }
            (Verdict::Failed, Some(bound)) => format!("FAILED (an output exceeds rel_l2 {bound})"),
            (Verdict::Failed, None) => "FAILED".to_string(),
            (Verdict::Measured, _) => {
                "measured (no bound: --max-rel-error E makes it a proof)".into()
            }
            (Verdict::Unproven, _) => "unproven".into(),
            (Verdict::Proved, None) => "proved".into(),
        };
        let reason = self
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let twin = match self.folded_dequantize {
            0 => String::new(),
            n => format!(", on the decoded twin: {n} DequantizeLinear folded"),
        };
        format!(
            "proof in tract ({ran}{twin}, {:.1} s): {verdict}{reason}",
            self.seconds
        )
    }

    /// One line per output, then the warnings.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for o in &self.outputs {
            let mut line = format!(
                "  output {:<24} max_abs {:.3e}  rel_l2 {:.3e}  cosine {:.6}  sqnr {:.1} dB",
                o.name, o.max_abs, o.rel_l2, o.cosine, o.sqnr_db
            );
            if let Some(a) = o.argmax_agreement {
                line += &format!("  argmax {:.1}%", 100.0 * a);
            }
            if let Some(a) = o.sequence_agreement {
                line += &format!("  sequences {:.1}%", 100.0 * a);
            }
            s += &line;
            s.push('\n');
        }
        for w in &self.warnings {
            s += &format!("warning: {w}\n");
        }
        s
    }
}

/// Runs `original` and `rewritten` in tract on the same inputs and compares every
/// output, within `config.budget`. Errors only when the inputs cannot be made from the
/// config; everything tract does wrong is an unproven verdict.
pub fn validate(
    original: &ModelProto,
    rewritten: &ModelProto,
    config: &ProofConfig,
) -> Result<Validation> {
    let start = Instant::now();
    let (original_twin, rewritten_twin) = (decoded_twin(original)?, decoded_twin(rewritten)?);
    let folded = [&original_twin, &rewritten_twin]
        .iter()
        .map(|t| t.as_ref().map_or(0, |(_, n)| *n))
        .sum();
    let original = original_twin.as_ref().map_or(original, |(m, _)| m);
    let rewritten = rewritten_twin.as_ref().map_or(rewritten, |(m, _)| m);
    let names: Vec<String> = original
        .graph
        .iter()
        .flat_map(|g| &g.output)
        .map(|o| o.name().to_string())
        .collect();
    let specs = input_specs(original, &config.input_dims);
    let (feeds, facts, planned) = match (&config.inputs, specs) {
        (Some(given), Ok(specs)) => {
            let facts = given.facts();
            let named = specs.iter().map(|s| s.name.clone()).zip(facts.iter());
            let shapes = named.map(|(n, (_, shape))| (n, shape.clone())).collect();
            (
                Feeds::Given(given.clone()),
                (facts, shapes),
                given.samples.len(),
            )
        }
        (None, Ok(specs)) => {
            let facts = specs.iter().map(|s| (s.datum, s.shape.clone())).collect();
            let shapes = specs
                .iter()
                .map(|s| (s.name.clone(), s.shape.clone()))
                .collect();
            let planned = config.samples.max(1);
            let random = Feeds::Random(specs, config.seed, config.input_values.clone());
            (random, (facts, shapes), planned)
        }
        (_, Err(e)) => {
            let mut v = outcome(config, Vec::new(), 0, start);
            v.folded_dequantize = folded;
            v.verdict = Verdict::Unproven;
            v.reason = Some(format!("cannot feed the model: {e}"));
            return Ok(v);
        }
    };
    let (facts, input_shapes) = facts;
    let (tx, rx) = mpsc::channel();
    let models = (original.encode_to_vec(), rewritten.encode_to_vec());
    let deadline = start + config.budget;
    let outputs = names.len();
    std::thread::spawn(move || worker(models, facts, feeds, (planned, outputs, deadline), tx));
    let mut levels = None;
    let mut sums: Vec<Sums> = Vec::new();
    let mut ran = 0;
    let stop = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Past the deadline, what the worker queued meanwhile is too late: without this,
        // a fast worker's queued samples were read by a zero timeout.
        let received = match left.is_zero() {
            true => Err(mpsc::RecvTimeoutError::Timeout),
            false => rx.recv_timeout(left),
        };
        match received {
            Ok(Progress::Loaded(a, b)) => levels = Some((a, b)),
            Ok(Progress::Sample(s)) => {
                sums = s;
                ran += 1;
            }
            Ok(Progress::Stopped(why)) => break why,
            Err(_) => {
                let budget = config.budget.as_secs_f64();
                let during = match (levels.is_some(), ran) {
                    (false, _) => "while tract loaded the models".to_string(),
                    (true, 0) => "during a run".to_string(),
                    (true, n) => format!("during a run, after {n} samples"),
                };
                break Some((
                    format!(
                        "the time budget of {budget:.0} s ran out {during} (--proof-seconds S allows more)"
                    ),
                    false,
                ));
            }
        }
    };
    let metrics: Vec<OutputMetrics> = (names.into_iter().zip(&sums))
        .map(|(name, s)| s.metrics(name))
        .collect();
    let mut v = outcome(config, metrics, planned, start);
    v.folded_dequantize = folded;
    v.samples = ran;
    v.levels = levels;
    v.input_shapes = input_shapes;
    match stop {
        Some((why, true)) => {
            v.verdict = Verdict::Failed;
            v.reason = Some(why);
        }
        Some((why, false)) if ran == 0 => {
            v.verdict = Verdict::Unproven;
            v.reason = Some(why);
        }
        other => v.reason = other.map(|(why, _)| why),
    }
    Ok(v)
}

/// A validation of `outputs` over `planned` samples begun at `start`, with the
/// verdict the bound gives (`Unproven` with no sample).
fn outcome(
    config: &ProofConfig,
    outputs: Vec<OutputMetrics>,
    planned: usize,
    start: Instant,
) -> Validation {
    let verdict = match config.max_rel_error {
        _ if outputs.is_empty() && planned > 0 => Verdict::Unproven,
        Some(bound) if outputs.iter().all(|o| o.rel_l2 <= bound) => Verdict::Proved,
        Some(_) => Verdict::Failed,
        None => Verdict::Measured,
    };
    let warnings = outputs
        .iter()
        .filter_map(OutputMetrics::divergence)
        .collect();
    Validation {
        verdict,
        reason: None,
        max_rel_error: config.max_rel_error,
        given_inputs: config.inputs.is_some(),
        samples: planned,
        samples_planned: planned,
        seconds: start.elapsed().as_secs_f64(),
        levels: None,
        input_shapes: Vec::new(),
        outputs,
        warnings,
        folded_dequantize: 0,
    }
}
