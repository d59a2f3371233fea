//! Crafted models from strangers: each must be refused by `sora-onnx rewrite` with one
//! line naming the file and the tensor or node, exit code 2, no output file, and
//! nothing outside the model's folder opened. The corpus is built here, in a temporary
//! folder per case; `hostile_corpus_writes_seeds` also keeps the files in
//! tests/hostile/ as seeds for the fuzz target.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use sora_onnx::builder::{ModelBuilder, attr_graph, float_matrix};
use sora_onnx::onnx::proto::tensor_proto::DataLocation;
use sora_onnx::onnx::proto::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};

/// A model reading the weight `w` (given) through a MatMul.
fn matmul_with(w: TensorProto) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 64]);
    b.initializer(w);
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    b.build()
}

/// A 64 x 64 float weight whose data lives in `location` at `offset`.
fn external_weight(location: &str, offset: &str) -> TensorProto {
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let mut t = float_matrix("w", 64, 64, 1);
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![
        kv("location", location),
        kv("offset", offset),
        kv("length", "16384"),
    ];
    t
}

/// Writes a file of `n` bytes.
fn bytes_file(path: &Path, n: usize) {
    std::fs::write(path, vec![7u8; n]).unwrap();
}

/// One hostile case: how to lay it out in `dir` (returning the model path) and the
/// text the error line must contain.
struct Case {
    name: &'static str,
    setup: fn(&Path, &Path) -> PathBuf,
    expected: &'static str,
}

fn save(dir: &Path, model: &ModelProto) -> PathBuf {
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

/// `depth` If nodes, each holding the next in its then-branch.
fn nested(depth: usize) -> GraphProto {
    let mut g = ModelBuilder::new(17).passthrough_graph("leaf", "x");
    for _ in 0..depth {
        let mut b = ModelBuilder::new(17);
        let node = b.node("If", &["cond"], &["y"]);
        node.attribute.push(attr_graph("then_branch", g));
        let leaf = ModelBuilder::new(17).passthrough_graph("leaf", "x");
        node.attribute.push(attr_graph("else_branch", leaf));
        b.output_f32("y");
        g = b.build_graph("level");
    }
    g
}

const CASES: &[Case] = &[
    Case {
        name: "garbage",
        setup: |dir, _| {
            let p = dir.join("model.onnx");
            std::fs::write(&p, b"\xff\xff\xff definitely not protobuf").unwrap();
            p
        },
        expected: "not an ONNX model: protobuf decoding failed",
    },
    Case {
        name: "truncated",
        setup: |dir, _| {
            let bytes = matmul_with(float_matrix("w", 64, 64, 1)).encode_to_vec();
            let p = dir.join("model.onnx");
            std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
            p
        },
        expected: "not an ONNX model",
    },
    Case {
        name: "no_graph",
        setup: |dir, _| {
            let model = ModelProto {
                ir_version: Some(8),
                ..Default::default()
            };
            save(dir, &model)
        },
        expected: "holds no graph",
    },
    Case {
        name: "no_default_opset",
        setup: |dir, _| {
            let mut model = matmul_with(float_matrix("w", 64, 64, 1));
            model.opset_import.clear();
            save(dir, &model)
        },
        expected: "imports no version of the default ONNX domain",
    },
    Case {
        name: "unknown_data_type",
        setup: |dir, _| {
            let mut w = float_matrix("w", 64, 64, 1);
            w.data_type = Some(9999);
            save(dir, &matmul_with(w))
        },
        expected: "tensor 'w': data type 9999 is not an ONNX data type",
    },
    Case {
        name: "cycle",
        setup: |dir, _| {
            let mut b = ModelBuilder::new(17);
            b.input_f32("x", &[1]);
            b.node("Add", &["x", "b"], &["a"]);
            b.node("Relu", &["a"], &["b"]);
            b.output_f32("b");
            save(dir, &b.build())
        },
        expected: "the graph has a cycle through node",
    },
    Case {
        name: "undefined_name",
        setup: |dir, _| {
            let mut b = ModelBuilder::new(17);
            b.node("Relu", &["nowhere"], &["y"]);
            save(dir, &b.build())
        },
        expected: "node 'Relu_0' reads 'nowhere'",
    },
    Case {
        name: "defined_twice",
        setup: |dir, _| {
            let mut b = ModelBuilder::new(17);
            b.input_f32("x", &[1]);
            b.node("Relu", &["x"], &["y"]);
            b.node("Neg", &["x"], &["y"]);
            save(dir, &b.build())
        },
        expected: "value 'y' is defined twice",
    },
    Case {
        name: "negative_dim",
        setup: |dir, _| {
            let mut w = float_matrix("w", 64, 64, 1);
            w.dims = vec![-64, -64];
            save(dir, &matmul_with(w))
        },
        expected: "tensor 'w': negative dimension -64",
    },
    Case {
        name: "dims_overflow",
        setup: |dir, _| {
            let mut w = float_matrix("w", 64, 64, 1);
            w.dims = vec![1 << 40, 1 << 40];
            save(dir, &matmul_with(w))
        },
        expected: "tensor 'w': dimensions [1099511627776, 1099511627776] overflow",
    },
    Case {
        name: "raw_data_short",
        setup: |dir, _| {
            let mut w = float_matrix("w", 64, 64, 1);
            w.dims = vec![640, 64];
            save(dir, &matmul_with(w))
        },
        expected: "tensor 'w': dims [640, 64] need 163840 bytes of raw data but it holds 16384",
    },
    Case {
        name: "external_absolute",
        setup: |dir, outside| {
            bytes_file(&outside.join("secret.bin"), 16384);
            let location = outside.join("secret.bin");
            save(
                dir,
                &matmul_with(external_weight(location.to_str().unwrap(), "0")),
            )
        },
        expected: "is not a plain relative path inside the model's folder",
    },
    Case {
        name: "external_dotdot",
        setup: |dir, outside| {
            bytes_file(&outside.join("secret.bin"), 16384);
            let location = format!(
                "../{}/secret.bin",
                outside.file_name().unwrap().to_str().unwrap()
            );
            save(dir, &matmul_with(external_weight(&location, "0")))
        },
        expected: "is not a plain relative path inside the model's folder",
    },
    Case {
        name: "external_symlink_file",
        setup: |dir, outside| {
            bytes_file(&outside.join("secret.bin"), 16384);
            symlink(outside.join("secret.bin"), dir.join("w.bin")).unwrap();
            save(dir, &matmul_with(external_weight("w.bin", "0")))
        },
        expected: "external data path 'w.bin' goes through a symlink",
    },
    Case {
        name: "external_symlink_folder",
        setup: |dir, outside| {
            bytes_file(&outside.join("w.bin"), 16384);
            symlink(outside, dir.join("weights")).unwrap();
            save(dir, &matmul_with(external_weight("weights/w.bin", "0")))
        },
        expected: "external data path 'weights/w.bin' goes through a symlink",
    },
    Case {
        name: "external_hard_link",
        setup: |dir, outside| {
            bytes_file(&outside.join("secret.bin"), 16384);
            std::fs::hard_link(outside.join("secret.bin"), dir.join("w.bin")).unwrap();
            save(dir, &matmul_with(external_weight("w.bin", "0")))
        },
        expected: "external data file 'w.bin' has 2 hard links",
    },
    Case {
        name: "external_past_the_end",
        setup: |dir, _| {
            bytes_file(&dir.join("w.bin"), 16384);
            save(dir, &matmul_with(external_weight("w.bin", "4096")))
        },
        expected: "external data bytes 4096..4096+16384 lie outside 'w.bin' (16384 bytes)",
    },
    Case {
        name: "external_bad_offset",
        setup: |dir, _| {
            bytes_file(&dir.join("w.bin"), 16384);
            save(dir, &matmul_with(external_weight("w.bin", "-1")))
        },
        expected: "external data offset '-1' is not a byte count",
    },
    Case {
        name: "external_missing_file",
        setup: |dir, _| save(dir, &matmul_with(external_weight("nowhere.bin", "0"))),
        expected: "external data file 'nowhere.bin': No such file or directory",
    },
    Case {
        name: "external_no_location",
        setup: |dir, _| {
            let mut w = external_weight("w.bin", "0");
            w.external_data.retain(|e| e.key() != "location");
            save(dir, &matmul_with(w))
        },
        expected: "tensor 'w': external data has no location",
    },
    Case {
        name: "external_wrong_length",
        setup: |dir, _| {
            bytes_file(&dir.join("w.bin"), 65536);
            let mut w = external_weight("w.bin", "0");
            w.external_data[2].value = Some("32768".into());
            save(dir, &matmul_with(w))
        },
        expected: "external data length 32768 does not match the 16384 bytes its dims and type need",
    },
    Case {
        name: "nested_too_deep",
        setup: |dir, _| {
            let mut b = ModelBuilder::new(17);
            b.input_f32("x", &[1]);
            b.input_bool("cond");
            let node = b.node("If", &["cond"], &["y"]);
            node.attribute.push(attr_graph("then_branch", nested(40)));
            node.attribute.push(attr_graph("else_branch", nested(0)));
            save(dir, &b.build())
        },
        expected: "recursion limit reached",
    },
    Case {
        name: "over_2_gib",
        setup: |dir, _| {
            let p = dir.join("model.onnx");
            let f = std::fs::File::create(&p).unwrap();
            f.set_len((2u64 << 30) + 1).unwrap();
            p
        },
        expected: "more than protobuf's 2 GiB limit",
    },
];

#[test]
fn every_hostile_model_is_refused_with_its_message() {
    assert!(CASES.len() >= 20);
    // An input too large to feed is the proof's problem, not a refusal: see
    // absurd_input_shape_is_written_unproven.
    for case in CASES {
        let root = tempfile::tempdir().unwrap();
        let (dir, outside) = (root.path().join("model"), root.path().join("outside"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let model = (case.setup)(&dir, &outside);
        let out = dir.join("out.onnx");
        let result = Command::new(env!("CARGO_BIN_EXE_sora-onnx"))
            .args([
                "rewrite",
                model.to_str().unwrap(),
                out.to_str().unwrap(),
                "--min-elements",
                "16",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{}: {stderr}", case.name);
        assert_eq!(stderr.lines().count(), 1, "{}: {stderr}", case.name);
        assert!(stderr.contains(case.expected), "{}: {stderr}", case.name);
        assert!(
            stderr.contains(model.to_str().unwrap()),
            "{}: the line does not name the file: {stderr}",
            case.name
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !out.exists() && left.iter().all(|n| !n.to_string_lossy().contains(".tmp")),
            "{}: {left:?}",
            case.name
        );
    }
}

/// The single-file cases, kept in tests/hostile/ as seeds for the fuzz target
/// (`SORA_WRITE_SEEDS=1 cargo test --test hostile` rewrites them), are refused in
/// process too: load or rewrite returns an error, never panics.
#[test]
fn hostile_seeds_are_refused_in_process() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let single_file = CASES
        .iter()
        .filter(|c| !c.name.starts_with("external") && c.name != "over_2_gib");
    for case in single_file {
        let seed = seeds.join(format!("{}.onnx", case.name));
        if std::env::var_os("SORA_WRITE_SEEDS").is_some() {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(&seeds).unwrap();
            std::fs::copy((case.setup)(dir.path(), dir.path()), &seed).unwrap();
        }
        let bytes = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        let refused = sora_onnx::onnx::decode_model(&bytes[..], &seed).and_then(|model| {
            let out = sora_onnx::rewrite(&model, &sora_onnx::Config::default())?;
            sora_onnx::validate(&model, &out.model, &sora_onnx::ProofConfig::default())
        });
        let err = refused.expect_err(case.name).to_string();
        assert!(err.contains(case.expected), "{}: {err}", case.name);
    }
}

/// A model whose declared input is too large to feed: the proof cannot run, so the
/// rewrite is written and marked unproven with the reason (exit 0), or exit 3 when a
/// bound was asked.
#[test]
fn absurd_input_shape_is_written_unproven() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1 << 22, 64]);
    b.initializer(float_matrix("w", 64, 64, 1));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let model = save(dir.path(), &b.build());
    let out = dir.path().join("out.onnx");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sora-onnx"))
            .args(["rewrite", model.to_str().unwrap(), out.to_str().unwrap()])
            .args(["--min-elements", "16"])
            .args(extra)
            .output()
            .unwrap()
    };
    let result = run(&[]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(result.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("unproven: cannot feed the model: invalid model: input 'x' would need shape [4194304, 64], over the proof's"),
        "{stdout}"
    );
    assert!(out.exists());
    std::fs::remove_file(&out).unwrap();
    let result = run(&["--max-rel-error", "0.1"]);
    assert_eq!(result.status.code(), Some(3));
    assert!(out.exists());
}
