//! The proof: tract loads the original and the rewritten model, runs both on the same
//! seeded random inputs, and every output is compared.
//!
//! Inputs follow the original model's declared types and shapes; a symbolic or missing
//! dim takes its value from `--input-dim NAME=N` (default 1). Float inputs are standard
//! normal; an integer input that a Gather reads as indices (directly or through a Cast)
//! is drawn inside that table's size along the gathered axis; other integer and bool
//! inputs are 0 or 1.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use tract_onnx::prelude::*;

use crate::calibration::Calibration;
use crate::error::{Error, Result};
use crate::graph::{Def, Graph, Use};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::proto::type_proto::Value as TypeValue;
use crate::onnx::proto::{ModelProto, ValueInfoProto};
use crate::onnx::tensor::data_type_name;
use crate::onnx::{external_bytes, inline_external};
use crate::rng::Rng;

/// Most elements the proof feeds one input (checked before anything is allocated).
pub const MAX_INPUT_ELEMENTS: usize = 1 << 26;

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
    pub input_dims: HashMap<String, usize>,
    /// Seed of the random inputs.
    pub seed: u64,
    /// How many random input sets to run.
    pub samples: usize,
    /// Largest relative L2 error any output may have; `None` only reports.
    pub max_rel_error: Option<f64>,
    /// Run on these samples instead of random inputs (`samples` and `seed` unused).
    pub calibration: Option<Arc<Calibration>>,
}

impl Default for ProofConfig {
    fn default() -> Self {
        ProofConfig {
            input_dims: HashMap::new(),
            seed: 0,
            samples: 4,
            max_rel_error: None,
            calibration: None,
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
    let inputs = input_specs(original, config)?;
    let facts: Vec<(DatumType, Vec<usize>)> = match &config.calibration {
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
    let samples = match &config.calibration {
        Some(c) => c.samples.len(),
        None => config.samples.max(1),
    };
    for s in 0..samples {
        let feed: Vec<Tensor> = match &config.calibration {
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

/// How to draw values for one model input.
#[derive(Clone, Debug)]
pub(crate) struct InputSpec {
    pub(crate) name: String,
    pub(crate) datum: DatumType,
    /// The shape fed: declared dims, symbolic ones bound by `--input-dim` (default 1).
    pub(crate) shape: Vec<usize>,
    /// The dims the model fixes (`None` for symbolic or missing ones).
    pub(crate) declared: Vec<Option<usize>>,
    /// Values are drawn in `0..range` for integer inputs; `None` for floats.
    range: Option<i64>,
}

impl InputSpec {
    pub(crate) fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        let n: usize = self.shape.iter().product();
        let range = self.range.unwrap_or(2);
        let ints = |rng: &mut Rng| -> Vec<i64> { (0..n).map(|_| rng.below(range)).collect() };
        let tensor = match self.datum {
            DatumType::F32 => Tensor::from_shape(
                &self.shape,
                &(0..n).map(|_| rng.normal() as f32).collect::<Vec<_>>(),
            ),
            DatumType::F64 => Tensor::from_shape(
                &self.shape,
                &(0..n).map(|_| rng.normal()).collect::<Vec<_>>(),
            ),
            DatumType::F16 => Tensor::from_shape(
                &self.shape,
                &(0..n)
                    .map(|_| f16::from_f64(rng.normal()))
                    .collect::<Vec<_>>(),
            ),
            DatumType::Bool => Tensor::from_shape(
                &self.shape,
                &ints(rng).iter().map(|&v| v != 0).collect::<Vec<_>>(),
            ),
            other => Tensor::from_shape(&self.shape, &ints(rng))
                .and_then(|t| t.cast_to_dt(other).map(|t| t.into_owned())),
        };
        tensor.map_err(|e| Error::invalid(format!("cannot build input '{}': {e}", self.name)))
    }
}

/// Specs of the original model's real inputs (not initializers).
pub(crate) fn input_specs(model: &ModelProto, config: &ProofConfig) -> Result<Vec<InputSpec>> {
    let graph = Graph::new(model)?;
    let main = graph.scopes[0].graph;
    main.input
        .iter()
        .filter(|i| matches!(graph.resolve(0, i.name()), Some((0, Def::Input))))
        .map(|info| {
            let (data_type, shape, fixed) = declared(info, config)?;
            let elements = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if elements.is_none_or(|n| n > MAX_INPUT_ELEMENTS) {
                return Err(Error::invalid(format!(
                    "input '{}' would need shape {shape:?}, over the proof's {MAX_INPUT_ELEMENTS} elements; bind its dims with --input-dim or pass --no-validate",
                    info.name()
                )));
            }
            let datum = datum_type(data_type).ok_or_else(|| {
                Error::invalid(format!(
                    "input '{}' is {}, which the proof cannot feed",
                    info.name(),
                    data_type_name(data_type)
                ))
            })?;
            let range =
                (!datum.is_float()).then(|| gather_table_size(&graph, info.name()).unwrap_or(2));
            Ok(InputSpec {
                name: info.name().to_string(),
                datum,
                shape,
                declared: fixed,
                range,
            })
        })
        .collect()
}

/// Element type, concrete shape and fixed dims of a declared input.
fn declared(
    info: &ValueInfoProto,
    config: &ProofConfig,
) -> Result<(i32, Vec<usize>, Vec<Option<usize>>)> {
    let Some(TypeValue::TensorType(t)) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(Error::invalid(format!(
            "input '{}' is not a tensor",
            info.name()
        )));
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    let fixed: Vec<Option<usize>> = dims
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(v)) if *v >= 0 => Some(*v as usize),
            _ => None,
        })
        .collect();
    let shape = dims
        .iter()
        .zip(&fixed)
        .map(|(d, fixed)| match (&d.value, fixed) {
            (_, Some(v)) => *v,
            (Some(DimValue::DimParam(name)), None) => {
                config.input_dims.get(name).copied().unwrap_or(1)
            }
            _ => 1,
        })
        .collect();
    Ok((t.elem_type(), shape, fixed))
}

/// Size of the table a Gather reads with `input` as its indices, seen directly or
/// through one Cast.
fn gather_table_size(graph: &Graph, input: &str) -> Option<i64> {
    graph.uses(0, input).iter().find_map(|u| {
        let Use::Node { node, slot } = *u else {
            return None;
        };
        let n = graph.node(node);
        match (n.op_type(), slot) {
            ("Gather", 1) => {
                let table = graph.constant(node.scope, &n.input[0])?;
                let axis = n
                    .attribute
                    .iter()
                    .find(|a| a.name() == "axis")
                    .map_or(0, |a| a.i());
                let rank = table.tensor.dims.len() as i64;
                table
                    .tensor
                    .dims
                    .get(axis.rem_euclid(rank.max(1)) as usize)
                    .copied()
            }
            ("Cast", 0) if node.scope == 0 => gather_table_size(graph, &n.output[0]),
            _ => None,
        }
    })
}

fn datum_type(data_type: i32) -> Option<DatumType> {
    Some(match DataType::try_from(data_type).ok()? {
        DataType::Float => DatumType::F32,
        DataType::Float16 => DatumType::F16,
        DataType::Double => DatumType::F64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Bool => DatumType::Bool,
        _ => return None,
    })
}

/// A model loaded in tract and optimized for fixed input types and shapes.
pub struct Session {
    plan: Arc<TypedRunnableModel>,
    which: String,
}

impl Session {
    /// Loads `model` (called `which` in errors) for inputs of these types and shapes,
    /// in the order the model declares its inputs.
    pub fn new(
        model: &ModelProto,
        which: &str,
        inputs: &[(DatumType, Vec<usize>)],
    ) -> Result<Self> {
        let fail = |action, e: TractError| Error::Tract {
            action,
            model: which.to_string(),
            message: format!("{e:#}").replace('\n', " "),
        };
        let bytes = model.encode_to_vec();
        // Declared intermediate and output shapes may name symbols the concrete input
        // facts conflict with; the proof compares the values computed.
        let mut inference = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| fail("load", e))?;
        for (i, (datum, shape)) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(*datum, shape);
            inference
                .set_input_fact(i, fact)
                .map_err(|e| fail("load", e))?;
        }
        let plan = inference
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| fail("optimize", e))?;
        Ok(Session {
            plan,
            which: which.to_string(),
        })
    }

    /// Runs the model on one set of inputs.
    pub fn run(&self, feed: &[Tensor]) -> Result<TVec<TValue>> {
        self.run_values(feed.iter().map(|t| t.clone().into()).collect())
    }

    /// Runs the model on one set of input values (shared tensors are not copied).
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        self.plan.run(inputs).map_err(|e| Error::Tract {
            action: "run",
            model: self.which.clone(),
            message: format!("{e:#}").replace('\n', " "),
        })
    }
}

/// The values of a run's result `value` as f64, row-major.
pub fn values_f64(value: &TValue) -> Result<Vec<f64>> {
    let t = value
        .cast_to::<f64>()
        .map_err(|e| Error::invalid(format!("cannot read a model value: {e}")))?;
    let view = t
        .to_plain_array_view::<f64>()
        .map_err(|e| Error::invalid(format!("cannot read a model value: {e}")))?;
    Ok(view.iter().copied().collect())
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
