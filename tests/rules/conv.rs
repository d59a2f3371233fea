//! The Conv rule: the weight is input W, one row per output channel, rebuilt in its own
//! shape; a weight of rank below 2 is skipped.

use sora_onnx::builder::{ModelBuilder, attr_ints};
use sora_onnx::dump::dump;
use sora_onnx::onnx::tensor::{FloatType, float_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::SkipReason;

use super::{config, few_values, linears, prove, skips};

#[test]
fn conv_weight_is_rebuilt_in_its_shape() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 3, 8, 8]);
    b.initializer(float_tensor(
        "k",
        &[4, 3, 3, 3],
        FloatType::F32,
        &few_values(4, 27, 8, 13),
    ));
    let conv = b.node("Conv", &["x", "k"], &["y"]);
    conv.attribute.push(attr_ints("pads", &[1, 1, 1, 1]));
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!((t.shape, t.codebooks), ([4, 27], 4));
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn conv_weight_of_rank_one_is_skipped() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 3, 8, 8]);
    b.initializer(float_tensor(
        "k",
        &[27],
        FloatType::F32,
        &few_values(1, 27, 8, 1),
    ));
    b.node("Conv", &["x", "k"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    assert_eq!(linears(&model, &config(3, Granularity::Channel)), vec![]);
    assert_eq!(
        skips(&model, &config(3, Granularity::Channel)),
        vec![(
            "Conv_0".to_string(),
            SkipReason::NotMatrix("k".into(), vec![27])
        )]
    );
}
