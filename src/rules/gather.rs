//! Gather reading rows of a constant float table (an embedding).
//!
//! ```text
//! before:  Y = Gather(T[V, D], I; axis=0)                       T: constant
//! after:   Y = decode(particles, Gather(index[V, D*b/8], I))     the rows form
//!          Y = Gather(decode(particles, index)[V, D], I; axis=0)
//!              (where another op reads T too, or rows do not pack into whole bytes)
//! ```
//!
//! Each table column (one embedding dimension over all V rows) gets its own codebook
//! at channel granularity. Gathers over computed or integer tensors (shape lookups)
//! are not candidates; other axes are skipped with a reason.

use super::{Layout, Match, Rule, Select, SkipReason, stored_input, weight_input};
use crate::graph::{Graph, NodeId};
use crate::onnx::tensor::FloatType;

/// The Gather rule.
pub const RULE: Rule = Rule {
    op: "Gather",
    default: true,
    matches,
};

/// Matches a Gather along axis 0 of a constant float table.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let Some(table) = stored_input(graph, node, 0) else {
        return Vec::new();
    };
    if FloatType::from_data_type(table.data_type()).is_none() {
        return Vec::new();
    }
    let axis = n
        .attribute
        .iter()
        .find(|a| a.name() == "axis")
        .map_or(0, |a| a.i());
    if axis != 0 && axis != -(table.dims.len() as i64) {
        return vec![Match::Skip(SkipReason::Unsupported(format!(
            "Gather along axis {axis} of '{}': only row lookups (axis 0) are rewritten",
            n.input[0]
        )))];
    }
    vec![weight_input(
        graph,
        node,
        0,
        Layout::Matrix { channel_axis: 1 },
        select,
    )]
}
