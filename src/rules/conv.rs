//! Conv with a constant weight.
//!
//! ```text
//! before:  Y = Conv(X, W[O, C/group, k1, k2, ...], B)            W: constant
//! after:   Y = Conv(X, Reshape(decode(particles, index)[O, C/group*k1*k2*...], dims(W)), B)
//! ```
//!
//! The weight is decomposed as a matrix with one row per output channel, and rebuilt
//! in its own shape, so strides, pads, dilations, groups and the bias keep their
//! meaning. Channel codebooks are per output channel.

use super::{Layout, Match, Rule, Select, weight_input};
use crate::graph::{Graph, NodeId};

/// The Conv rule.
pub const RULE: Rule = Rule {
    op: "Conv",
    default: true,
    matches,
};

/// Matches a Conv whose weight is a constant float tensor.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    vec![weight_input(graph, node, 1, Layout::ChannelsFirst, select)]
}
