//! The ConvTranspose rule: the weight is input W `[C_in, C_out/group, k...]`, one row
//! per input channel, rebuilt in its own shape; a weight of rank below 2 is skipped.

use sora_onnx::builder::{ModelBuilder, attr_int, attr_ints};
use sora_onnx::dump::dump;
use sora_onnx::onnx::tensor::{FloatType, float_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::SkipReason;

use super::{config, few_values, linears, prove, skips};

#[test]
fn convtranspose_weight_is_rebuilt_in_its_shape() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 4, 5, 5]);
    // 4 input channels, 2 groups of 3 output channels, 3 x 3 kernels.
    b.initializer(float_tensor(
        "k",
        &[4, 3, 3, 3],
        FloatType::F32,
        &few_values(4, 27, 16, 21),
    ));
    let node = b.node("ConvTranspose", &["x", "k"], &["y"]);
    node.attribute.push(attr_ints("strides", &[2, 2]));
    node.attribute.push(attr_int("group", 2));
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!((t.shape, t.codebooks), ([4, 27], 4));
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn convtranspose_lossy_rewrite_stays_close() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 8, 4, 4]);
    b.initializer(float_tensor(
        "k",
        &[8, 6, 4, 4],
        FloatType::F32,
        &sora_onnx::builder::pseudo_random(8 * 6 * 16, 22),
    ));
    b.node("ConvTranspose", &["x", "k"], &["y"])
        .attribute
        .push(attr_ints("strides", &[2, 2]));
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    let proof = prove(&model, &out);
    assert!(proof.outputs[0].rel_l2 < 0.1, "{proof:?}");
}

#[test]
fn convtranspose_weight_of_rank_one_is_skipped() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 3, 8, 8]);
    b.initializer(float_tensor(
        "k",
        &[27],
        FloatType::F32,
        &few_values(1, 27, 8, 1),
    ));
    b.node("ConvTranspose", &["x", "k"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    assert_eq!(linears(&model, &config(3, Granularity::Channel)), vec![]);
    assert_eq!(
        skips(&model, &config(3, Granularity::Channel)),
        vec![(
            "ConvTranspose_0".to_string(),
            SkipReason::NotMatrix("k".into(), vec![27])
        )]
    );
}
