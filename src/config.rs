//! What the pass does, as chosen by the user.

use std::collections::HashMap;
use std::path::PathBuf;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::onnx::tensor::FloatType;
use crate::particles::pack::packed_len;
use crate::particles::{CodebookFit, Granularity};
use crate::rules::RULES;

/// Options of the rewrite.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bits per particle index, 1..=8: each codebook holds `2^bits` particles.
    pub bits: u32,
    /// How many weights share a codebook.
    pub granularity: GranularityChoice,
    /// Weights with fewer elements are left alone.
    pub min_elements: usize,
    /// Which nodes and weights may be rewritten.
    pub selection: Selection,
    /// Op types whose weights are rewritten (a subset of [`crate::rules::RULES`]).
    pub ops: Vec<String>,
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
    /// The model's folder, where external data locations resolve; `None` skips
    /// weights stored as external data.
    pub external_dir: Option<PathBuf>,
    /// Draw a progress bar on stderr while weights are fitted.
    pub progress: bool,
    /// Which related weights share particles.
    pub share: Share,
    /// Bits and granularity for individual weights, by weight name (the allocator's
    /// choice under `--target-bits`); other weights follow `bits` and `granularity`.
    pub settings: HashMap<String, Setting>,
    /// With calibration statistics, add `mean(x) . (W - W_hat)` to the bias after each
    /// rewritten MatMul/Gemm, so the output's mean error is zero on the calibration set.
    pub bias_correction: bool,
    /// With calibration statistics, choose indices by error-compensating rounding
    /// (GPTQ-style, with `H = X^T X`) instead of nearest particles.
    pub compensate: bool,
    /// Rounds of rounding and refit a compensated fit runs at most (see
    /// [`compensate_in_rounds`](crate::particles::compensate::compensate_in_rounds)).
    pub compensate_rounds: usize,
    /// Values whose error measures a weight's sensitivity (e.g. the logits before a
    /// saturating softmax); empty: the default of
    /// [`default_compared`](crate::sensitivity::default_compared).
    pub sensitivity_outputs: Vec<String>,
    /// What the rewritten MatMul/Gemm nodes compute (see [`Form`]).
    pub form: Form,
    /// One codebook per subspace of `dim` inputs, shared by all output channels
    /// (product quantization); always so under [`Form::Lut`].
    pub subspaces: bool,
    /// How the LUT form reads the dot products (see [`LutGather`]).
    pub lut_gather: LutGather,
    /// How scalar codebooks are fitted: exact optimal k-means (default) or Lloyd
    /// iterations (`--fit fast`). Applies to each weight's own nearest-particle fit;
    /// `--compensate`, `--share alike` and vector or subspace particles fit their own way.
    pub codebook_fit: CodebookFit,
}

/// The particle settings of one weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Setting {
    /// Bits per particle index.
    pub bits: u32,
    /// Codebook granularity.
    pub granularity: Granularity,
}

/// How the LUT form gathers each channel's dot products; both compute the same values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Form {
    /// The weight is rebuilt from its particles; the node is untouched.
    #[default]
    Decode,
    /// The node is replaced by a gather-and-accumulate over per-subspace dot products
    /// (`forms::lut`); weights stay compressed at run time. Other readers (Gather,
    /// Conv) decode the same particles.
    Lut,
}

/// Which related weights share particles (see [`crate::relation`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Share {
    /// Every weight is decomposed on its own.
    None,
    /// Identical and transposed weights are decoded once.
    Identical,
    /// As `Identical`, and weights of the same shape whose joint codebooks cost at
    /// most this fraction of extra squared error read one shared codebook.
    Alike(f64),
}

/// Op types rewritten by default.
pub const DEFAULT_OPS: [&str; 4] = ["MatMul", "Gemm", "Gather", "Conv"];

/// Element type of stored particles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodebookType {
    /// Half precision, cast to the weight's type in the graph. A codebook whose values
    /// do not fit in half precision (beyond +-65504) is stored in the weight's type.
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
            bits: 4,
            granularity: GranularityChoice::Auto,
            min_elements: 4096,
            selection: Selection::default(),
            ops: DEFAULT_OPS.iter().map(|s| s.to_string()).collect(),
            codebook_type: CodebookType::F16,
            lossless: false,
            outliers: 0.0,
            dim: 1,
            stages: 1,
            external_dir: None,
            progress: false,
            share: Share::Identical,
            settings: HashMap::new(),
            bias_correction: false,
            compensate: false,
            compensate_rounds: crate::particles::compensate::ROUNDS,
            sensitivity_outputs: Vec::new(),
            form: Form::Decode,
            subspaces: false,
            lut_gather: LutGather::Rows,
            codebook_fit: CodebookFit::Exact,
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

    /// Checks that every option is in range.
    pub fn validate(&self) -> Result<()> {
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
        if let Share::Alike(tolerance) = self.share
            && (!(0.0..=10.0).contains(&tolerance)
                || self.uses_vectors()
                || self.lossless
                || self.outliers > 0.0)
        {
            return Err(Error::Config(
                "--share alike takes an extra error in [0, 10] and scalar codebooks (no --dim, --stages, --lossless or --outliers)".into(),
            ));
        }
        if self.uses_vectors() {
            let per_tensor = matches!(
                self.granularity,
                GranularityChoice::Auto | GranularityChoice::Fixed(Granularity::Tensor)
            );
            if self.lossless || self.outliers > 0.0 || !per_tensor {
                return Err(Error::Config(
                    "--dim and --stages use one codebook per tensor and stage; they do not combine with --lossless, --outliers or --granularity channel/block".into(),
                ));
            }
        }
        if !self.settings.is_empty()
            && (self.uses_vectors()
                || self.uses_subspaces()
                || self.lossless
                || self.outliers > 0.0
                || matches!(self.share, Share::Alike(_)))
        {
            return Err(Error::Config(
                "per-weight bits (--target-bits, --auto, presets) take scalar codebooks in the decode form, without --lossless, --outliers or --share alike".into(),
            ));
        }
        if let Some((name, s)) = self
            .settings
            .iter()
            .find(|(_, s)| !(1..=8).contains(&s.bits))
        {
            return Err(Error::Config(format!(
                "weight '{name}': {} bits is outside 1..=8",
                s.bits
            )));
        }
        if self.uses_subspaces()
            && (self.stages > 1
                || self.lossless
                || self.outliers > 0.0
                || matches!(self.share, Share::Alike(_))
                || !matches!(
                    self.granularity,
                    GranularityChoice::Auto | GranularityChoice::Fixed(Granularity::Tensor)
                ))
        {
            return Err(Error::Config(
                "--form lut and --subspaces use one codebook per subspace of --dim inputs; they do not combine with --stages, --lossless, --outliers, --share alike or --granularity channel/block".into(),
            ));
        }
        let known: Vec<&str> = RULES.iter().map(|(op, _)| *op).collect();
        if let Some(op) = self.ops.iter().find(|op| !known.contains(&op.as_str())) {
            return Err(Error::Config(format!(
                "--ops: no rule for '{op}' (known: {})",
                known.join(", ")
            )));
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

/// Include and exclude globs over node and weight names.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
}

/// Why a [`Selection`] leaves a node out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unselected {
    /// Neither the node nor the weight name matches an `--include` glob.
    NotIncluded,
    /// The node or weight name matches this `--exclude` glob.
    Excluded(String),
}

impl Selection {
    /// Compiles the globs; with no include glob, everything not excluded is selected.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        let compile = |patterns: &[String]| -> Result<GlobSet> {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                set.add(Glob::new(p).map_err(|e| Error::Config(format!("bad glob '{p}': {e}")))?);
            }
            set.build().map_err(|e| Error::Config(e.to_string()))
        };
        Ok(Selection {
            include: (!include.is_empty())
                .then(|| compile(include))
                .transpose()?,
            exclude: compile(exclude)?,
            exclude_patterns: exclude.to_vec(),
        })
    }

    /// `Ok` if a node named `node` reading weight `weight` is selected.
    pub fn check(&self, node: &str, weight: &str) -> Result<(), Unselected> {
        if let Some(include) = &self.include
            && !include.is_match(node)
            && !include.is_match(weight)
        {
            return Err(Unselected::NotIncluded);
        }
        let mut hits = self.exclude.matches(node);
        hits.extend(self.exclude.matches(weight));
        match hits.first() {
            Some(&i) => Err(Unselected::Excluded(self.exclude_patterns[i].clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_match_node_or_weight_names() {
        let s = Selection::new(&["*attention*".into()], &["*key*".into()]).unwrap();
        assert_eq!(s.check("/layer.0/attention/query/MatMul", "w1"), Ok(()));
        assert_eq!(s.check("/layer.0/output/MatMul", "attention_w"), Ok(()));
        assert_eq!(
            s.check("/layer.0/output/MatMul", "w2"),
            Err(Unselected::NotIncluded)
        );
        assert_eq!(
            s.check("/layer.0/attention/key/MatMul", "w3"),
            Err(Unselected::Excluded("*key*".into()))
        );
        assert_eq!(Selection::default().check("any", "thing"), Ok(()));
    }

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
    fn bad_bits_and_globs_are_refused() {
        let config = Config {
            bits: 9,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid option: --bits must be 1..=8, not 9"
        );
        assert!(Selection::new(&["[".into()], &[]).is_err());
    }
}
