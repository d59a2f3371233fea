//! What the pass does, as chosen by the user: which weights (the rules' [`Select`]),
//! how their particles are fitted, which weights share them, and the form they take.
//! Per-weight settings are the plan's, not the config's.

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::onnx::tensor::FloatType;
use crate::particles::pack::packed_len;
use crate::particles::{CodebookFit, Granularity};
use crate::rules::Select;

/// Options of the rewrite.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which weights the rules select.
    pub select: Select,
    /// Bits per particle index, 1..=8: each codebook holds `2^bits` particles (every
    /// weight's, unless the plan gives it a setting of its own).
    pub bits: u32,
    /// How many weights share a codebook.
    pub granularity: GranularityChoice,
    /// Element type the particles are stored in.
    pub codebook_type: CodebookType,
    /// Only rewrite weights whose codebooks can hold every value exactly, with the
    /// fewest bits (at most `bits`) that do; the rewrite is then bit-exact.
    pub lossless: bool,
    /// Fraction of each weight's elements (0..1) that keep their exact value: those the
    /// codebooks serve worst.
    pub outliers: f64,
    /// Weights per particle along the input axis (1: scalar particles).
    pub dim: usize,
    /// Additive stages, each fitted to the residual of the previous ones.
    pub stages: usize,
    /// How scalar codebooks are fitted: exact optimal k-means (default) or Lloyd
    /// iterations (`--fit fast`). Applies to each weight's own nearest-particle fit;
    /// `--compensate`, `--share alike` and vector or subspace particles fit their own way.
    pub codebook_fit: CodebookFit,
    /// Which related weights share particles.
    pub share: Share,
    /// Under [`Share::Alike`]: the extra squared error a joint codebook may cost, as a
    /// fraction of the members' own.
    pub alike_error: f64,
    /// What the rewritten MatMul/Gemm nodes compute (see [`Form`]).
    pub form: Form,
    /// One codebook per subspace of `dim` inputs, shared by all output channels
    /// (product quantization); always so under [`Form::Lut`].
    pub subspaces: bool,
    /// How the LUT form reads the dot products (see [`LutGather`]).
    pub lut_gather: LutGather,
    /// With calibration statistics, add `mean(x) . (W - W_hat)` to the bias after each
    /// rewritten MatMul/Gemm, so the output's mean error is zero on the calibration set.
    pub bias_correction: bool,
    /// With calibration statistics, choose indices by error-compensating rounding
    /// (GPTQ-style, with `H = X^T X`) instead of nearest particles.
    pub compensate: bool,
    /// Without per-weight settings from calibration: choose each weight's bits and
    /// granularity from its own error (the `guard` module) instead of `bits` and
    /// `granularity` for all.
    pub guard: Option<Guard>,
    /// The model's folder, where external data locations resolve; `None` skips
    /// weights stored as external data.
    pub external_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr while weights are fitted.
    pub progress: bool,
}

/// The SQNR targets of the data-free default (the `guard` module).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guard {
    /// The SQNR, in dB, a weight of 2^20 elements aims at.
    pub target_db: f64,
    /// How many dB more a weight aims at for every halving of its size.
    pub slope_db: f64,
    /// The least SQNR, in dB, any weight aims at.
    pub floor_db: f64,
}

/// How the LUT form gathers each channel's dot products; both compute the same values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LutGather {
    /// Dot products laid out `[S*K, rows]`, one Gather of whole rows: fastest from a
    /// few rows of input up (a sequence, a batch).
    #[default]
    Rows,
    /// Dot products laid out `[rows, S*K]`, GatherElements with the index expanded
    /// to every row: fastest for a single row in onnxruntime, but it holds that
    /// expanded index (4 bytes per lookup) at run time.
    Elements,
}

/// The subgraph a MatMul/Gemm weight becomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Form {
    /// The weight is rebuilt from its particles; the node is untouched.
    #[default]
    Decode,
    /// The node is replaced by a gather-and-accumulate over per-subspace dot products
    /// (`forms::lut`); weights stay compressed at run time. Other readers (Gather,
    /// Conv) decode the same particles.
    Lut,
    /// Uniform grids per block of inputs, written as a standard `DequantizeLinear` of
    /// 4- or 8-bit integers (`forms::qdq`, opset 21; an older model's opset is
    /// upgraded first): onnxruntime fuses it with the MatMul/Gemm into its n-bit
    /// kernel, so the weight stays small in memory. Other readers decode the grids.
    Qdq,
}

/// Block sizes the qdq form chooses from: powers of two, as onnxruntime's fused
/// kernel needs, from the finest (most scale bytes) to the coarsest.
pub const QDQ_BLOCKS: [usize; 3] = [32, 64, 128];

/// Bits the qdq form stores: the integer widths `DequantizeLinear` and onnxruntime's
/// fused kernel take.
pub const QDQ_BITS: [u32; 2] = [4, 8];

impl GranularityChoice {
    /// The blocks the qdq form chooses from: the one fixed, or under `auto` every
    /// size of [`QDQ_BLOCKS`].
    pub fn qdq_blocks(self) -> Vec<Granularity> {
        match self {
            GranularityChoice::Fixed(g) => vec![g],
            GranularityChoice::Auto => QDQ_BLOCKS.iter().map(|&g| Granularity::Block(g)).collect(),
        }
    }
}

/// Which related weights share particles (the plan relates them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Share {
    /// Every weight is decomposed on its own.
    None,
    /// Identical and transposed weights are decoded once.
    #[default]
    Identical,
    /// As `Identical`, and weights of the same shape whose joint codebooks cost at
    /// most `alike_error` extra squared error read one shared codebook.
    Alike,
}

/// Element type of stored particles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CodebookType {
    /// Half precision, cast to the weight's type in the graph. A codebook whose values
    /// do not fit in half precision (beyond +-65504) is stored in the weight's type.
    #[default]
    F16,
    /// Single precision, or the weight's own type when that is half precision.
    F32,
}

impl CodebookType {
    /// The type a codebook for a `weight`-typed weight is stored in, given its particle
    /// values. With `exact`, half precision only if it holds every particle exactly.
    pub fn resolve(self, weight: FloatType, particles: &[Vec<f64>], exact: bool) -> FloatType {
        let fits_half = || {
            particles.iter().flatten().all(|&p| {
                let half = FloatType::F16.round(p);
                if exact { half == p } else { half.is_finite() }
            })
        };
        match (self, weight) {
            (_, FloatType::F16) => FloatType::F16,
            (CodebookType::F16, _) if fits_half() => FloatType::F16,
            (CodebookType::F16, weight) => weight,
            (CodebookType::F32, FloatType::F64) if exact => FloatType::F64,
            (CodebookType::F32, _) => FloatType::F32,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            select: Select::default(),
            bits: 4,
            granularity: GranularityChoice::Auto,
            codebook_type: CodebookType::F16,
            lossless: false,
            outliers: 0.0,
            dim: 1,
            stages: 1,
            codebook_fit: CodebookFit::Exact,
            share: Share::Identical,
            alike_error: 0.2,
            form: Form::Decode,
            subspaces: false,
            lut_gather: LutGather::Rows,
            bias_correction: false,
            compensate: false,
            guard: None,
            external_dir: None,
            progress: false,
        }
    }
}

impl Config {
    /// Whether weights become vector particles or additive stages (the vector form).
    pub fn uses_vectors(&self) -> bool {
        self.dim > 1 || self.stages > 1
    }

    /// Whether identical and transposed weights are decoded once: `--share identical`
    /// or `alike` under the decode form (the LUT form replaces each node by lookups
    /// into its own weight's tables).
    pub fn ties_weights(&self) -> bool {
        self.share != Share::None && self.form == Form::Decode
    }

    /// Whether weights get one codebook per subspace of `dim` inputs.
    pub fn uses_subspaces(&self) -> bool {
        self.subspaces || self.form == Form::Lut
    }

    /// Whether every weight takes the common bits and granularity, so per-weight
    /// settings (the allocator's) do not apply: vectors, subspaces, lossless,
    /// outliers and alike codebooks fit their own way.
    pub fn fits_own_way(&self) -> bool {
        self.uses_vectors()
            || self.uses_subspaces()
            || self.lossless
            || self.outliers > 0.0
            || self.share == Share::Alike
    }

    /// Checks that every option is in range.
    pub fn validate(&self) -> Result<()> {
        self.select.validate()?;
        if !(1..=8).contains(&self.bits) {
            return Err(Error::Config(format!(
                "--bits must be 1..=8, not {}",
                self.bits
            )));
        }
        if !(0.0..1.0).contains(&self.outliers) {
            return Err(Error::Config(format!(
                "--outliers must be in [0, 1), not {}",
                self.outliers
            )));
        }
        if !(1..=64).contains(&self.dim) || !(1..=8).contains(&self.stages) {
            return Err(Error::Config(format!(
                "--dim must be 1..=64 and --stages 1..=8, not {} and {}",
                self.dim, self.stages
            )));
        }
        if self.share == Share::Alike
            && (!(0.0..=10.0).contains(&self.alike_error)
                || self.uses_vectors()
                || self.lossless
                || self.outliers > 0.0)
        {
            return Err(Error::Config(
                "--share alike takes an extra error in [0, 10] and scalar codebooks (no --dim, --stages, --lossless or --outliers)".into(),
            ));
        }
        let per_tensor = matches!(
            self.granularity,
            GranularityChoice::Auto | GranularityChoice::Fixed(Granularity::Tensor)
        );
        if self.uses_vectors() && (self.lossless || self.outliers > 0.0 || !per_tensor) {
            return Err(Error::Config(
                "--dim and --stages use one codebook per tensor and stage; they do not combine with --lossless, --outliers or --granularity channel/block".into(),
            ));
        }
        if self.uses_subspaces()
            && (self.stages > 1
                || self.lossless
                || self.outliers > 0.0
                || self.share == Share::Alike
                || !per_tensor)
        {
            return Err(Error::Config(
                "--form lut and --subspaces use one codebook per subspace of --dim inputs; they do not combine with --stages, --lossless, --outliers, --share alike or --granularity channel/block".into(),
            ));
        }
        if self.form == Form::Qdq {
            self.validate_qdq()?;
        }
        Ok(())
    }

    /// The qdq form's limits: 4 or 8 bits, blocks of a power of two (at least 16)
    /// inputs, scalar grids of one weight each.
    fn validate_qdq(&self) -> Result<()> {
        if !QDQ_BITS.contains(&self.bits) {
            return Err(Error::Config(format!(
                "--form qdq stores 4- or 8-bit integers, not --bits {}",
                self.bits
            )));
        }
        match self.granularity {
            GranularityChoice::Auto => {}
            GranularityChoice::Fixed(Granularity::Block(g)) if g >= 16 && g.is_power_of_two() => {}
            GranularityChoice::Fixed(g) => {
                return Err(Error::Config(format!(
                    "--form qdq takes --granularity auto or block:G with G a power of two of at least 16 (onnxruntime's fused kernel), not {g}"
                )));
            }
        }
        if self.uses_vectors()
            || self.subspaces
            || self.lossless
            || self.outliers > 0.0
            || self.share == Share::Alike
        {
            return Err(Error::Config(
                "--form qdq writes scalar grids per block; it does not combine with --dim, --stages, --subspaces, --lossless, --outliers or --share alike".into(),
            ));
        }
        Ok(())
    }
}

/// How each weight's codebook granularity is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GranularityChoice {
    /// Per channel, unless the channel codebooks would take more than half as many
    /// bytes as the weight's packed indices (few rows, many bits); then per tensor.
    Auto,
    /// Always this granularity.
    Fixed(Granularity),
}

impl FromStr for GranularityChoice {
    type Err = String;

    /// `auto`, `tensor`, `channel` or `block:G` with `G > 0`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => GranularityChoice::Auto,
            "tensor" => GranularityChoice::Fixed(Granularity::Tensor),
            "channel" => GranularityChoice::Fixed(Granularity::Channel),
            _ => {
                let size = s
                    .strip_prefix("block:")
                    .and_then(|g| g.parse::<usize>().ok())
                    .filter(|&g| g > 0);
                let size = size.ok_or_else(|| {
                    format!("expected auto, tensor, channel or block:G with G > 0, got '{s}'")
                })?;
                GranularityChoice::Fixed(Granularity::Block(size))
            }
        })
    }
}

impl GranularityChoice {
    /// The granularity for a `shape` matrix with channels along `channel_axis`,
    /// `bits`-bit indices and `element_size`-byte particles.
    pub fn resolve(
        self,
        shape: [usize; 2],
        channel_axis: usize,
        bits: u32,
        element_size: usize,
    ) -> Granularity {
        match self {
            GranularityChoice::Fixed(g) => g,
            GranularityChoice::Auto => {
                let codebook_bytes = shape[channel_axis] * (1usize << bits) * element_size;
                let index_bytes = packed_len(shape[0] * shape[1], bits);
                if 2 * codebook_bytes <= index_bytes {
                    Granularity::Channel
                } else {
                    Granularity::Tensor
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_granularity_weighs_codebooks_against_indices() {
        let auto = GranularityChoice::Auto;
        // 384 x 384 at 4 bits: 384 codebooks of 16 fp32 = 24.6 kB vs 73.7 kB of indices.
        assert_eq!(auto.resolve([384, 384], 1, 4, 4), Granularity::Channel);
        // At 8 bits: 393 kB of codebooks vs 147 kB of indices.
        assert_eq!(auto.resolve([384, 384], 1, 8, 4), Granularity::Tensor);
        // Gemm transB = 1, [32, 2400]: 32 row codebooks are cheap.
        assert_eq!(auto.resolve([32, 2400], 0, 8, 4), Granularity::Channel);
        let fixed = GranularityChoice::Fixed(Granularity::Channel);
        assert_eq!(fixed.resolve([384, 384], 1, 8, 4), Granularity::Channel);
    }

    #[test]
    fn granularity_parses_every_spelling() {
        let parse = |s: &str| s.parse::<GranularityChoice>();
        assert_eq!(parse("auto"), Ok(GranularityChoice::Auto));
        assert_eq!(
            parse("block:32"),
            Ok(GranularityChoice::Fixed(Granularity::Block(32)))
        );
        assert!(parse("block:0").is_err());
        assert!(parse("rows").is_err());
    }

    #[test]
    fn bad_bits_are_refused() {
        let config = Config {
            bits: 9,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid option: --bits must be 1..=8, not 9"
        );
    }
}
