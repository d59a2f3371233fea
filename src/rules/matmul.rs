//! MatMul with a constant matrix as its second input.
//!
//! ```text
//! before:  Y = MatMul(X[..., N], W[N, M])                      W: constant
//! after:   Y = MatMul(X[..., N], decode(particles, index)[N, M])
//! ```
//!
//! The decoding rebuilds `W` from its particles (see `forms::decode`); MatMul itself is
//! unchanged, so broadcasting over X's leading dims keeps its meaning. Output channels
//! are W's columns.

use super::{Layout, Match, weight_input};
use crate::config::Config;
use crate::graph::{Graph, NodeId};

/// Matches a MatMul whose input B is a constant float matrix.
pub fn rule<'m>(graph: &Graph<'m>, node: NodeId, config: &Config) -> Match<'m> {
    weight_input(graph, node, 1, Layout::Matrix { channel_axis: 1 }, config)
}
