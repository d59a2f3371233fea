//! The decode subgraph, run alone in tract, rebuilds exactly the weights the particle
//! math says it should: every index width, granularity, channel axis, element type and
//! opset from the oldest supported on.

use sora_onnx::builder::pseudo_random;
use sora_onnx::forms::decode::{DecodeInput, emit};
use sora_onnx::graph::Names;
use sora_onnx::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use sora_onnx::onnx::tensor::FloatType;
use sora_onnx::particles::{Granularity, Matrix, decompose};
use tract_onnx::prelude::*;

/// A model with no inputs whose one output is the decoded weight.
fn decode_model(input: &DecodeInput, opset: i64) -> ModelProto {
    let sub = emit(input, &mut Names::default());
    let output = sora_onnx::builder::value_info(&sub.output, input.float_type.data_type(), None);
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("decode".into()),
            node: sub.nodes,
            initializer: sub.initializers,
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_in_tract(model: &ModelProto) -> Vec<f64> {
    use prost::Message;
    let bytes = model.encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan.run(tvec!()).unwrap();
    let t = out[0].cast_to::<f64>().unwrap();
    t.to_plain_array_view::<f64>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn check(
    rows: usize,
    cols: usize,
    bits: u32,
    granularity: Granularity,
    channel_axis: usize,
    ty: FloatType,
    opset: i64,
) {
    let values = pseudo_random(rows * cols, bits as u64 * 31 + rows as u64);
    let matrix = Matrix {
        values: &values,
        rows,
        cols,
        channel_axis,
    };
    let decomposition = decompose(&matrix, granularity, bits);
    let expected = decomposition.decoded(&matrix, granularity, |v| ty.round(v));
    let input = DecodeInput {
        weight: "w",
        shape: [rows, cols],
        float_type: ty,
        decomposition: &decomposition,
        granularity,
        channel_axis,
        bits,
    };
    let got = run_in_tract(&decode_model(&input, opset));
    assert_eq!(
        got, expected,
        "{rows}x{cols} bits {bits} {granularity:?} axis {channel_axis} {ty:?} opset {opset}"
    );
}

#[test]
fn every_index_width_decodes_exactly() {
    for bits in 1..=8 {
        // 7 x 5 = 35 weights: not a multiple of 8, so the packing pads.
        check(7, 5, bits, Granularity::Tensor, 1, FloatType::F32, 17);
        check(16, 9, bits, Granularity::Channel, 1, FloatType::F32, 17);
    }
}

#[test]
fn channels_along_rows_decode_exactly() {
    for bits in [2, 4, 8] {
        check(6, 11, bits, Granularity::Channel, 0, FloatType::F32, 17);
    }
}

#[test]
fn half_and_double_weights_decode_exactly() {
    check(12, 8, 4, Granularity::Channel, 1, FloatType::F16, 17);
    check(12, 8, 3, Granularity::Tensor, 1, FloatType::F64, 17);
}

#[test]
fn oldest_and_newest_opsets() {
    for opset in [11, 13, 17, 21] {
        check(8, 8, 4, Granularity::Channel, 1, FloatType::F32, opset);
        check(5, 3, 3, Granularity::Tensor, 1, FloatType::F32, opset);
    }
}

#[test]
fn generated_names_derive_from_the_weight_and_avoid_taken_names() {
    let values = pseudo_random(64, 1);
    let matrix = Matrix {
        values: &values,
        rows: 8,
        cols: 8,
        channel_axis: 1,
    };
    let decomposition = decompose(&matrix, Granularity::Tensor, 2);
    let input = DecodeInput {
        weight: "layer/w",
        shape: [8, 8],
        float_type: FloatType::F32,
        decomposition: &decomposition,
        granularity: Granularity::Tensor,
        channel_axis: 1,
        bits: 2,
    };
    let mut names = Names::default();
    names.fresh("layer/w.particles");
    let sub = emit(&input, &mut names);
    let initializers: Vec<&str> = sub.initializers.iter().map(|t| t.name()).collect();
    assert!(initializers.contains(&"layer/w.index"));
    assert!(initializers.contains(&"layer/w.particles.1"));
    assert_eq!(sub.output, "layer/w.decoded");
    assert!(
        sub.nodes
            .iter()
            .all(|n| n.name().starts_with("layer/w.decode/"))
    );
}
