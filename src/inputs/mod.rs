//! The inputs models are run on: the specs of a model's inputs (type, shape, how to
//! draw values), and sets of samples from a file or drawn at random. The proof and
//! calibration both feed [`Samples`].
//!
//! Random inputs follow the model's declared types and shapes; a symbolic or missing
//! dim takes its value from `--input-dim NAME=N` (default 1). Float inputs are standard
//! normal; an integer input that a Gather reads as indices (directly or through a Cast)
//! is drawn inside that table's size along the gathered axis; other integer and bool
//! inputs are 0 or 1.
//!
//! Real samples come from what users have: an `.npz` of arrays ([`npz`]), a folder of
//! images ([`images`]), a text and its tokenizer ([`text`]), or WAV files
//! ([`audio`]); each fills the inputs it does not make itself ([`fill`]).

pub mod audio;
pub mod fill;
pub mod images;
mod npz;
pub mod text;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

pub use audio::AudioInputs;
pub use fill::InputValues;
pub use images::{ImageInputs, ImageLayout};
pub use text::TextInputs;

use crate::error::{Error, Result};
use crate::graph::{Def, Graph, Use};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::proto::type_proto::Value as TypeValue;
use crate::onnx::proto::{ModelProto, ValueInfoProto};
use crate::onnx::tensor::data_type_name;
use crate::rng::Rng;

/// Most elements one drawn input may have (checked before anything is allocated).
pub const MAX_INPUT_ELEMENTS: usize = 1 << 26;

/// Largest sample file read, in bytes (checked before it is opened as an archive).
pub const MAX_SAMPLE_FILE_BYTES: u64 = 4 << 30;

/// Values of symbolic input dims, by name; a dim not named is 1.
pub type InputDims = HashMap<String, usize>;

/// Where samples come from.
#[derive(Clone, Debug)]
pub enum SampleSource {
    /// An `.npz` file with one array per model input.
    Npz(PathBuf),
    /// This many seeded random samples.
    Random(usize),
    /// A folder of images.
    Images(ImageInputs),
    /// A text and its tokenizer.
    Text(TextInputs),
    /// A folder of WAV files.
    Audio(AudioInputs),
    /// Samples already loaded.
    Given(std::sync::Arc<Samples>),
}

/// Samples, each one value per model input in declaration order.
#[derive(Clone, Debug)]
pub struct Samples {
    /// Names of the model inputs fed.
    pub names: Vec<String>,
    /// The samples.
    pub samples: Vec<Vec<Tensor>>,
    /// How inputs the source does not make were filled, for the user to check.
    pub notes: Vec<String>,
}

impl Samples {
    /// Samples of the inputs `specs` describe, with `notes` deduplicated.
    pub fn new(specs: &[InputSpec], samples: Vec<Vec<Tensor>>, mut notes: Vec<String>) -> Self {
        notes.sort();
        notes.dedup();
        Samples {
            names: specs.iter().map(|s| s.name.clone()).collect(),
            samples,
            notes,
        }
    }

    /// Loads or draws samples for `model`; `dims` binds symbolic dims, `values` fixes
    /// inputs, and `seed` seeds random samples.
    pub fn load(
        model: &ModelProto,
        source: &SampleSource,
        (dims, values): (&InputDims, &InputValues),
        seed: u64,
    ) -> Result<Self> {
        let specs = || input_specs(model, dims);
        match source {
            SampleSource::Random(0) => Err(Error::Config(
                "--calibration-random needs at least one sample".into(),
            )),
            SampleSource::Random(n) => {
                let specs = specs()?;
                let mut rng = Rng::new(seed);
                let samples = (0..*n)
                    .map(|_| specs.iter().map(|s| s.draw(&mut rng, values)).collect())
                    .collect::<Result<_>>()?;
                Ok(Samples::new(&specs, samples, Vec::new()))
            }
            SampleSource::Npz(path) => {
                let specs = specs()?;
                let samples = npz::read_npz(path, &specs)?;
                Ok(Samples::new(&specs, samples, Vec::new()))
            }
            SampleSource::Images(opts) => images::load(model, opts, dims, values),
            SampleSource::Text(opts) => text::load(model, opts, dims, values),
            SampleSource::Audio(opts) => audio::load(model, opts, dims, values),
            SampleSource::Given(samples) => Ok(Samples::clone(samples)),
        }
    }

    /// These samples split in two: every `k`-th sample (`k`-1, 2k-1, ...) and the
    /// others; with fewer than `k` samples, both are all of them.
    pub fn split(&self, k: usize) -> (Samples, Samples) {
        if self.samples.len() < k.max(2) {
            return (self.clone(), self.clone());
        }
        let part = |held: bool| Samples {
            samples: (self.samples.iter().enumerate())
                .filter(|(i, _)| (i % k == k - 1) == held)
                .map(|(_, s)| s.clone())
                .collect(),
            ..self.clone()
        };
        (part(true), part(false))
    }

    /// Element type and shape of every input, as fed (all samples share them).
    pub fn facts(&self) -> Vec<(DatumType, Vec<usize>)> {
        self.samples[0]
            .iter()
            .map(|t| (t.datum_type(), t.shape().to_vec()))
            .collect()
    }
}

/// How to draw values for one model input.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// The input's name.
    pub name: String,
    /// Its element type.
    pub datum: DatumType,
    /// The shape fed: declared dims, symbolic ones bound by `--input-dim` (default 1).
    pub shape: Vec<usize>,
    /// The dims the model fixes (`None` for symbolic or missing ones).
    pub declared: Vec<Option<usize>>,
    /// The name of each symbolic dim (`None` for fixed or unnamed ones).
    pub symbols: Vec<Option<String>>,
    /// Values are drawn in `0..range` for integer inputs; `None` for floats.
    range: Option<i64>,
}

/// `dims` with every symbolic dim of `spec` bound to its size in `sizes`.
pub fn bind(spec: &InputSpec, sizes: &[usize], dims: &InputDims) -> InputDims {
    let mut dims = dims.clone();
    for (symbol, &size) in spec.symbols.iter().zip(sizes) {
        if let Some(symbol) = symbol {
            dims.insert(symbol.clone(), size);
        }
    }
    dims
}

impl InputSpec {
    /// A random value of this input, or the value `values` fixes for it.
    pub fn draw(&self, rng: &mut Rng, values: &InputValues) -> Result<Tensor> {
        match values.get(&self.name) {
            Some(fixed) => fill::constant(self, fixed),
            None => self.sample(rng),
        }
    }

    /// One random value of this input.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
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

/// Specs of `model`'s real inputs (not initializers), symbolic dims bound by `dims`.
pub fn input_specs(model: &ModelProto, dims: &InputDims) -> Result<Vec<InputSpec>> {
    let graph = Graph::new(model)?;
    let main = graph.scopes[0].graph;
    main.input
        .iter()
        .filter(|i| matches!(graph.resolve(0, i.name()), Some((0, Def::Input))))
        .map(|info| {
            let (data_type, shape, fixed, symbols) = declared(info, dims)?;
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
                symbols,
                range,
            })
        })
        .collect()
}

/// Element type, concrete shape, fixed dims and dim names of a declared input.
type Declared = (i32, Vec<usize>, Vec<Option<usize>>, Vec<Option<String>>);

/// What `info` declares, symbolic dims bound by `dims`.
fn declared(info: &ValueInfoProto, dims: &InputDims) -> Result<Declared> {
    let Some(TypeValue::TensorType(t)) = info.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(Error::invalid(format!(
            "input '{}' is not a tensor",
            info.name()
        )));
    };
    let declared = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    let fixed: Vec<Option<usize>> = declared
        .iter()
        .map(|d| match &d.value {
            Some(DimValue::DimValue(v)) if *v >= 0 => Some(*v as usize),
            _ => None,
        })
        .collect();
    let shape = declared
        .iter()
        .zip(&fixed)
        .map(|(d, fixed)| match (&d.value, fixed) {
            (_, Some(v)) => *v,
            (Some(DimValue::DimParam(name)), None) => dims.get(name).copied().unwrap_or(1),
            _ => 1,
        })
        .collect();
    let symbols = declared
        .iter()
        .zip(&fixed)
        .map(|(d, fixed)| match (&d.value, fixed) {
            (Some(DimValue::DimParam(name)), None) => Some(name.clone()),
            _ => None,
        })
        .collect();
    Ok((t.elem_type(), shape, fixed, symbols))
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
                // The table the model runs with, even one a caller could override.
                let table = graph.constant_with_defaults(node.scope, &n.input[0], true)?;
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

/// The files of `dir` whose extension is one of `extensions` (any case), in name order;
/// an error naming the folder when there is none.
fn files_in(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let io = |error| Error::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            extensions.iter().any(|x| ext.eq_ignore_ascii_case(x))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        let mut names: Vec<String> = extensions.iter().map(|x| format!(".{x}")).collect();
        let last = names.pop().unwrap_or_default();
        let names = match names.is_empty() {
            true => last,
            false => format!("{} or {last}", names.join(", ")),
        };
        return Err(Error::Config(format!("{}: no {names} file", dir.display())));
    }
    Ok(files)
}
