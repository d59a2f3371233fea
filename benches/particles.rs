//! Speed of the particle step alone (exact k-means, indexing) on minilm_l3's weights:
//! weights per second for each bit width and granularity, on all cores. Run with
//! `cargo bench --bench particles` after `fixtures/fetch_models.py`; arguments keep only
//! the rows whose label, bits or granularity they name (`-- 4 channel`), and each row
//! reports the best of `REPEAT` runs (default 1). Other processes sharing the cores
//! stretch the wall time; the CPU seconds this process spent (`cpu s`, from
//! `/proc/self/stat` where there is one) show the work itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::real_model;
use sora_onnx::Config;
use sora_onnx::graph::Graph;
use sora_onnx::onnx::tensor::float_values;
use sora_onnx::particles::{Granularity, Matrix, decompose};
use sora_onnx::plan::plan;

/// CPU seconds (user and system) this process has spent, where Linux reports them.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the file (utime, stime), in ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

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
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let repeat: usize = std::env::var("REPEAT").map_or(1, |r| r.parse().unwrap());
    println!("{} threads", rayon::current_num_threads());
    println!("| weights | bits | granularity | Mweights | seconds | Mweights/s | cpu s |");
    println!("|---|---|---|---|---|---|---|");
    for (label, filter) in [("18 MatMul", false), ("word+position embeddings", true)] {
        let set: Vec<_> = weights
            .iter()
            .filter(|w| w.0.contains("embeddings") == filter)
            .collect();
        let count: usize = set.iter().map(|w| w.1.len()).sum();
        for bits in [2, 4, 8] {
            for granularity in [Granularity::Tensor, Granularity::Channel] {
                let names = [label.to_string(), bits.to_string(), granularity.to_string()];
                if !filters
                    .iter()
                    .all(|f| names.iter().any(|n| n.contains(f.as_str())))
                {
                    continue;
                }
                let (seconds, cpu) = (0..repeat.max(1))
                    .map(|_| {
                        let (start, cpu) = (Instant::now(), cpu_seconds());
                        for (_, values, [rows, cols], channel_axis) in &set {
                            let matrix = Matrix {
                                values,
                                rows: *rows,
                                cols: *cols,
                                channel_axis: *channel_axis,
                            };
                            std::hint::black_box(decompose(&matrix, granularity, bits));
                        }
                        (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
                    })
                    .fold((f64::INFINITY, f64::INFINITY), |a, b| {
                        (a.0.min(b.0), a.1.min(b.1))
                    });
                println!(
                    "| {label} | {bits} | {granularity} | {:.2} | {seconds:.2} | {:.1} | {cpu:.2} |",
                    count as f64 / 1e6,
                    count as f64 / seconds / 1e6
                );
            }
        }
    }
}
