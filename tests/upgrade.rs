//! `upgrade_opset` keeps a model's meaning: small models in the forms of old opsets run
//! in tract before and after the upgrade, with exactly the same outputs.

use sora_onnx::builder::{
    ModelBuilder, attr_float, attr_int, attr_ints, attr_string, pseudo_random,
};
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::runtime::{Session, values_f64};
use sora_onnx::upgrade::upgrade_opset;
use tract_onnx::prelude::*;

/// The outputs of `model` in tract for the float input `x` of `dims`, and for a boolean
/// second input when `cond` is given.
fn outputs(model: &ModelProto, which: &str, dims: &[usize], cond: Option<bool>) -> Vec<Vec<f64>> {
    let n = dims.iter().product();
    let x: Vec<f32> = pseudo_random(n, 7).iter().map(|&v| v as f32).collect();
    let mut feed = vec![Tensor::from_shape(dims, &x).unwrap()];
    let mut facts = vec![(DatumType::F32, dims.to_vec())];
    if let Some(c) = cond {
        feed.push(Tensor::from(c));
        facts.push((DatumType::Bool, vec![]));
    }
    let session = Session::new(model, which, &facts).unwrap();
    let out = session.run(&feed).unwrap();
    out.iter().map(|v| values_f64(v).unwrap()).collect()
}

/// Upgrades `model` to `to`, checks it says it rewrote `ops`, and compares its outputs
/// in tract with the original's.
fn same_outputs(model: &ModelProto, to: i64, ops: &[&str], dims: &[usize], cond: Option<bool>) {
    let mut upgraded = model.clone();
    let done = upgrade_opset(&mut upgraded, to).unwrap();
    let rewritten: Vec<&str> = done.rewritten.keys().map(String::as_str).collect();
    assert_eq!(rewritten, ops);
    let before = outputs(model, "original", dims, cond);
    let after = outputs(&upgraded, "upgraded", dims, cond);
    assert_eq!(before.len(), model.graph.as_ref().unwrap().output.len());
    assert_eq!(
        before, after,
        "outputs differ after the upgrade to opset {to}"
    );
}

/// The opset-10 forms of Unsqueeze, Squeeze, ReduceSum, ReduceMean, Split, Softmax,
/// Clip, Pad and Dropout on an input of shape [2, 3, 4].
fn opset_10() -> ModelBuilder {
    let mut b = ModelBuilder::new(10);
    b.input_f32("x", &[2, 3, 4]);
    b.node("Unsqueeze", &["x"], &["u"])
        .attribute
        .push(attr_ints("axes", &[0]));
    b.node("Squeeze", &["u"], &["s"])
        .attribute
        .push(attr_ints("axes", &[0]));
    b.node("ReduceSum", &["s"], &["sum"]).attribute =
        vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)];
    b.node("ReduceMean", &["s"], &["mean"]).attribute =
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)];
    b.node("Split", &["s"], &["head", "tail"]).attribute =
        vec![attr_int("axis", 2), attr_ints("split", &[1, 3])];
    b.node("Split", &["s"], &["left", "right"])
        .attribute
        .push(attr_int("axis", 1));
    b.node("Softmax", &["x"], &["soft"])
        .attribute
        .push(attr_int("axis", 2));
    b.node("Clip", &["x"], &["clip"]).attribute =
        vec![attr_float("min", -0.25), attr_float("max", 0.5)];
    b.node("Clip", &["x"], &["ceiling"])
        .attribute
        .push(attr_float("max", 0.1));
    b.node("Pad", &["x"], &["pad"]).attribute = vec![
        attr_ints("pads", &[0, 1, 0, 0, 0, 2]),
        attr_float("value", 0.5),
    ];
    b.node("Pad", &["x"], &["edge"]).attribute = vec![
        attr_ints("pads", &[0, 0, 1, 0, 0, 1]),
        attr_string("mode", "edge"),
    ];
    b.node("Dropout", &["x"], &["drop"])
        .attribute
        .push(attr_float("ratio", 0.3));
    for output in [
        "sum", "mean", "head", "tail", "left", "soft", "clip", "ceiling", "pad", "edge", "drop",
    ] {
        b.output_f32(output);
    }
    b
}

#[test]
fn opset_10_forms_compute_the_same_at_13_and_21() {
    let model = opset_10().build();
    let at_13 = [
        "Clip",
        "Dropout",
        "Pad",
        "ReduceSum",
        "Split",
        "Squeeze",
        "Unsqueeze",
    ];
    same_outputs(&model, 13, &at_13, &[2, 3, 4], None);
    let at_21 = [
        "Clip",
        "Dropout",
        "Pad",
        "ReduceMean",
        "ReduceSum",
        "Split",
        "Squeeze",
        "Unsqueeze",
    ];
    same_outputs(&model, 21, &at_21, &[2, 3, 4], None);
}

#[test]
fn opset_9_slice_computes_the_same_at_21() {
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[3, 8]);
    b.node("Slice", &["x"], &["slice"]).attribute = vec![
        attr_ints("starts", &[1, -6]),
        attr_ints("ends", &[3, 1000]),
        attr_ints("axes", &[0, 1]),
    ];
    b.node("Slice", &["x"], &["all_axes"]).attribute =
        vec![attr_ints("starts", &[0, 2]), attr_ints("ends", &[2, 5])];
    b.output_f32("slice");
    b.output_f32("all_axes");
    same_outputs(&b.build(), 21, &["Slice"], &[3, 8], None);
}

/// tract reads TopK's k from its second input only (the TopK-10 form), so the opset-9
/// model does not run there: the upgraded one is checked against the top 3 of each row
/// computed here.
#[test]
fn opset_9_top_k_at_21_gives_the_top_values_and_their_indices() {
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[3, 8]);
    b.node("TopK", &["x"], &["values", "indices"]).attribute =
        vec![attr_int("axis", 1), attr_int("k", 3)];
    b.output_f32("values");
    b.output("indices", DataType::Int64);
    let mut model = b.build();
    upgrade_opset(&mut model, 21).unwrap();
    let out = outputs(&model, "upgraded", &[3, 8], None);
    let x: Vec<f64> = pseudo_random(24, 7)
        .iter()
        .map(|&v| v as f32 as f64)
        .collect();
    let (mut values, mut indices) = (Vec::new(), Vec::new());
    for row in x.chunks(8) {
        let mut order: Vec<usize> = (0..8).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        values.extend(order[..3].iter().map(|&i| row[i]));
        indices.extend(order[..3].iter().map(|&i| i as f64));
    }
    assert_eq!(out, [values, indices]);
}

#[test]
fn if_branches_compute_the_same_at_21() {
    let mut then = ModelBuilder::new(11);
    then.node("ReduceSum", &["x"], &["t"]).attribute =
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)];
    then.output_f32("t");
    let mut otherwise = ModelBuilder::new(11);
    otherwise.node("ReduceMax", &["x"], &["e"]).attribute =
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)];
    otherwise.output_f32("e");
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[2, 5]);
    b.input_bool("cond");
    b.if_node(
        "cond",
        then.build_graph("then"),
        otherwise.build_graph("else"),
        "y",
    );
    b.output_f32("y");
    let model = b.build();
    for cond in [true, false] {
        same_outputs(&model, 21, &["ReduceMax", "ReduceSum"], &[2, 5], Some(cond));
    }
}
