//! Gemm with a constant matrix as input B.
//!
//! ```text
//! before:  Y = Gemm(A, B, C; alpha, beta, transA, transB)     B: constant
//! after:   Y = Gemm(A, decode(particles, index), C; alpha, beta, transA, transB)
//! ```
//!
//! Only input B is replaced, by a decoding of the same shape, so alpha, beta, the bias
//! C and both transposes keep their meaning. Output channels are B's columns, or its
//! rows when `transB = 1`; A's features are its columns, or its rows when `transA = 1`.

use super::{Bias, Layout, Linear, Match, Rule, Select, SkipReason, weight_input};
use crate::graph::{Graph, NodeId};

/// The Gemm rule.
pub const RULE: Rule = Rule {
    op: "Gemm",
    default: true,
    matches,
};

/// Matches a Gemm whose input B is a constant float matrix.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let attribute = |name: &str| n.attribute.iter().find(|a| a.name() == name);
    let flag = |name: &str| attribute(name).map_or(0, |a| a.i());
    let x_transposed = match flag("transA") {
        0 => false,
        1 => true,
        other => {
            return vec![Match::Skip(SkipReason::Unsupported(format!(
                "Gemm transA = {other} is not 0 or 1"
            )))];
        }
    };
    let channel_axis = match flag("transB") {
        0 => 1,
        1 => 0,
        other => {
            return vec![Match::Skip(SkipReason::Unsupported(format!(
                "Gemm transB = {other} is not 0 or 1"
            )))];
        }
    };
    let bias = match n.input.get(2).filter(|c| !c.is_empty()) {
        Some(c) => Bias::Input {
            name: c,
            beta: attribute("beta").map_or(1.0, |a| a.f()),
        },
        None => Bias::Absent,
    };
    let linear = Linear {
        x: n.input.first().map_or("", String::as_str),
        y: n.output.first().map_or("", String::as_str),
        x_transposed,
        batched: false,
        alpha: attribute("alpha").map_or(1.0, |a| a.f()),
        bias,
    };
    let layout = Layout::Matrix { channel_axis };
    vec![weight_input(graph, node, 1, layout, select).with_linear(linear)]
}
