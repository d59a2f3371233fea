//! Fuzz target: any bytes through load, inspect and rewrite (all ops, small weights
//! included) must give a model or an error, never a panic. Seeds: tests/hostile/*.onnx
//! and fixtures/models/wakeword_mlp.onnx.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sora_onnx::{Config, inspect, rewrite};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = sora_onnx::onnx::decode_model(data, Path::new("fuzz.onnx")) else {
        return;
    };
    let config = Config {
        min_elements: 0,
        ..Config::default()
    };
    let _ = inspect(&model, &config);
    let _ = rewrite(&model, &config);
});
