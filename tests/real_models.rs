//! The pass on real third-party models (fetched by fixtures/fetch_models.py): byte-exact
//! load/save, and the rewrite's quality on real inputs, measured through tract.

mod common;

use common::{argmax, cosine, magika_inputs, real_model, run, sentences};
use prost::Message;
use sora_onnx::rules::{Select, SkipReason};
use sora_onnx::{Config, ProofConfig, rewrite, validate};

const MODELS: [&str; 4] = ["minilm_l3", "magika", "wakeword_mlp", "minilm_l6_int8"];

#[test]
fn load_then_save_is_byte_identical() {
    for name in MODELS {
        let (path, model) = real_model(name);
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            model.encode_to_vec() == bytes,
            "{name} re-encodes differently"
        );
    }
}

/// Mean cosine of minilm_l3's sentence embedding (output "461") between the original
/// and a rewrite, over the 200 evaluation sentences.
fn minilm_sentence_cosine(config: &Config) -> (f64, sora_onnx::Report) {
    let (_, model) = real_model("minilm_l3");
    let out = rewrite(&model, config).unwrap();
    let (ids, mask, n) = sentences("minilm_eval.json");
    let inputs = [ids, mask];
    // Output 3 is "461", the mean-pooled embedding.
    assert_eq!(model.graph.as_ref().unwrap().output[3].name(), "461");
    let a = run(&model, &inputs, 3);
    let b = run(&out.model, &inputs, 3);
    let mean = a.iter().zip(&b).map(|(x, y)| cosine(x, y)).sum::<f64>() / n as f64;
    (mean, out.report)
}

fn matmul_only() -> Config {
    Config {
        select: Select {
            ops: vec!["MatMul".into(), "Gemm".into()],
            ..Select::default()
        },
        ..Config::default()
    }
}

#[test]
fn minilm_l3_matmuls_at_4_bits_keep_sentence_embeddings() {
    let (cos, report) = minilm_sentence_cosine(&matmul_only());
    assert_eq!(report.tensors.len(), 18);
    assert_eq!(report.skipped.len(), 6);
    for s in &report.skipped {
        assert!(
            s.node.ends_with("/attention/self/MatMul")
                || s.node.ends_with("/attention/self/MatMul_1"),
            "{s:?}"
        );
        assert!(matches!(s.reason, SkipReason::DynamicWeight(_)), "{s:?}");
    }
    // The file shrinks by the weights' share: 5,308,416 fp32 weights = 21.2 MB become
    // about 5 bits each.
    let weight_bytes: usize = report.tensors.iter().map(|t| t.bytes_before).sum();
    let saved = report.input_bytes - report.output_bytes;
    assert!(
        saved as f64 > 0.8 * weight_bytes as f64,
        "saved {saved} of {weight_bytes}"
    );
    assert!(report.bits_per_weight < 4.6, "{}", report.bits_per_weight);
    assert!(cos >= 0.985, "mean cosine {cos}");
}

#[test]
fn minilm_l3_whole_file_with_no_flags() {
    let (cos, report) = minilm_sentence_cosine(&Config::default());
    // The 18 MatMul weights and the word and position embeddings.
    assert_eq!(report.tensors.len(), 20);
    assert!(
        report.output_bytes <= 12_000_000,
        "{} bytes",
        report.output_bytes
    );
    assert!(cos >= 0.98, "mean cosine {cos}");
}

#[test]
fn minilm_l3_bits_trade_size_for_quality() {
    let mut last = 0.0;
    for bits in [2, 3, 8] {
        let (cos, report) = minilm_sentence_cosine(&Config {
            bits,
            ..Config::default()
        });
        assert!(cos > last, "{bits} bits: cosine {cos} not above {last}");
        last = cos;
        if bits == 8 {
            assert!(cos > 0.9995, "8 bits: {cos}");
            assert!(
                report.seconds < 30.0,
                "8-bit rewrite took {} s",
                report.seconds
            );
        }
    }
}

#[test]
fn magika_keeps_its_labels_on_real_files() {
    let (_, model) = real_model("magika");
    let out = rewrite(&model, &Config::default()).unwrap();
    // Two MatMul weights and the Conv.
    assert_eq!(out.report.tensors.len(), 3);
    assert!(out.report.output_bytes * 6 < out.report.input_bytes);
    let (bytes, n) = magika_inputs();
    let inputs = [bytes];
    let a = run(&model, &inputs, 0);
    let b = run(&out.model, &inputs, 0);
    let agree = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| argmax(x) == argmax(y))
        .count();
    assert!(
        agree as f64 >= 0.95 * n as f64,
        "top-1 agreement {agree}/{n}"
    );
}

#[test]
fn wakeword_gemms_with_trans_b() {
    let (_, model) = real_model("wakeword_mlp");
    let config = Config {
        bits: 8,
        select: Select {
            min_elements: 0,
            ..Select::default()
        },
        ..Config::default()
    };
    let out = rewrite(&model, &config).unwrap();
    assert_eq!(out.report.tensors.len(), 3);
    let proof = validate(&model, &out.model, &ProofConfig::default()).unwrap();
    assert!(proof.outputs[0].rel_l2 < 0.02, "{proof:?}");
}

#[test]
fn already_quantized_model_is_left_alone() {
    let (_, model) = real_model("minilm_l6_int8");
    let out = rewrite(&model, &Config::default()).unwrap();
    assert!(out.report.tensors.is_empty());
    let quantized = out
        .report
        .skipped
        .iter()
        .filter(|s| matches!(s.reason, SkipReason::AlreadyQuantized(..)))
        .count();
    assert_eq!(quantized, 36, "{:?}", out.report.skipped);
    assert!(out.model.encode_to_vec() == model.encode_to_vec());
}

#[test]
fn lossless_on_dequantized_int8_weights_is_bit_exact_and_4x_smaller() {
    // fixtures/make_int8_folded.py folds minilm_l6_int8's Mul(Cast(int8), scale)
    // into fp32 initializers (the test command makes it).
    let (_, model) = real_model("minilm_l6_int8_folded");
    let config = Config {
        lossless: true,
        bits: 8,
        ..Config::default()
    };
    let out = rewrite(&model, &config).unwrap();
    // 36 MatMul weights and the word and position embeddings.
    assert_eq!(out.report.tensors.len(), 38);
    assert!(out.report.tensors.iter().all(|t| t.mse == 0.0));
    let ratio = out.report.input_bytes as f64 / out.report.output_bytes as f64;
    assert!(ratio > 3.8, "{ratio:.2}x");
    let proof_config = ProofConfig {
        input_dims: [("batch".to_string(), 2), ("sequence".to_string(), 16)].into(),
        ..ProofConfig::default()
    };
    let proof = validate(&model, &out.model, &proof_config).unwrap();
    assert_eq!(proof.outputs[0].max_abs, 0.0, "{proof:?}");
}
