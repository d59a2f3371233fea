//! Every other op: its large constant float inputs, decoded per tensor (`--ops Other`).
//!
//! ```text
//! before:  Y = Op(X, C, ...)                                  C: constant, float, >= --min-elements
//! after:   Y = Op(X, Reshape(decode(particles, index)[1, N], dims(C)), ...)
//! ```
//!
//! For default-domain nodes whose op has no rule of its own (Add of a positional
//! table, Mul by a large scale, Where over a mask, PRelu slopes, Loop or Scan initial
//! states...). The constant is rebuilt in its own shape and type, so the op sees the
//! same tensor up to the codebook's error; nothing about how the op uses it is assumed,
//! so the whole tensor is one channel ([`Layout::WHOLE`]): one codebook. Inputs that
//! are computed, integer (shapes, axes, indices) or smaller than `--min-elements` are
//! not candidates and are not reported; nodes of an op that has a rule are that
//! rule's, whether `--ops` runs it or not.
//!
//! Not a default: the default rules know their op reads the weight as a linear map or
//! a lookup table, where a codebook's error is an error on features the next layer
//! weighs; a constant here may be added straight onto activations (positional
//! embeddings), be a normalization statistic, or a mask, where the same error may
//! matter far more. It also turns a weight that another kind of node reads densely
//! (today skipped as `OtherUse`) into a shared decoding. Ask for it by name.

use super::{Layout, Match, Rule, Select, stored_input, weight_input};
use crate::graph::{Graph, NodeId};
use crate::onnx::tensor::{FloatType, element_count};

/// The op name `--ops` knows the catch-all rule by.
pub const OTHER: &str = "Other";

/// The catch-all rule.
pub const RULE: Rule = Rule {
    op: OTHER,
    default: false,
    matches,
};

/// Matches each constant float input of at least `--min-elements` elements.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let large_float = |slot: usize| {
        let Some(t) = stored_input(graph, node, slot) else {
            return false;
        };
        let elements = element_count(&n.input[slot], &t.dims).unwrap_or(0);
        FloatType::from_data_type(t.data_type()).is_some()
            && elements > 0
            && elements >= select.min_elements
    };
    (0..n.input.len())
        .filter(|&slot| large_float(slot))
        .map(|slot| weight_input(graph, node, slot, Layout::WHOLE, select))
        .collect()
}
