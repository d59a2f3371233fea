//! The rewrite rules, one per file, in the order the driver tries them. A rule looks
//! at one node and returns one [`Match`] per weight input it has an opinion on: a
//! constant it can replace by a particle decoding ([`Match::Rewrite`]) or why not
//! ([`Match::Skip`]). A node with several weights (LSTM's W and R, an Einsum with two
//! constant operands) gives several; a node that is not the rule's business (a Gather
//! over a computed or integer tensor) gives none. A rule owns its op's knowledge: which
//! inputs are weights and how their channels run, and for readers that multiply an
//! activation by the weight, the [`Linear`] view that calibration, bias correction and
//! the LUT form use. Rules never touch the model; the driver applies what they return.
//!
//! [`RULES`] is the only list of ops: `--ops` and its default (the rules marked
//! `default`) derive from it; the last, [`OTHER`], takes the constant inputs of every
//! op no other rule names, and runs only when asked for. A new rule is one file and
//! one line here.

mod conv;
mod convtranspose;
mod einsum;
mod gather;
mod gemm;
mod matmul;
mod other;
mod patch;
mod recurrent;
mod select;
mod skip;

pub use other::OTHER;
pub use patch::{Bias, Layout, Linear, WeightPatch, stored_input, weight_constant, weight_input};
pub use select::{Select, Selection, Unselected};
pub use skip::SkipReason;

use crate::graph::{Graph, NodeId};

/// Every rule, in the order the driver tries them.
pub const RULES: &[Rule] = &[
    matmul::RULE,
    gemm::RULE,
    gather::RULE,
    conv::RULE,
    convtranspose::RULE,
    recurrent::LSTM,
    recurrent::GRU,
    recurrent::RNN,
    einsum::RULE,
    other::RULE,
];

/// A rule: the default-domain op type it matches and what it decides about a node of
/// that type.
#[derive(Clone, Copy)]
pub struct Rule {
    /// The op type.
    pub op: &'static str,
    /// Whether `--ops` runs it unless told otherwise.
    pub default: bool,
    /// Looks at one node of that op type: one match per weight input it rewrites or
    /// skips, none when the node is not a candidate.
    pub matches: for<'m> fn(&Graph<'m>, NodeId, &Select) -> Vec<Match<'m>>,
}

/// The op types `--ops` rewrites by default: those of the rules marked `default`.
pub fn default_ops() -> Vec<String> {
    (RULES.iter().filter(|r| r.default))
        .map(|r| r.op.to_string())
        .collect()
}

/// The rule that looks at nodes of `op_type`: its own, or the catch-all [`OTHER`]
/// for an op no rule names.
pub fn rule_for(op_type: &str) -> Option<&'static Rule> {
    let own = RULES.iter().find(|r| r.op == op_type && r.op != OTHER);
    own.or_else(|| RULES.iter().find(|r| r.op == OTHER))
}

/// What a rule decided about one weight input of a node.
#[derive(Debug)]
pub enum Match<'m> {
    /// Replace a weight input by its particle decoding.
    Rewrite(WeightPatch<'m>),
    /// Leave the input alone, for this reason.
    Skip(SkipReason),
}
