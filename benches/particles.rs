//! Speed of the particle step alone (k-means, indexing) on minilm_l3's weights:
//! weights per second for each bit width, granularity and codebook fit (`exact`, or
//! `fast`: Lloyd), on all cores. Run with `cargo bench --bench particles` after
//! `fixtures/fetch_models.py`; arguments keep only the rows whose label, bits,
//! granularity or fit they name (`-- 4 channel`), and each row reports the best of
//! `REPEAT` runs (default 1). Where both fits ran, a second table compares their
//! squared error codebook by codebook. Other processes sharing the cores
//! stretch the wall time; the CPU seconds this process spent (`cpu s`, from
//! `/proc/self/stat` where there is one) show the work itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::real_model;
use sora_onnx::Config;
use sora_onnx::graph::Graph;
use sora_onnx::onnx::tensor::float_values;
use sora_onnx::particles::{CodebookFit, Decomposition, Granularity, Matrix, decompose_by};
use sora_onnx::plan::Plan;

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

/// A weight's name, values, shape and channel axis.
type Weight = (String, Vec<f64>, [usize; 2], usize);

fn main() {
    let (_, model) = real_model("minilm_l3");
    let graph = Graph::new(&model).unwrap();
    let plan = Plan::new(&graph, &Config::default()).unwrap();
    let weights: Vec<Weight> = plan
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
    println!("| weights | bits | granularity | fit | Mweights | seconds | Mweights/s | cpu s |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut quality = Vec::new();
    for (label, filter) in [("18 MatMul", false), ("word+position embeddings", true)] {
        let set: Vec<_> = weights
            .iter()
            .filter(|w| w.0.contains("embeddings") == filter)
            .collect();
        let count: usize = set.iter().map(|w| w.1.len()).sum();
        for bits in [2, 3, 4, 8] {
            for granularity in [Granularity::Tensor, Granularity::Channel] {
                let mut errors = Vec::new();
                for (fit, fit_name) in [(CodebookFit::Exact, "exact"), (CodebookFit::Lloyd, "fast")]
                {
                    let names = [
                        label.to_string(),
                        bits.to_string(),
                        granularity.to_string(),
                        fit_name.to_string(),
                    ];
                    if !filters
                        .iter()
                        .all(|f| names.iter().any(|n| n.contains(f.as_str())))
                    {
                        continue;
                    }
                    let mut decompositions = Vec::new();
                    let (seconds, cpu) = (0..repeat.max(1))
                        .map(|_| {
                            let (start, cpu) = (Instant::now(), cpu_seconds());
                            decompositions = set
                                .iter()
                                .map(|w| decompose_by(&matrix(w), granularity, bits, fit))
                                .collect();
                            (start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
                        })
                        .fold((f64::INFINITY, f64::INFINITY), |a, b| {
                            (a.0.min(b.0), a.1.min(b.1))
                        });
                    println!(
                        "| {label} | {bits} | {granularity} | {fit_name} | {:.2} | {seconds:.2} | {:.1} | {cpu:.2} |",
                        count as f64 / 1e6,
                        count as f64 / seconds / 1e6
                    );
                    errors.push(
                        set.iter()
                            .zip(&decompositions)
                            .flat_map(|(w, d)| codebook_errors(&matrix(w), granularity, d))
                            .collect::<Vec<f64>>(),
                    );
                }
                if let [exact, fast] = &errors[..] {
                    quality.push((label, bits, granularity, ratios(exact, fast)));
                }
            }
        }
    }
    if !quality.is_empty() {
        println!();
        println!(
            "| weights | bits | granularity | codebooks | fast/exact SSE: mean | worst | total |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (label, bits, granularity, (codebooks, mean, worst, total)) in quality {
            println!(
                "| {label} | {bits} | {granularity} | {codebooks} | {mean:.4} | {worst:.4} | {total:.4} |"
            );
        }
    }
}

/// The matrix view of a weight.
fn matrix(w: &Weight) -> Matrix<'_> {
    let (_, values, [rows, cols], channel_axis) = w;
    Matrix {
        values,
        rows: *rows,
        cols: *cols,
        channel_axis: *channel_axis,
    }
}

/// Squared error of each codebook's weights in `d`.
fn codebook_errors(matrix: &Matrix, granularity: Granularity, d: &Decomposition) -> Vec<f64> {
    let decoded = d.decoded(matrix, granularity, |x| x);
    let mut errors = vec![0.0; matrix.codebooks(granularity)];
    for (pos, (v, r)) in matrix.values.iter().zip(&decoded).enumerate() {
        errors[matrix.codebook_of(pos, granularity)] += (v - r) * (v - r);
    }
    errors
}

/// Over the codebooks with a positive exact error: their number, the mean and the
/// largest ratio of fast to exact error, and the ratio of the totals.
fn ratios(exact: &[f64], fast: &[f64]) -> (usize, f64, f64, f64) {
    let each: Vec<f64> = exact
        .iter()
        .zip(fast)
        .filter(|(e, _)| **e > 0.0)
        .map(|(e, f)| f / e)
        .collect();
    let mean = each.iter().sum::<f64>() / each.len().max(1) as f64;
    let worst = each.iter().copied().fold(0.0, f64::max);
    (
        each.len(),
        mean,
        worst,
        fast.iter().sum::<f64>() / exact.iter().sum::<f64>(),
    )
}
