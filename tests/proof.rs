//! The proof never blocks and never misleads: a model tract panics on, one it cannot
//! load, a proof out of time, and the verdicts (measured, proved, failed) with their
//! exit codes and the warning a diverging output earns.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixture;
use prost::Message;
use sora_onnx::builder::{ModelBuilder, float_matrix};
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::tensor::i64_tensor;

fn sora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sora-onnx"))
        .args(args)
        .output()
        .unwrap()
}

/// Rewrites `model` (saved in `dir`) with `extra` flags; returns the run, the report
/// and whether the output was written.
fn rewrite(dir: &Path, model: &ModelProto, extra: &[&str]) -> (Output, serde_json::Value, bool) {
    let input = dir.join("in.onnx");
    std::fs::write(&input, model.encode_to_vec()).unwrap();
    let (output, report) = (dir.join("out.onnx"), dir.join("report.json"));
    let _ = std::fs::remove_file(&output);
    let args = ["rewrite", input.to_str().unwrap(), output.to_str().unwrap()];
    let report_arg = ["--report", report.to_str().unwrap(), "--min-elements", "16"];
    let run = sora(&[&args[..], &report_arg[..], extra].concat());
    let json = std::fs::read_to_string(&report)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default();
    (run, json, output.exists())
}

/// `z = f(MatMul(x [2, 64], w [64, 64]))` where `tail` adds `f` reading `y`, writing `z`.
fn matmul_then(tail: impl FnOnce(&mut ModelBuilder)) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 64]);
    b.initializer(float_matrix("w", 64, 64, 1));
    b.node("MatMul", &["x", "w"], &["y"]);
    tail(&mut b);
    b.output_f32("z");
    b.build()
}

fn stdout(run: &Output) -> String {
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn a_tract_panic_leaves_the_rewrite_written_and_unproven() {
    // tract's Gather indexes out of bounds (and panics) on an index past the axis.
    let model = matmul_then(|b| {
        b.initializer(i64_tensor("at", &[1], &[100]));
        b.node("Gather", &["y", "at"], &["z"])
            .attribute
            .push(sora_onnx::builder::attr_int("axis", 1));
    });
    let dir = tempfile::tempdir().unwrap();
    let (run, report, written) = rewrite(dir.path(), &model, &[]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    assert!(written);
    assert!(
        run.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let proof = &report["validation"];
    assert_eq!(proof["verdict"], "unproven");
    let reason = proof["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "tract could not run the original model: tract panicked: index out of bounds"
        ),
        "{reason}"
    );
    assert!(stdout(&run).contains("unproven: tract could not run"));
    // With a bound asked, the same model is written, and says so by its exit code.
    let (run, _, written) = rewrite(dir.path(), &model, &["--max-rel-error", "0.5"]);
    assert_eq!(run.status.code(), Some(3));
    assert!(written);
}

#[test]
fn a_model_tract_cannot_load_is_written_unproven_with_its_reason() {
    // scikit-learn's Scaler (ai.onnx.ml), which onnxruntime runs and tract does not.
    let model = matmul_then(|b| {
        b.import("ai.onnx.ml", 2);
        let scaler = b.node("Scaler", &["y"], &["z"]);
        scaler.domain = Some("ai.onnx.ml".into());
        scaler
            .attribute
            .push(sora_onnx::builder::attr_floats("scale", &[2.0]));
    });
    let dir = tempfile::tempdir().unwrap();
    let (run, report, written) = rewrite(dir.path(), &model, &[]);
    assert_eq!(run.status.code(), Some(0), "{}", stdout(&run));
    assert!(written);
    assert_eq!(report["validation"]["verdict"], "unproven");
    let reason = report["validation"]["reason"].as_str().unwrap();
    assert!(reason.contains("Scaler"), "{reason}");
    assert_eq!(report["tensors"].as_array().unwrap().len(), 1);
}

#[test]
fn the_proof_keeps_to_its_time_budget() {
    let dir = tempfile::tempdir().unwrap();
    let model = matmul_then(|b| {
        b.node("Relu", &["y"], &["z"]);
    });
    // No time at all: nothing runs, the rewrite is written, unproven.
    let (run, report, written) = rewrite(dir.path(), &model, &["--proof-seconds", "0"]);
    assert_eq!(run.status.code(), Some(0));
    assert!(written);
    assert_eq!(report["validation"]["verdict"], "unproven");
    let reason = report["validation"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the time budget of 0 s ran out"),
        "{reason}"
    );
    // More samples than two seconds hold: fewer run, and the report says how many
    // (two, not one: on a loaded machine loading the models takes part of the budget).
    let (run, report, _) = rewrite(
        dir.path(),
        &model,
        &["--samples", "10000000", "--proof-seconds", "2"],
    );
    assert_eq!(run.status.code(), Some(0));
    let proof = &report["validation"];
    assert_eq!(proof["verdict"], "measured");
    let ran = proof["samples"].as_u64().unwrap();
    assert!(ran > 0 && ran < 10_000_000, "{proof}");
    assert_eq!(proof["samples_planned"], 10_000_000);
    assert!(proof["seconds"].as_f64().unwrap() < 3.0, "{proof}");
    // Stopped before a run would pass the budget, or (on a loaded machine, where a run
    // can take longer than the ones before) cut short during one: either way it says
    // how many ran.
    let reason = proof["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("stopped after {ran} samples"))
            || reason.starts_with(&format!(
                "the time budget of 2 s ran out during a run, after {ran} samples"
            )),
        "{proof}"
    );
}

fn wakeword() -> (PathBuf, ModelProto) {
    let path = fixture("models/wakeword_mlp.onnx");
    let model = sora_onnx::onnx::load_model(&path).unwrap();
    (path, model)
}

#[test]
fn verdicts_say_what_was_shown() {
    let (_, model) = wakeword();
    let dir = tempfile::tempdir().unwrap();
    // No bound: measured, and the line says a bound makes it a proof.
    let (run, report, _) = rewrite(dir.path(), &model, &[]);
    assert_eq!(report["validation"]["verdict"], "measured");
    assert!(stdout(&run).contains("measured (no bound: --max-rel-error E makes it a proof)"));
    // A bound met: proved.
    let (run, report, _) = rewrite(
        dir.path(),
        &model,
        &["--bits", "8", "--max-rel-error", "0.1"],
    );
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(report["validation"]["verdict"], "proved");
    assert!(stdout(&run).contains("proved (every output within rel_l2 0.1)"));
    // A bound missed: failed, exit 1, nothing written.
    let (run, report, written) = rewrite(
        dir.path(),
        &model,
        &["--bits", "1", "--max-rel-error", "1e-6"],
    );
    assert_eq!(run.status.code(), Some(1));
    assert_eq!(report["validation"]["verdict"], "failed");
    assert!(!written);
}

#[test]
fn a_clearly_diverging_output_earns_a_warning() {
    let (_, model) = wakeword();
    let dir = tempfile::tempdir().unwrap();
    let (run, report, _) = rewrite(
        dir.path(),
        &model,
        &["--bits", "1", "--granularity", "tensor"],
    );
    let warnings = report["validation"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{report}");
    let warning = warnings[0].as_str().unwrap();
    assert!(warning.starts_with("output '"), "{warning}");
    assert!(warning.contains("diverges: relative error"), "{warning}");
    assert!(stdout(&run).contains(&format!("warning: {warning}")));
    // At 8 bits nothing diverges.
    let (_, report, _) = rewrite(dir.path(), &model, &["--bits", "8"]);
    assert!(
        report["validation"]["warnings"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
