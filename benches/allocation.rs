//! Calibrated bit allocation on real models: the figures the README quotes for
//! `--target-bits`, bias correction, the presets and `--auto`.
//!
//! minilm_l3 (MatMul/Gemm weights only) is calibrated on fixtures/sentences/
//! minilm_calib.npz (1024 sentences packed into 546 windows) and scored by the mean cosine
//! of the sentence embedding over the 200 disjoint evaluation sentences. magika is
//! calibrated on its first 40 inputs (fixtures/magika/calib.npz) and scored on the
//! other 80: top-1 agreement with the original and mean cosine of the scores. All runs
//! in tract. Run with `cargo bench --bench allocation` after `fixtures/fetch_models.py`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{argmax, cosine, fixture, magika_inputs, real_model, run, sentences};
use sora_onnx::calibrate::{Calibrated, Sensitivity, budget, calibrate};
use sora_onnx::graph::Graph;
use sora_onnx::inputs::{SampleSource, Samples};
use sora_onnx::job::smallest_passing;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::plan::Plan;
use sora_onnx::prove::Verdict;
use sora_onnx::rewrite::{Rewritten, rewrite_plan};
use sora_onnx::rules::Select;
use sora_onnx::{Config, ProofConfig, validate};

/// magika's output, a softmax written as Exp/Div.
const MAGIKA_OUTPUT: &str = "target_label";

/// How a rewritten model is scored: (mean cosine, top-1 agreement or min cosine).
type Score<'a> = Box<dyn Fn(&ModelProto) -> (f64, f64) + 'a>;

fn row(label: &str, out: &Rewritten, score: &Score, seconds: f64) {
    let (mean, other) = score(&out.model);
    println!(
        "| {label} | {} | {:.2} | {mean:.4} | {other:.4} | {seconds:.1} |",
        out.report.output_bytes, out.report.bits_per_weight,
    );
}

/// Calibrates `model` under `config` on the samples in `npz`, measuring sensitivity on
/// 8 of them, on `outputs` (empty: the default).
fn calibrated(model: &ModelProto, config: &Config, npz: &str, outputs: &[&str]) -> Calibrated {
    let source = SampleSource::Npz(fixture(npz));
    let samples = Samples::load(model, &source, ProofConfig::default().feeding(), 0).unwrap();
    let start = Instant::now();
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, config).unwrap();
    let sensitivity = Sensitivity {
        samples: 8,
        outputs: outputs.iter().map(|o| o.to_string()).collect(),
        ..Sensitivity::default()
    };
    let c = calibrate(&graph, &plan, config, samples, &sensitivity).unwrap();
    println!(
        "calibration: {} samples, {} runs, {:.1} s",
        c.samples.samples.len(),
        c.runs,
        start.elapsed().as_secs_f64()
    );
    c
}

/// `model` rewritten under `config`, with what `calibrated` measured if given.
fn rewrite_calibrated(
    model: &ModelProto,
    config: &Config,
    calibrated: Option<&Calibrated>,
) -> Rewritten {
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, config).unwrap();
    rewrite_plan(&graph, &plan, config, calibrated.map(Calibrated::measured)).unwrap()
}

/// `model` rewritten to `target` bits per weight from `calibrated`'s curves.
fn rewrite_to_bits(
    model: &ModelProto,
    config: &Config,
    calibrated: &Calibrated,
    target: f64,
) -> Rewritten {
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, config).unwrap();
    budget::rewrite_to_bits(&graph, &plan, config, calibrated, target).unwrap()
}

/// Every setting of the README table for one model.
fn table(model: &ModelProto, config: &Config, calibrated: &Calibrated, score: &Score) {
    println!("| settings | file bytes | bits/weight | mean cosine | 2nd | seconds |");
    println!("|---|---|---|---|---|---|");
    let corrected = Config {
        bias_correction: true,
        ..config.clone()
    };
    for bits in [3, 4] {
        let plain = Config {
            bits,
            ..config.clone()
        };
        let start = Instant::now();
        let out = rewrite_calibrated(model, &plain, None);
        row(
            &format!("--bits {bits}"),
            &out,
            score,
            start.elapsed().as_secs_f64(),
        );
        let with = Config {
            bits,
            ..corrected.clone()
        };
        let start = Instant::now();
        let out = rewrite_calibrated(model, &with, Some(calibrated));
        let seconds = start.elapsed().as_secs_f64();
        row(
            &format!("--bits {bits}, bias correction"),
            &out,
            score,
            seconds,
        );
        // The allocator at the size uniform bits reached.
        let target = (out.report.bits_per_weight * 100.0).floor() / 100.0;
        let start = Instant::now();
        let out = rewrite_to_bits(model, &corrected, calibrated, target);
        let seconds = start.elapsed().as_secs_f64();
        row(&format!("--target-bits {target}"), &out, score, seconds);
    }
    for target in [3.0, 4.0] {
        let start = Instant::now();
        let out = rewrite_to_bits(model, &corrected, calibrated, target);
        let seconds = start.elapsed().as_secs_f64();
        row(&format!("--target-bits {target}"), &out, score, seconds);
        let out = rewrite_to_bits(model, config, calibrated, target);
        row(
            &format!("--target-bits {target} --no-bias-correction"),
            &out,
            score,
            seconds,
        );
    }
}

/// `--auto` against the smallest uniform bits whose proof passes the same bound.
fn auto(model: &ModelProto, config: &Config, calibrated: &Calibrated, bound: f64) {
    let proof = ProofConfig {
        max_rel_error: Some(bound),
        ..ProofConfig::default()
    };
    let config = Config {
        bias_correction: true,
        ..config.clone()
    };
    let uniform = (1..=8).find_map(|bits| {
        let c = Config {
            bits,
            ..config.clone()
        };
        let out = rewrite_calibrated(model, &c, Some(calibrated));
        let v = validate(model, &out.model, &proof).unwrap();
        (v.verdict == Verdict::Proved).then_some((bits, out.report.output_bytes))
    });
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, &config).unwrap();
    let (out, v, proofs) = smallest_passing(&graph, &plan, &config, calibrated, &proof).unwrap();
    let worst = v.outputs.iter().map(|o| o.rel_l2).fold(0.0, f64::max);
    println!(
        "--max-rel-error {bound} --auto: {} bytes, {:.2} bits/weight, worst rel_l2 {worst:.4}, {proofs} proofs; smallest uniform that passes: {uniform:?} (bits, bytes)",
        out.report.output_bytes, out.report.bits_per_weight
    );
}

fn main() {
    let matmuls = Config {
        select: Select {
            ops: vec!["MatMul".into(), "Gemm".into()],
            ..Select::default()
        },
        ..Config::default()
    };

    let (_, minilm) = real_model("minilm_l3");
    let (ids, mask, n) = sentences("minilm_eval.json");
    let inputs = [ids, mask];
    let reference = run(&minilm, &inputs, 3);
    let minilm_score: Score = Box::new(|m: &ModelProto| {
        let cosines: Vec<f64> = reference
            .iter()
            .zip(&run(m, &inputs, 3))
            .map(|(a, b)| cosine(a, b))
            .collect();
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        (mean, cosines.iter().copied().fold(f64::INFINITY, f64::min))
    });
    println!("\nminilm_l3, MatMul/Gemm weights, {n} evaluation sentences (2nd: min cosine)");
    let c = calibrated(&minilm, &matmuls, "sentences/minilm_calib.npz", &[]);
    table(&minilm, &matmuls, &c, &minilm_score);
    auto(&minilm, &matmuls, &c, 0.1);
    // The presets, as `--preset quality|small --calibration minilm_calib.npz` run them.
    let quality = Config {
        bias_correction: true,
        ..matmuls.clone()
    };
    let start = Instant::now();
    let out = rewrite_to_bits(&minilm, &quality, &c, 4.0);
    row(
        "--preset quality",
        &out,
        &minilm_score,
        start.elapsed().as_secs_f64(),
    );
    let small = Config {
        compensate: true,
        ..quality
    };
    let start = Instant::now();
    let compensated = calibrated(&minilm, &small, "sentences/minilm_calib.npz", &[]);
    let out = rewrite_to_bits(&minilm, &small, &compensated, 3.0);
    row(
        "--preset small (calibration included)",
        &out,
        &minilm_score,
        start.elapsed().as_secs_f64(),
    );

    let (_, magika) = real_model("magika");
    let (bytes, count) = magika_inputs();
    let held_out = bytes.slice(0, 40, count).unwrap();
    let eval = [held_out];
    let reference = run(&magika, &eval, 0);
    let magika_score: Score = Box::new(|m: &ModelProto| {
        let out = run(m, &eval, 0);
        let agree = reference
            .iter()
            .zip(&out)
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        let mean = reference
            .iter()
            .zip(&out)
            .map(|(a, b)| cosine(a, b))
            .sum::<f64>()
            / out.len() as f64;
        (mean, agree as f64 / out.len() as f64)
    });
    println!(
        "\nmagika, all rewritable weights, {} held-out inputs (2nd: top-1 agreement)",
        count - 40
    );
    let all = Config::default();
    let c = calibrated(&magika, &all, "magika/calib.npz", &[]);
    table(&magika, &all, &c, &magika_score);
    // Sensitivity is measured on the logits before magika's softmax; measured on the
    // softmax itself, its saturated probabilities hide most weight errors:
    let saturated = Config {
        bias_correction: true,
        ..all
    };
    let c = calibrated(&magika, &saturated, "magika/calib.npz", &[MAGIKA_OUTPUT]);
    for target in [3.0, 4.0] {
        let start = Instant::now();
        let out = rewrite_to_bits(&magika, &saturated, &c, target);
        let label = format!("--target-bits {target} --sensitivity-output {MAGIKA_OUTPUT}");
        row(&label, &out, &magika_score, start.elapsed().as_secs_f64());
    }
}
