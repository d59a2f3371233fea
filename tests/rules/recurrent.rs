//! The LSTM, GRU and RNN rules: W (input 1) and R (input 2) of shape
//! `[directions, gates * hidden, inputs]`, one codebook per direction and gate at
//! channel granularity, rebuilt in their own shape; B stays.

use sora_onnx::builder::{ModelBuilder, attr_int, attr_string, pseudo_random};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::tensor::{FloatType, float_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::SkipReason;

use super::{config, few_values, linears, prove, skips, with_plan};

/// `Y, Y_h = op(X [3, 2, 5], W, R, B)` with `hidden` 4, `W` and `R` as given.
fn recurrent(
    op: &str,
    direction: &str,
    w: (&[usize], Vec<f64>),
    r: (&[usize], Vec<f64>),
) -> ModelProto {
    let directions = if direction == "bidirectional" { 2 } else { 1 };
    let gates = w.0[1] / 4;
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[3, 2, 5]);
    b.initializer(float_tensor("W", w.0, FloatType::F32, &w.1));
    b.initializer(float_tensor("R", r.0, FloatType::F32, &r.1));
    let bias = pseudo_random(directions * 2 * gates * 4, 3);
    b.initializer(float_tensor(
        "B",
        &[directions, 2 * gates * 4],
        FloatType::F32,
        &bias,
    ));
    let node = b.node(op, &["x", "W", "R", "B"], &["y", "y_h"]);
    node.attribute.push(attr_int("hidden_size", 4));
    node.attribute.push(attr_string("direction", direction));
    b.output_f32("y");
    b.output_f32("y_h");
    b.build()
}

#[test]
fn bidirectional_lstm_weights_get_a_codebook_per_direction_and_gate() {
    let w = few_values(2 * 16, 5, 4, 31);
    let r = few_values(2 * 16, 4, 4, 32);
    let model = recurrent("LSTM", "bidirectional", (&[2, 16, 5], w), (&[2, 16, 4], r));
    let out = rewrite(&model, &config(2, Granularity::Channel)).unwrap();
    let shapes: Vec<_> = (out.report.tensors.iter())
        .map(|t| (t.name.as_str(), t.shape, t.codebooks))
        .collect();
    assert_eq!(shapes, [("W", [8, 20], 8), ("R", [8, 16], 8)]);
    let proof = prove(&model, &out);
    for output in &proof.outputs {
        assert_eq!(output.max_abs, 0.0, "{proof:?}");
    }
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn gru_and_rnn_weights_are_rewritten_with_their_gate_counts() {
    for (op, gates) in [("GRU", 3), ("RNN", 1)] {
        let rows = gates * 4;
        let w = few_values(rows, 5, 8, 33);
        let r = few_values(rows, 4, 8, 34);
        let model = recurrent(op, "reverse", (&[1, rows, 5], w), (&[1, rows, 4], r));
        let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
        let views: Vec<_> = (out.report.tensors.iter())
            .map(|t| (t.shape, t.codebooks))
            .collect();
        assert_eq!(views, [([gates, 20], gates), ([gates, 16], gates)], "{op}");
        let proof = prove(&model, &out);
        for output in &proof.outputs {
            assert_eq!(output.max_abs, 0.0, "{op}: {proof:?}");
        }
    }
}

#[test]
fn lossy_lstm_stays_close() {
    let w = pseudo_random(16 * 5, 35);
    let r = pseudo_random(16 * 4, 36);
    let model = recurrent("LSTM", "forward", (&[1, 16, 5], w), (&[1, 16, 4], r));
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    assert_eq!(out.report.tensors.len(), 2);
    let proof = prove(&model, &out);
    assert!(proof.outputs[0].rel_l2 < 0.1, "{proof:?}");
}

#[test]
fn recurrent_skip_reasons() {
    let config = config(3, Granularity::Channel);
    // W of rank 2, R with a row count that is no multiple of the gates.
    let model = recurrent(
        "LSTM",
        "forward",
        (&[16, 5], few_values(16, 5, 8, 1)),
        (&[1, 18, 4], few_values(18, 4, 8, 2)),
    );
    assert_eq!(linears(&model, &config), vec![]);
    assert_eq!(
        skips(&model, &config),
        vec![
            (
                "LSTM_0".to_string(),
                SkipReason::NotMatrix("W".into(), vec![16, 5])
            ),
            (
                "LSTM_0".to_string(),
                SkipReason::Unsupported(
                    "LSTM weight 'R' has shape [1, 18, 4], not [1, 4 * hidden, inputs]".into()
                )
            ),
        ]
    );
    // Two directions declared, one stored.
    let w = few_values(16, 5, 8, 1);
    let r = few_values(16, 4, 8, 2);
    let model = recurrent("LSTM", "bidirectional", (&[1, 16, 5], w), (&[1, 16, 4], r));
    let reasons: Vec<SkipReason> = skips(&model, &config).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        reasons,
        [
            SkipReason::Unsupported(
                "LSTM weight 'W' has shape [1, 16, 5], not [2, 4 * hidden, inputs]".into()
            ),
            SkipReason::Unsupported(
                "LSTM weight 'R' has shape [1, 16, 4], not [2, 4 * hidden, inputs]".into()
            ),
        ]
    );
    // An unknown direction, and a weight computed at run time.
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[3, 2, 5]);
    b.input_f32("W", &[1, 16, 5]);
    b.initializer(float_tensor(
        "R",
        &[1, 16, 4],
        FloatType::F32,
        &few_values(16, 4, 8, 2),
    ));
    b.node("LSTM", &["x", "W", "R"], &["y"])
        .attribute
        .push(attr_int("hidden_size", 4));
    b.node("LSTM", &["x", "W", "R"], &["z"])
        .attribute
        .push(attr_string("direction", "sideways"));
    b.output_f32("y");
    b.output_f32("z");
    let model = b.build();
    with_plan(&model, &config, |plan| assert!(plan.weights.is_empty()));
    assert_eq!(
        skips(&model, &config),
        vec![
            ("LSTM_0".to_string(), SkipReason::DynamicWeight("W".into())),
            (
                "LSTM_1".to_string(),
                SkipReason::Unsupported(
                    "LSTM direction 'sideways' is not forward, reverse or bidirectional".into()
                )
            ),
            (
                "LSTM_0".to_string(),
                SkipReason::OtherUse("R".into(), "node 'LSTM_1'".into())
            ),
        ]
    );
}
