//! The MatMul rule: the weight is input B, channels are its columns, the activation is
//! input A with broadcasting leading dims, and a bias is a following Add.

use sora_onnx::builder::{ModelBuilder, attr_graph, attr_int, float_matrix};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::tensor::{FloatType, float_tensor, i32_tensor, i64_tensor, u8_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::prove::Verdict;
use sora_onnx::rules::{Bias, Linear, Select, SkipReason};
use sora_onnx::{Config, rewrite};

use super::{config, few_values, matmul_model, prove, skips, with_plan};

#[test]
fn initializer_weight_per_channel() {
    let model = matmul_model(float_matrix("w", 16, 8, 1));
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    assert_eq!(out.report.tensors.len(), 1);
    let t = &out.report.tensors[0];
    assert_eq!((t.codebooks, t.particles, t.elements), (8, 16, 128));
    let proof = prove(&model, &out);
    // 16 rows per column: each column is exact up to the f16 rounding of its particles.
    assert!(proof.outputs[0].rel_l2 < 1e-3, "{proof:?}");
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn initializer_weight_per_tensor() {
    let model = matmul_model(float_matrix("w", 16, 8, 2));
    let out = rewrite(&model, &config(3, Granularity::Tensor)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!((t.codebooks, t.particles), (1, 8));
    let proof = prove(&model, &out);
    assert!(proof.outputs[0].cosine > 0.99, "{proof:?}");
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn constant_node_weight_is_replaced_in_place() {
    let values = few_values(16, 8, 8, 5);
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.node("Relu", &["x"], &["r"]);
    b.constant("w", float_tensor("w", &[16, 8], FloatType::F32, &values));
    b.node("MatMul", &["r", "w"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let nodes = &out.model.graph.as_ref().unwrap().node;
    assert!(nodes.iter().all(|n| n.op_type() != "Constant"));
    assert_eq!(nodes[0].op_type(), "Relu");
    assert_eq!(nodes.last().unwrap().input[1], "w.decoded");
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn weight_read_inside_an_if_branch() {
    let mut then = ModelBuilder::new(17);
    then.node("MatMul", &["x", "w"], &["t"]);
    then.output_f32("t");
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_bool("cond");
    b.initializer(float_tensor(
        "w",
        &[16, 16],
        FloatType::F32,
        &few_values(16, 16, 4, 6),
    ));
    b.if_node(
        "cond",
        then.build_graph("then"),
        ModelBuilder::new(17).passthrough_graph("else", "x"),
        "y",
    );
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(2, Granularity::Tensor)).unwrap();
    assert_eq!(out.report.tensors.len(), 1);
    assert_eq!(out.report.tensors[0].nodes, vec!["MatMul_0"]);
    // The proof feeds cond as 0 or 1 at random over its samples; both branches agree.
    let proof = prove(&model, &out);
    assert_eq!(proof.outputs[0].max_abs, 0.0, "{proof:?}");
    insta::assert_snapshot!(dump(&out.model));
}

/// A [16, 16] weight of few values, for the subgraph cases.
fn subgraph_weight() -> sora_onnx::onnx::proto::TensorProto {
    float_tensor("w", &[16, 16], FloatType::F32, &few_values(16, 16, 4, 6))
}

#[test]
fn weight_read_inside_a_scan_body() {
    // h' = h + x_t . w over 4 steps; the body reads w from the main graph.
    let mut body = ModelBuilder::new(17);
    body.input_f32("h", &[1, 16]);
    body.input_f32("x_t", &[1, 16]);
    body.node("MatMul", &["x_t", "w"], &["p"]);
    body.node("Add", &["h", "p"], &["h_next"]);
    body.node("Identity", &["h_next"], &["y_t"]);
    body.output_f32("h_next");
    body.output_f32("y_t");
    let mut b = ModelBuilder::new(17);
    b.input_f32("h0", &[1, 16]);
    b.input_f32("xs", &[4, 1, 16]);
    b.initializer(subgraph_weight());
    let scan = b.node("Scan", &["h0", "xs"], &["h_last", "ys"]);
    scan.attribute
        .push(attr_graph("body", body.build_graph("body")));
    scan.attribute.push(attr_int("num_scan_inputs", 1));
    b.output_f32("h_last");
    b.output_f32("ys");
    let model = b.build();
    let out = rewrite(&model, &config(2, Granularity::Tensor)).unwrap();
    assert_eq!(out.report.tensors[0].nodes, vec!["MatMul_0"]);
    let proof = prove(&model, &out);
    for output in &proof.outputs {
        assert_eq!(output.max_abs, 0.0, "{proof:?}");
    }
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn weight_read_inside_a_loop_body() {
    // v' = v . w, three times. The plan rewrites it like an If branch or a Scan body;
    // tract 0.23 has no Loop op, so the proof cannot run either model (onnxruntime
    // checks it: scripts/ort_check.py, loop_body).
    let mut body = ModelBuilder::new(17);
    body.input("i", DataType::Int64, &[]);
    body.input("cond", DataType::Bool, &[]);
    body.input_f32("v", &[2, 16]);
    body.node("Identity", &["cond"], &["cond_out"]);
    body.node("MatMul", &["v", "w"], &["v_out"]);
    body.output("cond_out", DataType::Bool);
    body.output_f32("v_out");
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(i64_tensor("trips", &[], &[3]));
    b.initializer(subgraph_weight());
    b.input_bool("go");
    b.node("Loop", &["trips", "go", "x"], &["y"])
        .attribute
        .push(attr_graph("body", body.build_graph("body")));
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(2, Granularity::Tensor)).unwrap();
    assert_eq!(out.report.tensors[0].nodes, vec!["MatMul_1"]);
    assert!(out.report.skipped.is_empty());
    let proof = prove(&model, &out);
    assert_eq!(proof.verdict, Verdict::Unproven);
    let reason = proof.reason.unwrap_or_default();
    assert!(reason.contains("Loop"), "{reason}");
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn weight_shared_by_two_matmuls_is_decomposed_once() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_matrix("w", 16, 16, 7));
    b.node("MatMul", &["x", "w"], &["a"]);
    b.node("MatMul", &["a", "w"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    assert_eq!(out.report.tensors.len(), 1);
    assert_eq!(out.report.tensors[0].nodes, vec!["MatMul_0", "MatMul_1"]);
    let g = out.model.graph.as_ref().unwrap();
    assert_eq!(
        g.node
            .iter()
            .filter(|n| n.op_type() == "GatherElements")
            .count(),
        1
    );
    assert!(
        g.node
            .iter()
            .filter(|n| n.op_type() == "MatMul")
            .all(|n| n.input[1] == "w.decoded")
    );
    assert!(prove(&model, &out).outputs[0].rel_l2 < 0.05);
}

#[test]
fn matmul_multiplies_input_a_and_adds_a_following_bias() {
    let model = matmul_model(float_matrix("w", 16, 8, 1));
    let linear = Linear {
        x: "x",
        y: "y",
        x_transposed: false,
        batched: true,
        alpha: 1.0,
        bias: Bias::Following,
    };
    with_plan(&model, &config(4, Granularity::Channel), |plan| {
        assert_eq!(plan.weights.len(), 1);
        assert_eq!(plan.weights[0].first().linear, Some(linear));
        assert!(plan.skipped.is_empty());
    });
}

#[test]
fn matmul_skip_reasons() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_f32("dyn", &[16, 16]);
    b.input_f32("over", &[16, 16]);
    b.initializer(float_matrix("over", 16, 16, 6));
    b.initializer(float_matrix("small", 16, 2, 1));
    b.initializer(float_matrix("excluded_w", 16, 16, 3));
    b.initializer(float_matrix("also_read", 16, 16, 4));
    b.initializer(float_tensor("vector", &[16], FloatType::F32, &[0.5; 16]));
    b.initializer(i32_tensor("ints", &[16, 16], &[1; 256]));
    b.initializer(u8_tensor("q", &[16, 16], vec![3; 256]));
    b.initializer(float_matrix("scale", 1, 1, 5));
    b.node("DequantizeLinear", &["q", "scale"], &["dq"]);
    b.node("Relu", &["also_read"], &["r"]);
    for (i, w) in [
        "dyn",
        "over",
        "small",
        "excluded_w",
        "also_read",
        "vector",
        "ints",
        "dq",
    ]
    .iter()
    .enumerate()
    {
        let out = format!("y{i}");
        b.node("MatMul", &["x", w], &[&out]).name = Some(format!("m{i}"));
        b.output_f32(&out);
    }
    b.output_f32("r");
    let config = Config {
        select: Select {
            min_elements: 64,
            names: sora_onnx::Selection::new(&[], &["excluded*".into()]).unwrap(),
            ..Select::default()
        },
        ..Config::default()
    };
    let node = |i: usize| format!("m{i}");
    assert_eq!(
        skips(&b.build(), &config),
        vec![
            (node(0), SkipReason::DynamicWeight("dyn".into())),
            (node(1), SkipReason::OverridableInitializer("over".into())),
            (node(2), SkipReason::TooSmall("small".into(), 32, 64)),
            (node(3), SkipReason::Excluded("excluded*".into())),
            (node(5), SkipReason::NotMatrix("vector".into(), vec![16])),
            (node(6), SkipReason::NotFloat("ints".into(), "INT32".into())),
            (
                node(7),
                SkipReason::AlreadyQuantized(
                    "dq".into(),
                    "by DequantizeLinear 'DequantizeLinear_0'".into()
                )
            ),
            (
                node(4),
                SkipReason::OtherUse("also_read".into(), "node 'Relu_1'".into())
            ),
        ]
    );
}

#[test]
fn matmul_weights_need_opset_7_and_outliers_opset_11() {
    let mut model = matmul_model(float_matrix("w", 16, 8, 1));
    model.opset_import[0].version = Some(6);
    assert_eq!(
        skips(&model, &config(4, Granularity::Channel)),
        vec![("MatMul_0".to_string(), SkipReason::OpsetTooOld(6, 7))]
    );
    model.opset_import[0].version = Some(9);
    let outliers = Config {
        outliers: 0.05,
        ..config(4, Granularity::Channel)
    };
    assert_eq!(
        skips(&model, &outliers),
        vec![("MatMul_0".to_string(), SkipReason::OpsetTooOld(9, 11))]
    );
}

#[test]
fn below_opset_11_channels_are_read_by_one_gather() {
    let values = few_values(16, 8, 8, 3);
    let mut model = matmul_model(float_tensor("w", &[16, 8], FloatType::F32, &values));
    model.opset_import[0].version = Some(9);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let ops: Vec<&str> = (out.model.graph.as_ref().unwrap().node.iter())
        .map(|n| n.op_type())
        .collect();
    assert!(
        !ops.contains(&"GatherElements") && !ops.contains(&"Range"),
        "{ops:?}"
    );
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn skip_reasons_read_as_one_sentence_naming_the_weight() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_f32("dyn", &[16, 16]);
    b.initializer(float_matrix("small", 16, 2, 1));
    b.initializer(i32_tensor("ints", &[16, 16], &[1; 256]));
    b.node("MatMul", &["x", "dyn"], &["a"]);
    b.node("MatMul", &["x", "small"], &["b"]);
    b.node("MatMul", &["x", "ints"], &["c"]);
    for o in ["a", "b", "c"] {
        b.output_f32(o);
    }
    let out = rewrite(&b.build(), &Config::default()).unwrap();
    let lines: Vec<String> = (out.report.skipped.iter())
        .map(|s| format!("{}: {}", s.node, s.reason))
        .collect();
    assert_eq!(
        lines,
        [
            "MatMul_0: weight 'dyn' is computed at run time, not a constant",
            "MatMul_1: weight 'small' has 32 elements, fewer than --min-elements 4096",
            "MatMul_2: weight 'ints' is INT32, not FLOAT16, FLOAT or DOUBLE",
        ]
    );
    let json = serde_json::to_value(&out.report.skipped[0]).unwrap();
    assert_eq!(
        json["reason"],
        "weight 'dyn' is computed at run time, not a constant"
    );
}

#[test]
fn one_output_channel_is_decoded_per_tensor() {
    let model = matmul_model(float_tensor(
        "w",
        &[32, 1],
        FloatType::F32,
        &few_values(32, 1, 8, 9),
    ));
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!((t.granularity, t.codebooks), (Granularity::Tensor, 1));
    let ops: Vec<&str> = (out.model.graph.as_ref().unwrap().node.iter())
        .map(|n| n.op_type())
        .collect();
    assert!(!ops.contains(&"GatherElements"), "{ops:?}");
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
}
