//! Every change a rewrite makes, collected while the model is borrowed by the index,
//! then applied to a copy: the only code that mutates a model.

use std::collections::HashSet;

use crate::bias::BiasFix;
use crate::builder::{Dim, value_info};
use crate::error::Result;
use crate::forms::Subgraph;
use crate::graph::{ConstantSource, Graph, GraphStep, graph_at};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, float_tensor, float_values};
use crate::plan::WeightPlan;

/// Changes to one graph.
#[derive(Default)]
struct ScopeEdits {
    path: Vec<GraphStep>,
    /// (position, order of the weight, replace the node at position?, nodes).
    insertions: Vec<(usize, usize, bool, Vec<NodeProto>)>,
    /// Names of the weights replaced: their initializers, value_info and graph input
    /// entries (an initializer that was also an input) go.
    removed_names: HashSet<String>,
    initializers: Vec<TensorProto>,
}

/// Every change the rewrite makes, collected while the model is borrowed by the
/// index, then applied to a copy.
#[derive(Default)]
pub(super) struct Edits {
    scopes: Vec<(usize, ScopeEdits)>,
    /// (path of the node's graph, node position, input slot, new input name).
    rewires: Vec<(Vec<GraphStep>, usize, usize, String)>,
    /// Bias corrections (main graph).
    pub(super) bias_fixes: Vec<BiasFix>,
    count: usize,
}

impl Edits {
    fn scope(&mut self, graph: &Graph, scope: usize) -> &mut ScopeEdits {
        let at = match self.scopes.iter().position(|(s, _)| *s == scope) {
            Some(at) => at,
            None => {
                let path = graph.scopes[scope].path.clone();
                self.scopes.push((
                    scope,
                    ScopeEdits {
                        path,
                        ..Default::default()
                    },
                ));
                self.scopes.len() - 1
            }
        };
        &mut self.scopes[at].1
    }

    /// The decode subgraph goes just before the first reader of the weight or of its
    /// ties; their constants (initializers or Constant nodes) leave the model; every
    /// reader reads the decoded value, a transposed tie its Transpose (`tie_outputs`),
    /// and a reader the subgraph replaces (the LUT form) gives way to its replacement.
    pub(super) fn add(
        &mut self,
        graph: &Graph,
        w: &WeightPlan,
        subgraph: Subgraph,
        tie_outputs: &[String],
    ) {
        let scope = w.first().weight.scope;
        let readers = std::iter::once((w.first().weight, &w.patches, &subgraph.output)).chain(
            w.ties
                .iter()
                .zip(tie_outputs)
                .map(|(t, output)| (t.weight, &t.patches, output)),
        );
        let mut first = usize::MAX;
        let order = self.count;
        self.count += 1;
        for (weight, patches, output) in readers {
            for p in patches {
                first = first.min(graph.ancestor_in(p.node, scope));
                let replaced = subgraph.replacements.iter().find(|r| r.node == p.node);
                if let Some(r) = replaced {
                    let edits = self.scope(graph, p.node.scope);
                    edits
                        .insertions
                        .push((p.node.index, order, true, r.nodes.clone()));
                    continue;
                }
                let path = graph.scopes[p.node.scope].path.clone();
                self.rewires
                    .push((path, p.node.index, p.slot, output.clone()));
            }
            let edits = self.scope(graph, scope);
            edits.removed_names.insert(weight.name.to_string());
            if let ConstantSource::Node(i) = weight.source {
                edits.insertions.push((i, order, true, Vec::new()));
            }
        }
        let edits = self.scope(graph, scope);
        edits.insertions.push((first, order, false, subgraph.nodes));
        edits.initializers.extend(subgraph.initializers);
    }

    /// Rewires first (node positions are still those of the index), then edits each
    /// graph, deepest first, so positions in paths stay valid.
    pub(super) fn apply(mut self, model: &mut ModelProto) -> Result<()> {
        for (path, node, slot, name) in &self.rewires {
            graph_at(model, path).node[*node].input[*slot] = name.clone();
        }
        for fix in std::mem::take(&mut self.bias_fixes) {
            match fix {
                BiasFix::Adjust { initializer, delta } => {
                    let g = graph_at(model, &[]);
                    let t = g
                        .initializer
                        .iter_mut()
                        .find(|t| t.name() == initializer)
                        .expect("the index found this bias");
                    let ty = FloatType::from_data_type(t.data_type()).ok_or_else(|| {
                        crate::Error::tensor(&initializer, "bias is not a float tensor")
                    })?;
                    let values: Vec<f64> = float_values(t, None)?
                        .iter()
                        .zip(&delta)
                        .map(|(v, d)| v + d)
                        .collect();
                    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                    *t = float_tensor(&initializer, &dims, ty, &values);
                }
                BiasFix::Insert {
                    node,
                    renamed,
                    nodes,
                    initializer,
                } => {
                    graph_at(model, &[]).node[node.index].output[0] = renamed;
                    let order = self.count;
                    self.count += 1;
                    let edits = self.scope_at_main();
                    edits.insertions.push((node.index + 1, order, false, nodes));
                    edits.initializers.push(*initializer);
                }
            }
        }
        self.scopes
            .sort_by_key(|(_, e)| std::cmp::Reverse(e.path.len()));
        for (_, mut edits) in self.scopes {
            let g = graph_at(model, &edits.path);
            // Last position first; at one position a replaced node before the nodes
            // inserted ahead of it.
            edits
                .insertions
                .sort_by_key(|&(pos, order, replace, _)| std::cmp::Reverse((pos, order, replace)));
            for (pos, _, replace, nodes) in edits.insertions {
                g.node.splice(pos..pos + usize::from(replace), nodes);
            }
            g.initializer
                .retain(|t| !edits.removed_names.contains(t.name()));
            g.value_info
                .retain(|v| !edits.removed_names.contains(v.name()));
            g.input.retain(|v| !edits.removed_names.contains(v.name()));
            g.initializer.extend(edits.initializers);
        }
        if matches!(model.ir_version, Some(v) if v < 4) {
            list_initializers_as_inputs(graph_at(model, &[]));
        }
        Ok(())
    }

    /// The edits of the main graph.
    fn scope_at_main(&mut self) -> &mut ScopeEdits {
        if !self.scopes.iter().any(|(s, _)| *s == 0) {
            self.scopes.push((0, ScopeEdits::default()));
        }
        let at = self
            .scopes
            .iter()
            .position(|(s, _)| *s == 0)
            .expect("just added");
        &mut self.scopes[at].1
    }
}

/// IR < 4 requires every initializer of the graph to be listed as a graph input (its
/// default value; runtimes read such a model's initializers as constants): the ones the
/// rewrite added get an entry of their type and shape, after the others.
fn list_initializers_as_inputs(g: &mut GraphProto) {
    let listed: HashSet<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    let missing: Vec<_> = (g.initializer.iter())
        .filter(|t| !listed.contains(t.name()))
        .map(|t| {
            let dims: Vec<Dim> = t.dims.iter().map(|&d| Dim::Fixed(d as usize)).collect();
            let data_type = DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined);
            value_info(t.name(), data_type, Some(&dims))
        })
        .collect();
    g.input.extend(missing);
}
