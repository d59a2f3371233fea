//! The report of each rewritten weight: its particles, error and stored bytes.

use prost::Message;

use crate::bias::BiasFix;
use crate::fit::{Fit, Particles};
use crate::forms::Subgraph;
use crate::graph::{Constant, ConstantSource, Graph};
use crate::onnx::external_length;
use crate::particles::CodebookFit;
use crate::plan::WeightPlan;
use crate::report::{KmeansMethod, TensorReport};

/// The report of one rewritten weight; its bytes include its bias `fixes`.
pub(super) fn tensor_report(
    graph: &Graph,
    w: &WeightPlan,
    fit: &Fit,
    subgraph: &Subgraph,
    fixes: &[BiasFix],
) -> TensorReport {
    let patch = w.first();
    let elements = w.elements();
    let constant_bytes = |c: &Constant| match c.source {
        ConstantSource::Initializer(_) => {
            c.tensor.encoded_len() + external_length(c.tensor) as usize
        }
        ConstantSource::Node(i) => graph.scopes[c.scope].graph.node[i].encoded_len(),
    };
    let bytes_before = constant_bytes(&patch.weight)
        + w.ties
            .iter()
            .map(|t| constant_bytes(&t.weight))
            .sum::<usize>();
    let bytes_after =
        subgraph.stored_bytes() + fixes.iter().map(BiasFix::stored_bytes).sum::<usize>();
    let (codebooks, particles, outliers, dim, sse_bound) = match &fit.particles {
        Particles::Scalar(d) => (
            d.codebooks.len(),
            d.particles_per_codebook(),
            d.outliers.len(),
            1,
            d.sse_bound,
        ),
        Particles::Vector(d) => (d.stages.len(), d.particles(), 0, d.dim, 0.0),
        Particles::Scaled(g) => (1, g.grid.len(), 0, 1, 0.0),
        Particles::Subspace(d) => (d.subspaces, d.particles, 0, d.dim, 0.0),
        Particles::Half(_) => (0, 0, 0, 1, 0.0),
        Particles::Grid(g) => (g.grids.len(), g.levels, 0, 1, 0.0),
    };
    TensorReport {
        name: patch.weight.name.to_string(),
        nodes: w.patches.iter().map(|p| graph.label(p.node)).collect(),
        tied: w
            .ties
            .iter()
            .map(|t| {
                format!(
                    "{}{}",
                    t.weight.name,
                    if t.transposed { " (transposed)" } else { "" }
                )
            })
            .collect(),
        shape: patch.shape,
        dtype: patch.float_type,
        codebook_dtype: fit.codebook_type,
        bits: fit.bits,
        granularity: fit.granularity,
        dim,
        elements,
        codebooks,
        particles,
        outliers,
        mse: fit.sse / elements as f64,
        sqnr_db: 10.0 * (fit.signal / fit.sse).log10(),
        bits_per_weight: 8.0 * bytes_after as f64 / elements as f64,
        bytes_before,
        bytes_after,
        kmeans: match (&fit.particles, sse_bound > 0.0) {
            (Particles::Vector(d), _) if d.dim > 1 => KmeansMethod::Lloyd,
            (Particles::Subspace(d), _) if d.dim > 1 => KmeansMethod::Lloyd,
            (Particles::Scaled(_), _) => KmeansMethod::ScaledGrid,
            (Particles::Half(_), _) => KmeansMethod::Half,
            (Particles::Grid(_), _) => KmeansMethod::Grid,
            (Particles::Scalar(_), _) if fit.codebook_fit == CodebookFit::Lloyd => {
                KmeansMethod::Lloyd
            }
            (_, true) => KmeansMethod::Histogram,
            _ => KmeansMethod::Exact,
        },
        mse_bound: sse_bound / elements as f64,
        bias_corrected: fixes.len(),
        sensitivity: None,
        error_share: None,
        target_sqnr_db: None,
    }
}

/// Bits per weight over all rewritten weights, every stored byte counted.
pub(super) fn bits_per_weight(tensors: &[TensorReport]) -> f64 {
    let elements: usize = tensors.iter().map(|t| t.elements).sum();
    let bytes: usize = tensors.iter().map(|t| t.bytes_after).sum();
    if elements == 0 {
        0.0
    } else {
        8.0 * bytes as f64 / elements as f64
    }
}
