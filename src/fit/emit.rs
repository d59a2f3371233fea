//! Emitting a fitted weight: the form its particles and readers call for.

use super::{Fit, Particles};
use crate::forms::rows::{self, Levels};
use crate::forms::{Subgraph, Target, decode, half, lut, qdq, scaled, subspace, vector};
use crate::graph::{Graph, Names};
use crate::plan::WeightPlan;

impl Fit {
    /// The subgraph for the weight planned as `w` in `graph`: its decoding; the rows
    /// form replacing its readers when every one is a row lookup (see
    /// [`rows::applies`]); or under [`crate::config::Form::Lut`], when every reader is
    /// a MatMul or Gemm, the LUT nodes replacing them. With `shared_table`, scalar
    /// codebooks are read from that initializer instead of stored again.
    pub fn emit(
        &self,
        w: &WeightPlan,
        graph: &Graph,
        names: &mut Names,
        shared_table: Option<&str>,
    ) -> Subgraph {
        let patch = w.first();
        let target = Target {
            weight: patch.weight.name,
            dims: &patch.weight.tensor.dims,
            shape: patch.shape,
            float_type: patch.float_type,
            stored_type: self.codebook_type,
            channel_axis: patch.channel_axis,
            bits: self.bits,
            opset: graph.opset,
        };
        let readers: Vec<_> = (w.patches.iter())
            .map(|p| (p.node, graph.node(p.node)))
            .collect();
        let row_lookups = |levels: Levels| {
            let nodes: Vec<_> = readers.iter().map(|&(_, n)| n).collect();
            (shared_table.is_none() && w.ties.is_empty())
                && rows::applies(&target, levels, self.granularity, &nodes)
        };
        match &self.particles {
            Particles::Scalar(d) if row_lookups(Levels::Codebooks(d)) => {
                let levels = Levels::Codebooks(d);
                rows::emit(&target, levels, self.granularity, &readers, names)
            }
            Particles::Scalar(d) => decode::emit(&target, d, self.granularity, names, shared_table),
            Particles::Grid(g) if row_lookups(Levels::Grids(g)) => {
                rows::emit(&target, Levels::Grids(g), self.granularity, &readers, names)
            }
            Particles::Scaled(grid) => scaled::emit(&target, grid, names),
            Particles::Vector(d) => vector::emit(&target, d, names),
            Particles::Half(values) => half::emit(&target, values, names),
            Particles::Grid(g) => {
                let linear = w.patches.iter().all(|p| p.linear.is_some());
                if linear && qdq::applies(target.float_type, self.bits, self.granularity) {
                    let gemms: Option<Vec<_>> = (w.patches.iter())
                        .map(|p| {
                            let node = graph.node(p.node);
                            (node.op_type() == "Gemm" && p.channel_axis == 0 && w.ties.is_empty())
                                .then_some((p.node, node))
                        })
                        .collect();
                    let gemms = gemms.unwrap_or_default();
                    qdq::emit(&target, g, self.granularity, names, &gemms)
                } else {
                    let d = g.decomposition();
                    decode::emit(&target, &d, self.granularity, names, shared_table)
                }
            }
            Particles::Subspace(d) => {
                let linear: Option<Vec<_>> = w
                    .patches
                    .iter()
                    .map(|p| Some((p.node, p.linear?)))
                    .collect();
                match (self.lut, linear) {
                    (Some(gather), Some(linear)) => {
                        lut::emit(&target, d, &linear, graph.opset, gather, names)
                    }
                    _ => subspace::emit(&target, d, names),
                }
            }
        }
    }
}
