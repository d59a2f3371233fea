//! Helpers shared by the integration tests: fixture paths, the real-data inputs, and
//! running a model in tract.

#![allow(dead_code)]

use std::path::PathBuf;

use sora_onnx::onnx::load_model;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::runtime::Session;
use tract_onnx::prelude::*;

/// Path of a file under `fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(relative)
}

/// A real model from `fixtures/models/`; fails with how to fetch it when absent.
pub fn real_model(name: &str) -> (PathBuf, ModelProto) {
    let path = fixture(&format!("models/{name}.onnx"));
    assert!(
        path.exists(),
        "{} is missing: scripts/test.sh fetches and makes the models (fixtures/fetch_models.py, fixtures/make_int8_folded.py)",
        path.display()
    );
    let model = load_model(&path).unwrap();
    (path, model)
}

/// The tokenized evaluation sentences: (input_ids, attention_mask), each [n, 32].
pub fn sentences(file: &str) -> (Tensor, Tensor, usize) {
    #[derive(serde::Deserialize)]
    struct Sentence {
        input_ids: Vec<i64>,
        attention_mask: Vec<i64>,
    }
    #[derive(serde::Deserialize)]
    struct Set {
        seq_len: usize,
        sentences: Vec<Sentence>,
    }
    let text = std::fs::read_to_string(fixture(&format!("sentences/{file}"))).unwrap();
    let set: Set = serde_json::from_str(&text).unwrap();
    let n = set.sentences.len();
    let ids: Vec<i64> = set
        .sentences
        .iter()
        .flat_map(|s| s.input_ids.clone())
        .collect();
    let mask: Vec<i64> = set
        .sentences
        .iter()
        .flat_map(|s| s.attention_mask.clone())
        .collect();
    let shape = [n, set.seq_len];
    (
        Tensor::from_shape(&shape, &ids).unwrap(),
        Tensor::from_shape(&shape, &mask).unwrap(),
        n,
    )
}

/// The magika inputs, int32 [n, 2048], and the labels the original model gives.
pub fn magika_inputs() -> (Tensor, usize) {
    let bytes = std::fs::read(fixture("magika/inputs.u16")).unwrap();
    let values: Vec<i32> = bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as i32)
        .collect();
    let n = values.len() / 2048;
    (Tensor::from_shape(&[n, 2048], &values).unwrap(), n)
}

/// Runs `model` in tract on `inputs` and returns output `output` as f64 rows.
pub fn run(model: &ModelProto, inputs: &[Tensor], output: usize) -> Vec<Vec<f64>> {
    let facts: Vec<(DatumType, Vec<usize>)> = inputs
        .iter()
        .map(|t| (t.datum_type(), t.shape().to_vec()))
        .collect();
    let session = Session::new(model, "test", &facts).unwrap();
    let out = session.run(inputs).unwrap();
    let t = out[output].cast_to::<f64>().unwrap();
    let view = t.to_plain_array_view::<f64>().unwrap();
    let width = view.shape()[1..].iter().product::<usize>();
    view.iter()
        .copied()
        .collect::<Vec<_>>()
        .chunks(width)
        .map(<[f64]>::to_vec)
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Position of the largest value.
pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}
