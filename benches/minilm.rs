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
use sora_onnx::config::GranularityChoice;
use sora_onnx::particles::Granularity;
use sora_onnx::{Config, rewrite};

fn main() {
    let (_, model) = real_model("minilm_l3");
    let (ids, mask, n) = sentences("minilm_eval.json");
    let inputs = [ids, mask];
    let reference = run(&model, &inputs, 3);
    let threads = rayon::current_num_threads();
    println!(
        "minilm_l3: {} bytes, {n} sentences, {threads} threads",
        model.encoded_len()
    );
    println!(
        "| bits | granularity | file bytes | ratio | bits/weight | mean cosine | min cosine | rewrite s | Mweights/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
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
                ..Config::default()
            };
            let start = Instant::now();
            let out = rewrite(&model, &config).unwrap();
            let seconds = start.elapsed().as_secs_f64();
            let weights: usize = out.report.tensors.iter().map(|t| t.elements).sum();
            let embeddings = run(&out.model, &inputs, 3);
            let cosines: Vec<f64> = reference
                .iter()
                .zip(&embeddings)
                .map(|(a, b)| cosine(a, b))
                .collect();
            let mean = cosines.iter().sum::<f64>() / n as f64;
            let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "| {bits} | {label} | {} | {:.2}x | {:.2} | {mean:.4} | {min:.4} | {seconds:.2} | {:.1} |",
                out.report.output_bytes,
                out.report.input_bytes as f64 / out.report.output_bytes as f64,
                out.report.bits_per_weight,
                weights as f64 / seconds / 1e6,
            );
        }
    }
}
