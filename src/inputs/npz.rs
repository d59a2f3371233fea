//! Samples from an `.npz` file: one array per model input, named after it, with one
//! more axis in front than the input has (`x[s]` is sample `s`).

use std::fs::File;
use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::{NpzReader, ReadableElement};
use tract_onnx::prelude::*;

use super::{InputSpec, MAX_SAMPLE_FILE_BYTES};
use crate::error::{Error, Result};

/// Reads one array per input from `path` and splits it into samples along its first
/// axis, cast to the input's type.
pub(super) fn read_npz(path: &Path, specs: &[InputSpec]) -> Result<Vec<Vec<Tensor>>> {
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
