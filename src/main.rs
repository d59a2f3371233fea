//! The `sora-onnx` command line: parsing and printing over the library's jobs.
//!
//! Exit codes: 0 success; 1 the proof failed (missed `--max-rel-error`, or outputs
//! that do not match), nothing written unless `--force`; 2 bad input or usage, nothing
//! written; 3 written (or compared) but unproven: tract could not run the models
//! within the time budget, and a bound was asked (`validate`: always).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sora_onnx::inputs::SampleSource;
use sora_onnx::job::{Note, RewriteJob, run_rewrite, run_sweep, run_validate};
use sora_onnx::onnx::external::model_dir;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::{DataPlacement, load_model, same_file, save_model_with_data, write_atomic};
use sora_onnx::options::{CalibrationOptions, InputOptions, ParticleOptions, ProofOptions};
use sora_onnx::prove::Verdict;

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
struct RewriteArgs {
    /// The model to rewrite.
    input: PathBuf,
    /// Where to write the rewritten model.
    output: PathBuf,
    #[command(flatten)]
    particles: ParticleOptions,
    #[command(flatten)]
    calibration: CalibrationOptions,
    #[command(flatten)]
    proof: ProofOptions,
    #[command(flatten)]
    inputs: InputOptions,
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
struct SweepArgs {
    /// The model.
    input: PathBuf,
    #[command(flatten)]
    particles: ParticleOptions,
    #[command(flatten)]
    calibration: CalibrationOptions,
    #[command(flatten)]
    proof: ProofOptions,
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
struct InspectArgs {
    /// The model to inspect.
    input: PathBuf,
    #[command(flatten)]
    particles: ParticleOptions,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the relation graph of the weights (identical, transposed) instead.
    #[arg(long, value_enum)]
    relations: Option<RelationsFormat>,
}

/// How `inspect --relations` prints the relation graph.
#[derive(Clone, Copy, ValueEnum)]
enum RelationsFormat {
    Dot,
    Json,
}

#[derive(Args)]
struct ValidateArgs {
    /// The reference model.
    a: PathBuf,
    /// The model compared with it.
    b: PathBuf,
    #[command(flatten)]
    proof: ProofOptions,
    #[command(flatten)]
    inputs: InputOptions,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
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
fn load(path: &Path) -> Result<ModelProto> {
    load_model(path).map_err(|e| match e {
        sora_onnx::Error::Io { .. } | sora_onnx::Error::NotOnnx { .. } => e.into(),
        other => anyhow::Error::new(other).context(path.display().to_string()),
    })
}

/// Prints `notes`: status lines on stdout, advice on stderr; nothing when `quiet`.
fn print_notes(notes: &[Note], quiet: bool) {
    for note in notes.iter().filter(|_| !quiet) {
        match note {
            Note::Status(line) => sayln!("{line}"),
            Note::Advice(line) => eprintln!("note: {line}"),
        }
    }
}

/// Whether progress bars are drawn: not when quiet or when stderr is not a terminal.
fn progress(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

fn rewrite(args: RewriteArgs) -> Result<ExitCode> {
    if same_file(&args.input, &args.output) && !args.force {
        bail!(
            "{}: refusing to overwrite the input model (pass --force to allow it)",
            args.output.display()
        );
    }
    let mut config = args.particles.config(&args.input, progress(args.quiet))?;
    let inputs = args.inputs.source();
    let (tuning, notes) = args.calibration.tuning(&mut config, inputs.is_some())?;
    print_notes(&notes, args.quiet);
    let model = load(&args.input)?;
    let job = RewriteJob {
        config,
        tuning,
        inputs,
        proof: args.proof.config(),
        prove: !args.no_validate,
    };
    let context = || args.input.display().to_string();
    let outcome = run_rewrite(&model, &job).with_context(context)?;
    print_notes(&outcome.notes, args.quiet);
    let verdict = outcome.verdict();
    let report = &outcome.rewritten.report;
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
    if verdict == Some(Verdict::Failed) && !args.force {
        let why = match (&report.validation, args.proof.max_rel_error) {
            (Some(v), _) if v.reason.is_some() => v.reason.clone().unwrap_or_default(),
            (_, bound) => format!(
                "an output's relative L2 error exceeds --max-rel-error {}",
                bound.unwrap_or_default()
            ),
        };
        eprintln!("error: {why}; {} not written", args.output.display());
        return Ok(ExitCode::from(1));
    }
    let placement = if args.external_data {
        DataPlacement::Side
    } else {
        DataPlacement::Auto
    };
    let dir = model_dir(&args.input);
    save_model_with_data(outcome.rewritten.model, &args.output, Some(&dir), placement)?;
    if !args.quiet {
        sayln!("wrote {}", args.output.display());
    }
    Ok(match verdict {
        Some(Verdict::Failed) => ExitCode::from(1),
        Some(Verdict::Unproven) if args.proof.max_rel_error.is_some() => {
            eprintln!(
                "warning: {} is written but unproven, although --max-rel-error was asked",
                args.output.display()
            );
            ExitCode::from(3)
        }
        _ => ExitCode::SUCCESS,
    })
}

fn sweep(args: SweepArgs) -> Result<ExitCode> {
    let mut config = args.particles.config(&args.input, progress(args.quiet))?;
    let (tuning, notes) = args.calibration.tuning(&mut config, false)?;
    let Some(tuning) = tuning else {
        bail!("sweep needs --calibration FILE.npz or --calibration-random N");
    };
    print_notes(&notes, args.quiet);
    let model = load(&args.input)?;
    let eval = args.eval.clone().map(SampleSource::Npz);
    let points = (args.uniform.as_slice(), args.targets.as_slice());
    let proof = args.proof.config();
    let (rows, notes) = run_sweep(&model, &config, &tuning, &proof, eval.as_ref(), points)
        .with_context(|| args.input.display().to_string())?;
    print_notes(&notes, args.quiet);
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
    let config = args.particles.config(&args.input, false)?;
    let context = || args.input.display().to_string();
    if let Some(format) = args.relations {
        let graph = sora_onnx::inspect::relations(&model, &config).with_context(context)?;
        match format {
            RelationsFormat::Dot => say!("{}", graph.dot()),
            RelationsFormat::Json => sayln!("{}", serde_json::to_string_pretty(&graph.json())?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let inspection = sora_onnx::inspect(&model, &config).with_context(context)?;
    if args.json {
        sayln!("{}", serde_json::to_string_pretty(&inspection)?);
        return Ok(ExitCode::SUCCESS);
    }
    say!("{}", inspection.table(&args.input.display().to_string()));
    Ok(ExitCode::SUCCESS)
}

fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let dirs = (model_dir(&args.a), model_dir(&args.b));
    let (a, b) = ((&a, dirs.0.as_path()), (&b, dirs.1.as_path()));
    let names = (args.a.display().to_string(), args.b.display().to_string());
    let proof = run_validate(a, b, &args.proof.config(), args.inputs.source().as_ref())
        .with_context(|| format!("{} vs {}", names.0, names.1))?;
    if args.json {
        sayln!("{}", serde_json::to_string_pretty(&proof)?);
    } else {
        sayln!("{}", proof.headline());
        say!("{}", proof.table());
    }
    Ok(ExitCode::from(match proof.verdict {
        Verdict::Failed => 1,
        Verdict::Unproven => 3,
        Verdict::Proved | Verdict::Measured => 0,
    }))
}
