//! Generates the ONNX protobuf types from the pinned schema in `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs
//! nothing installed; set `PROTOC` to use another protoc.

use std::io::{Error, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path().map_err(Error::other)?,
    };
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&["proto/onnx.proto"], &["proto/"])
}
