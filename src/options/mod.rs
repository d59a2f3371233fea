//! The options of every command, as the command line spells them: clap argument groups
//! that turn into the library's [`Config`], [`Tuning`] and [`ProofConfig`]. The
//! command line and the Python bindings parse the same groups, so their defaults and
//! checks cannot drift apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};

mod inputs;

pub use inputs::InputOptions;

use crate::calibrate::Sensitivity;
use crate::config::{CodebookType, Config, Form, GranularityChoice, Guard, LutGather, Share};
use crate::error::{Error, Result};
use crate::inputs::SampleSource;
use crate::inputs::fill::parse_value;
use crate::job::{Note, Target, Tuning};
use crate::onnx::external::model_dir;
use crate::particles::CodebookFit;
use crate::prove::{DEFAULT_BUDGET, ProofConfig};
use crate::rules::{Select, Selection, default_ops};

/// The fewest bits the allocator gives a weight when it runs by default on real inputs:
/// the data-free default's least.
pub const GUARDED_MIN_BITS: u32 = 4;

/// The time the default allocation on real inputs may spend measuring sensitivity.
pub const GUARDED_SENSITIVITY_BUDGET: Duration = Duration::from_secs(120);

/// The data-free default's SQNR targets (see [`crate::guard`]).
pub const DEFAULT_GUARD: Guard = Guard {
    target_db: 22.0,
    slope_db: 1.5,
    floor_db: 20.0,
};

/// How weights are selected and decomposed.
#[derive(Args, Clone, Debug)]
pub struct ParticleOptions {
    /// Bits per particle index for every weight: codebooks of 2^bits particles
    /// (1..=8). Without it, each weight gets 4 to 8 bits and its granularity from its
    /// own error (--target-sqnr, --min-sqnr). With --lossless, the most bits a
    /// lossless codebook may take (default 8).
    #[arg(long)]
    pub bits: Option<u32>,
    /// Without --bits: the weight SQNR, in dB, a weight of 2^20 elements aims at.
    #[arg(long, value_name = "DB", default_value_t = DEFAULT_GUARD.target_db)]
    pub target_sqnr: f64,
    /// Without --bits: how many dB higher a weight aims for every halving of its size.
    #[arg(long, value_name = "DB", default_value_t = DEFAULT_GUARD.slope_db)]
    pub sqnr_slope: f64,
    /// Without --bits: the least weight SQNR, in dB, any weight aims at.
    #[arg(long, value_name = "DB", default_value_t = DEFAULT_GUARD.floor_db)]
    pub min_sqnr: f64,
    /// Codebook granularity: tensor, channel (one per output channel), block:G (one
    /// per G consecutive inputs of a channel), or auto: per channel unless its
    /// codebooks would take more than half the bytes of the weight's indices.
    #[arg(
        long,
        value_name = "auto|tensor|channel|block:G",
        default_value = "auto"
    )]
    pub granularity: GranularityChoice,
    /// Element type of stored particles (f16 is cast back to the weight's type in the graph).
    #[arg(long, value_enum, default_value_t = CodebookType::F16)]
    pub codebook_type: CodebookType,
    /// Only rewrite weights whose codebooks hold every value exactly (fewest bits up
    /// to --bits); the rewrite is then bit-exact. Others are skipped with the reason.
    #[arg(long)]
    pub lossless: bool,
    /// Fraction of each weight's elements (e.g. 0.005) kept exact: those the codebooks
    /// serve worst, written back after decoding with ScatterElements.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub outliers: f64,
    /// Weights per vector particle (consecutive along a channel's inputs); 1 = scalar.
    #[arg(long, value_name = "D", default_value_t = 1)]
    pub dim: usize,
    /// Additive stages: W = sum of one particle per stage, each fitted to the residual.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub stages: usize,
    /// Share particles between related weights: none; identical (identical and
    /// transposed weights are decoded once); alike (also: weights of one shape whose
    /// joint codebooks cost at most --alike-error extra squared error share them).
    #[arg(long, value_enum, default_value_t = Share::Identical)]
    pub share: Share,
    /// With --share alike: the extra squared error a joint codebook may cost, as a
    /// fraction of the members' own (0.2 = 20%; on minilm_l3 0.2 pairs 12 of 18
    /// weights for a 0.0011 lower sentence cosine, and 0.1 pairs none).
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub alike_error: f64,
    /// What rewritten MatMul/Gemm nodes compute: decode (rebuild the weight; runtimes
    /// fold it back to dense at load) or lut (per-subspace dot products gathered and
    /// summed: the weight stays compressed in memory at run time, at a latency cost;
    /// needs --dim D dividing the inputs, one codebook per subspace of D inputs).
    #[arg(long, value_enum, default_value_t = Form::Decode)]
    pub form: Form,
    /// One codebook per subspace of --dim inputs, shared by all output channels, in
    /// the decode form: the particles --form lut uses.
    #[arg(long)]
    pub subspaces: bool,
    /// How --form lut reads the dot products: rows (one Gather of whole rows; fastest
    /// from a few input rows up) or elements (GatherElements; fastest for a single
    /// input row in onnxruntime, but holds an index per row at run time).
    #[arg(long, value_enum, default_value_t = LutGather::Rows)]
    pub lut_gather: LutGather,
    /// How scalar codebooks are fitted: exact (optimal 1-D k-means) or fast (Lloyd
    /// iterations on the sorted values: a local optimum, several times faster).
    #[arg(long, value_enum, default_value_t = CodebookFit::Exact)]
    pub fit: CodebookFit,
    /// Op types whose weights are rewritten, comma-separated. `Other` (not a default)
    /// adds the constant float inputs of at least --min-elements elements of every op
    /// that has no rule of its own, each decoded per tensor.
    #[arg(long, value_delimiter = ',', default_values_t = default_ops())]
    pub ops: Vec<String>,
    /// Leave weights with fewer elements alone.
    #[arg(long, default_value_t = 4096)]
    pub min_elements: usize,
    /// Only rewrite nodes whose name or weight name matches one of these globs.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never rewrite nodes whose name or weight name matches one of these globs.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Rewrite initializers that are also graph inputs (callers could feed another
    /// value) as weights too; their input entries are removed. IR < 4 models list every
    /// initializer as an input, and there they always are.
    #[arg(long)]
    pub initializer_inputs: bool,
}

/// Named settings of calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// `--target-bits 4` with bias correction; under `--form qdq`,
    /// [`QDQ_QUALITY_BITS`] (its cheapest grid, 4-bit blocks of 128 with fp32 scales,
    /// takes 4.28).
    Quality,
    /// `--target-bits 3` with bias correction and `--compensate`.
    Small,
}

/// Bits per weight `--preset quality` aims at under `--form qdq`.
pub const QDQ_QUALITY_BITS: f64 = 4.5;

/// Calibration: where the samples come from and what they decide.
#[derive(Args, Clone, Debug)]
pub struct CalibrationOptions {
    /// Calibration inputs: an .npz with one array per model input, named after it,
    /// with one more axis in front (x[s] is sample s). Enables bias correction.
    #[arg(long, value_name = "FILE.npz", conflicts_with = "calibration_random")]
    pub calibration: Option<PathBuf>,
    /// Draw N seeded random calibration samples (like the proof's inputs) instead.
    #[arg(long, value_name = "N")]
    pub calibration_random: Option<usize>,
    /// Average bits per rewritten weight, every stored byte counted: bits (1-8) and
    /// granularity are chosen per weight from its measured output sensitivity.
    #[arg(long, value_name = "B")]
    pub target_bits: Option<f64>,
    /// With --max-rel-error: find the smallest allocation whose proof passes it.
    #[arg(long, requires = "max_rel_error", conflicts_with = "target_bits")]
    pub auto: bool,
    /// Calibration samples the sensitivity of each weight is measured on (the first
    /// ones; statistics use all of them).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub sensitivity_samples: usize,
    /// Run every candidate setting of every weight end to end (a model run each)
    /// instead of one setting per weight, the others scaled by the weight's own output
    /// error through H = X^T X (the per-layer proxy).
    #[arg(long)]
    pub full_sensitivity: bool,
    /// Measure sensitivity on these values instead of the default: the model's
    /// outputs, or the logits before an output's Softmax, Sigmoid or Div(Exp(z))
    /// softmax, whose saturated probabilities hide most errors.
    #[arg(long, value_name = "NAME")]
    pub sensitivity_output: Vec<String>,
    /// With calibration: do not fold mean(x).(W - W_hat) into the following bias.
    #[arg(long)]
    pub no_bias_correction: bool,
    /// With calibration: error-compensating rounding (GPTQ-style, H = X^T X).
    #[arg(long)]
    pub compensate: bool,
    /// Named settings: quality = --target-bits 4 with bias correction; small =
    /// --target-bits 3 with bias correction and --compensate. Without calibration
    /// flags, 16 random samples are drawn (real samples do better).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
}

/// The proof's inputs and bound.
#[derive(Args, Clone, Debug)]
pub struct ProofOptions {
    /// Value of a symbolic input dim, e.g. sequence_length=32 (unnamed or unbound dims: 1).
    #[arg(long, value_name = "NAME=N", value_parser = parse_dim)]
    pub input_dim: Vec<(String, usize)>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of random input sets.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Fail (exit 1; rewrite writes nothing unless --force) if any output's relative L2
    /// error exceeds E.
    #[arg(long, value_name = "E")]
    pub max_rel_error: Option<f64>,
    /// Wall time the proof may take, loading included: samples stop before it would
    /// pass, and a proof that cannot run one sample in it is unproven.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_BUDGET.as_secs_f64())]
    pub proof_seconds: f64,
    /// Feed input NAME these values (one for all its elements, or one per element)
    /// instead of random or filled ones, e.g. sr=16000 or scales=0,1,0.
    #[arg(long, value_name = "NAME=V[,V...]", value_parser = parse_value)]
    pub input_value: Vec<(String, Vec<f64>)>,
}

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got '{s}'"))?;
    let n = n.parse().map_err(|_| format!("'{n}' is not a size"))?;
    Ok((name.to_string(), n))
}

impl ParticleOptions {
    /// The config for rewriting the model at `input` (its folder holds its external
    /// data), drawing progress bars when `progress`.
    pub fn config(&self, input: &Path, progress: bool) -> Result<Config> {
        let mut config = Config {
            select: Select {
                ops: self.ops.clone(),
                min_elements: self.min_elements,
                names: Selection::new(&self.include, &self.exclude)?,
                initializer_inputs: self.initializer_inputs,
            },
            bits: self.bits.unwrap_or(if self.lossless { 8 } else { 4 }),
            granularity: self.granularity,
            codebook_type: self.codebook_type,
            lossless: self.lossless,
            outliers: self.outliers,
            dim: self.dim,
            stages: self.stages,
            codebook_fit: self.fit,
            share: self.share,
            alike_error: self.alike_error,
            form: self.form,
            subspaces: self.subspaces,
            lut_gather: self.lut_gather,
            external_dir: Some(model_dir(input)),
            progress,
            ..Config::default()
        };
        if self.bits.is_none() && !config.fits_own_way() {
            config.guard = Some(Guard {
                target_db: self.target_sqnr,
                slope_db: self.sqnr_slope,
                floor_db: self.min_sqnr,
            });
        }
        Ok(config)
    }
}

impl CalibrationOptions {
    /// Applies the preset and calibration switches to `config`: the calibration to
    /// run, or `None` without calibration flags or `real` inputs, and a note when a
    /// preset draws random samples for want of real ones. With real inputs and no
    /// calibration file, calibration runs on them (a source of `None`); with no other
    /// flag, as [`Target::Guarded`] (or [`Target::Common`] under `--bits`).
    pub fn tuning(&self, config: &mut Config, real: bool) -> Result<(Option<Tuning>, Vec<Note>)> {
        let (preset_bits, preset_compensate) = match self.preset {
            Some(Preset::Quality) if config.form == Form::Qdq => (Some(QDQ_QUALITY_BITS), false),
            Some(Preset::Quality) => (Some(4.0), false),
            Some(Preset::Small) => (Some(3.0), true),
            None => (None, false),
        };
        let mut notes = Vec::new();
        let source = match (&self.calibration, self.calibration_random) {
            (Some(path), _) => Some(Some(SampleSource::Npz(path.clone()))),
            (None, Some(n)) => Some(Some(SampleSource::Random(n))),
            (None, None) if real => Some(None),
            (None, None) if self.preset.is_some() => {
                notes.push(Note::Advice(
                    "--preset without --calibration: using 16 random samples (--calibration-random 16)".into(),
                ));
                Some(Some(SampleSource::Random(16)))
            }
            (None, None) => None,
        };
        let Some(source) = source else {
            if self.target_bits.is_some() || self.auto || self.compensate {
                return Err(Error::Config(
                    "--target-bits, --auto and --compensate need --calibration FILE.npz or --calibration-random N".into(),
                ));
            }
            return Ok((None, notes));
        };
        if let Some(bits) = self.target_bits
            && !(1.0..=16.0).contains(&bits)
        {
            return Err(Error::Config(format!(
                "--target-bits must be in 1..=16, not {bits}"
            )));
        }
        config.bias_correction = !self.no_bias_correction;
        config.compensate = self.compensate || preset_compensate;
        let target = match (self.auto, self.target_bits.or(preset_bits)) {
            (true, _) => Target::Auto,
            (false, Some(bits)) => Target::Bits(bits),
            (false, None) if config.guard.is_some() && source.is_none() => Target::Guarded,
            (false, None) => Target::Common,
        };
        let guarded = target == Target::Guarded;
        let tuning = Tuning {
            source,
            sensitivity: Sensitivity {
                samples: self.sensitivity_samples,
                outputs: self.sensitivity_output.clone(),
                min_bits: if guarded { GUARDED_MIN_BITS } else { 1 },
                budget: guarded.then_some(GUARDED_SENSITIVITY_BUDGET),
                proxy: !self.full_sensitivity,
            },
            target,
        };
        Ok((Some(tuning), notes))
    }
}

impl ProofOptions {
    /// The proof's config.
    pub fn config(&self) -> ProofConfig {
        ProofConfig {
            input_dims: self.input_dim.iter().cloned().collect(),
            seed: self.seed,
            samples: self.samples,
            max_rel_error: self.max_rel_error,
            input_values: self.input_value.iter().cloned().collect(),
            inputs: None,
            budget: Duration::from_secs_f64(self.proof_seconds.clamp(0.0, 1e9)),
        }
    }
}
