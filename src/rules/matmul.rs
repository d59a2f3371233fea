//! MatMul with a constant matrix as its second input.
//!
//! ```text
//! before:  Y = MatMul(X[..., N], W[N, M])                      W: constant
//! after:   Y = MatMul(X[..., N], decode(particles, index)[N, M])
//! ```
//!
//! The decoding rebuilds `W` from its particles (see `forms::decode`); MatMul itself is
//! unchanged, so broadcasting over X's leading dims keeps its meaning. Output channels
//! are W's columns; X's features are its last axis, and a bias, if any, is an Add of
//! the output.

use super::{Bias, Layout, Linear, Match, Rule, Select, weight_input};
use crate::graph::{Graph, NodeId};

/// The MatMul rule.
pub const RULE: Rule = Rule {
    op: "MatMul",
    default: true,
    matches,
};

/// Matches a MatMul whose input B is a constant float matrix.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let linear = Linear {
        x: n.input.first().map_or("", String::as_str),
        y: n.output.first().map_or("", String::as_str),
        x_transposed: false,
        batched: true,
        alpha: 1.0,
        bias: Bias::Following,
    };
    let layout = Layout::Matrix { channel_axis: 1 };
    vec![weight_input(graph, node, 1, layout, select).with_linear(linear)]
}
