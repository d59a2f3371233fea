//! Which values sensitivity compares by default: the model's outputs, or the logits
//! before an output that a softmax or sigmoid saturates.

use crate::graph::{Graph, LAYOUT_ONLY};
use crate::onnx::proto::NodeProto;

/// Ops whose output saturates, so that most of a weight's effect on their input is gone
/// from their output.
const SATURATING: [&str; 2] = ["Softmax", "Sigmoid"];

/// The values sensitivity compares when none are named: every model output, except
/// that an output made by a Softmax or Sigmoid, or by a softmax written out as
/// `Div(Exp(z), ...)` (through layout-only ops), is replaced by the logits before it.
/// A saturated probability hides the errors the allocator has to weigh.
pub fn default_compared(graph: &Graph) -> Vec<String> {
    graph.scopes[0]
        .graph
        .output
        .iter()
        .map(|output| {
            let mut name = output.name();
            while let Some(node) = graph.producer(0, name) {
                if let Some(logits) = logits_before(graph, node) {
                    return logits.to_string();
                }
                if !LAYOUT_ONLY.contains(&node.op_type()) || node.input.is_empty() {
                    break;
                }
                name = &node.input[0];
            }
            output.name().to_string()
        })
        .collect()
}

/// The logits `node` squashes, if it is a Softmax or Sigmoid, or the `Div(Exp(z), _)`
/// of a written-out softmax: then `z`, or `l` where `z = Sub(l, _)` (the max
/// subtracted for stability, which the softmax does not see).
fn logits_before<'m>(graph: &Graph<'m>, node: &'m NodeProto) -> Option<&'m str> {
    let first = |n: &'m NodeProto| n.input.first().map(String::as_str);
    if SATURATING.contains(&node.op_type()) {
        return first(node);
    }
    if node.op_type() != "Div" {
        return None;
    }
    let exp = graph
        .producer(0, first(node)?)
        .filter(|n| n.op_type() == "Exp")?;
    let z = first(exp)?;
    match graph.producer(0, z) {
        Some(sub) if sub.op_type() == "Sub" => first(sub),
        _ => Some(z),
    }
}
