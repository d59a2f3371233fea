//! Tensor data stored outside the model file (`data_location = EXTERNAL`), read and
//! written without ever leaving the model's folder.
//!
//! Reading: `location` must be a relative path with no `..` or root, every component
//! below the folder must be a plain directory or file (no symlinks), the file must have
//! exactly one hard link, and `offset + length` must lie inside it and match the
//! tensor's declared size. The file is opened without following symlinks and only the
//! tensor's bytes are read, one tensor at a time. Writing goes to a temporary file in
//! the destination folder that is renamed into place, and refuses a destination that
//! is a symlink.

use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::proto::tensor_proto::DataLocation;
use super::proto::{StringStringEntryProto, TensorProto};
use crate::error::{Error, Result};

/// Where one tensor's bytes are, after the location passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalRef {
    /// The file, inside the model's folder.
    pub path: PathBuf,
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

fn entry<'a>(t: &'a TensorProto, key: &str) -> Option<&'a str> {
    t.external_data
        .iter()
        .find(|e| e.key() == key)
        .map(|e| e.value())
}

/// Parses and checks the external reference of `t` against the model folder `dir`.
/// With `expected`, the length must be exactly that many bytes (the tensor's dims
/// times its element size); without, it comes from the `length` entry or runs to the
/// end of the file. Nothing outside `dir` is opened or even stat'ed beyond the path
/// components below it.
pub fn external_ref(t: &TensorProto, dir: &Path, expected: Option<u64>) -> Result<ExternalRef> {
    let name = t.name();
    let bad = |what: String| Error::tensor(name, what);
    let location =
        entry(t, "location").ok_or_else(|| bad("external data has no location".into()))?;
    let relative = Path::new(location);
    let escapes = location.is_empty()
        || location.contains('\0')
        || relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(bad(format!(
            "external data location '{location}' is not a plain relative path inside the model's folder"
        )));
    }
    let number = |key: &str| -> Result<Option<u64>> {
        entry(t, key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("external data {key} '{v}' is not a byte count")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let declared = number("length")?;
    if let (Some(length), Some(expected)) = (declared, expected)
        && length != expected
    {
        return Err(bad(format!(
            "external data length {length} does not match the {expected} bytes its dims and type need"
        )));
    }
    let mut path = dir.to_path_buf();
    for component in relative.components() {
        if let Component::Normal(part) = component {
            path.push(part);
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| bad(format!("external data file '{location}': {e}")))?;
            if meta.file_type().is_symlink() {
                return Err(bad(format!(
                    "external data path '{location}' goes through a symlink"
                )));
            }
        }
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| bad(format!("external data file '{location}': {e}")))?;
    if !meta.is_file() {
        return Err(bad(format!(
            "external data '{location}' is not a regular file"
        )));
    }
    if meta.nlink() != 1 {
        return Err(bad(format!(
            "external data file '{location}' has {} hard links",
            meta.nlink()
        )));
    }
    let length = declared
        .or(expected)
        .unwrap_or(meta.len().saturating_sub(offset));
    let end = offset.checked_add(length).filter(|&end| end <= meta.len());
    if end.is_none() {
        return Err(bad(format!(
            "external data bytes {offset}..{offset}+{length} lie outside '{location}' ({} bytes)",
            meta.len()
        )));
    }
    Ok(ExternalRef {
        path,
        offset,
        length,
    })
}

/// Reads the bytes an [`ExternalRef`] names, opening the file without following a
/// symlink (in case one appeared since the checks).
pub fn read_external(r: &ExternalRef, tensor: &str) -> Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&r.path)
        .map_err(|e| Error::tensor(tensor, format!("external data {}: {e}", r.path.display())))?;
    let mut bytes = vec![0u8; r.length as usize];
    file.read_exact_at(&mut bytes, r.offset)
        .map_err(|e| Error::tensor(tensor, format!("external data {}: {e}", r.path.display())))?;
    Ok(bytes)
}

/// Whether the tensor keeps its data in an external file.
pub fn is_external(t: &TensorProto) -> bool {
    t.data_location() == DataLocation::External
}

/// Collects tensor bytes into one side file and points tensors at it.
#[derive(Debug)]
pub struct ExternalWriter {
    location: String,
    file: tempfile::NamedTempFile,
    written: u64,
    target: PathBuf,
}

impl ExternalWriter {
    /// A writer for the side file `location` (a bare file name) next to the model at
    /// `model_path`.
    pub fn new(model_path: &Path, location: &str) -> Result<Self> {
        let dir = model_dir(model_path);
        let target = dir.join(location);
        let io_err = |error| Error::Io {
            path: target.clone(),
            error,
        };
        let file = tempfile::Builder::new()
            .prefix(".sora-onnx-")
            .suffix(".data.tmp")
            .permissions(std::fs::Permissions::from_mode(super::OUTPUT_MODE))
            .tempfile_in(&dir)
            .map_err(io_err)?;
        Ok(ExternalWriter {
            location: location.to_string(),
            file,
            written: 0,
            target,
        })
    }

    /// Moves `t`'s raw data into the side file (aligned to 64 bytes) and makes `t`
    /// refer to it.
    pub fn take(&mut self, t: &mut TensorProto) -> Result<()> {
        let Some(raw) = t.raw_data.take() else {
            return Ok(());
        };
        let padding = self.written.next_multiple_of(64) - self.written;
        let io_err = |error| Error::Io {
            path: self.target.clone(),
            error,
        };
        self.file
            .write_all(&vec![0u8; padding as usize])
            .map_err(io_err)?;
        self.file.write_all(&raw).map_err(io_err)?;
        let offset = self.written + padding;
        self.written = offset + raw.len() as u64;
        let kv = |key: &str, value: String| StringStringEntryProto {
            key: Some(key.to_string()),
            value: Some(value),
        };
        t.external_data = vec![
            kv("location", self.location.clone()),
            kv("offset", offset.to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        Ok(())
    }

    /// Flushes the side file and renames it into place; refuses to replace a symlink.
    pub fn finish(self) -> Result<()> {
        let io_err = |error| Error::Io {
            path: self.target.clone(),
            error,
        };
        if std::fs::symlink_metadata(&self.target).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::Io {
                path: self.target.clone(),
                error: std::io::Error::other("is a symlink; refusing to replace it"),
            });
        }
        self.file.as_file().sync_all().map_err(io_err)?;
        self.file
            .persist(&self.target)
            .map_err(|e| io_err(e.error))?;
        Ok(())
    }
}

/// The folder external data locations of the model at `model_path` resolve in.
pub fn model_dir(model_path: &Path) -> PathBuf {
    match model_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
