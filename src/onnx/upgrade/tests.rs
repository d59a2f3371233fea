use super::*;
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

#[test]
fn ops_without_an_equivalent_are_refused() {
    let cases = [
        (
            9,
            "Upsample",
            10,
            "it is deprecated from opset 10, where Resize replaces it",
        ),
        (
            7,
            "Upsample",
            9,
            "its scales became an input at opset 9, and Resize replaces it from opset 10",
        ),
        (
            10,
            "Scatter",
            11,
            "it is deprecated from opset 11, where ScatterElements replaces it",
        ),
        (
            10,
            "Resize",
            13,
            "Resize-10 maps coordinates as no Resize-11 mode is sure to",
        ),
        (
            8,
            "Scan",
            9,
            "Scan-8's batch axis and sequence_lens input have no Scan-9 form",
        ),
        (
            18,
            "GroupNormalization",
            21,
            "its scale and bias became per channel, not per group, at opset 21",
        ),
        (
            9,
            "ImageScaler",
            21,
            "it is an experimental op that no ONNX opset defines any more",
        ),
    ];
    for (from, op, to, why) in cases {
        let model = one_node(from, &[1, 2], op, vec![]);
        assert_eq!(
            refused(&model, to),
            format!("cannot upgrade node '{op}_0' ({op}) from opset {from} to {to}: {why}")
        );
    }
    let model = one_node(
        11,
        &[1, 1, 2, 2],
        "Resize",
        vec![attr_string(
            "coordinate_transformation_mode",
            "tf_half_pixel_for_nn",
        )],
    );
    assert_eq!(
        refused(&model, 13),
        "cannot upgrade node 'Resize_0' (Resize) from opset 11 to 13: coordinate_transformation_mode tf_half_pixel_for_nn is gone from opset 13"
    );
    let mut b = ModelBuilder::new(9);
    b.input("x", DataType::Int64, &[Dim::Fixed(3)]);
    b.node("Erf", &["x"], &["y"]).name = Some(String::new());
    b.output("y", DataType::Int64);
    assert_eq!(
        refused(&b.build(), 13),
        "cannot upgrade node 'Erf #0' (Erf) from opset 9 to 13: its input 'x' is INT64, not a float type"
    );
}

#[test]
fn opsets_out_of_range_and_upgraded_functions_are_refused() {
    let model = one_node(6, &[2], "Relu", vec![]);
    assert_eq!(
        refused(&model, 13),
        "invalid model: cannot upgrade from default-domain opset 6: the oldest the upgrade reads is 7"
    );
    let model = one_node(13, &[2], "Relu", vec![]);
    assert_eq!(
        refused(&model, 22),
        "invalid option: cannot upgrade to opset 22: the newest opset known to the upgrade is 21"
    );
    let mut model = one_node(13, &[2], "Relu", vec![]);
    model.functions.push(FunctionProto {
        name: Some("f".into()),
        opset_import: model.opset_import.clone(),
        node: vec![node(
            "Squeeze",
            "",
            &["a"],
            &["b"],
            vec![attr_ints("axes", &[0])],
        )],
        ..Default::default()
    });
    assert_eq!(
        refused(&model, 21),
        "cannot upgrade node 'Squeeze #0 in function f' (Squeeze) from opset 13 to 21: the nodes of model-local functions are not upgraded"
    );
}

#[test]
fn a_model_as_new_already_is_left_unchanged() {
    let model = one_node(13, &[2, 3], "Squeeze", vec![]);
    for to in [11, 13] {
        let mut copy = model.clone();
        let done = upgrade_opset(&mut copy, to).unwrap();
        assert_eq!(copy, model);
        assert_eq!(
            done,
            Upgraded {
                from: 13,
                to: 13,
                rewritten: BTreeMap::new(),
            }
        );
    }
}

#[test]
fn only_the_default_domain_is_upgraded() {
    let mut b = ModelBuilder::new(11);
    b.import("com.example", 1);
    b.input_f32("x", &[1, 3]);
    let custom = b.node("Squeeze", &["x"], &["y"]);
    custom.domain = Some("com.example".into());
    custom.attribute.push(attr_ints("axes", &[0]));
    b.output_f32("y");
    let mut model = b.build();
    model.opset_import[0].domain = Some("ai.onnx".into());
    let (text, done) = upgraded(&model, 21);
    assert_eq!(
        text,
        "model ir 10 opset ai.onnx:21 com.example:1
input x: FLOAT [1, 3]
Squeeze_0: com.example.Squeeze(x) -> y {axes = [0]}
output y: FLOAT
"
    );
    assert!(done.rewritten.is_empty());
    let mut model = ModelBuilder::new(13).build();
    model.opset_import.clear();
    let (text, done) = upgraded(&model, 21);
    assert_eq!(text, "model ir 10 opset ai.onnx:21\n");
    assert_eq!(done.from, 0);
}

#[test]
fn subgraph_bodies_are_upgraded_with_their_own_initializers() {
    let mut then = ModelBuilder::new(11);
    then.node("Unsqueeze", &["x"], &["t"])
        .attribute
        .push(attr_ints("axes", &[0]));
    then.output_f32("t");
    let mut body = ModelBuilder::new(11);
    body.input("i", DataType::Int64, &[]);
    body.input_bool("c");
    body.input_f32("v", &[1, 3]);
    body.node("Identity", &["c"], &["c_out"]);
    body.node("ReduceSum", &["v"], &["v_out"]).attribute =
        vec![attr_ints("axes", &[0]), attr_int("keepdims", 1)];
    body.output("c_out", DataType::Bool);
    body.output_f32("v_out");
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[1, 3]);
    b.input_bool("cond");
    b.if_node(
        "cond",
        then.build_graph("then"),
        ModelBuilder::new(11).passthrough_graph("else", "x"),
        "y",
    );
    b.initializer(i64_tensor("n", &[], &[2]));
    b.node("Loop", &["n", "", "x"], &["z"])
        .attribute
        .push(attr_graph("body", body.build_graph("body")));
    b.output_f32("y");
    b.output_f32("z");
    let (text, done) = upgraded(&b.build(), 13);
    assert_eq!(
        text,
        "model ir 8 opset ai.onnx:13
input x: FLOAT [1, 3]
input cond: BOOL []
init n: INT64 [] = [2]
If_0: If(cond) -> y
  then_branch = graph then
    init t.axes: INT64 [1] = [0]
    Unsqueeze_0: Unsqueeze(x, t.axes) -> t
    output t: FLOAT
  else_branch = graph else
    Identity_0: Identity(x) -> else.out
    output else.out: FLOAT
Loop_1: Loop(n, , x) -> z
  body = graph body
    input i: INT64 []
    input c: BOOL []
    input v: FLOAT [1, 3]
    init v_out.axes: INT64 [1] = [0]
    Identity_0: Identity(c) -> c_out
    ReduceSum_1: ReduceSum(v, v_out.axes) -> v_out {keepdims = 1}
    output c_out: BOOL
    output v_out: FLOAT
output y: FLOAT
output z: FLOAT
"
    );
    assert_eq!(
        done.rewritten,
        counts(&[("ReduceSum", 1), ("Unsqueeze", 1)])
    );
}

#[test]
fn new_names_collide_with_none_in_the_model() {
    let mut then = ModelBuilder::new(11);
    then.node("Identity", &["x"], &["t.axes"]);
    then.output_f32("t.axes");
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[1, 3]);
    b.input_bool("cond");
    b.initializer(i64_tensor("t.axes.1", &[1], &[7]));
    b.node("Unsqueeze", &["x"], &["t"])
        .attribute
        .push(attr_ints("axes", &[0]));
    b.node("Unsqueeze", &["x"], &[""]).name = Some(String::new());
    b.if_node(
        "cond",
        then.build_graph("then"),
        ModelBuilder::new(11).passthrough_graph("else", "x"),
        "y",
    );
    b.output_f32("y");
    let mut model = b.build();
    model.graph.as_mut().unwrap().node[1]
        .attribute
        .push(attr_ints("axes", &[1]));
    let (text, _) = upgraded(&model, 13);
    assert!(
        text.contains("init t.axes.2: INT64 [1] = [0]\n")
            && text.contains("Unsqueeze_0: Unsqueeze(x, t.axes.2) -> t\n")
            && text.contains("init Unsqueeze.axes: INT64 [1] = [1]\n")
            && text.contains(": Unsqueeze(x, Unsqueeze.axes) -> \n"),
        "{text}"
    );
}

#[test]
fn unnamed_nodes_in_subgraphs_are_named_by_op_position_and_scope() {
    let mut then = ModelBuilder::new(9);
    then.node("Identity", &["x"], &["a"]);
    then.node("Upsample", &["a"], &["t"]).name = Some(String::new());
    then.output_f32("t");
    let mut b = ModelBuilder::new(9);
    b.input_f32("x", &[1, 3]);
    b.input_bool("cond");
    b.if_node(
        "cond",
        then.build_graph("then"),
        ModelBuilder::new(9).passthrough_graph("else", "x"),
        "y",
    );
    b.output_f32("y");
    assert_eq!(
        refused(&b.build(), 10),
        "cannot upgrade node 'Upsample #1 in subgraph 1' (Upsample) from opset 9 to 10: it is deprecated from opset 10, where Resize replaces it"
    );
}
