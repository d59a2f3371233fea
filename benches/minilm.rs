//! Size, quality and speed of the rewrite on minilm_l3 (paraphrase-MiniLM-L3-v2) at
//! several bit widths and both granularities: the figures the README quotes.
//!
//! Quality is the mean cosine of the sentence embedding (output "461") between the
//! original and the rewritten model over the 200 evaluation sentences in
//! fixtures/sentences, both run in tract. Run with `cargo bench --bench minilm`
//! after `fixtures/fetch_models.py`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{cosine, real_model, run, sentences};
use prost::Message;
use sora_onnx::config::{CodebookType, GranularityChoice, Share};
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::particles::Granularity;
use sora_onnx::rules::Select;
use sora_onnx::{Config, rewrite};
use tract_onnx::prelude::Tensor;

/// Rewrites minilm_l3 with `config` and prints one table row.
fn row(
    label: &str,
    config: &Config,
    model: &ModelProto,
    inputs: &[Tensor],
    reference: &[Vec<f64>],
) {
    let start = Instant::now();
    let out = rewrite(model, config).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let weights: usize = out.report.tensors.iter().map(|t| t.elements).sum();
    let embeddings = run(&out.model, inputs, 3);
    let cosines: Vec<f64> = reference
        .iter()
        .zip(&embeddings)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "| {label} | {} | {:.2}x | {:.2} | {mean:.4} | {min:.4} | {seconds:.2} | {:.1} |",
        out.report.output_bytes,
        out.report.input_bytes as f64 / out.report.output_bytes as f64,
        out.report.bits_per_weight,
        weights as f64 / seconds / 1e6,
    );
}

fn main() {
    let (_, model) = real_model("minilm_l3");
    let (ids, mask, n) = sentences("minilm_eval.json");
    let inputs = [ids, mask];
    let reference = run(&model, &inputs, 3);
    println!(
        "minilm_l3: {} bytes, {n} sentences, {} threads",
        model.encoded_len(),
        rayon::current_num_threads()
    );
    let header = "| settings | file bytes | ratio | bits/weight | mean cosine | min cosine | rewrite s | Mweights/s |\n|---|---|---|---|---|---|---|---|";
    let matmuls = Config {
        select: Select {
            ops: vec!["MatMul".into()],
            ..Select::default()
        },
        ..Config::default()
    };
    println!("\nMatMul weights only (--ops MatMul):\n{header}");
    let choices = [
        ("auto", GranularityChoice::Auto),
        ("tensor", GranularityChoice::Fixed(Granularity::Tensor)),
        ("channel", GranularityChoice::Fixed(Granularity::Channel)),
    ];
    for (label, granularity) in choices {
        for bits in [2, 3, 4, 5, 8] {
            let config = Config {
                bits,
                granularity,
                ..matmuls.clone()
            };
            row(
                &format!("--bits {bits} --granularity {label}"),
                &config,
                &model,
                &inputs,
                &reference,
            );
        }
    }
    let forms: Vec<(&str, Config)> = vec![
        (
            "--bits 4 --codebook-type f32",
            Config {
                codebook_type: CodebookType::F32,
                ..matmuls.clone()
            },
        ),
        (
            "--bits 4 --granularity block:128",
            Config {
                granularity: GranularityChoice::Fixed(Granularity::Block(128)),
                ..matmuls.clone()
            },
        ),
        (
            "--bits 4 --granularity tensor --outliers 0.005",
            Config {
                granularity: GranularityChoice::Fixed(Granularity::Tensor),
                outliers: 0.005,
                ..matmuls.clone()
            },
        ),
        (
            "--bits 4 --granularity tensor --outliers 0.01",
            Config {
                granularity: GranularityChoice::Fixed(Granularity::Tensor),
                outliers: 0.01,
                ..matmuls.clone()
            },
        ),
        (
            "--bits 8 --dim 2",
            Config {
                bits: 8,
                dim: 2,
                ..matmuls.clone()
            },
        ),
        (
            "--bits 8 --dim 4 --stages 2",
            Config {
                bits: 8,
                dim: 4,
                stages: 2,
                ..matmuls.clone()
            },
        ),
        (
            "--bits 2 --stages 2",
            Config {
                bits: 2,
                stages: 2,
                ..matmuls.clone()
            },
        ),
    ];
    println!("\nOther forms, MatMul weights only:\n{header}");
    for (label, config) in &forms {
        row(label, config, &model, &inputs, &reference);
    }
    println!("\nWhole file (MatMul, Gemm, Gather, Conv):\n{header}");
    for bits in [3, 4, 5, 6] {
        row(
            &format!("--bits {bits}"),
            &Config {
                bits,
                ..Config::default()
            },
            &model,
            &inputs,
            &reference,
        );
    }
    println!("\nSharing codebooks between alike weights, MatMul weights only:\n{header}");
    let per_tensor = GranularityChoice::Fixed(Granularity::Tensor);
    let sharing: Vec<(&str, Config)> = vec![
        ("--share identical (default)", matmuls.clone()),
        (
            "--share alike --alike-error 0.1",
            Config {
                share: Share::Alike,
                alike_error: 0.1,
                ..matmuls.clone()
            },
        ),
        (
            "--share alike --alike-error 0.2",
            Config {
                share: Share::Alike,
                alike_error: 0.2,
                ..matmuls.clone()
            },
        ),
        (
            "--granularity tensor",
            Config {
                granularity: per_tensor,
                ..matmuls.clone()
            },
        ),
        (
            "--granularity tensor --share alike --alike-error 0.05",
            Config {
                granularity: per_tensor,
                share: Share::Alike,
                alike_error: 0.05,
                ..matmuls.clone()
            },
        ),
    ];
    for (label, config) in &sharing {
        row(label, config, &model, &inputs, &reference);
    }
}
