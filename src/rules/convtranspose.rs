//! ConvTranspose with a constant weight.
//!
//! ```text
//! before:  Y = ConvTranspose(X, W[C, O/group, k1, k2, ...], B)      W: constant
//! after:   Y = ConvTranspose(X, Reshape(decode(particles, index)[C, O/group*k1*k2*...], dims(W)), B)
//! ```
//!
//! The weight is decomposed as a matrix with one row per *input* channel `C` and
//! rebuilt in its own shape, so strides, pads, output padding and shape, dilations,
//! groups and the bias keep their meaning. Rows, not ConvTranspose's output channels
//! (axis 1), because:
//! - a ConvTranspose is the gradient of the Conv whose weight is `W` itself, and axis 0
//!   is that Conv's output channel: a row holds one filter, as Conv's rows do, with
//!   the scale its training gave it;
//! - axis 0 is the only axis whose channels are contiguous in the stored tensor: a
//!   view with channels on axis 1 needs a full-size Transpose in the decoding (or
//!   codebooks per output channel *and* kernel position, `k1*k2*...` times as many);
//! - the granularities then work as for Conv: per channel is per row, `block:G` is `G`
//!   consecutive elements of one row (`G` dividing `k1*k2*...` keeps blocks within an
//!   output channel's kernel);
//! - measured on real exports (4-bit k-means per codebook, squared error over the
//!   weight's energy): piper's upsampling weights `[256, 128, 16]`, `[128, 64, 16]` and
//!   `[64, 32, 8]` lose 1.47%, 1.56%, 2.53% per row against 2.16%, 2.00%, 2.54% per
//!   output channel; centerface's `[24, 24, 2, 2]` kernels are within 10% either way.

use super::{Layout, Match, Rule, Select, weight_input};
use crate::graph::{Graph, NodeId};

/// The ConvTranspose rule.
pub const RULE: Rule = Rule {
    op: "ConvTranspose",
    default: true,
    matches,
};

/// Matches a ConvTranspose whose weight is a constant float tensor.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    vec![weight_input(graph, node, 1, Layout::ChannelsFirst, select)]
}
