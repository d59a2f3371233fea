//! Bias correction: the decoded weight shifts the mean of its node's output by
//! `mean(x) . (W_hat - W)`; adding `c = alpha * mean(x) . (W - W_hat)` to the bias
//! that follows cancels that shift on the calibration set, for no bits.
//!
//! ```text
//! Gemm with a constant bias:     Gemm(A, B, C)            -> Gemm(A, B_hat, C + c/beta)
//! MatMul then Add of a constant: Add(MatMul(X, W), b)     -> Add(MatMul(X, W_hat), b + c)
//! otherwise:                     Y = MatMul(X, W)         -> Y = Add(MatMul(X, W_hat), c)
//! ```
//!
//! A bias is adjusted in place only when it is a main-graph initializer of shape `[M]`
//! (or `[1, M]`) that nothing else reads; otherwise an Add of a new initializer
//! `{weight}.bias_correction` follows the node.

use prost::Message;

use crate::builder::node;
use crate::graph::{ConstantSource, Graph, Names, NodeId, Use};
use crate::onnx::external::is_external;
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::tensor::float_tensor;
use crate::plan::WeightPlan;
use crate::rules::{Bias, Linear};
use crate::stats::{Stats, activation};

/// One correction, for the driver to apply.
#[derive(Clone, Debug, PartialEq)]
pub enum BiasFix {
    /// Add `delta` to the main-graph initializer `initializer`.
    Adjust {
        /// The bias initializer.
        initializer: String,
        /// What to add to each of its values.
        delta: Vec<f64>,
    },
    /// Rename output 0 of `node` to `renamed` and insert `nodes` (reading `renamed`
    /// and `initializer`, writing the old name) right after it.
    Insert {
        /// The MatMul or Gemm node.
        node: NodeId,
        /// Its output's new name.
        renamed: String,
        /// The Add node.
        nodes: Vec<NodeProto>,
        /// The correction values.
        initializer: Box<TensorProto>,
    },
}

impl BiasFix {
    /// Bytes the fix adds to the model file.
    pub fn stored_bytes(&self) -> usize {
        match self {
            BiasFix::Adjust { .. } => 0,
            BiasFix::Insert {
                nodes, initializer, ..
            } => nodes.iter().map(Message::encoded_len).sum::<usize>() + initializer.encoded_len(),
        }
    }
}

/// The corrections for every reader of the weight `w` (values `original`, decoded
/// `decoded`, in the weight's layout) whose activation statistics are in `stats`.
pub fn corrections(
    graph: &Graph,
    w: &WeightPlan,
    original: &[f64],
    decoded: &[f64],
    stats: &Stats,
    names: &mut Names,
) -> Vec<BiasFix> {
    let patch = w.first();
    let [rows, cols] = patch.shape;
    let (channels, inputs) = if patch.channel_axis == 1 {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let mut fixes = Vec::new();
    for p in &w.patches {
        let Some(linear) = p.linear else {
            continue;
        };
        let Some(mean) = activation(p)
            .and_then(|key| stats.get(&key))
            .map(|s| s.mean())
            .filter(|m| m.len() == inputs)
        else {
            continue;
        };
        let alpha = linear.alpha as f64;
        let mut c = vec![0.0; channels];
        for (pos, (a, b)) in original.iter().zip(decoded).enumerate() {
            let (r, k) = (pos / cols, pos % cols);
            let (channel, input) = if patch.channel_axis == 1 {
                (k, r)
            } else {
                (r, k)
            };
            c[channel] += mean[input] * (a - b);
        }
        c.iter_mut().for_each(|v| *v *= alpha);
        fixes.push(match following_bias(graph, &linear, channels) {
            Some((initializer, scale)) => BiasFix::Adjust {
                initializer,
                delta: c.iter().map(|v| v * scale).collect(),
            },
            None => {
                let out = linear.y;
                let renamed = names.fresh(&format!("{out}.uncorrected"));
                let table = names.fresh(&format!("{}.bias_correction", patch.weight.name));
                let add = names.fresh(&format!("{}.bias_correction/Add", patch.weight.name));
                BiasFix::Insert {
                    node: p.node,
                    nodes: vec![node("Add", &add, &[&renamed, &table], &[out], Vec::new())],
                    renamed,
                    initializer: Box::new(float_tensor(&table, &[channels], patch.float_type, &c)),
                }
            }
        });
    }
    fixes
}

/// The bias initializer that a `linear` reader's correction can be added to, and the
/// factor to scale the correction by (`1/beta` for Gemm's C).
fn following_bias(graph: &Graph, linear: &Linear, channels: usize) -> Option<(String, f64)> {
    // A main-graph initializer of shape [M] or [1, M] with no other reader.
    let own = |name: &str| -> Option<String> {
        let c = graph.constant(0, name)?;
        let shape_ok = matches!(c.tensor.dims.as_slice(), [m] | [1, m] if *m as usize == channels);
        let only_reader = graph.uses(0, name).len() == 1;
        (c.scope == 0
            && !is_external(c.tensor)
            && matches!(c.source, ConstantSource::Initializer(_))
            && shape_ok
            && only_reader)
            .then(|| name.to_string())
    };
    let name = match linear.bias {
        Bias::Input { name, beta } => {
            let beta = beta as f64;
            return (beta != 0.0).then(|| own(name).map(|b| (b, 1.0 / beta)))?;
        }
        Bias::Absent => return None,
        Bias::Following => linear.y,
    };
    let [Use::Node { node: add, slot }] = graph.uses(0, name)[..] else {
        return None;
    };
    let a = graph.node(add);
    if a.op_type() != "Add" || add.scope != 0 || a.input.len() != 2 {
        return None;
    }
    own(&a.input[1 - slot]).map(|b| (b, 1.0))
}
