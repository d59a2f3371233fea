//! Fitting one weight: read its values, choose the particle settings the config asks
//! for (bits, granularity, lossless, outliers, vectors and stages), decompose, and
//! emit the matching form. Called by the driver for every planned weight, in parallel.

use crate::config::{Config, GranularityChoice};
use crate::error::Result;
use crate::forms::Subgraph;
use crate::forms::decode::{self, DecodeInput};
use crate::forms::vector::{self, VectorInput};
use crate::graph::Names;
use crate::onnx::tensor::{FloatType, float_values};
use crate::particles::pack::packed_len;
use crate::particles::vector::{VectorDecomposition, decompose_vectors};
use crate::particles::{Decomposition, Granularity, Matrix, decompose, decompose_with_outliers};
use crate::plan::WeightPlan;
use crate::rules::SkipReason;

/// The particles of one weight.
#[derive(Clone, Debug)]
pub enum Particles {
    /// Scalar codebooks (tensor, channel or block granularity).
    Scalar(Decomposition),
    /// Vector particles over additive stages, one codebook per stage.
    Vector(VectorDecomposition),
}

/// A weight's particles, the settings they were fitted with, and how well they fit.
#[derive(Clone, Debug)]
pub struct Fit {
    /// The particles.
    pub particles: Particles,
    /// Bits per index.
    pub bits: u32,
    /// Codebook granularity (tensor for vector particles).
    pub granularity: Granularity,
    /// Element type the particles are stored in.
    pub codebook_type: FloatType,
    /// Squared error of the decoded weight, particles rounded as stored.
    pub sse: f64,
    /// Sum of the squared weights.
    pub signal: f64,
}

impl Fit {
    /// The decode subgraph for the weight planned as `w`.
    pub fn emit(&self, w: &WeightPlan, names: &mut Names) -> Subgraph {
        let patch = w.first();
        match &self.particles {
            Particles::Scalar(decomposition) => {
                let input = DecodeInput {
                    weight: patch.weight.name,
                    dims: &patch.weight.tensor.dims,
                    shape: patch.shape,
                    float_type: patch.float_type,
                    codebook_type: self.codebook_type,
                    decomposition,
                    granularity: self.granularity,
                    channel_axis: patch.channel_axis,
                    bits: self.bits,
                };
                decode::emit(&input, names)
            }
            Particles::Vector(decomposition) => {
                let input = VectorInput {
                    weight: patch.weight.name,
                    dims: &patch.weight.tensor.dims,
                    shape: patch.shape,
                    float_type: patch.float_type,
                    codebook_type: self.codebook_type,
                    decomposition,
                    channel_axis: patch.channel_axis,
                    bits: self.bits,
                };
                vector::emit(&input, names)
            }
        }
    }
}

/// Reads and decomposes one weight, or says why it cannot be.
pub fn fit(w: &WeightPlan, config: &Config) -> Result<Result<Fit, SkipReason>> {
    let patch = w.first();
    let name = patch.weight.name.to_string();
    let values = float_values(patch.weight.tensor)?;
    if values.iter().any(|v| !v.is_finite()) {
        return Ok(Err(SkipReason::NonFinite(name)));
    }
    let [rows, cols] = patch.shape;
    let matrix = Matrix {
        values: &values,
        rows,
        cols,
        channel_axis: patch.channel_axis,
    };
    let (particles, granularity, bits) = if config.uses_vectors() {
        let inputs = matrix.channels_and_inputs().1;
        if !inputs.is_multiple_of(config.dim) {
            return Ok(Err(SkipReason::NotDivisible(name, inputs, config.dim)));
        }
        let d = decompose_vectors(&matrix, config.dim, config.bits, config.stages, 0);
        (Particles::Vector(d), Granularity::Tensor, config.bits)
    } else if config.lossless {
        let (granularity, bits) = match lossless_settings(&matrix, w, config) {
            Ok(settings) => settings,
            Err(reason) => return Ok(Err(reason)),
        };
        (
            Particles::Scalar(decompose(&matrix, granularity, bits)),
            granularity,
            bits,
        )
    } else {
        let granularity = w.granularity(config);
        let d = decompose_with_outliers(&matrix, granularity, config.bits, config.outliers);
        (Particles::Scalar(d), granularity, config.bits)
    };
    let tables: Vec<Vec<f64>> = match &particles {
        Particles::Scalar(d) => d.codebooks.clone(),
        Particles::Vector(d) => d.stages.iter().map(|s| s.codebook.clone()).collect(),
    };
    let codebook_type = config
        .codebook_type
        .resolve(patch.float_type, &tables, config.lossless);
    let round = |v: f64| patch.float_type.round(codebook_type.round(v));
    let decoded = match &particles {
        Particles::Scalar(d) => d.decoded(&matrix, granularity, round),
        Particles::Vector(d) => d.decoded(&matrix, round),
    };
    let sse = values
        .iter()
        .zip(&decoded)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let signal = values.iter().map(|a| a * a).sum();
    Ok(Ok(Fit {
        particles,
        bits,
        granularity,
        codebook_type,
        sse,
        signal,
    }))
}

/// `--lossless`: the granularity (the configured one, or under `auto` the cheaper of
/// tensor and channel) and the fewest bits whose codebooks hold every value exactly.
fn lossless_settings(
    matrix: &Matrix,
    w: &WeightPlan,
    config: &Config,
) -> Result<(Granularity, u32), SkipReason> {
    let candidates = match config.granularity {
        GranularityChoice::Auto => vec![Granularity::Tensor, Granularity::Channel],
        GranularityChoice::Fixed(g) => vec![g],
    };
    let size = w.first().float_type.size();
    let mut fewest = usize::MAX;
    let mut best: Option<(usize, Granularity, u32)> = None;
    for g in candidates {
        let distinct = matrix.max_distinct(g);
        fewest = fewest.min(distinct);
        let bits = (usize::BITS - distinct.saturating_sub(1).leading_zeros()).max(1);
        if bits > config.bits {
            continue;
        }
        let bytes = packed_len(matrix.values.len(), bits) + matrix.codebooks(g) * distinct * size;
        if best.is_none_or(|(b, _, _)| bytes < b) {
            best = Some((bytes, g, bits));
        }
    }
    best.map(|(_, g, bits)| (g, bits)).ok_or_else(|| {
        SkipReason::NotLossless(w.first().weight.name.to_string(), fewest, config.bits)
    })
}
