//! Walking down to a scope's graph in a model, to edit it.

use super::GraphStep;
use crate::onnx::proto::{GraphProto, ModelProto};

/// The graph reached from the main graph of `model` by `path` (a scope's
/// [`Scope::path`]), to edit. Panics if the model has no graph or `path` leads nowhere:
/// paths come from an index of this same model.
pub fn graph_at<'a>(model: &'a mut ModelProto, path: &[GraphStep]) -> &'a mut GraphProto {
    let mut g = model
        .graph
        .as_mut()
        .expect("the index checked the model has a graph");
    for step in path {
        let a = &mut g.node[step.node].attribute[step.attribute];
        g = match step.graphs_index {
            None => a.g.as_mut().expect("the index saw this subgraph"),
            Some(i) => &mut a.graphs[i],
        };
    }
    g
}
