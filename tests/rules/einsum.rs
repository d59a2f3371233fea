//! The Einsum rule: every constant operand, viewed as a matrix when the equation
//! multiplies it like one (one label summed, one kept), else as one channel; operands
//! computed at run time are activations, not candidates.

use sora_onnx::builder::{ModelBuilder, attr_string};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::tensor::{FloatType, float_tensor, i64_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::SkipReason;

use super::{config, few_values, linears, prove, skips};

/// `y = Einsum(x [2, 3, 16], constants...; equation)`.
fn einsum(equation: &str, constants: &[(&str, &[usize])]) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 3, 16]);
    let mut inputs = vec!["x"];
    for (i, (name, dims)) in constants.iter().enumerate() {
        let n: usize = dims.iter().product();
        let values = few_values(n, 1, 8, 50 + i as u64);
        b.initializer(float_tensor(name, dims, FloatType::F32, &values));
        inputs.push(name);
    }
    b.node("Einsum", &inputs, &["y"])
        .attribute
        .push(attr_string("equation", equation));
    b.output_f32("y");
    b.build()
}

#[test]
fn a_matrix_operand_gets_a_codebook_per_kept_label() {
    let model = einsum("bsi,ij->bsj", &[("w", &[16, 8])]);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!((t.shape, t.codebooks), ([16, 8], 8));
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn every_constant_operand_of_one_node_is_rewritten() {
    // w1's labels are both summed (one channel); w2 keeps k (a codebook per column).
    let model = einsum("bsi,ij,jk->bsk", &[("w1", &[16, 8]), ("w2", &[8, 5])]);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let views: Vec<_> = (out.report.tensors.iter())
        .map(|t| (t.name.as_str(), t.shape, t.codebooks))
        .collect();
    assert_eq!(views, [("w1", [1, 128], 1), ("w2", [8, 5], 5)]);
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
}

#[test]
fn other_operands_are_one_channel_rebuilt_in_their_shape() {
    let model = einsum("bsi,hid->bshd", &[("w", &[2, 16, 4])]);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!(
        (t.shape, t.codebooks, t.granularity),
        ([1, 128], 1, Granularity::Tensor)
    );
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
}

#[test]
fn einsum_skip_reasons() {
    let config = config(3, Granularity::Channel);
    // Too small, and an equation with a term too few.
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 3, 16]);
    b.initializer(float_tensor("small", &[2, 4], FloatType::F32, &[0.5; 8]));
    b.initializer(float_tensor(
        "w",
        &[16, 8],
        FloatType::F32,
        &few_values(16, 8, 8, 1),
    ));
    b.initializer(i64_tensor("ints", &[16, 8], &[1; 128]));
    b.input("over", DataType::Float, &[]);
    b.initializer(float_tensor(
        "over",
        &[16, 8],
        FloatType::F32,
        &few_values(16, 8, 8, 2),
    ));
    let equations = [
        ("small", "bsi,jk->bsik"),
        ("w", "bsi->bs"),
        ("ints", "bsi,ij->bsj"),
        ("over", "bsi,ij->bsj"),
    ];
    for (i, (w, equation)) in equations.iter().enumerate() {
        let out = format!("y{i}");
        b.node("Einsum", &["x", w], &[&out])
            .attribute
            .push(attr_string("equation", equation));
        b.output_f32(&out);
    }
    // Two activations: not a candidate.
    b.node("Einsum", &["x", "x"], &["z"])
        .attribute
        .push(attr_string("equation", "bsi,bti->bst"));
    b.output_f32("z");
    let model = b.build();
    assert_eq!(linears(&model, &config), vec![]);
    assert_eq!(
        skips(&model, &config),
        vec![
            (
                "Einsum_0".to_string(),
                SkipReason::TooSmall("small".into(), 8, 16)
            ),
            (
                "Einsum_1".to_string(),
                SkipReason::Unsupported(
                    "Einsum equation 'bsi->bs' does not give one term per operand (2)".into()
                )
            ),
            (
                "Einsum_2".to_string(),
                SkipReason::NotFloat("ints".into(), "INT64".into())
            ),
            (
                "Einsum_3".to_string(),
                SkipReason::OverridableInitializer("over".into())
            ),
        ]
    );
}
