//! Refusals, and what the upgrade does to a model as a whole: its opset, domains,
//! subgraph bodies and names.

use super::*;

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
