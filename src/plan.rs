//! Matching: runs the rules over every node, groups the weights they select (a weight
//! read by several nodes is decomposed once), and records why every other MatMul/Gemm
//! is left alone. `inspect` shows a plan; `rewrite` carries it out.

use std::collections::HashMap;

use crate::config::{Config, Setting};
use crate::forms::decode::MIN_OPSET;
use crate::graph::{Constant, ConstantSource, Graph, NodeId, Use};
use crate::particles::Granularity;
use crate::rules::{Match, RULES, SkipReason, WeightPatch};

/// A weight to decompose and every node input that reads it.
#[derive(Clone, Debug)]
pub struct WeightPlan<'m> {
    /// The node inputs reading the weight; the first decides the channel axis.
    pub patches: Vec<WeightPatch<'m>>,
    /// Other constants with the same values (or transposed), read through this
    /// weight's decoding (see [`crate::relation`]).
    pub ties: Vec<Tie<'m>>,
}

/// A constant that equals a planned weight, or its transpose, and is decoded with it.
#[derive(Clone, Debug)]
pub struct Tie<'m> {
    /// The constant.
    pub weight: Constant<'m>,
    /// Whether it is the planned weight's transpose.
    pub transposed: bool,
    /// The node inputs reading it.
    pub patches: Vec<WeightPatch<'m>>,
}

impl<'m> WeightPlan<'m> {
    /// The first patch, which describes the weight.
    pub fn first(&self) -> &WeightPatch<'m> {
        &self.patches[0]
    }

    /// The bits and granularity `config` gives this weight: its own entry in
    /// `config.settings`, else the common ones.
    pub fn setting(&self, config: &Config) -> Setting {
        match config.settings.get(self.first().weight.name) {
            Some(&setting) => setting,
            None => Setting {
                bits: config.bits,
                granularity: self.granularity(config),
            },
        }
    }

    /// The codebook granularity `config` gives this weight when it has no setting of
    /// its own.
    pub fn granularity(&self, config: &Config) -> Granularity {
        let p = self.first();
        let particle_size = config
            .codebook_type
            .resolve(p.float_type, &[], false)
            .size();
        config
            .granularity
            .resolve(p.shape, p.channel_axis, config.bits, particle_size)
    }

    /// Number of weights in the matrix.
    pub fn elements(&self) -> usize {
        let [rows, cols] = self.first().shape;
        rows * cols
    }
}

/// A node left alone and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The node's name (or op type and position when it has none).
    pub node: String,
    /// Why, as one sentence.
    pub reason: String,
}

/// What the rules selected.
#[derive(Clone, Debug, Default)]
pub struct Plan<'m> {
    /// Weights to decompose, in the order of their first reader.
    pub weights: Vec<WeightPlan<'m>>,
    /// Nodes some rule looked at and left alone.
    pub skipped: Vec<Skipped>,
}

/// A readable name for a node: its name, or its op type and position.
pub fn node_label(graph: &Graph, id: NodeId) -> String {
    let node = graph.node(id);
    match (node.name(), id.scope) {
        ("", 0) => format!("{} #{}", node.op_type(), id.index),
        ("", scope) => format!("{} #{} in subgraph {scope}", node.op_type(), id.index),
        (name, _) => name.to_string(),
    }
}

/// Runs every rule on every default-domain node of every scope.
pub fn plan<'m>(graph: &Graph<'m>, config: &Config) -> Plan<'m> {
    let mut plan = Plan::default();
    let mut by_weight: HashMap<(usize, ConstantSource), usize> = HashMap::new();
    for id in graph.nodes() {
        let node = graph.node(id);
        if !matches!(node.domain(), "" | "ai.onnx") {
            continue;
        }
        let rule = RULES
            .iter()
            .find(|(op, _)| *op == node.op_type() && config.ops.iter().any(|o| o == op));
        let Some((_, rule)) = rule else {
            continue;
        };
        let decision = match rule(graph, id, config) {
            Match::Rewrite(_) if graph.opset < MIN_OPSET => {
                Match::Skip(SkipReason::OpsetTooOld(graph.opset, MIN_OPSET))
            }
            decision => decision,
        };
        match decision {
            Match::Rewrite(patch) => {
                let key = (patch.weight.scope, patch.weight.source);
                let slot = *by_weight.entry(key).or_insert_with(|| {
                    plan.weights.push(WeightPlan {
                        patches: Vec::new(),
                        ties: Vec::new(),
                    });
                    plan.weights.len() - 1
                });
                plan.weights[slot].patches.push(patch);
            }
            Match::Skip(reason) => plan.skipped.push(Skipped {
                node: node_label(graph, id),
                reason: reason.to_string(),
            }),
            Match::NotCandidate => {}
        }
    }
    let (weights, shared): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.weights)
        .into_iter()
        .map(|w| (other_reader(graph, &w), w))
        .partition(|(other, _)| other.is_none());
    plan.weights = weights.into_iter().map(|(_, w)| w).collect();
    for (other, w) in shared {
        let reason =
            SkipReason::OtherUse(w.first().weight.name.to_string(), other.unwrap_or_default());
        for patch in &w.patches {
            plan.skipped.push(Skipped {
                node: node_label(graph, patch.node),
                reason: reason.to_string(),
            });
        }
    }
    plan
}

/// A reader of the weight that is not one of the plan's patches, if any.
fn other_reader(graph: &Graph, w: &WeightPlan) -> Option<String> {
    let weight = w.first().weight;
    graph
        .uses(weight.scope, weight.name)
        .iter()
        .find_map(|u| match *u {
            Use::Node { node, slot } => {
                let patched = w.patches.iter().any(|p| p.node == node && p.slot == slot);
                (!patched).then(|| format!("node '{}'", node_label(graph, node)))
            }
            Use::GraphOutput { .. } => Some("a graph output".to_string()),
        })
}
