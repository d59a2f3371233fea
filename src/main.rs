//! The `sora-onnx` command line: a thin layer over the library.
//!
//! Exit codes: 0 success, 1 the proof missed `--max-rel-error`, 2 bad input or usage.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sora_onnx::calibration::{Calibration, CalibrationSource};
use sora_onnx::config::{CodebookType, Form, GranularityChoice, LutGather, Share};
use sora_onnx::inspect::relations;
use sora_onnx::onnx::external::model_dir;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::{DataPlacement, load_model, save_model_with_data, write_atomic};
use sora_onnx::particles::{CodebookFit, Granularity};
use sora_onnx::prove::{EXTERNAL_LIMIT, load_for_proof};
use sora_onnx::rewrite::rewrite_calibrated;
use sora_onnx::tune::{Calibrated, calibrate, rewrite_to_bits, smallest_passing};
use sora_onnx::{Config, ProofConfig, Rewritten, Selection, Validation};

/// Like `print!`, but a closed stdout (`sora-onnx inspect m.onnx | head`) is not an
/// error: the output is simply dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Like `println!`, but a closed stdout is not an error.
macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "sora-onnx",
    version,
    about = "Makes ONNX models smaller by particle decomposition of their weights"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decompose weights into particles, prove the result in tract, write OUT.
    Rewrite(RewriteArgs),
    /// Show what a rewrite would do: candidates, sizes, skip reasons.
    Inspect(InspectArgs),
    /// Run two models in tract on the same random inputs and compare every output.
    Validate(ValidateArgs),
    /// Output error against model size: uniform bits and allocated targets, each
    /// rewritten and proved; writes a CSV and an SVG plot.
    Sweep(SweepArgs),
}

#[derive(Args)]
struct SweepArgs {
    /// The model.
    input: PathBuf,
    #[command(flatten)]
    particles: ParticleArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
    #[command(flatten)]
    proof: ProofArgs,
    /// Evaluate every point on these inputs (.npz, like --calibration) instead of the
    /// proof's random inputs.
    #[arg(long, value_name = "FILE.npz")]
    eval: Option<PathBuf>,
    /// Uniform bit widths to rewrite at.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5,6,7,8")]
    uniform: Vec<u32>,
    /// Allocator targets, in bits per weight.
    #[arg(long, value_delimiter = ',', default_value = "2,2.5,3,3.5,4,5,6")]
    targets: Vec<f64>,
    /// Write the points here as CSV.
    #[arg(long, value_name = "FILE.csv")]
    csv: Option<PathBuf>,
    /// Draw the points here as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct RewriteArgs {
    /// The model to rewrite.
    input: PathBuf,
    /// Where to write the rewritten model.
    output: PathBuf,
    #[command(flatten)]
    particles: ParticleArgs,
    #[command(flatten)]
    calibration: CalibrationArgs,
    #[command(flatten)]
    proof: ProofArgs,
    /// Skip the proof in tract.
    #[arg(long)]
    no_validate: bool,
    /// Write tensor data to one side file next to OUT (OUT.data); done anyway when OUT
    /// would pass protobuf's 2 GiB limit.
    #[arg(long)]
    external_data: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Allow OUT to be IN, and write OUT even when the proof misses its bound.
    #[arg(long)]
    force: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
    /// Also list every rewritten tensor and skipped node.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args)]
struct ParticleArgs {
    /// Bits per particle index: codebooks of 2^bits particles (1..=8).
    #[arg(long, default_value_t = 4)]
    bits: u32,
    /// Codebook granularity: tensor, channel (one per output channel), block:G (one
    /// per G consecutive inputs of a channel), or auto: per channel unless its
    /// codebooks would take more than half the bytes of the weight's indices.
    #[arg(long, value_name = "auto|tensor|channel|block:G", default_value = "auto", value_parser = parse_granularity)]
    granularity: GranularityChoice,
    /// Element type of stored particles (f16 is cast back to the weight's type in the graph).
    #[arg(long, value_enum, default_value_t = CodebookArg::F16)]
    codebook_type: CodebookArg,
    /// Only rewrite weights whose codebooks hold every value exactly (fewest bits up
    /// to --bits); the rewrite is then bit-exact. Others are skipped with the reason.
    #[arg(long)]
    lossless: bool,
    /// Fraction of each weight's elements (e.g. 0.005) kept exact: those the codebooks
    /// serve worst, written back after decoding with ScatterElements.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    outliers: f64,
    /// Weights per vector particle (consecutive along a channel's inputs); 1 = scalar.
    #[arg(long, value_name = "D", default_value_t = 1)]
    dim: usize,
    /// Additive stages: W = sum of one particle per stage, each fitted to the residual.
    #[arg(long, value_name = "S", default_value_t = 1)]
    stages: usize,
    /// Share particles between related weights: none; identical (identical and
    /// transposed weights are decoded once); alike (also: weights of one shape whose
    /// joint codebooks cost at most --alike-error extra squared error share them).
    #[arg(long, value_enum, default_value_t = ShareArg::Identical)]
    share: ShareArg,
    /// With --share alike: the extra squared error a joint codebook may cost, as a
    /// fraction of the members' own (0.2 = 20%; on minilm_l3 0.2 pairs 12 of 18
    /// weights for a 0.0011 lower sentence cosine, and 0.1 pairs none).
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    alike_error: f64,
    /// What rewritten MatMul/Gemm nodes compute: decode (rebuild the weight; runtimes
    /// fold it back to dense at load) or lut (per-subspace dot products gathered and
    /// summed: the weight stays compressed in memory at run time, at a latency cost;
    /// needs --dim D dividing the inputs, one codebook per subspace of D inputs).
    #[arg(long, value_enum, default_value_t = FormArg::Decode)]
    form: FormArg,
    /// One codebook per subspace of --dim inputs, shared by all output channels, in
    /// the decode form: the particles --form lut uses.
    #[arg(long)]
    subspaces: bool,
    /// How --form lut reads the dot products: rows (one Gather of whole rows; fastest
    /// from a few input rows up) or elements (GatherElements; fastest for a single
    /// input row in onnxruntime, but holds an index per row at run time).
    #[arg(long, value_enum, default_value_t = LutGatherArg::Rows)]
    lut_gather: LutGatherArg,
    /// How scalar codebooks are fitted: exact (optimal 1-D k-means) or fast (Lloyd
    /// iterations on the sorted values: a local optimum, several times faster).
    #[arg(long, value_enum, default_value_t = FitArg::Exact)]
    fit: FitArg,
    /// Op types whose weights are rewritten, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "MatMul,Gemm,Gather,Conv")]
    ops: Vec<String>,
    /// Leave weights with fewer elements alone.
    #[arg(long, default_value_t = 4096)]
    min_elements: usize,
    /// Only rewrite nodes whose name or weight name matches one of these globs.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Never rewrite nodes whose name or weight name matches one of these globs.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

#[derive(Args)]
struct CalibrationArgs {
    /// Calibration inputs: an .npz with one array per model input, named after it,
    /// with one more axis in front (x[s] is sample s). Enables bias correction.
    #[arg(long, value_name = "FILE.npz", conflicts_with = "calibration_random")]
    calibration: Option<PathBuf>,
    /// Draw N seeded random calibration samples (like the proof's inputs) instead.
    #[arg(long, value_name = "N")]
    calibration_random: Option<usize>,
    /// Average bits per rewritten weight, every stored byte counted: bits (1-8) and
    /// granularity are chosen per weight from its measured output sensitivity.
    #[arg(long, value_name = "B")]
    target_bits: Option<f64>,
    /// With --max-rel-error: find the smallest allocation whose proof passes it.
    #[arg(long, requires = "max_rel_error", conflicts_with = "target_bits")]
    auto: bool,
    /// Calibration samples the sensitivity of each weight is measured on (the first
    /// ones; statistics use all of them).
    #[arg(long, value_name = "N", default_value_t = 8)]
    sensitivity_samples: usize,
    /// Measure sensitivity on these values instead of the default: the model's
    /// outputs, or the logits before an output's Softmax, Sigmoid or Div(Exp(z))
    /// softmax, whose saturated probabilities hide most errors.
    #[arg(long, value_name = "NAME")]
    sensitivity_output: Vec<String>,
    /// With calibration: do not fold mean(x).(W - W_hat) into the following bias.
    #[arg(long)]
    no_bias_correction: bool,
    /// With calibration: error-compensating rounding (GPTQ-style, H = X^T X).
    #[arg(long)]
    compensate: bool,
    /// Named settings: quality = --target-bits 4 with bias correction; small =
    /// --target-bits 3 with bias correction and --compensate. Without calibration
    /// flags, 16 random samples are drawn (real samples do better).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    Quality,
    Small,
}

#[derive(Clone, Copy, ValueEnum)]
enum ShareArg {
    None,
    Identical,
    Alike,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormArg {
    Decode,
    Lut,
}

#[derive(Clone, Copy, ValueEnum)]
enum LutGatherArg {
    Rows,
    Elements,
}

#[derive(Clone, Copy, ValueEnum)]
enum FitArg {
    Exact,
    Fast,
}

#[derive(Clone, Copy, ValueEnum)]
enum RelationsArg {
    Dot,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodebookArg {
    F16,
    F32,
}

#[derive(Args)]
struct ProofArgs {
    /// Value of a symbolic input dim, e.g. sequence_length=32 (unnamed or unbound dims: 1).
    #[arg(long, value_name = "NAME=N", value_parser = parse_dim)]
    input_dim: Vec<(String, usize)>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of random input sets.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Fail (exit 1, nothing written) if any output's relative L2 error exceeds E.
    #[arg(long, value_name = "E")]
    max_rel_error: Option<f64>,
}

#[derive(Args)]
struct InspectArgs {
    /// The model to inspect.
    input: PathBuf,
    #[command(flatten)]
    particles: ParticleArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the relation graph of the weights (identical, transposed) instead.
    #[arg(long, value_enum)]
    relations: Option<RelationsArg>,
}

#[derive(Args)]
struct ValidateArgs {
    /// The reference model.
    a: PathBuf,
    /// The model compared with it.
    b: PathBuf,
    #[command(flatten)]
    proof: ProofArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_granularity(s: &str) -> Result<GranularityChoice, String> {
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

fn parse_dim(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got '{s}'"))?;
    let n = n.parse().map_err(|_| format!("'{n}' is not a size"))?;
    Ok((name.to_string(), n))
}

impl ParticleArgs {
    /// The config for rewriting the model at `input` (its folder holds its external data).
    fn config(&self, input: &Path) -> Result<Config> {
        Ok(Config {
            bits: self.bits,
            granularity: self.granularity,
            codebook_type: match self.codebook_type {
                CodebookArg::F16 => CodebookType::F16,
                CodebookArg::F32 => CodebookType::F32,
            },
            ops: self.ops.clone(),
            lossless: self.lossless,
            outliers: self.outliers,
            dim: self.dim,
            stages: self.stages,
            external_dir: Some(model_dir(input)),
            progress: false,
            share: match self.share {
                ShareArg::None => Share::None,
                ShareArg::Identical => Share::Identical,
                ShareArg::Alike => Share::Alike(self.alike_error),
            },
            form: match self.form {
                FormArg::Decode => Form::Decode,
                FormArg::Lut => Form::Lut,
            },
            subspaces: self.subspaces,
            lut_gather: match self.lut_gather {
                LutGatherArg::Rows => LutGather::Rows,
                LutGatherArg::Elements => LutGather::Elements,
            },
            codebook_fit: match self.fit {
                FitArg::Exact => CodebookFit::Exact,
                FitArg::Fast => CodebookFit::Lloyd,
            },
            min_elements: self.min_elements,
            selection: Selection::new(&self.include, &self.exclude)?,
            ..Config::default()
        })
    }
}

/// What the calibration flags ask for.
struct Tuning {
    source: CalibrationSource,
    sensitivity_samples: usize,
    target_bits: Option<f64>,
    auto: bool,
}

impl CalibrationArgs {
    /// Applies the preset and switches to `config`; `None` without calibration.
    fn apply(&self, config: &mut Config, quiet: bool) -> Result<Option<Tuning>> {
        let (preset_bits, preset_compensate) = match self.preset {
            Some(Preset::Quality) => (Some(4.0), false),
            Some(Preset::Small) => (Some(3.0), true),
            None => (None, false),
        };
        let source = match (&self.calibration, self.calibration_random) {
            (Some(path), _) => Some(CalibrationSource::Npz(path.clone())),
            (None, Some(n)) => Some(CalibrationSource::Random(n)),
            (None, None) if self.preset.is_some() => {
                if !quiet {
                    eprintln!(
                        "note: --preset without --calibration: using 16 random samples (--calibration-random 16)"
                    );
                }
                Some(CalibrationSource::Random(16))
            }
            (None, None) => None,
        };
        let Some(source) = source else {
            if self.target_bits.is_some() || self.auto || self.compensate {
                bail!(
                    "--target-bits, --auto and --compensate need --calibration FILE.npz or --calibration-random N"
                );
            }
            return Ok(None);
        };
        if let Some(bits) = self.target_bits
            && !(1.0..=16.0).contains(&bits)
        {
            bail!("--target-bits must be in 1..=16, not {bits}");
        }
        config.bias_correction = !self.no_bias_correction;
        config.sensitivity_outputs = self.sensitivity_output.clone();
        config.compensate = self.compensate || preset_compensate;
        Ok(Some(Tuning {
            source,
            sensitivity_samples: self.sensitivity_samples,
            target_bits: self.target_bits.or(preset_bits).filter(|_| !self.auto),
            auto: self.auto,
        }))
    }
}

impl ProofArgs {
    fn config(&self) -> ProofConfig {
        ProofConfig {
            input_dims: self.input_dim.iter().cloned().collect::<HashMap<_, _>>(),
            seed: self.seed,
            samples: self.samples,
            max_rel_error: self.max_rel_error,
            calibration: None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Rewrite(args) => rewrite(args),
        Command::Inspect(args) => inspect(args),
        Command::Validate(args) => validate(args),
        Command::Sweep(args) => sweep(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Loads a model; an error that does not name the file is prefixed with it.
fn load(path: &Path) -> Result<sora_onnx::onnx::proto::ModelProto> {
    load_model(path).map_err(|e| match e {
        sora_onnx::Error::Io { .. } | sora_onnx::Error::NotOnnx { .. } => e.into(),
        other => anyhow::Error::new(other).context(path.display().to_string()),
    })
}

/// Whether `a` and `b` name the same file (`b` need not exist).
fn same_file(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| -> Option<PathBuf> {
        p.canonicalize().ok().or_else(|| {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Some(dir.canonicalize().ok()?.join(p.file_name()?))
        })
    };
    canonical(a).is_some_and(|a| Some(a) == canonical(b))
}

fn rewrite(args: RewriteArgs) -> Result<ExitCode> {
    if same_file(&args.input, &args.output) && !args.force {
        bail!(
            "{}: refusing to overwrite the input model (pass --force to allow it)",
            args.output.display()
        );
    }
    let dir = model_dir(&args.input);
    let mut config = Config {
        progress: !args.quiet && std::io::stderr().is_terminal(),
        ..args.particles.config(&args.input)?
    };
    let tuning = args.calibration.apply(&mut config, args.quiet)?;
    let model = load(&args.input)?;
    let context = || args.input.display().to_string();
    let (mut rewritten, proven) = match &tuning {
        None => (
            sora_onnx::rewrite(&model, &config).with_context(context)?,
            None,
        ),
        Some(tuning) => {
            let (rewritten, proof) = tuned(&model, &dir, &config, tuning, &args)?;
            // A proof run by --auto on the model written stands as the proof.
            (rewritten, proof)
        }
    };
    let report = &mut rewritten.report;
    let mut passed = true;
    if let Some(proof) = proven {
        passed = proof.passed;
        report.validation = Some(proof);
    } else if report.tensors.is_empty() {
        if !args.quiet {
            sayln!(
                "nothing to rewrite in {}: writing an unchanged copy",
                args.input.display()
            );
        }
    } else if !args.no_validate {
        let start = std::time::Instant::now();
        let original = load_for_proof(&model, &dir)?;
        let candidate = load_for_proof(&rewritten.model, &dir)?;
        if let (Some(original), Some(candidate)) = (original, candidate) {
            let proof = sora_onnx::validate(&original, &candidate, &args.proof.config())
                .with_context(|| {
                    format!(
                        "{}: proof failed to run (pass --no-validate to skip it)",
                        args.input.display()
                    )
                })?;
            passed = proof.passed;
            report.validation = Some(proof);
        } else if !args.quiet {
            sayln!(
                "proof skipped: the model keeps more than {} GiB in external data, more than the proof loads into memory",
                EXTERNAL_LIMIT >> 30
            );
        }
        report.seconds += start.elapsed().as_secs_f64();
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(report)? + "\n";
        write_atomic(path, json.as_bytes())?;
    }
    if !args.quiet {
        say!("{}", report.summary());
        if args.verbose {
            say!("{}", report.details());
        }
    }
    if !passed && !args.force {
        eprintln!(
            "error: an output's relative L2 error exceeds --max-rel-error {}; {} not written",
            args.proof.max_rel_error.unwrap_or_default(),
            args.output.display()
        );
        return Ok(ExitCode::from(1));
    }
    let placement = if args.external_data {
        DataPlacement::Side
    } else {
        DataPlacement::Auto
    };
    save_model_with_data(rewritten.model, &args.output, Some(&dir), placement)?;
    if !args.quiet {
        sayln!("wrote {}", args.output.display());
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `model` with its external data (from `dir`) in memory, as calibration runs it.
fn in_memory<'a>(
    model: &'a ModelProto,
    dir: &Path,
    input: &Path,
) -> Result<std::borrow::Cow<'a, ModelProto>> {
    load_for_proof(model, dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: calibration needs the model in memory, and it keeps more than {} GiB in external data",
            input.display(),
            EXTERNAL_LIMIT >> 30
        )
    })
}

/// Loads the calibration samples `tuning` names and runs them through `model` (the
/// file `input`); with `curves`, also measures every weight's sensitivity. Unless
/// `quiet`, notes logits measured in place of a Softmax/Sigmoid output and a
/// compensation that had too few calibration rows.
fn calibrated(
    model: &ModelProto,
    config: &Config,
    tuning: &Tuning,
    proof: &ProofConfig,
    (curves, quiet): (bool, bool),
    input: &Path,
) -> Result<Calibrated> {
    let context = || input.display().to_string();
    let calibration = Calibration::load(model, &tuning.source, proof).with_context(context)?;
    let sensitivity_samples = if curves {
        tuning.sensitivity_samples
    } else {
        0
    };
    let calibrated =
        calibrate(model, config, calibration, sensitivity_samples).with_context(context)?;
    let outputs: Vec<&str> = model
        .graph
        .iter()
        .flat_map(|g| &g.output)
        .map(|o| o.name())
        .collect();
    let logits: Vec<String> = (calibrated.compared.iter())
        .filter(|name| !outputs.contains(&name.as_str()))
        .map(|name| format!("`{name}`"))
        .collect();
    if curves && !quiet && config.sensitivity_outputs.is_empty() && !logits.is_empty() {
        eprintln!(
            "note: sensitivity measured on {} (the logits before the output's softmax or \
             sigmoid, whose saturated values hide errors); --sensitivity-output NAME chooses",
            logits.join(", ")
        );
    }
    let short = calibrated.singular_hessians();
    if let (Some((name, rows, features)), false) = (short.first(), quiet) {
        eprintln!(
            "note: --compensate: {} activation(s) had fewer calibration rows than features \
             (`{name}`: {rows} rows, {features} features), so their H = X^T X is singular; \
             more calibration samples make the compensation better",
            short.len()
        );
    }
    Ok(calibrated)
}

/// The calibrated rewrite: calibration, then a target size, an error bound, or the
/// common bits with bias correction (and compensation). With `--auto`, also the proof
/// of the model chosen.
fn tuned(
    model: &ModelProto,
    dir: &Path,
    config: &Config,
    tuning: &Tuning,
    args: &RewriteArgs,
) -> Result<(Rewritten, Option<Validation>)> {
    let context = || args.input.display().to_string();
    let in_memory = in_memory(model, dir, &args.input)?;
    let proof = args.proof.config();
    let curves = tuning.target_bits.is_some() || tuning.auto;
    let calibrated = calibrated(
        &in_memory,
        config,
        tuning,
        &proof,
        (curves, args.quiet),
        &args.input,
    )?;
    if !args.quiet {
        sayln!(
            "calibration: {} samples, {} model runs, {} weights measured",
            calibrated.calibration.samples.len(),
            calibrated.runs,
            calibrated.curves.len()
        );
    }
    if tuning.auto {
        let (rewritten, validation, proofs) =
            smallest_passing(&in_memory, config, &calibrated, &proof).with_context(context)?;
        if !args.quiet {
            sayln!("--auto: {proofs} proofs run");
        }
        return Ok((rewritten, Some(validation)));
    }
    let rewritten = match tuning.target_bits {
        Some(bits) => rewrite_to_bits(&in_memory, config, &calibrated, bits),
        None => rewrite_calibrated(&in_memory, config, Some(&calibrated.stats)),
    };
    Ok((rewritten.with_context(context)?, None))
}

fn sweep(args: SweepArgs) -> Result<ExitCode> {
    let context = || args.input.display().to_string();
    let mut config = Config {
        progress: !args.quiet && std::io::stderr().is_terminal(),
        ..args.particles.config(&args.input)?
    };
    let Some(tuning) = args.calibration.apply(&mut config, args.quiet)? else {
        bail!("sweep needs --calibration FILE.npz or --calibration-random N");
    };
    let model = load(&args.input)?;
    let in_memory = in_memory(&model, &model_dir(&args.input), &args.input)?;
    let mut proof = args.proof.config();
    let calibrated = calibrated(
        &in_memory,
        &config,
        &tuning,
        &proof,
        (true, args.quiet),
        &args.input,
    )?;
    if let Some(eval) = &args.eval {
        let samples = Calibration::load(&in_memory, &CalibrationSource::Npz(eval.clone()), &proof)
            .with_context(context)?;
        proof.calibration = Some(std::sync::Arc::new(samples));
    }
    let rows = sora_onnx::sweep::sweep(
        &in_memory,
        &config,
        &calibrated,
        (&args.uniform, &args.targets),
        &proof,
        config.progress,
    )
    .with_context(context)?;
    let csv = sora_onnx::sweep::csv(&rows);
    if let Some(path) = &args.csv {
        write_atomic(path, csv.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let name = args.input.file_name().unwrap_or_default().to_string_lossy();
        let svg = sora_onnx::sweep::plot(&rows, &format!("{name}: output error vs size"))?;
        write_atomic(path, svg.as_bytes())?;
    }
    if !args.quiet {
        say!("{csv}");
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let model = load(&args.input)?;
    let config = args.particles.config(&args.input)?;
    if let Some(format) = args.relations {
        let graph = relations(&model, &config).with_context(|| args.input.display().to_string())?;
        match format {
            RelationsArg::Dot => say!("{}", graph.dot()),
            RelationsArg::Json => sayln!("{}", serde_json::to_string_pretty(&graph.json())?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let inspection =
        sora_onnx::inspect(&model, &config).with_context(|| args.input.display().to_string())?;
    if args.json {
        sayln!("{}", serde_json::to_string_pretty(&inspection)?);
        return Ok(ExitCode::SUCCESS);
    }
    sayln!(
        "{}: opset {}, {} bytes",
        args.input.display(),
        inspection.opset,
        inspection.model_bytes
    );
    for c in &inspection.candidates {
        sayln!(
            "  rewrite {:<40} {:>5}x{:<5} {:?} {:>9} params  {:>9} -> ~{} bytes",
            c.name,
            c.shape[0],
            c.shape[1],
            c.dtype,
            c.elements,
            c.bytes_before,
            c.estimated_bytes_after
        );
    }
    for s in &inspection.skipped {
        sayln!("  skip {}: {}", s.node, s.reason);
    }
    sayln!(
        "{} weights to rewrite, {} nodes skipped; estimated size {} -> {} bytes",
        inspection.candidates.len(),
        inspection.skipped.len(),
        inspection.model_bytes,
        inspection.estimated_model_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let too_big = |path: &Path| {
        anyhow::anyhow!(
            "{}: more than {} GiB of external data, more than the proof loads into memory",
            path.display(),
            EXTERNAL_LIMIT >> 30
        )
    };
    let a_in_memory = load_for_proof(&a, &model_dir(&args.a))?.ok_or_else(|| too_big(&args.a))?;
    let b_in_memory = load_for_proof(&b, &model_dir(&args.b))?.ok_or_else(|| too_big(&args.b))?;
    let proof = sora_onnx::validate(&a_in_memory, &b_in_memory, &args.proof.config())?;
    if args.json {
        sayln!("{}", serde_json::to_string_pretty(&proof)?);
    } else {
        say!("{}", proof.table());
        sayln!("{}", if proof.passed { "passed" } else { "FAILED" });
    }
    Ok(if proof.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
