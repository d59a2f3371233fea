//! Reading and writing model files. Writes are atomic: the bytes go to a temporary
//! file in the destination folder, which is then renamed over the destination.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;
use prost::bytes::{Buf, Bytes};

use super::OUTPUT_MODE;
use super::external::{ExternalWriter, external_ref, is_external, read_external};
use super::proto::tensor_proto::DataType;
use super::proto::{GraphProto, ModelProto, TensorProto};
use super::tensor::{element_count, stored_bytes};
use crate::error::{Error, Result};

/// Reads and decodes the model at `path`; refuses a file larger than protobuf's
/// 2 GiB limit before reading it.
pub fn load_model(path: &Path) -> Result<ModelProto> {
    let size = std::fs::metadata(path)
        .map_err(|error| Error::Io {
            path: path.to_path_buf(),
            error,
        })?
        .len();
    if size > PROTOBUF_LIMIT {
        return Err(Error::NotOnnx {
            path: path.to_path_buf(),
            what: format!(
                "the file has {size} bytes, more than protobuf's 2 GiB limit (store weights as external data)"
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(|error| Error::Io {
        path: path.to_path_buf(),
        error,
    })?;
    decode_model(Bytes::from(bytes), path)
}

/// Decodes model bytes; `path` only names the source in errors. Decoded from
/// [`Bytes`], the tensors' raw data refers to that buffer instead of copying it.
pub fn decode_model(bytes: impl Buf, path: &Path) -> Result<ModelProto> {
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
    if let Some(graph) = &model.graph {
        check_tensors(graph)?;
    }
    Ok(model)
}

/// Refuses tensors whose dims are negative or overflow, or whose raw data does not
/// have the size their dims and type declare, in every graph of the model: nothing
/// later allocates from a size these checks did not confirm.
fn check_tensors(graph: &GraphProto) -> Result<()> {
    let tensors = graph.initializer.iter().chain(
        graph
            .node
            .iter()
            .flat_map(|n| &n.attribute)
            .flat_map(|a| a.t.iter().chain(&a.tensors)),
    );
    for t in tensors {
        if matches!(
            DataType::try_from(t.data_type()),
            Err(_) | Ok(DataType::Undefined)
        ) {
            return Err(Error::tensor(
                t.name(),
                format!("data type {} is not an ONNX data type", t.data_type()),
            ));
        }
        let count = element_count(t.name(), &t.dims)?;
        let raw = t.raw_data.as_deref().unwrap_or_default();
        if is_external(t) || raw.is_empty() {
            continue;
        }
        if let Some(bytes) = stored_bytes(t.data_type(), count)
            && bytes != raw.len()
        {
            return Err(Error::tensor(
                t.name(),
                format!(
                    "dims {:?} need {bytes} bytes of raw data but it holds {}",
                    t.dims,
                    raw.len()
                ),
            ));
        }
    }
    graph
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .flat_map(|a| a.g.iter().chain(&a.graphs))
        .try_for_each(check_tensors)
}

/// Whether `a` and `b` name the same file (`b` need not exist).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        p.canonicalize().ok().or_else(|| {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some(dir.canonicalize().ok()?.join(p.file_name()?))
        })
    };
    canonical(a).is_some_and(|a| Some(a) == canonical(b))
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
        .permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
        .tempfile_in(dir)
        .map_err(io_err)?;
    file.write_all(bytes).map_err(io_err)?;
    file.as_file().sync_all().map_err(io_err)?;
    file.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

/// Largest file protobuf (and so an ONNX model file) can hold.
pub const PROTOBUF_LIMIT: u64 = 2 * 1024 * 1024 * 1024 - 1;

/// Tensors of at least this many bytes go to the side file when data is external.
pub const SIDE_MIN_BYTES: usize = 1024;

/// Where tensor data goes when a model is saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataPlacement {
    /// Inside the model file, unless that would pass protobuf's 2 GiB limit; then as
    /// [`DataPlacement::Side`].
    Auto,
    /// Every tensor of at least [`SIDE_MIN_BYTES`] in one side file next to the model,
    /// named after it with `.data` appended.
    Side,
}

/// Calls `f` on every tensor of `graph` and its subgraphs: initializers and tensor
/// attributes (Constant values).
pub fn visit_tensors(
    graph: &mut GraphProto,
    f: &mut dyn FnMut(&mut TensorProto) -> Result<()>,
) -> Result<()> {
    for t in &mut graph.initializer {
        f(t)?;
    }
    for node in &mut graph.node {
        for a in &mut node.attribute {
            if let Some(t) = &mut a.t {
                f(t)?;
            }
            for t in &mut a.tensors {
                f(t)?;
            }
            if let Some(g) = &mut a.g {
                visit_tensors(g, f)?;
            }
            for g in &mut a.graphs {
                visit_tensors(g, f)?;
            }
        }
    }
    Ok(())
}

/// Bytes tensor `t` keeps in an external file (as its `length` entry declares), 0 when
/// its data is inside the model.
pub fn external_length(t: &TensorProto) -> u64 {
    let entry = t.external_data.iter().find(|e| e.key() == "length");
    if is_external(t) {
        entry.and_then(|e| e.value().parse().ok()).unwrap_or(0)
    } else {
        0
    }
}

/// Total bytes `model`'s tensors keep in external files (as their `length` entries
/// declare).
pub fn external_bytes(model: &ModelProto) -> u64 {
    fn graph_bytes(g: &GraphProto) -> u64 {
        let nodes = g.node.iter().flat_map(|n| &n.attribute).map(|a| {
            let tensors: u64 = a.t.iter().chain(&a.tensors).map(external_length).sum();
            tensors + a.g.iter().chain(&a.graphs).map(graph_bytes).sum::<u64>()
        });
        g.initializer.iter().map(external_length).sum::<u64>() + nodes.sum::<u64>()
    }
    model.graph.as_ref().map_or(0, graph_bytes)
}

/// Replaces every external tensor's reference by its bytes, read (after the checks
/// of [`external_ref`]) from `source_dir`.
fn inline(t: &mut TensorProto, source_dir: &Path) -> Result<()> {
    if is_external(t) {
        let bytes = read_external(&external_ref(t, source_dir, None)?, t.name())?;
        t.raw_data = Some(bytes.into());
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// `model` with every external tensor read into the model (for the proof, which runs
/// models from memory).
pub fn inline_external(model: &ModelProto, source_dir: &Path) -> Result<ModelProto> {
    let mut model = model.clone();
    if let Some(g) = &mut model.graph {
        visit_tensors(g, &mut |t| inline(t, source_dir))?;
    }
    Ok(model)
}

/// Saves `model` at `path` atomically, its external tensors (if any) read from
/// `source_dir`, with the data placed as `placement` asks. A side file is written and
/// renamed into place before the model that refers to it; tensors are moved one at a
/// time, so memory holds one external tensor at most.
pub fn save_model_with_data(
    mut model: ModelProto,
    path: &Path,
    source_dir: Option<&Path>,
    placement: DataPlacement,
) -> Result<()> {
    let side = placement == DataPlacement::Side
        || model.encoded_len() as u64 + external_bytes(&model) > PROTOBUF_LIMIT;
    let no_dir = || Error::invalid("the model has external data but its folder is unknown");
    let Some(graph) = model.graph.as_mut() else {
        return Err(Error::invalid("the model has no graph"));
    };
    if side {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut writer = ExternalWriter::new(path, &format!("{file_name}.data"))?;
        visit_tensors(graph, &mut |t| {
            if is_external(t) {
                inline(t, source_dir.ok_or_else(no_dir)?)?;
            }
            if t.raw_data
                .as_ref()
                .is_some_and(|raw| raw.len() >= SIDE_MIN_BYTES)
            {
                writer.take(t)?;
            }
            Ok(())
        })?;
        writer.finish()?;
    } else if external_bytes(&model) > 0 {
        let dir = source_dir.ok_or_else(no_dir)?;
        if let Some(g) = model.graph.as_mut() {
            visit_tensors(g, &mut |t| inline(t, dir))?;
        }
    }
    save_model(&model, path)
}
