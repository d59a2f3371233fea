use super::*;

mod model;
use crate::builder::{
    Dim, ModelBuilder, attr_float, attr_graph, attr_int, attr_ints, attr_string, node, value_info,
};
use crate::dump::dump;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{AttributeProto, FunctionProto};
use crate::onnx::tensor::{FloatType, float_tensor, i64_tensor};

/// The dump of `model` upgraded to `to`, and what the upgrade says it did.
fn upgraded(model: &ModelProto, to: i64) -> (String, Upgraded) {
    let mut model = model.clone();
    let done = upgrade_opset(&mut model, to).unwrap();
    (dump(&model), done)
}

/// The error of upgrading `model` to `to`, checking the model is left as it was.
fn refused(model: &ModelProto, to: i64) -> String {
    let mut copy = model.clone();
    let err = upgrade_opset(&mut copy, to).unwrap_err().to_string();
    assert_eq!(&copy, model, "a refused upgrade changed the model");
    err
}

/// A model at `opset` whose float input `x` of `dims` goes through one node `op`, with
/// `attributes`, to the output `y`.
fn one_node(opset: i64, dims: &[usize], op: &str, attributes: Vec<AttributeProto>) -> ModelProto {
    let mut b = ModelBuilder::new(opset);
    b.input_f32("x", dims);
    b.node(op, &["x"], &["y"]).attribute = attributes;
    b.output_f32("y");
    b.build()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(op, n)| (op.to_string(), n)).collect()
}

#[test]
fn squeeze_and_unsqueeze_axes_become_inputs() {
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[3, 4]);
    b.node("Unsqueeze", &["x"], &["u"])
        .attribute
        .push(attr_ints("axes", &[0, 3]));
    b.node("Squeeze", &["u"], &["s"])
        .attribute
        .push(attr_ints("axes", &[3]));
    b.node("Squeeze", &["s"], &["y"]);
    b.output_f32("y");
    let (text, done) = upgraded(&b.build(), 13);
    assert_eq!(
        text,
        "model ir 8 opset ai.onnx:13
input x: FLOAT [3, 4]
init u.axes: INT64 [2] = [0, 3]
init s.axes: INT64 [1] = [3]
Unsqueeze_0: Unsqueeze(x, u.axes) -> u
Squeeze_1: Squeeze(u, s.axes) -> s
Squeeze_2: Squeeze(s) -> y
output y: FLOAT
"
    );
    assert_eq!(
        done,
        Upgraded {
            from: 11,
            to: 13,
            rewritten: counts(&[("Squeeze", 1), ("Unsqueeze", 1)]),
        }
    );
}

#[test]
fn reduce_sum_moves_its_axes_at_13_and_the_other_reductions_at_18() {
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[3, 4]);
    b.node("ReduceSum", &["x"], &["s"]).attribute =
        vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)];
    b.node("ReduceMean", &["s"], &["y"])
        .attribute
        .push(attr_ints("axes", &[0]));
    b.output_f32("y");
    let model = b.build();
    let (text, _) = upgraded(&model, 13);
    assert!(
        text.contains("ReduceSum_0: ReduceSum(x, s.axes) -> s {keepdims = 0}\n"),
        "{text}"
    );
    assert!(
        text.contains("ReduceMean_1: ReduceMean(s) -> y {axes = [0]}\n"),
        "{text}"
    );
    let (text, done) = upgraded(&model, 18);
    assert!(
        text.contains("init y.axes: INT64 [1] = [0]\n")
            && text.contains("ReduceMean_1: ReduceMean(s, y.axes) -> y\n"),
        "{text}"
    );
    assert_eq!(
        done.rewritten,
        counts(&[("ReduceMean", 1), ("ReduceSum", 1)])
    );
}

#[test]
fn split_gets_its_sizes_as_an_input_or_a_count_of_outputs() {
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[4, 6]);
    b.node("Split", &["x"], &["a", "b"]).attribute =
        vec![attr_int("axis", 1), attr_ints("split", &[2, 4])];
    b.node("Split", &["x"], &["c", "d"]);
    b.output_f32("a");
    let model = b.build();
    let (text, _) = upgraded(&model, 13);
    assert!(
        text.contains("init a.split: INT64 [2] = [2, 4]\n")
            && text.contains("Split_0: Split(x, a.split) -> a, b {axis = 1}\n")
            && text.contains("Split_1: Split(x) -> c, d\n"),
        "{text}"
    );
    let (text, _) = upgraded(&model, 18);
    assert!(
        text.contains("Split_0: Split(x, a.split) -> a, b {axis = 1}\n")
            && text.contains("Split_1: Split(x) -> c, d {num_outputs = 2}\n"),
        "{text}"
    );
}

#[test]
fn softmax_on_its_last_axis_stays_as_it_is() {
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[2, 3, 4]);
    b.input_f32("m", &[2, 5]);
    b.node("Softmax", &["x"], &["a"])
        .attribute
        .push(attr_int("axis", -1));
    b.node("LogSoftmax", &["x"], &["b"])
        .attribute
        .push(attr_int("axis", 2));
    b.node("Hardmax", &["m"], &["c"]);
    b.output_f32("a");
    let model = b.build();
    let (text, done) = upgraded(&model, 13);
    let mut expected = model.clone();
    expected.opset_import[0].version = Some(13);
    assert_eq!(text, dump(&expected));
    assert!(done.rewritten.is_empty());
}

#[test]
fn softmax_on_another_axis_or_an_unknown_rank_is_refused() {
    let model = one_node(11, &[2, 3, 4], "Softmax", vec![attr_int("axis", 1)]);
    assert_eq!(
        refused(&model, 13),
        "cannot upgrade node 'Softmax_0' (Softmax) from opset 11 to 13: axis 1 is not the last of its rank-3 input, and from opset 13 the op no longer flattens the axes after it"
    );
    let mut model = one_node(12, &[2, 3], "LogSoftmax", vec![]);
    model.graph.as_mut().unwrap().input[0] = value_info("x", DataType::Float, None);
    assert_eq!(
        refused(&model, 21),
        "cannot upgrade node 'LogSoftmax_0' (LogSoftmax) from opset 12 to 21: the rank of its input 'x' is unknown, so axis 1 may not be the last, and from opset 13 the op no longer flattens the axes after it"
    );
}

#[test]
fn dropout_loses_its_ratio_and_an_unread_mask() {
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[2, 3]);
    b.node("Dropout", &["x"], &["y", "mask"])
        .attribute
        .push(attr_float("ratio", 0.25));
    b.output_f32("y");
    let (text, done) = upgraded(&b.build(), 12);
    assert!(text.contains("Dropout_0: Dropout(x) -> y\n"), "{text}");
    assert_eq!(done.rewritten, counts(&[("Dropout", 1)]));
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[2, 3]);
    b.node("Dropout", &["x"], &["y", "mask"]);
    b.output_f32("y");
    b.output_f32("mask");
    assert_eq!(
        refused(&b.build(), 12),
        "cannot upgrade node 'Dropout_0' (Dropout) from opset 9 to 12: its mask output 'mask' is read, and the mask became boolean at opset 10"
    );
}

#[test]
fn clip_bounds_become_scalar_inputs_of_the_input_type() {
    let model = one_node(
        10,
        &[2, 3],
        "Clip",
        vec![attr_float("min", -1.5), attr_float("max", 2.0)],
    );
    let (text, _) = upgraded(&model, 11);
    assert!(
        text.contains("init y.min: FLOAT [] = [-1.500000]\n")
            && text.contains("init y.max: FLOAT [] = [2.000000]\n")
            && text.contains("Clip_0: Clip(x, y.min, y.max) -> y\n"),
        "{text}"
    );
    let mut b = ModelBuilder::new(10);
    b.input("x", DataType::Float16, &[Dim::Fixed(4)]);
    b.node("Clip", &["x"], &["y"])
        .attribute
        .push(attr_float("max", 6.0));
    b.output("y", DataType::Float16);
    let (text, _) = upgraded(&b.build(), 11);
    assert!(
        text.contains("init y.max: FLOAT16 [] = [6.000000]\n")
            && text.contains("Clip_0: Clip(x, , y.max) -> y\n"),
        "{text}"
    );
    let mut b = ModelBuilder::new(10);
    b.input("x", DataType::Int32, &[Dim::Fixed(4)]);
    b.node("Clip", &["x"], &["y"])
        .attribute
        .push(attr_float("max", 6.0));
    b.output("y", DataType::Int32);
    assert_eq!(
        refused(&b.build(), 11),
        "cannot upgrade node 'Clip_0' (Clip) from opset 10 to 11: its input 'x' is INT32, not a float type"
    );
}

#[test]
fn pad_slice_and_top_k_attributes_become_inputs() {
    let model = one_node(
        10,
        &[2, 3],
        "Pad",
        vec![
            attr_ints("pads", &[0, 1, 0, 2]),
            attr_float("value", 0.5),
            attr_string("mode", "constant"),
        ],
    );
    let (text, _) = upgraded(&model, 11);
    assert!(
        text.contains("init y.pads: INT64 [4] = [0, 1, 0, 2]\n")
            && text.contains("init y.value: FLOAT [] = [0.500000]\n")
            && text.contains("Pad_0: Pad(x, y.pads, y.value) -> y {mode = \"constant\"}\n"),
        "{text}"
    );
    let model = one_node(
        9,
        &[4, 6],
        "Slice",
        vec![
            attr_ints("starts", &[1]),
            attr_ints("ends", &[5]),
            attr_ints("axes", &[1]),
        ],
    );
    let (text, _) = upgraded(&model, 10);
    assert!(
        text.contains("init y.starts: INT64 [1] = [1]\n")
            && text.contains("init y.ends: INT64 [1] = [5]\n")
            && text.contains("init y.axes: INT64 [1] = [1]\n")
            && text.contains("Slice_0: Slice(x, y.starts, y.ends, y.axes) -> y\n"),
        "{text}"
    );
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[2, 8]);
    b.node("TopK", &["x"], &["v", "i"]).attribute = vec![attr_int("axis", 1), attr_int("k", 3)];
    b.output_f32("v");
    let (text, done) = upgraded(&b.build(), 21);
    assert!(
        text.starts_with("model ir 10 opset ai.onnx:21\n")
            && text.contains("init v.k: INT64 [1] = [3]\n")
            && text.contains("TopK_0: TopK(x, v.k) -> v, i {axis = 1}\n"),
        "{text}"
    );
    assert_eq!(done.rewritten, counts(&[("TopK", 1)]));
}

#[test]
fn batch_normalization_loses_spatial_and_keeps_one_output() {
    let mut b = ModelBuilder::new(8);
    b.input_f32("x", &[1, 2, 3, 3]);
    for name in ["scale", "bias", "mean", "var"] {
        b.initializer(float_tensor(name, &[2], FloatType::F32, &[1.0, 0.5]));
    }
    b.node(
        "BatchNormalization",
        &["x", "scale", "bias", "mean", "var"],
        &["y"],
    )
    .attribute = vec![attr_int("spatial", 1), attr_float("momentum", 0.8)];
    b.output_f32("y");
    let model = b.build();
    let (text, _) = upgraded(&model, 15);
    assert!(
        text.contains(
            "BatchNormalization_0: BatchNormalization(x, scale, bias, mean, var) -> y {momentum = 0.8}\n"
        ),
        "{text}"
    );
    let mut spatial = model.clone();
    spatial.graph.as_mut().unwrap().node[0].attribute[0] = attr_int("spatial", 0);
    assert_eq!(
        refused(&spatial, 9),
        "cannot upgrade node 'BatchNormalization_0' (BatchNormalization) from opset 8 to 9: spatial = 0 (statistics per activation) has no form from opset 9"
    );
    let mut statistics = model.clone();
    let bn = &mut statistics.graph.as_mut().unwrap().node[0];
    bn.attribute.clear();
    bn.output = vec!["y".into(), "running_mean".into()];
    assert_eq!(
        refused(&statistics, 14),
        "cannot upgrade node 'BatchNormalization_0' (BatchNormalization) from opset 8 to 14: its outputs beyond Y are training statistics, which changed at opset 14"
    );
}

#[test]
fn grid_sample_modes_are_renamed_and_roi_align_keeps_its_coordinates() {
    let mut b = ModelBuilder::new(16);
    b.input_f32("x", &[1, 1, 4, 4]);
    b.input_f32("grid", &[1, 2, 2, 2]);
    b.node("GridSample", &["x", "grid"], &["a"])
        .attribute
        .push(attr_string("mode", "bilinear"));
    b.node("GridSample", &["x", "grid"], &["b"])
        .attribute
        .push(attr_string("mode", "bicubic"));
    b.node("GridSample", &["x", "grid"], &["c"])
        .attribute
        .push(attr_string("mode", "nearest"));
    b.output_f32("a");
    let (text, done) = upgraded(&b.build(), 20);
    assert!(
        text.contains("GridSample_0: GridSample(x, grid) -> a {mode = \"linear\"}\n")
            && text.contains("GridSample_1: GridSample(x, grid) -> b {mode = \"cubic\"}\n")
            && text.contains("GridSample_2: GridSample(x, grid) -> c {mode = \"nearest\"}\n"),
        "{text}"
    );
    assert_eq!(done.rewritten, counts(&[("GridSample", 2)]));
    let mut b = ModelBuilder::new(10);
    b.input_f32("x", &[1, 1, 4, 4]);
    b.input_f32("rois", &[1, 4]);
    b.input("batch", DataType::Int64, &[Dim::Fixed(1)]);
    b.node("RoiAlign", &["x", "rois", "batch"], &["y"]);
    b.output_f32("y");
    let (text, _) = upgraded(&b.build(), 16);
    assert!(
        text.contains(
            "RoiAlign_0: RoiAlign(x, rois, batch) -> y {coordinate_transformation_mode = \"output_half_pixel\"}\n"
        ),
        "{text}"
    );
}

#[test]
fn dft_axis_becomes_its_third_input() {
    let model = one_node(17, &[1, 8, 1], "DFT", vec![]);
    let (text, _) = upgraded(&model, 20);
    assert!(
        text.contains("init y.axis: INT64 [] = [1]\n")
            && text.contains("DFT_0: DFT(x, , y.axis) -> y\n"),
        "{text}"
    );
}
