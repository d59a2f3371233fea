//! The proof: tract loads the original and the rewritten model, runs both on the same
//! inputs (given samples, or seeded random ones drawn as [`crate::inputs`] says), and
//! every output is compared.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::{DatumType, TValue, Tensor};

use crate::error::{Error, Result};
use crate::inputs::{InputDims, Samples, input_specs};
use crate::onnx::proto::ModelProto;
use crate::onnx::{external_bytes, inline_external};
use crate::rng::Rng;
use crate::runtime::{Session, values_f64};

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
    /// Seed of the random inputs.
    pub seed: u64,
    /// How many random input sets to run.
    pub samples: usize,
    /// Largest relative L2 error any output may have; `None` only reports.
    pub max_rel_error: Option<f64>,
    /// Run on these samples instead of random inputs (`samples` and `seed` unused).
    pub inputs: Option<Arc<Samples>>,
}

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            input_dims: InputDims::new(),
            seed: 0,
            samples: 4,
            max_rel_error: None,
            inputs: None,
        }
    }
}

/// The outcome of a proof.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Validation {
    /// Whether every output stayed within `max_rel_error` (true when no bound was set).
    pub passed: bool,
    /// The bound checked, if any.
    pub max_rel_error: Option<f64>,
    /// Number of input sets run (random or calibration samples).
    pub samples: usize,
    /// The shapes fed, by input name.
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// One entry per model output, in declaration order.
    pub outputs: Vec<OutputMetrics>,
}

/// How far one output of the rewritten model is from the original's, over all samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutputMetrics {
    /// The output's name.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `||b - a|| / ||a||`, with `a` the original output.
    pub rel_l2: f64,
    /// Cosine similarity of the flattened outputs.
    pub cosine: f64,
    /// Signal to noise, `10 log10(||a||^2 / ||b - a||^2)`, in dB.
    pub sqnr_db: f64,
}

impl Validation {
    /// One line per output.
    pub fn table(&self) -> String {
        self.outputs
            .iter()
            .map(|o| {
                format!(
                    "  output {:<24} max_abs {:.3e}  rel_l2 {:.3e}  cosine {:.6}  sqnr {:.1} dB\n",
                    o.name, o.max_abs, o.rel_l2, o.cosine, o.sqnr_db
                )
            })
            .collect()
    }
}

/// Runs `original` and `rewritten` in tract on the same random inputs and compares
/// every output.
pub fn validate(
    original: &ModelProto,
    rewritten: &ModelProto,
    config: &ProofConfig,
) -> Result<Validation> {
    let inputs = input_specs(original, &config.input_dims)?;
    let facts: Vec<(DatumType, Vec<usize>)> = match &config.inputs {
        Some(c) => c.facts(),
        None => inputs.iter().map(|s| (s.datum, s.shape.clone())).collect(),
    };
    let a = Session::new(original, "original", &facts)?;
    let b = Session::new(rewritten, "rewritten", &facts)?;
    let names: Vec<String> = original
        .graph
        .iter()
        .flat_map(|g| &g.output)
        .map(|o| o.name().to_string())
        .collect();
    let mut sums = vec![Sums::default(); names.len()];
    let mut rng = Rng::new(config.seed);
    let samples = match &config.inputs {
        Some(c) => c.samples.len(),
        None => config.samples.max(1),
    };
    for s in 0..samples {
        let feed: Vec<Tensor> = match &config.inputs {
            Some(c) => c.samples[s].clone(),
            None => inputs
                .iter()
                .map(|spec| spec.sample(&mut rng))
                .collect::<Result<_>>()?,
        };
        let out_a = a.run(&feed)?;
        let out_b = b.run(&feed)?;
        if out_a.len() != names.len() || out_b.len() != names.len() {
            return Err(Error::invalid("the models do not have the same outputs"));
        }
        for ((sum, x), y) in sums.iter_mut().zip(&out_a).zip(&out_b) {
            sum.add(x, y)?;
        }
    }
    let outputs: Vec<OutputMetrics> = names
        .into_iter()
        .zip(sums)
        .map(|(name, s)| s.metrics(name))
        .collect();
    let passed = config
        .max_rel_error
        .is_none_or(|bound| outputs.iter().all(|o| o.rel_l2 <= bound));
    Ok(Validation {
        passed,
        max_rel_error: config.max_rel_error,
        samples,
        input_shapes: inputs
            .iter()
            .zip(&facts)
            .map(|(s, (_, shape))| (s.name.clone(), shape.clone()))
            .collect(),
        outputs,
    })
}

/// Running sums for one output's metrics.
#[derive(Clone, Debug, Default)]
struct Sums {
    max_abs: f64,
    aa: f64,
    bb: f64,
    ab: f64,
    diff: f64,
}

impl Sums {
    fn add(&mut self, a: &TValue, b: &TValue) -> Result<()> {
        if a.shape() != b.shape() {
            return Err(Error::invalid(format!(
                "an output has shape {:?} in the original and {:?} in the rewritten model",
                a.shape(),
                b.shape()
            )));
        }
        for (x, y) in values_f64(a)?.into_iter().zip(values_f64(b)?) {
            if x.is_nan() && y.is_nan() {
                continue;
            }
            let d = if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            };
            self.max_abs = self.max_abs.max(d);
            self.aa += x * x;
            self.bb += y * y;
            self.ab += x * y;
            self.diff += d * d;
        }
        Ok(())
    }

    fn metrics(&self, name: String) -> OutputMetrics {
        let rel_l2 = if self.diff == 0.0 {
            0.0
        } else {
            (self.diff / self.aa).sqrt()
        };
        let cosine = if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else {
            self.ab / (self.aa * self.bb).sqrt()
        };
        OutputMetrics {
            name,
            max_abs: self.max_abs,
            rel_l2,
            cosine,
            sqnr_db: 10.0 * (self.aa / self.diff).log10(),
        }
    }
}
