//! LSTM, GRU and RNN with constant weights W (input 1) and R (input 2).
//!
//! ```text
//! before:  Y, Y_h = LSTM(X, W[D, 4H, I], R[D, 4H, H], B, ...)     W, R: constant
//! after:   Y, Y_h = LSTM(X, Reshape(decode(W.particles, W.index)[D*4, H*I], dims(W)),
//!                           Reshape(decode(R.particles, R.index)[D*4, H*H], dims(R)), B, ...)
//! ```
//!
//! ONNX stacks each direction's gate matrices along axis 1 (LSTM: i, o, f, c; GRU:
//! z, r, h; RNN: one), so the flat weight is `D * gates` consecutive blocks of `H x I`
//! (or `H x H`), one per direction and gate. The view [`Layout::Rows`]`(D * gates)`
//! makes each block a channel: per-channel codebooks are per direction and gate, whose
//! weights share a role and a scale. Both weights are rebuilt in their own shape, so
//! every attribute (direction, activations, clip, layout, linear_before_reset) and the
//! other inputs (bias B, sequence lengths, initial states, peepholes) keep their
//! meaning; B stays as it is.

use super::{Layout, Match, Rule, Select, SkipReason, weight_input};
use crate::graph::{Graph, NodeId};

/// The LSTM rule: four gates.
pub const LSTM: Rule = Rule {
    op: "LSTM",
    default: true,
    matches: lstm,
};

/// The GRU rule: three gates.
pub const GRU: Rule = Rule {
    op: "GRU",
    default: true,
    matches: gru,
};

/// The RNN rule: one gate.
pub const RNN: Rule = Rule {
    op: "RNN",
    default: true,
    matches: rnn,
};

fn lstm<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    recurrent(graph, node, select, 4)
}

fn gru<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    recurrent(graph, node, select, 3)
}

fn rnn<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    recurrent(graph, node, select, 1)
}

/// Matches W and R of a recurrent node with `gates` gates per direction: each must be
/// `[directions, gates * H, X]`.
fn recurrent<'m>(graph: &Graph<'m>, node: NodeId, select: &Select, gates: usize) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let direction = n.attribute.iter().find(|a| a.name() == "direction");
    let directions = match direction.map_or(&b"forward"[..], |a| a.s()) {
        b"forward" | b"reverse" => 1,
        b"bidirectional" => 2,
        other => {
            return vec![Match::Skip(SkipReason::Unsupported(format!(
                "{} direction '{}' is not forward, reverse or bidirectional",
                n.op_type(),
                String::from_utf8_lossy(other)
            )))];
        }
    };
    let layout = Layout::Rows(directions * gates);
    let gate_blocks = |dims: &[i64]| {
        let (d, g) = (directions as i64, gates as i64);
        matches!(dims, &[first, stacked, _] if first == d && stacked > 0 && stacked % g == 0)
    };
    [1, 2]
        .into_iter()
        .map(|slot| match weight_input(graph, node, slot, layout, select) {
            Match::Rewrite(patch) if !gate_blocks(&patch.weight.tensor.dims) => {
                let (name, dims) = (patch.weight.name, &patch.weight.tensor.dims);
                Match::Skip(if dims.len() != 3 {
                    SkipReason::NotMatrix(name.into(), dims.clone())
                } else {
                    SkipReason::Unsupported(format!(
                        "{} weight '{name}' has shape {dims:?}, not [{directions}, {gates} * hidden, inputs]",
                        n.op_type()
                    ))
                })
            }
            decision => decision,
        })
        .collect()
}
