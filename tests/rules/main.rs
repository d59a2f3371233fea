//! One module per rule: a small graph in, its rewrite checked in tract and dumped as
//! text (snapshots named after the rule), and the rule's decisions (the patch, the
//! linear view, every skip reason) asserted as values.

mod conv;
mod convtranspose;
mod einsum;
mod gather;
mod gemm;
mod matmul;
mod other;
mod recurrent;

use sora_onnx::builder::{ModelBuilder, pseudo_random};
use sora_onnx::config::GranularityChoice;
use sora_onnx::graph::Graph;
use sora_onnx::onnx::proto::{ModelProto, TensorProto};
use sora_onnx::particles::Granularity;
use sora_onnx::plan::Plan;
use sora_onnx::rules::{Select, SkipReason};
use sora_onnx::{Config, ProofConfig, Rewritten, Validation, validate};

/// `bits` at a fixed `granularity`, for weights of 16 elements and more.
fn config(bits: u32, granularity: Granularity) -> Config {
    Config {
        bits,
        granularity: GranularityChoice::Fixed(granularity),
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    }
}

/// A matrix of `rows x cols` values drawn from only `distinct` values, so a codebook
/// of that many particles holds it exactly.
fn few_values(rows: usize, cols: usize, distinct: usize, seed: u64) -> Vec<f64> {
    pseudo_random(rows * cols, seed)
        .into_iter()
        .map(|v| ((v + 1.0) * distinct as f64 / 2.0).floor() / distinct as f64 - 0.5)
        .collect()
}

/// The proof of `rewritten` against `original` on random inputs.
fn prove(original: &ModelProto, rewritten: &Rewritten) -> Validation {
    validate(original, &rewritten.model, &ProofConfig::default()).unwrap()
}

/// `y = MatMul(x [3, rows], w)`.
fn matmul_model(weight: TensorProto) -> ModelProto {
    let rows = weight.dims[0] as usize;
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[3, rows]);
    b.initializer(weight);
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    b.build()
}

/// Calls `f` with the plan of `model` under `config`.
fn with_plan<T>(model: &ModelProto, config: &Config, f: impl FnOnce(&Plan) -> T) -> T {
    let graph = Graph::new(model).unwrap();
    f(&Plan::new(&graph, config).unwrap())
}

/// The linear view of the first reader of every planned weight of `model`, by name.
fn linears(model: &ModelProto, config: &Config) -> Vec<(String, Option<String>)> {
    with_plan(model, config, |plan| {
        (plan.weights.iter())
            .map(|w| {
                (
                    w.name().to_string(),
                    w.first().linear.map(|l| format!("{l:?}")),
                )
            })
            .collect()
    })
}

/// The skip reasons of the plan of `model` under `config`, by node.
fn skips(model: &ModelProto, config: &Config) -> Vec<(String, SkipReason)> {
    with_plan(model, config, |plan| {
        (plan.skipped.iter())
            .map(|s| (s.node.clone(), s.reason.clone()))
            .collect()
    })
}
