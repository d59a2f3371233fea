//! The command line: exit codes, one-line errors, atomic output, the report's keys.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::fixture;
use prost::Message;
use sora_onnx::builder::ModelBuilder;

fn sora(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sora-onnx"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn wakeword() -> String {
    fixture("models/wakeword_mlp.onnx")
        .to_str()
        .unwrap()
        .to_string()
}

/// The error line on stderr, checked to be exactly one line.
fn one_line_error(out: &Output) -> String {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.starts_with("error: "), "stderr: {err}");
    err
}

#[test]
fn rewrite_writes_the_model_and_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.onnx");
    let report_path = dir.path().join("report.json");
    let out = sora(&[
        "rewrite",
        &wakeword(),
        path(&out_path),
        "--report",
        path(&report_path),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rewrote 1 weight tensors"), "{stdout}");
    assert!(stdout.contains("proof in tract"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    for key in [
        "input_bytes",
        "output_bytes",
        "bits_per_weight",
        "tensors",
        "skipped",
        "validation",
        "seconds",
    ] {
        assert!(report.get(key).is_some(), "report lacks {key}");
    }
    let tensor = &report["tensors"][0];
    for key in [
        "name",
        "shape",
        "bits",
        "granularity",
        "elements",
        "mse",
        "sqnr_db",
        "bits_per_weight",
        "bytes_before",
        "bytes_after",
    ] {
        assert!(tensor.get(key).is_some(), "tensor report lacks {key}");
    }
    assert_eq!(tensor["name"], "layer1.weight");
    assert_eq!(tensor["shape"], serde_json::json!([32, 2400]));
    let output = &report["validation"]["outputs"][0];
    for key in ["name", "max_abs", "rel_l2", "cosine", "sqnr_db"] {
        assert!(output.get(key).is_some(), "validation output lacks {key}");
    }
    let written = std::fs::metadata(&out_path).unwrap().len();
    assert_eq!(report["output_bytes"].as_u64().unwrap(), written);
    // The default stores every rewritten weight in at most half its bytes.
    assert!(report["output_bytes"].as_u64().unwrap() * 2 < report["input_bytes"].as_u64().unwrap());
    // Only the output was created: the temporary file was renamed.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn fast_fit_is_proved_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut mse = Vec::new();
    for fit in ["exact", "fast"] {
        let out_path = dir.path().join(format!("{fit}.onnx"));
        let report_path = dir.path().join(format!("{fit}.json"));
        let out = sora(&[
            "rewrite",
            &wakeword(),
            path(&out_path),
            "--fit",
            fit,
            "--bits",
            "4",
            "--report",
            path(&report_path),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("proof in tract (4 random samples, ")
                && text(&out.stdout).contains("): measured")
        );
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
        let tensor = &report["tensors"][0];
        let method = if fit == "fast" { "lloyd" } else { "exact" };
        assert_eq!(tensor["kmeans"], method);
        assert_eq!(tensor["granularity"], "channel");
        mse.push(tensor["mse"].as_f64().unwrap());
    }
    // Measured: Lloyd's 32 channel codebooks cost 2.5% more squared error.
    assert!(mse[1] >= mse[0] && mse[1] <= 1.05 * mse[0], "{mse:?}");
}

#[test]
fn refuses_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    std::fs::copy(wakeword(), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let out = sora(&["rewrite", path(&model), path(&model), "--no-validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("refusing to overwrite the input model"));
    assert_eq!(std::fs::read(&model).unwrap(), before);
}

#[test]
fn proof_failure_writes_nothing_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.onnx");
    let out = sora(&[
        "rewrite",
        &wakeword(),
        path(&out_path),
        "--bits",
        "1",
        "--max-rel-error",
        "1e-6",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("exceeds --max-rel-error"));
    assert!(!out_path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_files_get_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a model, just text\n").unwrap();
    let truncated = dir.path().join("truncated.onnx");
    let bytes = std::fs::read(wakeword()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = dir.path().join("missing.onnx");
    for bad in [&garbage, &truncated, &missing] {
        let out_path = dir.path().join("out.onnx");
        let out = sora(&["rewrite", path(bad), path(&out_path)]);
        assert_eq!(out.status.code(), Some(2));
        let err = one_line_error(&out);
        assert!(err.contains(path(bad)), "{err}");
        assert!(!out_path.exists());
    }
}

#[test]
fn bad_options_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.onnx");
    let out = sora(&["rewrite", &wakeword(), path(&out_path), "--bits", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("--bits must be 1..=8, not 9"));
    assert!(!out_path.exists());
    let out = sora(&[
        "rewrite",
        &wakeword(),
        path(&out_path),
        "--input-dim",
        "batch",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nothing_to_rewrite_writes_an_unchanged_copy() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 4]);
    b.node("Relu", &["x"], &["y"]);
    b.output_f32("y");
    let input = dir.path().join("relu.onnx");
    std::fs::write(&input, b.build().encode_to_vec()).unwrap();
    let output = dir.path().join("copy.onnx");
    let out = sora(&["rewrite", path(&input), path(&output)]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nothing to rewrite"));
    assert_eq!(
        std::fs::read(&output).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn inspect_lists_candidates_and_skips() {
    let out = sora(&["inspect", &wakeword(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["candidates"].as_array().unwrap().len(), 1);
    assert_eq!(v["candidates"][0]["name"], "layer1.weight");
    assert_eq!(v["skipped"].as_array().unwrap().len(), 2);
    assert!(v["estimated_model_bytes"].as_u64() < v["model_bytes"].as_u64());
    let out = sora(&["inspect", &wakeword()]);
    assert!(text(&out.stdout).contains("rewrite layer1.weight"));
}

#[test]
fn validate_compares_two_models() {
    let dir = tempfile::tempdir().unwrap();
    let rewritten = dir.path().join("r.onnx");
    assert!(
        sora(&[
            "rewrite",
            &wakeword(),
            path(&rewritten),
            "--no-validate",
            "-q"
        ])
        .status
        .success()
    );
    let out = sora(&["validate", &wakeword(), &wakeword(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outputs"][0]["max_abs"], 0.0);
    let out = sora(&[
        "validate",
        &wakeword(),
        path(&rewritten),
        "--max-rel-error",
        "1e-9",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("FAILED"));
}

/// A MatMul model in `dir` whose 64 x 64 weight and bias live in `weights.bin`.
fn external_model(dir: &Path) -> std::path::PathBuf {
    use sora_onnx::builder::float_matrix;
    use sora_onnx::onnx::proto::StringStringEntryProto;
    use sora_onnx::onnx::proto::tensor_proto::DataLocation;
    let mut data = Vec::new();
    let mut external = |mut t: sora_onnx::onnx::proto::TensorProto| {
        let raw = t.raw_data.take().unwrap();
        let kv = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", "weights.bin".into()),
            kv("offset", data.len().to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(DataLocation::External as i32);
        data.extend(raw);
        t
    };
    let w = external(float_matrix("w", 64, 64, 3));
    let bias = external(float_matrix("bias", 1, 64, 4));
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 64]);
    b.initializer(w);
    b.initializer(bias);
    b.node("MatMul", &["x", "w"], &["m"]);
    b.node("Add", &["m", "bias"], &["y"]);
    b.output_f32("y");
    std::fs::write(dir.join("weights.bin"), data).unwrap();
    let path = dir.join("model.onnx");
    std::fs::write(&path, b.build().encode_to_vec()).unwrap();
    path
}

#[test]
fn external_data_is_read_and_written_next_to_the_output() {
    let input_dir = tempfile::tempdir().unwrap();
    let model = external_model(input_dir.path());
    let out_dir = tempfile::tempdir().unwrap();
    // Inline: the output needs nothing from the input folder.
    let inline = out_dir.path().join("inline.onnx");
    let out = sora(&["rewrite", path(&model), path(&inline), "--bits", "8"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("proof in tract (4 random samples, ")
            && text(&out.stdout).contains("): measured")
    );
    // Side file: OUT.data next to OUT, holding the bias and the index.
    let side = out_dir.path().join("side.onnx");
    let out = sora(&[
        "rewrite",
        path(&model),
        path(&side),
        "--bits",
        "8",
        "--external-data",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out_dir.path().join("side.onnx.data").exists());
    drop(input_dir);
    // Both outputs validate against each other with the input folder gone.
    let out = sora(&["validate", path(&inline), path(&side), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outputs"][0]["max_abs"], 0.0);
}

#[test]
fn inspect_prints_the_relation_graph() {
    use sora_onnx::builder::float_matrix;
    let dir = tempfile::tempdir().unwrap();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 64]);
    b.initializer(float_matrix("w1", 64, 64, 5));
    b.initializer(float_matrix("w2", 64, 64, 5));
    b.node("MatMul", &["x", "w1"], &["a"]);
    b.node("MatMul", &["x", "w2"], &["b"]);
    b.output_f32("a");
    b.output_f32("b");
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b.build().encode_to_vec()).unwrap();
    let out = sora(&["inspect", path(&model), "--relations", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["edges"],
        serde_json::json!([{"a": "w1", "b": "w2", "relation": "identical"}])
    );
    let out = sora(&["inspect", path(&model), "--relations", "dot"]);
    assert!(text(&out.stdout).contains("n0 -- n1 [label=\"identical\"]"));
}

#[test]
fn calibration_flags_are_checked_with_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.onnx");
    let out = sora(&[
        "rewrite",
        &wakeword(),
        path(&out_path),
        "--target-bits",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains("need --calibration FILE.npz or --calibration-random N"));
    let not_npz = dir.path().join("calib.npz");
    std::fs::write(&not_npz, b"not a zip").unwrap();
    let out = sora(&[
        "rewrite",
        &wakeword(),
        path(&out_path),
        "--calibration",
        path(&not_npz),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(err.contains("calib.npz: not an .npz archive"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn sweep_writes_one_csv_row_per_point_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, svg) = (dir.path().join("curve.csv"), dir.path().join("curve.svg"));
    let out = sora(&[
        "sweep",
        &wakeword(),
        "--calibration-random",
        "2",
        "--uniform",
        "2,4",
        "--targets",
        "3,5,6",
        "--csv",
        path(&csv),
        "--plot",
        path(&svg),
        "-q",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(&csv).unwrap();
    let kinds: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["uniform", "uniform", "allocated", "allocated", "allocated"]
    );
    assert!(csv.starts_with("kind,setting,bits_per_weight,model_bytes,rel_l2,cosine\n"));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

#[test]
fn compensation_on_too_few_rows_gets_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.onnx");
    let model = wakeword();
    let base = [
        "rewrite",
        &model,
        path(&out_path),
        "--calibration-random",
        "4",
        "--min-elements",
        "0",
        "--force",
    ];
    let run = |extra: &[&str]| {
        let out = sora(&[&base[..], extra].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stderr)
    };
    // Each sample is one row; the three Gemm inputs have 2400, 32 and 32 features.
    let note = run(&["--compensate"]);
    assert!(
        note.contains(
            "note: --compensate: 3 activation(s) had fewer calibration rows than features \
             (`/flatten/Flatten_output_0`: 4 rows, 2400 features)"
        ),
        "{note}"
    );
    assert!(!run(&[]).contains("note:"));
    assert!(!run(&["--compensate", "-q"]).contains("note:"));
}

#[test]
fn compensation_refuses_an_h_too_large_before_allocating_it() {
    // One MatMul with 40,000 inputs: H = X^T X would be 40,000^2 f64 = 11.9 GiB.
    let dir = tempfile::tempdir().unwrap();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 40_000]);
    b.initializer(sora_onnx::builder::float_matrix("w", 40_000, 2, 1));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let input = dir.path().join("wide.onnx");
    std::fs::write(&input, b.build().encode_to_vec()).unwrap();
    let output = dir.path().join("out.onnx");
    let args = [
        "rewrite",
        path(&input),
        path(&output),
        "--calibration-random",
        "1",
    ];
    let out = sora(&[&args[..], &["--compensate"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(
        err.contains("X^T X of 1 activations would take 11.9 GiB (limit 8 GiB; the largest, 'x', has 40000 features)"),
        "{err}"
    );
    assert!(!output.exists());
    // Without --compensate only the means are gathered.
    assert!(sora(&args).status.success());
}

/// Rewrites `model` saved in a fresh folder with `flags`; returns the run, the input
/// and output paths (kept alive by the folder).
fn rewrite_built(
    model: &sora_onnx::onnx::proto::ModelProto,
    flags: &[&str],
) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model.encode_to_vec()).unwrap();
    let args = ["rewrite", path(&input), path(&output)];
    let out = sora(&[&args[..], flags].concat());
    (out, dir)
}

#[test]
fn a_model_of_other_domains_only_is_copied_with_exit_0() {
    // Like scikit-learn exports: ai.onnx.ml ops only, no default-domain import.
    let mut b = ModelBuilder::new(17);
    b.import("ai.onnx.ml", 1);
    b.input_f32("x", &[3, 4]);
    let n = b.node("Normalizer", &["x"], &["y"]);
    n.domain = Some("ai.onnx.ml".into());
    b.output_f32("y");
    let mut model = b.build();
    model.opset_import.retain(|o| o.domain() == "ai.onnx.ml");
    let (out, dir) = rewrite_built(&model, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to rewrite"));
    let written = std::fs::read(dir.path().join("out.onnx")).unwrap();
    assert_eq!(written, model.encode_to_vec());
    // A default-domain node without the import is still refused.
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[3, 4]);
    b.node("Relu", &["x"], &["y"]);
    b.output_f32("y");
    let mut model = b.build();
    model.opset_import.clear();
    let (out, _dir) = rewrite_built(&model, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(one_line_error(&out).contains(
        "node 'Relu_0' is in the default domain, but the model imports no version of the default ONNX domain"
    ));
}

/// `y = MatMul(x, w)` with a 64 x 64 weight of `distinct` values (and NaN at [0, 0]
/// when `nan`).
fn few_valued(distinct: usize, nan: bool) -> sora_onnx::onnx::proto::ModelProto {
    use sora_onnx::onnx::tensor::{FloatType, float_tensor};
    let mut values: Vec<f64> = (0..64 * 64).map(|i| (i % distinct) as f64 / 7.0).collect();
    if nan {
        values[0] = f64::NAN;
    }
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 64]);
    b.initializer(float_tensor("w", &[64, 64], FloatType::F32, &values));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    b.build()
}

#[test]
fn lossless_alone_searches_up_to_8_bits() {
    // 200 distinct values need 8 bits: --lossless alone finds them, --bits 4 cannot.
    let model = few_valued(200, false);
    let (out, dir) = rewrite_built(&model, &["--lossless"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rewrote 1 weight tensors"));
    assert!(
        text(&out.stdout).contains("max_abs 0.000e0"),
        "{}",
        text(&out.stdout)
    );
    drop(dir);
    let (out, _dir) = rewrite_built(&model, &["--lossless", "--bits", "4"]);
    assert!(text(&out.stdout).contains("nothing to rewrite"));
}

#[test]
fn inspect_shows_the_skips_of_the_fit_stage_as_rewrite_does() {
    let model = few_valued(16, true);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.onnx");
    std::fs::write(&input, model.encode_to_vec()).unwrap();
    let out = sora(&["inspect", path(&input), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["candidates"].as_array().unwrap().len(), 0);
    let reason = "weight 'w' holds NaN or infinite values";
    assert_eq!(v["skipped"][0]["reason"], reason);
    let (out, _dir) = rewrite_built(&model, &[]);
    assert!(text(&out.stdout).contains("nothing to rewrite"));
}

#[test]
fn qdq_upgrades_an_older_opset_and_says_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, report_path) = (dir.path().join("q.onnx"), dir.path().join("q.json"));
    let args = ["--form", "qdq", "--bits", "8", "--min-elements", "0"];
    let out = sora(
        &[
            &[
                "rewrite",
                &wakeword(),
                path(&out_path),
                "--report",
                path(&report_path),
            ][..],
            &args,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "--form qdq needs opset 21: upgraded opset 13 -> 21 (ReduceMean: 4 nodes rewritten)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("on the decoded twin: 3 DequantizeLinear folded"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["opset_upgrade"]["from"], 13);
    assert_eq!(report["opset_upgrade"]["rewritten"]["ReduceMean"], 4);
    let model = sora_onnx::onnx::load_model(&out_path).unwrap();
    assert_eq!(model.opset_import[0].version, Some(21));
    assert_eq!(model.ir_version, Some(10));

    // inspect shows the same plan: the upgrade, blocks, and qdq's bytes.
    let out = sora(&[&["inspect", &wakeword()][..], &args].concat());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("opset 13, 316022 bytes; --form qdq upgrades opset 13 -> 21 (ReduceMean: 4 nodes rewritten)"),
        "{stdout}"
    );
    let estimated: usize = (report["tensors"].as_array().unwrap().iter())
        .map(|t| t["bytes_after"].as_u64().unwrap() as usize)
        .sum();
    let listed: usize = (stdout.lines())
        .filter_map(|l| l.split("-> ~").nth(1))
        .map(|b| b.trim_end_matches(" bytes").parse::<usize>().unwrap())
        .sum();
    assert!(
        listed.abs_diff(estimated) * 20 < estimated,
        "inspect {listed} vs written {estimated}"
    );

    // A node with no opset-21 equivalent refuses the run, naming it; nothing written.
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[1, 64]);
    b.initializer(sora_onnx::builder::float_matrix("w", 64, 64, 3));
    b.node("MatMul", &["x", "w"], &["h"]);
    b.initializer(sora_onnx::onnx::tensor::float_tensor(
        "scales",
        &[2],
        sora_onnx::onnx::tensor::FloatType::F32,
        &[1.0, 2.0],
    ));
    b.node("Upsample", &["h", "scales"], &["y"]).name = Some("up".into());
    b.output_f32("y");
    let input = dir.path().join("old.onnx");
    std::fs::write(&input, b.build().encode_to_vec()).unwrap();
    let refused = dir.path().join("refused.onnx");
    let out = sora(&["rewrite", path(&input), path(&refused), "--form", "qdq"]);
    assert_eq!(out.status.code(), Some(2));
    let error = one_line_error(&out);
    assert!(
        error.contains("cannot upgrade node 'up' (Upsample) from opset 9 to 21"),
        "{error}"
    );
    assert!(!refused.exists());
}
