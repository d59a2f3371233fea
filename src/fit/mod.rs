//! Fitting one weight: read its values, choose the particle settings the config asks
//! for (bits, granularity, lossless, outliers, vectors and stages), decompose, and
//! emit the matching form ([`emit`]). Called by the driver for every planned weight, in parallel.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Form, GranularityChoice, LutGather};
use crate::error::Result;
mod emit;

use crate::onnx::tensor::FloatType;
use crate::particles::compensate::Hessian;
use crate::particles::grid::{GridDecomposition, decompose_grid};
use crate::particles::pack::packed_len;
use crate::particles::scaled::{ScaledGrid, find_scaled_grid};
use crate::particles::subspace::{SubspaceDecomposition, decompose_subspaces};
use crate::particles::vector::{VectorDecomposition, decompose_vectors};
use crate::particles::{
    CodebookFit, Decomposition, Granularity, Matrix, assign, decompose, decompose_with_outliers,
};
use crate::plan::{Setting, WeightPlan};
use crate::rules::SkipReason;

/// The particles of one weight.
#[derive(Clone, Debug)]
pub enum Particles {
    /// Scalar codebooks (tensor, channel or block granularity).
    Scalar(Decomposition),
    /// Vector particles over additive stages, one codebook per stage.
    Vector(VectorDecomposition),
    /// A shared grid of integers times a scale per channel (`--lossless` only).
    Scaled(ScaledGrid),
    /// One codebook per subspace of `dim` inputs (`--form lut`, `--subspaces`).
    Subspace(SubspaceDecomposition),
    /// The weight's own values in half precision (the data-free default's last resort).
    Half(Vec<f64>),
    /// Uniform grids per block of inputs (`--form qdq`).
    Grid(GridDecomposition),
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
    /// Under `--form lut`, how its MatMul/Gemm readers gather; `None`: decode form.
    pub lut: Option<LutGather>,
    /// How the scalar codebooks were fitted: [`CodebookFit::Lloyd`] only where the
    /// weight's own nearest-particle fit ran under `--fit fast`.
    pub codebook_fit: CodebookFit,
}

impl Fit {
    /// The weight as the stored particles rebuild it, in the weight's own `float_type`
    /// (`matrix` is the view the particles were fitted on).
    pub fn decoded(&self, matrix: &Matrix, float_type: FloatType) -> Vec<f64> {
        let round = |v: f64| float_type.round(self.codebook_type.round(v));
        match &self.particles {
            Particles::Scalar(d) => d.decoded(matrix, self.granularity, round),
            Particles::Vector(d) => d.decoded(matrix, round),
            Particles::Scaled(g) => g.decoded(matrix, |v| float_type.round(v)),
            Particles::Subspace(d) => d.decoded(matrix, round),
            Particles::Half(v) => v.iter().map(|&x| round(x)).collect(),
            Particles::Grid(g) => g.decoded(matrix, self.granularity, round),
        }
    }
}

/// Fits already made, by weight name and setting. Calibration's sensitivity stage fits
/// every weight at every candidate setting; the rewrite that follows reads the fit of
/// each weight's chosen setting here instead of fitting it again.
#[derive(Clone, Debug, Default)]
pub struct Fits {
    fits: HashMap<(String, Setting), Arc<Fit>>,
}

impl Fits {
    /// The fit of `weight` at `setting`, if one was made.
    pub fn get(&self, weight: &str, setting: Setting) -> Option<Arc<Fit>> {
        self.fits.get(&(weight.to_string(), setting)).cloned()
    }

    /// Keeps the fit of `weight` at `setting`.
    pub fn insert(&mut self, weight: &str, setting: Setting, fit: Arc<Fit>) {
        self.fits.insert((weight.to_string(), setting), fit);
    }

    /// Number of fits kept.
    pub fn len(&self) -> usize {
        self.fits.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.fits.is_empty()
    }
}

/// The matrix view of a planned weight's `values`.
pub fn matrix<'a>(w: &WeightPlan, values: &'a [f64]) -> Matrix<'a> {
    let patch = w.first();
    let [rows, cols] = patch.shape;
    Matrix {
        values,
        rows,
        cols,
        channel_axis: patch.channel_axis,
    }
}

/// The bits of a weight stored in half precision: a setting of 16 bits means the half
/// form, not codebooks.
pub const HALF_BITS: u32 = 16;

/// The planned weight `w` with these `values` stored in half precision, or `None` if a
/// value is beyond its range (or `w` is half precision already).
pub fn half(w: &WeightPlan, values: &[f64]) -> Option<Fit> {
    let float_type = w.first().float_type;
    let rounded: Vec<f64> = values.iter().map(|&v| FloatType::F16.round(v)).collect();
    if float_type == FloatType::F16 || rounded.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let sse = values
        .iter()
        .zip(&rounded)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    Some(Fit {
        particles: Particles::Half(values.to_vec()),
        bits: HALF_BITS,
        granularity: Granularity::Tensor,
        codebook_type: FloatType::F16,
        sse,
        signal: values.iter().map(|v| v * v).sum(),
        lut: None,
        codebook_fit: CodebookFit::Exact,
    })
}

/// Error-compensating rounding for one weight: its `H = X^T X` (from calibration) and
/// the most rounds of rounding and refit to run (see [`Hessian::decompose`]).
#[derive(Clone, Copy)]
pub struct Compensation<'a> {
    /// The weight's factored `H`.
    pub hessian: &'a Hessian,
    /// Rounds to run at most.
    pub rounds: usize,
}

/// Why the planned weight `w` with these `values` cannot be fitted under `config`, if
/// a check short of fitting tells: values that are not finite, or inputs that vectors
/// of `--dim` do not divide. (Lossless storage is decided by fitting.)
pub fn check(w: &WeightPlan, values: &[f64], config: &Config) -> Result<(), SkipReason> {
    let name = || w.name().to_string();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(SkipReason::NonFinite(name()));
    }
    let inputs = matrix(w, values).channels_and_inputs().1;
    if (config.uses_subspaces() || config.uses_vectors()) && !inputs.is_multiple_of(config.dim) {
        return Err(SkipReason::NotDivisible(name(), inputs, config.dim));
    }
    Ok(())
}

/// Decomposes one planned weight whose `values` were read, at its setting (at
/// [`HALF_BITS`], stored in half precision), or says why it cannot be (see [`check`]). With `shared`, the weight is indexed into those codebooks (fitted
/// jointly with other weights under `--share alike`) instead of codebooks of its own.
/// With a `compensation` over the weight's inputs, scalar codebooks are fitted by
/// error-compensating rounding instead of nearest particles.
pub fn fit_values(
    w: &WeightPlan,
    values: &[f64],
    config: &Config,
    shared: Option<&[Vec<f64>]>,
    compensation: Option<Compensation>,
) -> Result<Fit, SkipReason> {
    check(w, values, config)?;
    if w.setting.bits == HALF_BITS {
        return half(w, values).ok_or_else(|| SkipReason::NonFinite(w.name().to_string()));
    }
    let patch = w.first();
    let matrix = matrix(w, values);
    let setting = w.setting;
    let mut codebook_fit = CodebookFit::Exact;
    let (particles, granularity, bits) = if config.uses_subspaces() {
        let d = decompose_subspaces(&matrix, config.dim, setting.bits, 0);
        (Particles::Subspace(d), Granularity::Tensor, setting.bits)
    } else if config.uses_vectors() {
        let d = decompose_vectors(&matrix, config.dim, setting.bits, config.stages, 0);
        (Particles::Vector(d), Granularity::Tensor, setting.bits)
    } else if config.lossless {
        match lossless(&matrix, w, config.granularity)? {
            Lossless::Codebooks(granularity, bits) => (
                Particles::Scalar(decompose(&matrix, granularity, bits)),
                granularity,
                bits,
            ),
            Lossless::Grid(grid, bits) => (Particles::Scaled(grid), Granularity::Tensor, bits),
        }
    } else if config.form == Form::Qdq {
        let Setting { bits, granularity } = setting;
        let ty = patch.float_type;
        let mut grids = decompose_grid(&matrix, granularity, bits, |s| ty.round(s));
        let inputs = matrix.channels_and_inputs().1;
        if let Some(c) = compensation.filter(|c| c.hessian.inputs() == inputs) {
            let codebooks = grids.codebooks();
            grids.index = c.hessian.round_into(&matrix, granularity, &codebooks).index;
        }
        (Particles::Grid(grids), granularity, bits)
    } else if let Some(codebooks) = shared {
        (
            Particles::Scalar(assign(&matrix, setting.granularity, codebooks)),
            setting.granularity,
            setting.bits,
        )
    } else {
        let Setting { bits, granularity } = setting;
        let inputs = matrix.channels_and_inputs().1;
        let d = match compensation.filter(|c| c.hessian.inputs() == inputs) {
            Some(c) if config.outliers == 0.0 => {
                c.hessian.decompose(&matrix, granularity, bits, c.rounds)
            }
            _ => {
                codebook_fit = config.codebook_fit;
                decompose_with_outliers(&matrix, granularity, bits, config.outliers, codebook_fit)
            }
        };
        (Particles::Scalar(d), granularity, bits)
    };
    let tables: Vec<Vec<f64>> = match &particles {
        Particles::Scalar(d) => d.codebooks.clone(),
        Particles::Vector(d) => d.stages.iter().map(|s| s.codebook.clone()).collect(),
        Particles::Scaled(g) => vec![g.grid.clone()],
        Particles::Subspace(d) => vec![d.codebooks.clone()],
        Particles::Half(v) => vec![v.clone()],
        Particles::Grid(_) => Vec::new(),
    };
    // A grid's levels are computed in the weight's type, its scale's.
    let codebook_type = match &particles {
        Particles::Grid(_) => patch.float_type,
        _ => config
            .codebook_type
            .resolve(patch.float_type, &tables, config.lossless),
    };
    let round = |v: f64| patch.float_type.round(codebook_type.round(v));
    let squared_error = |decoded: Vec<f64>| {
        values
            .iter()
            .zip(&decoded)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let sse = match &particles {
        Particles::Scalar(d) => d.squared_error(&matrix, granularity, round),
        Particles::Vector(d) => squared_error(d.decoded(&matrix, round)),
        Particles::Scaled(g) => squared_error(g.decoded(&matrix, |v| patch.float_type.round(v))),
        Particles::Subspace(d) => squared_error(d.decoded(&matrix, round)),
        Particles::Half(v) => squared_error(v.iter().map(|&x| round(x)).collect()),
        Particles::Grid(g) => g.squared_error(&matrix, granularity, round),
    };
    let signal = values.iter().map(|a| a * a).sum();
    Ok(Fit {
        particles,
        bits,
        granularity,
        codebook_type,
        sse,
        signal,
        lut: (config.form == Form::Lut).then_some(config.lut_gather),
        codebook_fit,
    })
}

/// How a weight is stored exactly under `--lossless`.
enum Lossless {
    /// Codebooks at this granularity with this many bits.
    Codebooks(Granularity, u32),
    /// A scaled grid with this many bits.
    Grid(ScaledGrid, u32),
}

/// Fewest bits holding `distinct` values.
fn bits_for(distinct: usize) -> u32 {
    (usize::BITS - distinct.saturating_sub(1).leading_zeros()).max(1)
}

/// `--lossless`: the cheapest exact storage within the weight's bits: codebooks at the
/// `choice` of granularity (under `auto`, tensor or channel), or a grid of integers
/// times a scale per row or per column (dequantized int8 weights).
fn lossless(
    matrix: &Matrix,
    w: &WeightPlan,
    choice: GranularityChoice,
) -> Result<Lossless, SkipReason> {
    let max_bits = w.setting.bits;
    let granularities = match choice {
        GranularityChoice::Auto => vec![Granularity::Tensor, Granularity::Channel],
        GranularityChoice::Fixed(g) => vec![g],
    };
    let ty = w.first().float_type;
    let n = matrix.values.len();
    let mut fewest = usize::MAX;
    let mut options: Vec<(usize, Lossless)> = Vec::new();
    for g in granularities {
        let distinct = matrix.max_distinct(g);
        fewest = fewest.min(distinct);
        let bits = bits_for(distinct);
        if bits <= max_bits {
            let bytes = packed_len(n, bits) + matrix.codebooks(g) * distinct * ty.size();
            options.push((bytes, Lossless::Codebooks(g, bits)));
        }
    }
    for scale_axis in [0, 1] {
        if let Some(grid) = find_scaled_grid(matrix, scale_axis, 128, |v| ty.round(v)) {
            let bits = bits_for(grid.grid.len());
            if bits <= max_bits {
                let bytes =
                    packed_len(n, bits) + grid.grid.len() * 2 + grid.scales.len() * ty.size();
                options.push((bytes, Lossless::Grid(grid, bits)));
            }
        }
    }
    options
        .into_iter()
        .min_by_key(|(bytes, _)| *bytes)
        .map(|(_, choice)| choice)
        .ok_or_else(|| SkipReason::NotLossless(w.name().to_string(), fewest, max_bits))
}
