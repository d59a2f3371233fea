//! Gemm with a constant matrix as input B.
//!
//! ```text
//! before:  Y = Gemm(A, B, C; alpha, beta, transA, transB)     B: constant
//! after:   Y = Gemm(A, decode(particles, index), C; alpha, beta, transA, transB)
//! ```
//!
//! Only input B is replaced, by a decoding of the same shape, so alpha, beta, the bias
//! C and both transposes keep their meaning. Output channels are B's columns, or its
//! rows when `transB = 1`.

use super::{Layout, Match, SkipReason, weight_input};
use crate::config::Config;
use crate::graph::{Graph, NodeId};

/// Matches a Gemm whose input B is a constant float matrix.
pub fn rule<'m>(graph: &Graph<'m>, node: NodeId, config: &Config) -> Match<'m> {
    let trans_b = graph
        .node(node)
        .attribute
        .iter()
        .find(|a| a.name() == "transB")
        .map_or(0, |a| a.i());
    match trans_b {
        0 => weight_input(graph, node, 1, Layout::Matrix { channel_axis: 1 }, config),
        1 => weight_input(graph, node, 1, Layout::Matrix { channel_axis: 0 }, config),
        other => Match::Skip(SkipReason::Unsupported(format!(
            "Gemm transB = {other} is not 0 or 1"
        ))),
    }
}
