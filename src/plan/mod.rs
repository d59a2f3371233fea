//! The plan: which weights a rewrite decomposes, every node input that reads each, the
//! relations between them (ties and alike groups), each weight's setting, and why
//! every other candidate node is left alone. Built once by [`Plan::new`] and used by
//! every command: `inspect` shows it, calibration measures its weights, the allocator
//! changes their settings, `rewrite` carries it out.

mod alike;
mod relation;

use std::collections::HashMap;

pub use alike::AlikeGroup;
pub use relation::{Relation, RelationGraph, WeightNode};

use crate::config::{Config, Form, GranularityChoice, QDQ_BLOCKS};
use crate::error::Result;
use crate::forms::min_opset;
use crate::graph::{Constant, ConstantSource, Graph, Use, is_default};
use crate::onnx::external::is_external;
use crate::particles::Granularity;
use crate::rules::{Match, OTHER, SkipReason, WeightPatch, rule_for};

/// The particle settings of one weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Setting {
    /// Bits per particle index.
    pub bits: u32,
    /// Codebook granularity.
    pub granularity: Granularity,
}

/// A weight to decompose and every node input that reads it.
#[derive(Clone, Debug)]
pub struct WeightPlan<'m> {
    /// The node inputs reading the weight; the first decides the channel axis.
    pub patches: Vec<WeightPatch<'m>>,
    /// Other constants with the same values (or transposed), read through this
    /// weight's decoding (see the `relation` module).
    pub ties: Vec<Tie<'m>>,
    /// Its bits and granularity: the config's, or the allocator's choice.
    pub setting: Setting,
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

    /// The weight's name.
    pub fn name(&self) -> &'m str {
        self.first().weight.name
    }

    /// Number of weights in the matrix.
    pub fn elements(&self) -> usize {
        let [rows, cols] = self.first().shape;
        rows * cols
    }

    /// Every node input that reads the weight or one of its ties.
    pub fn readers(&self) -> impl Iterator<Item = &WeightPatch<'m>> {
        self.patches
            .iter()
            .chain(self.ties.iter().flat_map(|t| &t.patches))
    }
}

/// A node left alone and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The node's name (or op type and position when it has none).
    pub node: String,
    /// Why.
    pub reason: SkipReason,
}

/// What the rules selected, related.
#[derive(Clone, Debug, Default)]
pub struct Plan<'m> {
    /// Weights to decompose, in the order of their first reader.
    pub weights: Vec<WeightPlan<'m>>,
    /// Nodes some rule looked at and left alone.
    pub skipped: Vec<Skipped>,
    /// Identical and transposed weights (folded into ties when the config shares
    /// them), and alike groups.
    pub relations: RelationGraph,
    /// Weights reading one joint codebook (`--share alike`), by position in `weights`.
    pub groups: Vec<AlikeGroup>,
}

impl<'m> Plan<'m> {
    /// Runs every rule `config` selects on every default-domain node of every scope,
    /// relates the weights found (one tie rule: [`Config::ties_weights`]) and, under
    /// `--share alike`, groups alike weights; every weight gets the config's setting.
    pub fn new(graph: &Graph<'m>, config: &Config) -> Result<Self> {
        config.validate()?;
        let mut plan = matched(graph, config);
        let dir = config.external_dir.as_deref();
        plan.relations = relation::relate(&mut plan.weights, dir, config.ties_weights())?;
        if config.share == crate::config::Share::Alike {
            plan.groups = alike::alike_groups(&plan.weights, config, &mut plan.relations)?;
        }
        Ok(plan)
    }

    /// This plan with the weights named in `settings` at those settings.
    pub fn with_settings(&self, settings: &HashMap<String, Setting>) -> Self {
        let mut plan = self.clone();
        for w in &mut plan.weights {
            if let Some(&setting) = settings.get(w.name()) {
                w.setting = setting;
            }
        }
        plan
    }

    /// This plan without the weights named in `dense`, whose readers are skipped for
    /// the reason given. (Alike groups, which the data-free default never forms, go.)
    pub fn without(&self, graph: &Graph<'m>, dense: &[(String, SkipReason)]) -> Self {
        let mut plan = self.clone();
        if dense.is_empty() {
            return plan;
        }
        plan.groups.clear();
        plan.weights.retain(|w| {
            let Some((_, reason)) = dense.iter().find(|(name, _)| name == w.name()) else {
                return true;
            };
            let readers = w.readers().map(|p| Skipped {
                node: graph.label(p.node),
                reason: reason.clone(),
            });
            plan.skipped.extend(readers);
            false
        });
        plan
    }

    /// This plan with every weight at `bits`, each granularity resolved for them as
    /// `config` resolves it.
    pub fn with_bits(&self, config: &Config, bits: u32) -> Self {
        let mut plan = self.clone();
        for w in &mut plan.weights {
            w.setting = common_setting(w.first(), config, bits);
        }
        plan
    }
}

/// The setting `config` gives a weight first read by `patch` at `bits`: its
/// granularity choice resolved for the weight's shape (under `--form qdq`, `auto` is
/// the finest block, [`QDQ_BLOCKS`]`[0]`, as onnxruntime's own 4-bit quantizer). A view with one channel (a
/// whole-tensor layout) has one codebook per channel or per tensor alike, written as
/// per tensor: a Gather from `[K]` particles, not a GatherElements from `[1, K]`.
fn common_setting(patch: &WeightPatch, config: &Config, bits: u32) -> Setting {
    if config.form == Form::Qdq && config.granularity == GranularityChoice::Auto {
        return Setting {
            bits,
            granularity: Granularity::Block(QDQ_BLOCKS[0]),
        };
    }
    let particle_size = config
        .codebook_type
        .resolve(patch.float_type, &[], false)
        .size();
    let granularity =
        config
            .granularity
            .resolve(patch.shape, patch.channel_axis, bits, particle_size);
    let one_channel = patch.shape[patch.channel_axis] == 1;
    Setting {
        bits,
        granularity: match granularity {
            Granularity::Channel if one_channel => Granularity::Tensor,
            granularity => granularity,
        },
    }
}

/// The weights the rules select, grouped by weight, and the skipped nodes.
fn matched<'m>(graph: &Graph<'m>, config: &Config) -> Plan<'m> {
    let mut plan = Plan::default();
    let mut by_weight: HashMap<(usize, ConstantSource), usize> = HashMap::new();
    for id in graph.nodes() {
        let node = graph.node(id);
        if !is_default(node.domain()) {
            continue;
        }
        let Some(rule) = rule_for(node.op_type()).filter(|r| config.select.runs(r.op)) else {
            continue;
        };
        for decision in (rule.matches)(graph, id, &config.select) {
            match checked(graph, config, decision) {
                Match::Rewrite(patch) => {
                    let key = (patch.weight.scope, patch.weight.source);
                    let slot = *by_weight.entry(key).or_insert_with(|| {
                        plan.weights.push(WeightPlan {
                            patches: Vec::new(),
                            ties: Vec::new(),
                            setting: common_setting(&patch, config, config.bits),
                        });
                        plan.weights.len() - 1
                    });
                    plan.weights[slot].patches.push(patch);
                }
                Match::Skip(reason) => plan.skipped.push(Skipped {
                    node: graph.label(id),
                    reason,
                }),
            }
        }
    }
    // A weight's own rule knows its view better than the catch-all: its readers first.
    for w in &mut plan.weights {
        let catch_all =
            |p: &WeightPatch| rule_for(graph.node(p.node).op_type()).map(|r| r.op) == Some(OTHER);
        w.patches.sort_by_key(catch_all);
        w.setting = common_setting(w.first(), config, config.bits);
    }
    let (weights, shared): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.weights)
        .into_iter()
        .map(|w| (other_reader(graph, &w), w))
        .partition(|(other, _)| other.is_none());
    plan.weights = weights.into_iter().map(|(_, w)| w).collect();
    for (other, w) in shared {
        let reason = SkipReason::OtherUse(w.name().to_string(), other.unwrap_or_default());
        for patch in &w.patches {
            plan.skipped.push(Skipped {
                node: graph.label(patch.node),
                reason: reason.clone(),
            });
        }
    }
    plan
}

/// A rule's `decision`, or a skip when the model cannot carry it out: the weight's data
/// is external and the model's folder unknown, the opset is too old for the forms
/// asked for, or the decoding would need initializers in a subgraph of an IR < 4 model.
fn checked<'m>(graph: &Graph<'m>, config: &Config, decision: Match<'m>) -> Match<'m> {
    match decision {
        Match::Rewrite(p) if is_external(p.weight.tensor) && config.external_dir.is_none() => {
            Match::Skip(SkipReason::ExternalData(p.weight.name.into()))
        }
        Match::Rewrite(_) if graph.opset < min_opset(config) => {
            Match::Skip(SkipReason::OpsetTooOld(graph.opset, min_opset(config)))
        }
        Match::Rewrite(p)
            if p.weight.scope != 0 && matches!(graph.model.ir_version, Some(v) if v < 4) =>
        {
            Match::Skip(SkipReason::Unsupported(format!(
                "weight '{}' is defined inside a subgraph of an IR < 4 model, where every initializer must be a graph input, which a subgraph's decoding cannot be",
                p.weight.name
            )))
        }
        decision => decision,
    }
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
                (!patched).then(|| format!("node '{}'", graph.label(node)))
            }
            Use::GraphOutput { .. } => Some("a graph output".to_string()),
        })
}
