//! The `sora-onnx` binary: the command line lives in the library ([`sora_onnx::cli`]),
//! which the Python bindings call too.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(sora_onnx::cli::main(std::env::args_os()))
}
