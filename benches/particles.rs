//! Speed of the particle step alone (exact k-means, indexing) on minilm_l3's weights:
//! weights per second for each bit width and granularity, on all cores. Run with
//! `cargo bench --bench particles` after `fixtures/fetch_models.py`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::real_model;
use sora_onnx::Config;
use sora_onnx::graph::Graph;
use sora_onnx::onnx::tensor::float_values;
use sora_onnx::particles::{Granularity, Matrix, decompose};
use sora_onnx::plan::plan;

fn main() {
    let (_, model) = real_model("minilm_l3");
    let graph = Graph::new(&model).unwrap();
    let plan = plan(&graph, &Config::default());
    let weights: Vec<(String, Vec<f64>, [usize; 2], usize)> = plan
        .weights
        .iter()
        .map(|w| {
            let p = w.first();
            (
                p.weight.name.to_string(),
                float_values(p.weight.tensor, None).unwrap(),
                p.shape,
                p.channel_axis,
            )
        })
        .collect();
    println!("{} threads", rayon::current_num_threads());
    println!("| weights | bits | granularity | Mweights | seconds | Mweights/s |");
    println!("|---|---|---|---|---|---|");
    for (label, filter) in [("18 MatMul", false), ("word+position embeddings", true)] {
        let set: Vec<_> = weights
            .iter()
            .filter(|w| w.0.contains("embeddings") == filter)
            .collect();
        let count: usize = set.iter().map(|w| w.1.len()).sum();
        for bits in [2, 4, 8] {
            for granularity in [Granularity::Tensor, Granularity::Channel] {
                let start = Instant::now();
                for (_, values, [rows, cols], channel_axis) in &set {
                    let matrix = Matrix {
                        values,
                        rows: *rows,
                        cols: *cols,
                        channel_axis: *channel_axis,
                    };
                    std::hint::black_box(decompose(&matrix, granularity, bits));
                }
                let seconds = start.elapsed().as_secs_f64();
                println!(
                    "| {label} | {bits} | {granularity} | {:.2} | {seconds:.2} | {:.1} |",
                    count as f64 / 1e6,
                    count as f64 / seconds / 1e6
                );
            }
        }
    }
}
