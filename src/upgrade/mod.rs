//! Upgrading a model's default-domain opset, so that it may hold ops of a newer one
//! (`DequantizeLinear` with int4 blocks needs opset 21).
//!
//! Between opsets 7 and 21 most new op versions only widened types or added attributes
//! whose defaults keep the old meaning: those nodes stay as they are. The ops whose
//! signature changed are listed in `rules.rs`, one line each, by the opset that changed
//! them; each conversion looks at one node and returns the change that keeps its
//! meaning, or why there is none. The driver here applies them, after every node of the
//! model has been converted, so a refusal leaves the model untouched. A new constant
//! input becomes an initializer of the graph holding the node (a subgraph body's own),
//! named after the node's first output (`{output}.axes`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use crate::graph::{Graph, Names, graph_at, is_default};
use crate::onnx::proto::type_proto::Value;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto};

mod rules;
#[cfg(test)]
mod tests;

use rules::{CONVERSIONS, Change, REMOVED, Rule};

/// The oldest default-domain opset an upgrade reads.
pub const OLDEST: i64 = 7;

/// The newest default-domain opset an upgrade writes.
pub const NEWEST: i64 = 21;

/// What an upgrade changed: the opset before, and per op type how many nodes were
/// rewritten.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Upgraded {
    /// The model's default-domain opset before (0 when it imported none).
    pub from: i64,
    /// Its opset after: the one asked for, or `from` when the model was as new already.
    pub to: i64,
    /// How many nodes of each op type were rewritten.
    pub rewritten: BTreeMap<String, usize>,
}

impl std::fmt::Display for Upgraded {
    /// `opset 11 -> 21 (Squeeze: 2, Unsqueeze: 4 nodes rewritten)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opset {} -> {}", self.from, self.to)?;
        if self.rewritten.is_empty() {
            return write!(f, " (no node changed)");
        }
        let ops: Vec<String> = (self.rewritten.iter())
            .map(|(op, n)| format!("{op}: {n}"))
            .collect();
        write!(f, " ({} nodes rewritten)", ops.join(", "))
    }
}

/// Rewrites `model` (every graph, If/Loop/Scan bodies included) so that it is valid at
/// default-domain opset `to`, and sets its opset import to `to` (and ir_version to at
/// least 10 when to >= 21). A model already at >= `to` is left unchanged. Errors name
/// the node, its op and why.
///
/// More precisely, ir_version is raised to at least the one opset `to` came with
/// (4 for opset 9 up to 10 for opset 21). `to` may be at most [`NEWEST`]; a model
/// importing a default-domain opset older than [`OLDEST`] is refused, and so is one
/// whose model-local functions hold default-domain nodes of an older opset (their
/// bodies are not upgraded). On any error the model is left as it was.
pub fn upgrade_opset(model: &mut ModelProto, to: i64) -> Result<Upgraded> {
    let from = (model.opset_import.iter())
        .find(|o| is_default(o.domain()))
        .map_or(0, |o| o.version());
    if from >= to {
        return Ok(Upgraded {
            from,
            to: from,
            rewritten: BTreeMap::new(),
        });
    }
    if to > NEWEST {
        return Err(Error::Config(format!(
            "cannot upgrade to opset {to}: the newest opset known to the upgrade is {NEWEST}"
        )));
    }
    if (1..OLDEST).contains(&from) {
        return Err(Error::invalid(format!(
            "cannot upgrade from default-domain opset {from}: the oldest the upgrade reads is {OLDEST}"
        )));
    }
    refuse_functions(model, from, to)?;
    let index = Graph::new(model)?;
    let mut cx = Context {
        from,
        to,
        facts: Facts::new(&index),
        names: index.names(),
        rewritten: BTreeMap::new(),
    };
    let mut done = Vec::new();
    for id in index.nodes() {
        let node = index.node(id);
        if let Some((node, initializers)) = cx.convert(node, &index.label(id))? {
            done.push((
                index.scopes[id.scope].path.clone(),
                id.index,
                node,
                initializers,
            ));
        }
    }
    for (path, position, node, initializers) in done {
        let g = graph_at(model, &path);
        g.node[position] = node;
        g.initializer.extend(initializers);
    }
    let mut imported = false;
    for o in model
        .opset_import
        .iter_mut()
        .filter(|o| is_default(o.domain()))
    {
        o.version = Some(to);
        imported = true;
    }
    if !imported {
        model.opset_import.push(OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(to),
        });
    }
    model.ir_version = Some(model.ir_version().max(ir_version(to)));
    Ok(Upgraded {
        from,
        to,
        rewritten: cx.rewritten,
    })
}

/// The IR version opset `opset` came with (onnx.helper.VERSION_TABLE).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=8 => 3,
        9 => 4,
        10 => 5,
        11 => 6,
        12..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Refuses a model-local function that imports an older default-domain opset and
/// holds a default-domain node: function bodies are not upgraded.
fn refuse_functions(model: &ModelProto, from: i64, to: i64) -> Result<()> {
    for f in &model.functions {
        let old = (f.opset_import.iter()).any(|o| is_default(o.domain()) && o.version() < to);
        let first = f
            .node
            .iter()
            .enumerate()
            .find(|(_, n)| is_default(n.domain()));
        if let (true, Some((index, node))) = (old, first) {
            let name = match node.name() {
                "" => format!("{} #{index}", node.op_type()),
                name => name.to_string(),
            };
            return Err(Error::Upgrade {
                node: format!("{name} in function {}", f.name()),
                op: node.op_type().to_string(),
                from,
                to,
                why: "the nodes of model-local functions are not upgraded".into(),
            });
        }
    }
    Ok(())
}

/// What the conversions may know about a value, across the whole model: its element
/// type and rank where declared (graph inputs, outputs, value_info, initializers,
/// Constant nodes), and whether anything reads it.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    types: HashMap<String, (Option<i32>, Option<usize>)>,
    read: HashSet<String>,
}

impl Facts {
    fn new(index: &Graph) -> Self {
        let mut facts = Facts::default();
        for g in index.scopes.iter().map(|s| s.graph) {
            facts.declared(g);
        }
        facts
    }

    fn declared(&mut self, g: &GraphProto) {
        for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
            if let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                let rank = t.shape.as_ref().map(|s| s.dim.len());
                self.note(v.name(), Some(t.elem_type()), rank);
            }
        }
        for t in &g.initializer {
            self.note(t.name(), Some(t.data_type()), Some(t.dims.len()));
        }
        self.read
            .extend(g.output.iter().map(|o| o.name().to_string()));
        for n in &g.node {
            self.read
                .extend(n.input.iter().filter(|i| !i.is_empty()).cloned());
            let value = (n.op_type() == "Constant" && is_default(n.domain()))
                .then(|| n.attribute.iter().find(|a| a.name() == "value"))
                .flatten()
                .and_then(|a| a.t.as_ref());
            if let (Some(t), Some(output)) = (value, n.output.first()) {
                self.note(output, Some(t.data_type()), Some(t.dims.len()));
            }
        }
    }

    fn note(&mut self, name: &str, elem_type: Option<i32>, rank: Option<usize>) {
        let known = self.types.entry(name.to_string()).or_default();
        known.0 = known.0.or(elem_type.filter(|&t| t != 0));
        known.1 = known.1.or(rank);
    }

    /// The element type of `name`, where declared.
    pub(crate) fn elem_type(&self, name: &str) -> Option<i32> {
        self.types.get(name).and_then(|t| t.0)
    }

    /// The rank of `name`, where declared.
    pub(crate) fn rank(&self, name: &str) -> Option<usize> {
        self.types.get(name).and_then(|t| t.1)
    }

    /// Whether a node or a graph output reads `name`.
    pub(crate) fn is_read(&self, name: &str) -> bool {
        self.read.contains(name)
    }
}

/// The state of one upgrade.
struct Context {
    from: i64,
    to: i64,
    facts: Facts,
    names: Names,
    rewritten: BTreeMap<String, usize>,
}

impl Context {
    /// Runs every conversion of `node`'s op between the two opsets, in opset order:
    /// the node rewritten and its new initializers, or `None` when it stays as it is.
    fn convert(
        &mut self,
        node: &NodeProto,
        label: &str,
    ) -> Result<Option<(NodeProto, Vec<TensorProto>)>> {
        if !is_default(node.domain()) {
            return Ok(None);
        }
        let op = node.op_type();
        let fail = |why: &str| Error::Upgrade {
            node: label.to_string(),
            op: op.to_string(),
            from: self.from,
            to: self.to,
            why: why.to_string(),
        };
        if REMOVED.contains(&op) {
            return Err(fail(
                "it is an experimental op that no ONNX opset defines any more",
            ));
        }
        let mut rewritten: Option<NodeProto> = None;
        let mut initializers = Vec::new();
        let steps = (CONVERSIONS.iter())
            .filter(|(ops, since, _)| ops.contains(&op) && self.from < *since && *since <= self.to);
        for (_, _, rule) in steps {
            let change = match rule {
                Rule::Refuse(why) => return Err(fail(why)),
                Rule::Convert(convert) => convert(rewritten.as_ref().unwrap_or(node), &self.facts)
                    .map_err(|why| fail(&why))?,
            };
            if change != Change::default() {
                let target = rewritten.get_or_insert_with(|| node.clone());
                initializers.extend(change.apply(target, &mut self.names));
            }
        }
        if rewritten.is_some() {
            *self.rewritten.entry(op.to_string()).or_default() += 1;
        }
        Ok(rewritten.map(|n| (n, initializers)))
    }
}
