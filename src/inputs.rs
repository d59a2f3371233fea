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
//! An `.npz` file holds one array per model input, named after it, with one more axis
//! in front than the input has: `x[s]` is sample `s`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadableElement};
use tract_onnx::prelude::*;

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
#[derive(Clone, Debug, PartialEq)]
pub enum SampleSource {
    /// An `.npz` file with one array per model input.
    Npz(PathBuf),
    /// This many seeded random samples.
    Random(usize),
}

/// Samples, each one value per model input in declaration order.
#[derive(Clone, Debug)]
pub struct Samples {
    /// Names of the model inputs fed.
    pub names: Vec<String>,
    /// The samples.
    pub samples: Vec<Vec<Tensor>>,
}

impl Samples {
    /// Loads or draws samples for `model`; `dims` binds symbolic dims and `seed`
    /// seeds random samples.
    pub fn load(
        model: &ModelProto,
        source: &SampleSource,
        dims: &InputDims,
        seed: u64,
    ) -> Result<Self> {
        let specs = input_specs(model, dims)?;
        let samples = match source {
            SampleSource::Random(0) => {
                return Err(Error::Config(
                    "--calibration-random needs at least one sample".into(),
                ));
            }
            SampleSource::Random(n) => {
                let mut rng = Rng::new(seed);
                (0..*n)
                    .map(|_| specs.iter().map(|s| s.sample(&mut rng)).collect())
                    .collect::<Result<_>>()?
            }
            SampleSource::Npz(path) => read_npz(path, &specs)?,
        };
        Ok(Samples {
            names: specs.iter().map(|s| s.name.clone()).collect(),
            samples,
        })
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
    /// Values are drawn in `0..range` for integer inputs; `None` for floats.
    range: Option<i64>,
}

impl InputSpec {
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
            let (data_type, shape, fixed) = declared(info, dims)?;
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
    dims: &InputDims,
) -> Result<(i32, Vec<usize>, Vec<Option<usize>>)> {
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

/// Reads one array per input from `path` and splits it into samples along its first
/// axis, cast to the input's type.
fn read_npz(path: &Path, specs: &[InputSpec]) -> Result<Vec<Vec<Tensor>>> {
    let fail = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let io = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_SAMPLE_FILE_BYTES {
        return Err(fail(format!(
            "{size} bytes, over the {MAX_SAMPLE_FILE_BYTES}-byte limit for calibration data"
        )));
    }
    let mut npz = NpzReader::new(File::open(path).map_err(io)?)
        .map_err(|e| fail(format!("not an .npz archive: {e}")))?;
    let stored = npz.names().map_err(|e| fail(e.to_string()))?;
    let mut columns = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = [spec.name.clone(), format!("{}.npy", spec.name)]
            .into_iter()
            .find(|n| stored.contains(n))
            .ok_or_else(|| {
                fail(format!(
                    "no array named '{}' (the model input); it has {stored:?}",
                    spec.name
                ))
            })?;
        let array =
            read_any(&mut npz, &name).map_err(|e| fail(format!("array '{}': {e}", spec.name)))?;
        if array.rank() != spec.shape.len() + 1 || array.shape()[0] == 0 {
            return Err(fail(format!(
                "array '{}' has shape {:?}; it needs one more axis than the input (rank {}), with at least one sample",
                spec.name,
                array.shape(),
                spec.shape.len()
            )));
        }
        for (axis, (&have, &want)) in array.shape()[1..].iter().zip(&spec.declared).enumerate() {
            if want.is_some_and(|want| want != have) {
                return Err(fail(format!(
                    "array '{}' has {have} on axis {} where the input declares {}",
                    spec.name,
                    axis + 1,
                    want.unwrap_or_default()
                )));
            }
        }
        let array = array
            .cast_to_dt(spec.datum)
            .map_err(|e| {
                fail(format!(
                    "array '{}' cannot be cast to {:?}: {e}",
                    spec.name, spec.datum
                ))
            })?
            .into_owned();
        columns.push(array);
    }
    let count = columns[0].shape()[0];
    if let Some(c) = columns.iter().position(|c| c.shape()[0] != count) {
        return Err(fail(format!(
            "array '{}' has {} samples and '{}' has {count}",
            specs[c].name,
            columns[c].shape()[0],
            specs[0].name
        )));
    }
    (0..count)
        .map(|s| {
            columns
                .iter()
                .map(|c| {
                    c.slice(0, s, s + 1)
                        .and_then(|t| t.into_shape(&c.shape()[1..]))
                        .map_err(|e| fail(format!("cannot split sample {s}: {e}")))
                })
                .collect()
        })
        .collect()
}

/// Reads array `name` whatever its numeric element type.
fn read_any(npz: &mut NpzReader<File>, name: &str) -> std::result::Result<Tensor, String> {
    fn read<T: ReadableElement + Datum>(npz: &mut NpzReader<File>, name: &str) -> Option<Tensor> {
        npz.by_name::<ndarray::OwnedRepr<T>, ndarray::IxDyn>(name)
            .ok()
            .map(|a: ArrayD<T>| a.into_tensor())
    }
    read::<f32>(npz, name)
        .or_else(|| read::<i64>(npz, name))
        .or_else(|| read::<i32>(npz, name))
        .or_else(|| read::<f64>(npz, name))
        .or_else(|| read::<bool>(npz, name))
        .or_else(|| read::<u8>(npz, name))
        .or_else(|| read::<i8>(npz, name))
        .or_else(|| read::<u16>(npz, name))
        .or_else(|| read::<i16>(npz, name))
        .or_else(|| read::<u32>(npz, name))
        .or_else(|| read::<u64>(npz, name))
        .ok_or_else(|| "not a readable array of a numeric or bool type".to_string())
}
