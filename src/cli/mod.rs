//! The `sora-onnx` command line as a library entry point: clap parsing, the four
//! commands and their printing. `main.rs` and the Python bindings both call [`run`],
//! so the two parse the same flags and print the same messages.
//!
//! Exit codes: 0 success; 1 the proof failed (missed `--max-rel-error`, or outputs
//! that do not match), nothing written unless `--force`; 2 bad input or usage, nothing
//! written; 3 written (or compared) but unproven: tract could not run the models
//! within the time budget, and a bound was asked (`validate`: always).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::options::{CalibrationOptions, InputOptions, ParticleOptions, ProofOptions};

/// Like `print!` on the console's stdout; a closed stdout (`sora-onnx inspect m.onnx |
/// head`) is not an error: the output is simply dropped.
macro_rules! say {
    ($console:expr, $($arg:tt)*) => {{
        let _ = write!($console.out, $($arg)*);
    }};
}

/// Like `println!` on the console's stdout; a closed stdout is not an error.
macro_rules! sayln {
    ($console:expr, $($arg:tt)*) => {{
        let _ = writeln!($console.out, $($arg)*);
    }};
}

/// Like `eprintln!` on the console's stderr.
macro_rules! tell {
    ($console:expr, $($arg:tt)*) => {{
        let _ = writeln!($console.err, $($arg)*);
    }};
}

mod commands;
pub mod memory;

/// Where a command prints: its stdout and stderr, and whether it may draw progress
/// bars (on the process's stderr).
pub struct Console<'a> {
    /// Results and status lines.
    pub out: &'a mut dyn Write,
    /// Errors, warnings and notes.
    pub err: &'a mut dyn Write,
    /// Whether progress bars may be drawn (never when `--quiet`).
    pub bars: bool,
}

impl Console<'_> {
    /// Whether progress bars are drawn: not when quiet.
    fn progress(&self, quiet: bool) -> bool {
        !quiet && self.bars
    }
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

/// Runs the command line `args` (the program's name first) on the process's stdout
/// and stderr, as the `sora-onnx` binary does; `--help`, `--version` and usage errors
/// print clap's text and exit the process. Returns the exit code.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).unwrap_or_else(|e| e.exit());
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let bars = err.is_terminal();
    let mut console = Console {
        out: &mut out,
        err: &mut err,
        bars,
    };
    execute(cli, &mut console)
}

/// Parses `args` (the program's name first) as the binary does and runs the command
/// on `console`. Returns the exit code, or clap's error (usage, `--help`) unprinted.
pub fn run<I, T>(args: I, console: &mut Console) -> Result<u8, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Ok(execute(Cli::try_parse_from(args)?, console))
}

/// Runs a parsed command line; an error is printed as `error: ...` with exit code 2.
fn execute(cli: Cli, console: &mut Console) -> u8 {
    let result = match cli.command {
        Command::Rewrite(args) => commands::rewrite(args, console),
        Command::Inspect(args) => commands::inspect(args, console),
        Command::Validate(args) => commands::validate(args, console),
        Command::Sweep(args) => commands::sweep(args, console),
    };
    result.unwrap_or_else(|e| {
        tell!(console, "error: {e:#}");
        2
    })
}

/// How a flag takes its value, for callers that build a command line from named
/// options (the Python bindings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// A bare switch: present or not.
    Switch,
    /// One value.
    Value,
    /// Several values in one argument, comma-separated.
    List,
    /// One value per occurrence, repeatable.
    Repeated,
}

/// The long flags of `command` (`rewrite`, `inspect`, `validate`, `sweep`) with how
/// each takes its value, in clap's order; `None` for an unknown command.
pub fn flags(command: &str) -> Option<Vec<(String, FlagKind)>> {
    let cli = Cli::command();
    let sub = cli.find_subcommand(command)?;
    let flags = sub.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        let kind = match arg.get_action() {
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version => {
                return None;
            }
            ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count => FlagKind::Switch,
            _ if arg.get_value_delimiter().is_some() => FlagKind::List,
            ArgAction::Append => FlagKind::Repeated,
            _ => FlagKind::Value,
        };
        Some((long.to_string(), kind))
    });
    Some(flags.collect())
}
