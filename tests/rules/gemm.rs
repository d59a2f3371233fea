//! The Gemm rule: the weight is input B, channels are its columns (rows under
//! transB), the activation is input A (transposed under transA), alpha scales the
//! product and the bias is input C times beta.

use sora_onnx::builder::{ModelBuilder, attr_float, attr_int, float_matrix};
use sora_onnx::dump::dump;
use sora_onnx::onnx::tensor::{FloatType, float_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::{Bias, Linear, SkipReason};

use super::{config, few_values, prove, skips, with_plan};

#[test]
fn gemm_keeps_trans_b_alpha_beta_and_bias() {
    let mut b = ModelBuilder::new(13);
    b.input_f32("x", &[4, 24]);
    b.initializer(float_tensor(
        "w",
        &[12, 24],
        FloatType::F32,
        &few_values(12, 24, 16, 8),
    ));
    b.initializer(float_matrix("bias", 1, 12, 9));
    let gemm = b.node("Gemm", &["x", "w", "bias"], &["y"]);
    gemm.attribute.push(attr_int("transB", 1));
    gemm.attribute.push(attr_float("alpha", 0.5));
    gemm.attribute.push(attr_float("beta", 2.0));
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    // transB = 1: output channels are the 12 rows.
    assert_eq!((t.codebooks, t.mse), (12, 0.0));
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn gemm_reads_alpha_beta_c_and_both_transposes() {
    let mut b = ModelBuilder::new(13);
    b.input_f32("a", &[24, 4]);
    b.initializer(float_matrix("w", 12, 24, 1));
    b.initializer(float_matrix("c", 1, 12, 2));
    let gemm = b.node("Gemm", &["a", "w", "c"], &["y"]);
    gemm.attribute.push(attr_int("transA", 1));
    gemm.attribute.push(attr_int("transB", 1));
    gemm.attribute.push(attr_float("alpha", 0.5));
    gemm.attribute.push(attr_float("beta", 2.0));
    b.output_f32("y");
    let linear = Linear {
        x: "a",
        y: "y",
        x_transposed: true,
        batched: false,
        alpha: 0.5,
        bias: Bias::Input {
            name: "c",
            beta: 2.0,
        },
    };
    with_plan(&b.build(), &config(4, Granularity::Channel), |plan| {
        assert_eq!(plan.weights[0].first().linear, Some(linear));
    });
}

#[test]
fn gemm_without_c_has_no_bias_and_odd_transposes_are_skipped() {
    let mut b = ModelBuilder::new(13);
    b.input_f32("x", &[4, 24]);
    b.initializer(float_matrix("w", 24, 12, 1));
    b.initializer(float_matrix("w2", 24, 12, 2));
    b.node("Gemm", &["x", "w"], &["y"]);
    b.node("Gemm", &["x", "w2"], &["z"])
        .attribute
        .push(attr_int("transB", 2));
    b.output_f32("y");
    b.output_f32("z");
    let model = b.build();
    with_plan(&model, &config(4, Granularity::Channel), |plan| {
        assert_eq!(plan.weights.len(), 1);
        assert_eq!(plan.weights[0].first().linear.unwrap().bias, Bias::Absent);
    });
    assert_eq!(
        skips(&model, &config(4, Granularity::Channel)),
        vec![(
            "Gemm_1".to_string(),
            SkipReason::Unsupported("Gemm transB = 2 is not 0 or 1".into())
        )]
    );
}
