//! The catch-all rule (`--ops Other`, not a default): the large constant float inputs
//! of ops without a rule of their own, each one codebook, rebuilt in its own shape.

use sora_onnx::builder::{ModelBuilder, float_matrix};
use sora_onnx::config::GranularityChoice;
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::tensor::{FloatType, float_tensor, i64_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rules::{OTHER, Select, SkipReason, default_ops};
use sora_onnx::{Config, Selection, rewrite};

use super::{config, few_values, linears, prove, skips, with_plan};

/// `config(bits, granularity)` with the catch-all rule added to the default ops.
fn with_other(bits: u32, granularity: Granularity) -> Config {
    let mut config = config(bits, granularity);
    config.select.ops.push(OTHER.into());
    config
}

/// `y = Reshape(Mul(Add(x, pos), scale), shape)`: a [1, 3, 16] table added to `x`, a
/// small scale and an integer shape.
fn add_mul_reshape() -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 3, 16]);
    b.initializer(float_tensor(
        "pos",
        &[1, 3, 16],
        FloatType::F32,
        &few_values(3, 16, 8, 61),
    ));
    b.initializer(float_tensor(
        "scale",
        &[16],
        FloatType::F32,
        &few_values(1, 16, 8, 62)[..16],
    ));
    b.initializer(i64_tensor("shape", &[2], &[6, 16]));
    b.node("Add", &["x", "pos"], &["a"]);
    b.node("Mul", &["a", "scale"], &["m"]);
    b.node("Reshape", &["m", "shape"], &["y"]);
    b.output_f32("y");
    b.build()
}

#[test]
fn a_constant_added_to_activations_is_one_codebook_in_its_shape() {
    let model = add_mul_reshape();
    let config = Config {
        select: Select {
            min_elements: 32,
            ..with_other(3, Granularity::Channel).select
        },
        ..with_other(3, Granularity::Channel)
    };
    let out = rewrite(&model, &config).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!(out.report.tensors.len(), 1);
    assert_eq!((t.name.as_str(), t.shape, t.codebooks), ("pos", [1, 48], 1));
    // The scale (16 elements) and the integer shape are not candidates: no skips.
    assert!(out.report.skipped.is_empty(), "{:?}", out.report.skipped);
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn the_catch_all_is_not_a_default() {
    assert!(!default_ops().iter().any(|op| op == OTHER));
    let model = add_mul_reshape();
    let config = config(3, Granularity::Channel);
    with_plan(&model, &config, |plan| {
        assert!(plan.weights.is_empty() && plan.skipped.is_empty());
    });
}

#[test]
fn a_weight_another_op_reads_is_decoded_once_for_both() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_tensor(
        "w",
        &[16, 16],
        FloatType::F32,
        &few_values(16, 16, 8, 63),
    ));
    b.node("Relu", &["w"], &["r"]);
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    b.output_f32("r");
    let model = b.build();
    assert_eq!(
        skips(&model, &config(3, Granularity::Channel)),
        vec![(
            "MatMul_1".to_string(),
            SkipReason::OtherUse("w".into(), "node 'Relu_0'".into())
        )]
    );
    let out = rewrite(&model, &with_other(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    // The MatMul's rule decides the view (a codebook per column), though the Relu
    // reads the weight first; the Relu reads the same decoding.
    let readers = vec!["MatMul_1".to_string(), "Relu_0".to_string()];
    assert_eq!(
        (t.nodes.clone(), t.shape, t.codebooks),
        (readers, [16, 16], 16)
    );
    let proof = prove(&model, &out);
    for output in &proof.outputs {
        assert_eq!(output.max_abs, 0.0, "{proof:?}");
    }
}

#[test]
fn ops_with_a_rule_are_left_to_it() {
    // Gemm's bias C is no Gemm weight; the catch-all does not take it either, even
    // when --ops runs only the catch-all.
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_matrix("w", 16, 32, 1));
    b.initializer(float_matrix("c", 2, 32, 2));
    b.node("Gemm", &["x", "w", "c"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let only_other = Config {
        select: Select {
            ops: vec![OTHER.into()],
            ..config(3, Granularity::Tensor).select
        },
        ..config(3, Granularity::Tensor)
    };
    with_plan(&model, &only_other, |plan| {
        assert!(plan.weights.is_empty() && plan.skipped.is_empty());
    });
    let names: Vec<String> = with_plan(&model, &with_other(3, Granularity::Tensor), |plan| {
        plan.weights.iter().map(|w| w.name().to_string()).collect()
    });
    assert_eq!(names, ["w"]);
}

#[test]
fn other_skip_reasons() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input("over", DataType::Float, &[]);
    b.initializer(float_matrix("over", 2, 16, 1));
    b.initializer(float_matrix("excluded_bias", 2, 16, 2));
    let mut mask = vec![0.0; 32];
    mask[5] = f64::NEG_INFINITY;
    b.initializer(float_tensor("mask", &[2, 16], FloatType::F32, &mask));
    b.node("Add", &["x", "over"], &["a"]);
    b.node("Sub", &["a", "excluded_bias"], &["s"]);
    b.node("Add", &["s", "mask"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let config = Config {
        select: Select {
            names: Selection::new(&[], &["excluded*".into()]).unwrap(),
            ..with_other(3, Granularity::Tensor).select
        },
        granularity: GranularityChoice::Auto,
        ..with_other(3, Granularity::Tensor)
    };
    assert_eq!(linears(&model, &config), vec![("mask".to_string(), None)]);
    assert_eq!(
        skips(&model, &config),
        vec![
            (
                "Add_0".to_string(),
                SkipReason::OverridableInitializer("over".into())
            ),
            (
                "Sub_1".to_string(),
                SkipReason::Excluded("excluded*".into())
            ),
        ]
    );
    // The mask is planned but its fit refuses the infinity.
    let out = rewrite(&model, &config).unwrap();
    assert!(out.report.tensors.is_empty());
    assert_eq!(
        out.report.skipped.last().map(|s| s.reason.clone()),
        Some(SkipReason::NonFinite("mask".into()))
    );
}
