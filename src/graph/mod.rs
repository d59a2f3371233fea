//! An index over a model's graphs: which name each scope defines, who produces and
//! who consumes every value (across nested If/Loop/Scan bodies), the constants, and
//! fresh names. Built once from an immutable model; the driver mutates the model
//! only after the index is dropped.

use std::collections::{HashMap, HashSet};

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

mod names;
mod path;
pub use {names::Names, path::graph_at};

use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

/// Deepest nesting of subgraphs the index accepts.
pub const MAX_DEPTH: usize = 64;

/// Ops that only move values around: walks for what a value really is look through them.
pub const LAYOUT_ONLY: [&str; 6] = [
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
];

/// A node: its scope (0 is the main graph) and its position in that scope's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// The scope holding the node.
    pub scope: usize,
    /// The node's position in its graph's node list.
    pub index: usize,
}

/// One step from a graph down to a subgraph held by one of its nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphStep {
    /// The node holding the subgraph.
    pub node: usize,
    /// The attribute holding it.
    pub attribute: usize,
    /// Position in the attribute's `graphs` list, or `None` for its `g` field.
    pub graphs_index: Option<usize>,
}

/// What defines a name inside one scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Def {
    /// A graph input.
    Input,
    /// An initializer, by position.
    Initializer(usize),
    /// Output `slot` of node `node` (a position in the scope).
    Output {
        /// Position of the producing node.
        node: usize,
        /// Which of its outputs.
        slot: usize,
    },
}

/// Where a value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Input `slot` of a node.
    Node {
        /// The consuming node.
        node: NodeId,
        /// Which of its inputs.
        slot: usize,
    },
    /// An output of the graph in scope `scope`.
    GraphOutput {
        /// The scope whose graph outputs the value.
        scope: usize,
    },
}

/// One graph, main or nested.
#[derive(Debug)]
pub struct Scope<'m> {
    /// The graph itself.
    pub graph: &'m GraphProto,
    /// Steps from the main graph down to this one (empty for the main graph).
    pub path: Vec<GraphStep>,
    /// The scope and node holding this graph.
    pub parent: Option<NodeId>,
    defs: HashMap<&'m str, Def>,
    inputs: HashSet<&'m str>,
}

/// A constant value: an initializer that callers cannot override, or the `value` of a
/// `Constant` node.
#[derive(Clone, Copy, Debug)]
pub struct Constant<'m> {
    /// The scope that defines it.
    pub scope: usize,
    /// Its value name.
    pub name: &'m str,
    /// Where it comes from.
    pub source: ConstantSource,
    /// Its value.
    pub tensor: &'m TensorProto,
}

/// Where a constant comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConstantSource {
    /// An initializer, by position.
    Initializer(usize),
    /// A `Constant` node, by position.
    Node(usize),
}

/// The index.
#[derive(Debug)]
pub struct Graph<'m> {
    /// The model indexed.
    pub model: &'m ModelProto,
    /// Every scope; scope 0 is the main graph, parents come before children.
    pub scopes: Vec<Scope<'m>>,
    /// Version of the default ONNX domain the model imports; 0 when it imports none
    /// (then no node is in the default domain, and no rule runs).
    pub opset: i64,
    /// Readers of every name, with the scope defining the name they read.
    uses: HashMap<&'m str, Vec<(usize, Use)>>,
}

/// Whether `domain` names the default ONNX domain.
pub fn is_default(domain: &str) -> bool {
    matches!(domain, "" | "ai.onnx")
}

impl<'m> Graph<'m> {
    /// Indexes `model`. Fails on a default-domain node in a model that imports no
    /// version of the default domain, a name read before anything defines it, nesting
    /// deeper than [`MAX_DEPTH`], or a cycle.
    pub fn new(model: &'m ModelProto) -> Result<Self> {
        let main = model
            .graph
            .as_ref()
            .ok_or_else(|| Error::invalid("the model has no graph"))?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| matches!(o.domain(), "" | "ai.onnx"))
            .map_or(0, |o| o.version());
        let mut graph = Graph {
            model,
            scopes: Vec::new(),
            opset,
            uses: HashMap::new(),
        };
        graph.add_scope(main, Vec::new(), None)?;
        let default_domain = graph
            .nodes()
            .find(|&id| is_default(graph.node(id).domain()));
        if let (0, Some(id)) = (opset, default_domain) {
            return Err(Error::invalid(format!(
                "node '{}' is in the default domain, but the model imports no version of the default ONNX domain",
                graph.label(id)
            )));
        }
        let mut flow = DiGraph::<NodeId, ()>::new();
        let mut vertex: HashMap<NodeId, NodeIndex> = HashMap::new();
        for scope in 0..graph.scopes.len() {
            for index in 0..graph.scopes[scope].graph.node.len() {
                let id = NodeId { scope, index };
                vertex.insert(id, flow.add_node(id));
            }
        }
        for scope in 0..graph.scopes.len() {
            let g = graph.scopes[scope].graph;
            for (index, node) in g.node.iter().enumerate() {
                let id = NodeId { scope, index };
                for (slot, name) in node.input.iter().enumerate() {
                    if name.is_empty() {
                        continue;
                    }
                    let (def_scope, def) = graph.resolve(scope, name).ok_or_else(|| {
                        Error::invalid(format!(
                            "node '{}' reads '{name}', which nothing defines",
                            node.name()
                        ))
                    })?;
                    graph
                        .uses
                        .entry(name.as_str())
                        .or_default()
                        .push((def_scope, Use::Node { node: id, slot }));
                    if let Def::Output { node: producer, .. } = def {
                        let from = NodeId {
                            scope: def_scope,
                            index: producer,
                        };
                        let to = graph.ancestor_in(id, def_scope);
                        flow.add_edge(
                            vertex[&from],
                            vertex[&NodeId {
                                scope: def_scope,
                                index: to,
                            }],
                            (),
                        );
                    }
                }
            }
            for output in &g.output {
                let name = output.name();
                if let Some((def_scope, _)) = graph.resolve(scope, name) {
                    graph
                        .uses
                        .entry(name)
                        .or_default()
                        .push((def_scope, Use::GraphOutput { scope }));
                }
            }
        }
        toposort(&flow, None).map_err(|cycle| {
            let id = flow[cycle.node_id()];
            Error::invalid(format!(
                "the graph has a cycle through node '{}'",
                graph.node(id).name()
            ))
        })?;
        Ok(graph)
    }

    fn add_scope(
        &mut self,
        graph: &'m GraphProto,
        path: Vec<GraphStep>,
        parent: Option<NodeId>,
    ) -> Result<()> {
        if path.len() > MAX_DEPTH {
            return Err(Error::invalid(format!(
                "subgraphs nest deeper than {MAX_DEPTH} levels"
            )));
        }
        let mut defs = HashMap::new();
        let inputs: HashSet<&str> = graph.input.iter().map(|i| i.name()).collect();
        for name in &inputs {
            defs.insert(*name, Def::Input);
        }
        for (i, t) in graph.initializer.iter().enumerate() {
            defs.insert(t.name(), Def::Initializer(i));
        }
        for (node, n) in graph.node.iter().enumerate() {
            for (slot, name) in n.output.iter().enumerate() {
                if !name.is_empty()
                    && defs
                        .insert(name.as_str(), Def::Output { node, slot })
                        .is_some()
                {
                    return Err(Error::invalid(format!("value '{name}' is defined twice")));
                }
            }
        }
        let scope = self.scopes.len();
        self.scopes.push(Scope {
            graph,
            path: path.clone(),
            parent,
            defs,
            inputs,
        });
        for (node, n) in graph.node.iter().enumerate() {
            for (attribute, a) in n.attribute.iter().enumerate() {
                let holder = Some(NodeId { scope, index: node });
                let mut step = GraphStep {
                    node,
                    attribute,
                    graphs_index: None,
                };
                if let Some(g) = &a.g {
                    self.add_scope(g, [path.clone(), vec![step]].concat(), holder)?;
                }
                for (i, g) in a.graphs.iter().enumerate() {
                    step.graphs_index = Some(i);
                    self.add_scope(g, [path.clone(), vec![step]].concat(), holder)?;
                }
            }
        }
        Ok(())
    }

    /// The scope (this one or an enclosing one) that defines `name` as seen from
    /// `scope`, and the definition.
    pub fn resolve(&self, mut scope: usize, name: &str) -> Option<(usize, Def)> {
        loop {
            let s = &self.scopes[scope];
            if let Some(def) = s.defs.get(name) {
                return Some((scope, *def));
            }
            scope = s.parent?.scope;
        }
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &'m NodeProto {
        &self.scopes[id.scope].graph.node[id.index]
    }

    /// A readable name for a node: its name, or its op type and position.
    pub fn label(&self, id: NodeId) -> String {
        let node = self.node(id);
        match (node.name(), id.scope) {
            ("", 0) => format!("{} #{}", node.op_type(), id.index),
            ("", scope) => format!("{} #{} in subgraph {scope}", node.op_type(), id.index),
            (name, _) => name.to_string(),
        }
    }

    /// Every node of every scope, scope by scope in list order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.scopes.iter().enumerate().flat_map(|(scope, s)| {
            (0..s.graph.node.len()).map(move |index| NodeId { scope, index })
        })
    }

    /// Everywhere the value `name` defined in `scope` is read.
    pub fn uses(&self, scope: usize, name: &str) -> Vec<Use> {
        let all = self.uses.get(name).map(Vec::as_slice).unwrap_or_default();
        all.iter()
            .filter(|(s, _)| *s == scope)
            .map(|(_, u)| *u)
            .collect()
    }

    /// The position, in `scope`, of the node that is `id` or holds it in a subgraph.
    /// `scope` must enclose `id`'s scope.
    pub fn ancestor_in(&self, mut id: NodeId, scope: usize) -> usize {
        while id.scope != scope {
            id = self.scopes[id.scope]
                .parent
                .expect("scope encloses the node");
        }
        id.index
    }

    /// The constant that input `name` of a node in `scope` reads, if it is one.
    pub fn constant(&self, scope: usize, name: &str) -> Option<Constant<'m>> {
        self.constant_with_defaults(scope, name, false)
    }

    /// Like [`Graph::constant`], but with `defaults` an initializer of the main graph
    /// that is also a graph input counts too: its value is the input's default, which
    /// the model is read with (in IR < 4 every initializer is listed as an input). A
    /// subgraph's inputs are always bound by the node holding it, so never there.
    pub fn constant_with_defaults(
        &self,
        scope: usize,
        name: &str,
        defaults: bool,
    ) -> Option<Constant<'m>> {
        let (def_scope, def) = self.resolve(scope, name)?;
        let s = &self.scopes[def_scope];
        let (source, tensor) = match def {
            Def::Initializer(i) if !s.inputs.contains(name) || (defaults && def_scope == 0) => {
                (ConstantSource::Initializer(i), &s.graph.initializer[i])
            }
            Def::Output { node, slot: 0 } => {
                let n = &s.graph.node[node];
                let value = (n.op_type() == "Constant" && n.domain().is_empty())
                    .then(|| n.attribute.iter().find(|a| a.name() == "value"))??;
                (ConstantSource::Node(node), value.t.as_ref()?)
            }
            _ => return None,
        };
        Some(Constant {
            scope: def_scope,
            name: s.defs.get_key_value(name).map(|(k, _)| *k)?,
            source,
            tensor,
        })
    }

    /// Whether `name`, read in `scope`, is an initializer of the main graph that is
    /// also a graph input, so a caller may feed another value. (A subgraph's inputs
    /// are bound by the node holding it: there the value is never the initializer.)
    pub fn is_overridable_initializer(&self, scope: usize, name: &str) -> bool {
        matches!(
            self.resolve(scope, name),
            Some((0, Def::Initializer(_))) if self.scopes[0].inputs.contains(name)
        )
    }

    /// The node producing `name` as seen from `scope`, if a node does.
    pub fn producer(&self, scope: usize, name: &str) -> Option<&'m NodeProto> {
        match self.resolve(scope, name)? {
            (s, Def::Output { node, .. }) => Some(&self.scopes[s].graph.node[node]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{ModelBuilder, float_matrix};

    #[test]
    fn finds_initializer_and_constant_node_weights_and_their_uses() {
        let mut b = ModelBuilder::new(17);
        b.input_f32("x", &[1, 4]);
        b.initializer(float_matrix("w", 4, 4, 0));
        b.constant("c", float_matrix("c", 4, 4, 1));
        b.node("MatMul", &["x", "w"], &["y"]);
        b.node("MatMul", &["y", "c"], &["z"]);
        b.output_f32("z");
        let model = b.build();
        let g = Graph::new(&model).unwrap();
        let w = g.constant(0, "w").unwrap();
        assert_eq!(w.source, ConstantSource::Initializer(0));
        let c = g.constant(0, "c").unwrap();
        assert_eq!(c.source, ConstantSource::Node(0));
        assert!(g.constant(0, "y").is_none());
        assert_eq!(
            g.uses(0, "w"),
            &[Use::Node {
                node: NodeId { scope: 0, index: 1 },
                slot: 1
            }]
        );
        assert_eq!(g.uses(0, "z"), &[Use::GraphOutput { scope: 0 }]);
    }

    #[test]
    fn outer_scope_reads_from_subgraphs_are_uses() {
        let mut then = ModelBuilder::new(17);
        then.node("MatMul", &["x", "w"], &["t"]);
        then.output_f32("t");
        let mut b = ModelBuilder::new(17);
        b.input_f32("x", &[1, 4]);
        b.input_bool("cond");
        b.initializer(float_matrix("w", 4, 4, 2));
        b.if_node(
            "cond",
            then.build_graph("then"),
            ModelBuilder::new(17).passthrough_graph("else", "x"),
            "y",
        );
        b.output_f32("y");
        let model = b.build();
        let g = Graph::new(&model).unwrap();
        assert_eq!(g.scopes.len(), 3);
        let inner = NodeId { scope: 1, index: 0 };
        assert_eq!(
            g.uses(0, "w"),
            &[Use::Node {
                node: inner,
                slot: 1
            }]
        );
        assert_eq!(g.ancestor_in(inner, 0), 0);
        assert_eq!(g.constant(1, "w").unwrap().scope, 0);
    }

    #[test]
    fn overridable_initializers_are_not_constants() {
        let mut b = ModelBuilder::new(17);
        b.input_f32("x", &[1, 4]);
        b.input_f32("w", &[4, 4]);
        b.initializer(float_matrix("w", 4, 4, 0));
        b.node("MatMul", &["x", "w"], &["y"]);
        b.output_f32("y");
        let model = b.build();
        let g = Graph::new(&model).unwrap();
        assert!(g.constant(0, "w").is_none());
        assert!(g.is_overridable_initializer(0, "w"));
    }

    #[test]
    fn cycles_and_undefined_names_are_errors() {
        let mut b = ModelBuilder::new(17);
        b.input_f32("x", &[1]);
        b.node("Add", &["x", "b"], &["a"]);
        b.node("Relu", &["a"], &["b"]);
        b.output_f32("b");
        let model = b.build();
        let err = Graph::new(&model).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");

        let mut b = ModelBuilder::new(17);
        b.node("Relu", &["nowhere"], &["y"]);
        let model = b.build();
        let err = Graph::new(&model).unwrap_err().to_string();
        assert!(err.contains("reads 'nowhere'"), "{err}");
    }
}
