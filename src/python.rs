//! The Python module `sora_onnx._native` (cargo feature `python`, built by maturin):
//! the command line and the in-memory runner of [`crate::cli`], with the GIL released
//! while they work and every panic caught. The Python package `sora_onnx` wraps it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyBytesMethods, PyDict};

use crate::cli::memory::{Captured, ModelInput, run_in_memory};
use crate::cli::{FlagKind, flags};

/// A model as Python passes it: bytes, or a path (str or os.PathLike).
fn model_input(model: &Bound<'_, PyAny>) -> PyResult<ModelInput> {
    match model.cast::<PyBytes>() {
        Ok(bytes) => Ok(ModelInput::Bytes(bytes.as_bytes().to_vec())),
        Err(_) => Ok(ModelInput::Path(model.extract::<PathBuf>()?)),
    }
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = (payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| payload.downcast_ref::<String>().cloned());
    text.unwrap_or_else(|| "panic".into())
}

/// Runs the command line `argv` (the program's name first) as the binary does, on
/// the process's stdout and stderr; returns the exit code (101 after a panic).
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| {
        catch_unwind(|| crate::cli::main(argv)).unwrap_or_else(|payload| {
            eprintln!("error: internal error: {}", panic_message(&*payload));
            101
        })
    })
}

/// Runs `command` on `models` with `args` in a temporary folder and returns a dict:
/// `code`, `usage`, `stdout`, `stderr`, `model` (bytes or None), `report` (str or
/// None), `side_data`. A panic is exit code 101 with its message on `stderr`.
#[pyfunction]
fn run<'py>(
    py: Python<'py>,
    command: String,
    models: Vec<Bound<'py, PyAny>>,
    args: Vec<String>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let models = (models.iter().map(model_input)).collect::<PyResult<Vec<_>>>()?;
    let captured = py.detach(|| {
        catch_unwind(AssertUnwindSafe(|| {
            run_in_memory(&command, models, &args, progress)
        }))
        .unwrap_or_else(|payload| Captured {
            code: 101,
            stderr: format!("error: internal error: {}\n", panic_message(&*payload)),
            ..Captured::default()
        })
    });
    let dict = PyDict::new(py);
    dict.set_item("code", captured.code)?;
    dict.set_item("usage", captured.usage)?;
    dict.set_item("stdout", captured.stdout)?;
    dict.set_item("stderr", captured.stderr)?;
    let model = captured.model.map(|m| PyBytes::new(py, &m));
    dict.set_item("model", model)?;
    dict.set_item("report", captured.report)?;
    dict.set_item("side_data", captured.side_data)?;
    Ok(dict)
}

/// The long flags of `command` as `(name, kind)` pairs, kind one of `switch`,
/// `value`, `list` (comma-separated) and `repeated`; None for an unknown command.
#[pyfunction]
fn options(command: &str) -> Option<Vec<(String, &'static str)>> {
    let kinds = flags(command)?.into_iter().map(|(name, kind)| {
        let kind = match kind {
            FlagKind::Switch => "switch",
            FlagKind::Value => "value",
            FlagKind::List => "list",
            FlagKind::Repeated => "repeated",
        };
        (name, kind)
    });
    Some(kinds.collect())
}

/// The module: `main`, `run`, `options`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(options, m)?)?;
    Ok(())
}
