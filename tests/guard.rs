//! The data-free default: each weight's setting from its own error. Large weights keep
//! the floor, small ones aim higher (and fall back to half precision when no codebook
//! reaches their target in half their bytes), the smallest get half precision, uneven
//! channels get channel codebooks, heads and stems aim higher, and a weight nothing
//! halves stays dense.

use sora_onnx::builder::{ModelBuilder, float_matrix, pseudo_random};
use sora_onnx::config::Config;
use sora_onnx::guard::{END_BONUS_DB, SMALL_TARGET_DB, target_db};
use sora_onnx::job::{RewriteJob, run_rewrite};
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::tensor::{FloatType, float_tensor};
use sora_onnx::options::DEFAULT_GUARD;
use sora_onnx::particles::Granularity;
use sora_onnx::report::{KmeansMethod, Report};
use sora_onnx::rules::{Select, SkipReason};
use sora_onnx::{ProofConfig, Rewritten};

fn guarded(model: &ModelProto) -> Rewritten {
    let job = RewriteJob {
        config: Config {
            guard: Some(DEFAULT_GUARD),
            select: Select {
                min_elements: 16,
                ..Select::default()
            },
            ..Config::default()
        },
        tuning: None,
        inputs: None,
        proof: ProofConfig::default(),
        prove: true,
    };
    run_rewrite(model, &job).unwrap().rewritten
}

fn tensor<'r>(report: &'r Report, name: &str) -> &'r sora_onnx::report::TensorReport {
    report.tensors.iter().find(|t| t.name == name).unwrap()
}

/// `y = MatMul(MatMul(x, big), small)` with a 64-row `small`: `head` ends it with a
/// Softmax (else Tanh and LayerNormalization), `stem` feeds `x` straight to the first
/// MatMul (else through LayerNormalization).
fn two_weights(small: sora_onnx::onnx::proto::TensorProto, head: bool, stem: bool) -> ModelProto {
    let cols = small.dims[1] as usize;
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 1024]);
    b.initializer(float_matrix("big", 1024, 1024, 1));
    b.initializer(small);
    let first = if stem {
        "x"
    } else {
        b.node("LayerNormalization", &["x", "x_gamma"], &["xn"]);
        b.initializer(float_tensor(
            "x_gamma",
            &[1024],
            FloatType::F32,
            &[1.0; 1024],
        ));
        "xn"
    };
    b.node("MatMul", &[first, "big"], &["h"]);
    b.node("Relu", &["h"], &["r"]);
    b.node("Slice", &["r", "starts", "ends", "axes"], &["s"]);
    for (name, v) in [("starts", 0), ("ends", 64), ("axes", 1)] {
        b.initializer(sora_onnx::onnx::tensor::i64_tensor(name, &[1], &[v]));
    }
    b.node("MatMul", &["s", "small"], &["z"]);
    if head {
        b.node("Softmax", &["z"], &["y"]);
    } else {
        b.node("Tanh", &["z"], &["t"]);
        b.node("LayerNormalization", &["t", "gamma"], &["y"]);
        b.initializer(float_tensor(
            "gamma",
            &[cols],
            FloatType::F32,
            &vec![1.0; cols],
        ));
    }
    b.output_f32("y");
    b.build()
}

/// A `rows x cols` weight of standard normal values.
fn normal(name: &str, rows: usize, cols: usize, seed: u64) -> sora_onnx::onnx::proto::TensorProto {
    let mut rng = sora_onnx::rng::Rng::new(seed);
    let values: Vec<f64> = (0..rows * cols).map(|_| rng.normal()).collect();
    float_tensor(name, &[rows, cols], FloatType::F32, &values)
}

#[test]
fn large_weights_keep_the_floor_and_the_smallest_get_half_precision() {
    let out = guarded(&two_weights(normal("small", 64, 64, 2), false, false));
    let (big, small) = (tensor(&out.report, "big"), tensor(&out.report, "small"));
    // 2^20 elements aim at the guard's 22 dB; under 8192 elements at 50 dB.
    assert_eq!(big.target_sqnr_db, Some(22.0));
    assert_eq!(small.target_sqnr_db, Some(SMALL_TARGET_DB));
    // The big weight meets its target with few bits; no codebook of the small normal
    // one reaches 50 dB in half its bytes (8 bits per tensor: about 44), half
    // precision does, in exactly half.
    assert!((4..=5).contains(&big.bits), "{big:?}");
    assert!(big.sqnr_db >= 22.0 - 1.0, "{big:?}");
    assert_eq!((small.kmeans, small.bits), (KmeansMethod::Half, 16));
    assert!(small.sqnr_db > 60.0, "{small:?}");
    assert!(small.bytes_after <= 64 * 64 * 2 + 200, "{small:?}");
    // The proof runs the half form in tract.
    let proof = out.report.validation.as_ref().unwrap();
    assert_eq!(
        proof.verdict,
        sora_onnx::prove::Verdict::Measured,
        "{proof:?}"
    );
    assert!(proof.outputs[0].cosine > 0.95, "{proof:?}");
}

#[test]
fn targets_rise_with_every_halving() {
    // 8192 elements: 7 halvings below 2^20, 1.5 dB each.
    let out = guarded(&two_weights(normal("small", 64, 128, 2), false, false));
    let small = tensor(&out.report, "small");
    assert_eq!(target_db(&DEFAULT_GUARD, 8192), 22.0 + 7.0 * 1.5);
    assert_eq!(small.target_sqnr_db, Some(22.0 + 7.0 * 1.5));
    assert!(small.sqnr_db >= 22.0 + 7.0 * 1.5 - 1.0, "{small:?}");
    assert!(small.bits < 16, "{small:?}");
}

#[test]
fn channels_of_uneven_scale_get_their_own_codebooks() {
    // Column c of the 1024 x 1024 weight is scaled by 1.02^c (1 to 6e8): one codebook
    // for the tensor leaves the small columns nothing.
    let values: Vec<f64> = pseudo_random(1 << 20, 3)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 1.02f64.powi((i % 1024) as i32).min(1e3))
        .collect();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 1024]);
    b.initializer(float_tensor("w", &[1024, 1024], FloatType::F32, &values));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let out = guarded(&b.build());
    assert_eq!(tensor(&out.report, "w").granularity, Granularity::Channel);
}

#[test]
fn a_head_aims_higher() {
    let out = guarded(&two_weights(float_matrix("small", 64, 128, 2), true, false));
    let small = tensor(&out.report, "small");
    let base = target_db(&DEFAULT_GUARD, 8192);
    assert_eq!(small.target_sqnr_db, Some(base + END_BONUS_DB));
    // The first MatMul feeds the head through Relu and Slice, not an output, and takes
    // the input through LayerNormalization: no bonus.
    assert_eq!(tensor(&out.report, "big").target_sqnr_db, Some(22.0));
}

#[test]
fn a_stem_aims_higher() {
    // The first MatMul takes the model input as it is: a stem.
    let out = guarded(&two_weights(float_matrix("small", 64, 128, 2), false, true));
    let big = tensor(&out.report, "big");
    assert_eq!(big.target_sqnr_db, Some(22.0 + END_BONUS_DB));
    assert!(big.sqnr_db >= 22.0 + END_BONUS_DB - 1.0, "{big:?}");
    let small = tensor(&out.report, "small");
    assert_eq!(small.target_sqnr_db, Some(target_db(&DEFAULT_GUARD, 8192)));
}

#[test]
fn a_weight_no_setting_halves_stays_dense() {
    // 48 half-precision weights take 96 bytes; 4-bit indices and a 16-particle codebook
    // take 56, more than half of them, and half precision is no smaller.
    let values: Vec<f64> = pseudo_random(48, 4);
    let mut b = ModelBuilder::new(17);
    b.input(
        "x",
        sora_onnx::onnx::proto::tensor_proto::DataType::Float16,
        &[
            sora_onnx::builder::Dim::Fixed(1),
            sora_onnx::builder::Dim::Fixed(4),
        ],
    );
    b.initializer(float_tensor("w", &[4, 12], FloatType::F16, &values));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let out = guarded(&b.build());
    assert!(out.report.tensors.is_empty());
    assert_eq!(
        out.report.skipped[0].reason,
        SkipReason::TooCostly("w".into(), 56, 96)
    );
}
