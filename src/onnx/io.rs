//! Reading and writing model files. Writes are atomic: the bytes go to a temporary
//! file in the destination folder, which is then renamed over the destination.

use std::io::Write;
use std::path::Path;

use prost::Message;

use super::proto::ModelProto;
use crate::error::{Error, Result};

/// Reads and decodes the model at `path`.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        error,
    })?;
    decode_model(&bytes, path)
}

/// Decodes model bytes; `path` only names the source in errors.
pub fn decode_model(bytes: &[u8], path: &Path) -> Result<ModelProto> {
    let not_onnx = |what: String| Error::NotOnnx {
        path: path.to_path_buf(),
        what,
    };
    let model = ModelProto::decode(bytes)
        .map_err(|e| not_onnx(format!("protobuf decoding failed ({e})")))?;
    if model.graph.is_none() {
        return Err(not_onnx("the file decodes but holds no graph".into()));
    }
    if model.ir_version() <= 0 {
        return Err(not_onnx("the file decodes but has no IR version".into()));
    }
    Ok(model)
}

/// Encodes `model` and writes it to `path` atomically (see [`write_atomic`]).
pub fn save_model(model: &ModelProto, path: &Path) -> Result<()> {
    write_atomic(path, &model.encode_to_vec())
}

/// Writes `bytes` to `path` atomically: they go to a temporary file in the same
/// folder, which is then renamed over `path`, so a reader sees either the old file or
/// the complete new one, never a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".sora-onnx-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.as_file().sync_all().map_err(io_err)?;
    file.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}
