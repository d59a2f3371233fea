//! Generates the ONNX protobuf types from the pinned schema in `proto/`.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so a fresh machine needs
//! nothing installed; set `PROTOC` to use another protoc. Tensor raw data is
//! `prost::bytes::Bytes`, shared rather than copied.

use std::io::{Error, Result};
use std::path::PathBuf;

fn main() -> Result<()> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path().map_err(Error::other)?,
    };
    // Tensor bytes as `Bytes`: a model decoded from a `Bytes` buffer refers to it
    // instead of copying every weight, and a cloned model shares its weights.
    prost_build::Config::new()
        .protoc_executable(protoc)
        .bytes([".onnx.TensorProto.raw_data"])
        .compile_protos(&["proto/onnx.proto"], &["proto/"])
}
