//! The four commands: each runs its job and prints on a [`Console`].

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{Console, InspectArgs, RelationsFormat, RewriteArgs, SweepArgs, ValidateArgs};
use crate::inputs::SampleSource;
use crate::job::{Note, RewriteJob, run_rewrite, run_sweep, run_validate};
use crate::onnx::external::model_dir;
use crate::onnx::proto::ModelProto;
use crate::onnx::{DataPlacement, load_model, same_file, save_model_with_data, write_atomic};
use crate::prove::Verdict;

/// Loads a model; an error that does not name the file is prefixed with it.
fn load(path: &Path) -> Result<ModelProto> {
    load_model(path).map_err(|e| match e {
        crate::Error::Io { .. } | crate::Error::NotOnnx { .. } => e.into(),
        other => anyhow::Error::new(other).context(path.display().to_string()),
    })
}

/// Prints `notes`: status lines on stdout, advice on stderr; nothing when `quiet`.
fn print_notes(notes: &[Note], quiet: bool, console: &mut Console) {
    for note in notes.iter().filter(|_| !quiet) {
        match note {
            Note::Status(line) => sayln!(console, "{line}"),
            Note::Advice(line) => tell!(console, "note: {line}"),
        }
    }
}

/// `sora-onnx rewrite IN OUT`: rewrites, proves and writes OUT (and the report).
pub(super) fn rewrite(args: RewriteArgs, console: &mut Console) -> Result<u8> {
    if same_file(&args.input, &args.output) && !args.force {
        bail!(
            "{}: refusing to overwrite the input model (pass --force to allow it)",
            args.output.display()
        );
    }
    let mut config = args
        .particles
        .config(&args.input, console.progress(args.quiet))?;
    let inputs = args.inputs.source();
    let (tuning, notes) = args.calibration.tuning(&mut config, inputs.is_some())?;
    print_notes(&notes, args.quiet, console);
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
    print_notes(&outcome.notes, args.quiet, console);
    let verdict = outcome.verdict();
    let report = &outcome.rewritten.report;
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(report)? + "\n";
        write_atomic(path, json.as_bytes())?;
    }
    if !args.quiet {
        say!(console, "{}", report.summary());
        if args.verbose {
            say!(console, "{}", report.details());
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
        tell!(
            console,
            "error: {why}; {} not written",
            args.output.display()
        );
        return Ok(1);
    }
    let placement = if args.external_data {
        DataPlacement::Side
    } else {
        DataPlacement::Auto
    };
    let dir = model_dir(&args.input);
    save_model_with_data(outcome.rewritten.model, &args.output, Some(&dir), placement)?;
    if !args.quiet {
        sayln!(console, "wrote {}", args.output.display());
    }
    Ok(match verdict {
        Some(Verdict::Failed) => 1,
        Some(Verdict::Unproven) if args.proof.max_rel_error.is_some() => {
            tell!(
                console,
                "warning: {} is written but unproven, although --max-rel-error was asked",
                args.output.display()
            );
            3
        }
        _ => 0,
    })
}

/// `sora-onnx sweep IN`: output error against size, as CSV and an SVG plot.
pub(super) fn sweep(args: SweepArgs, console: &mut Console) -> Result<u8> {
    let mut config = args
        .particles
        .config(&args.input, console.progress(args.quiet))?;
    let (tuning, notes) = args.calibration.tuning(&mut config, false)?;
    let Some(tuning) = tuning else {
        bail!("sweep needs --calibration FILE.npz or --calibration-random N");
    };
    print_notes(&notes, args.quiet, console);
    let model = load(&args.input)?;
    let eval = args.eval.clone().map(SampleSource::Npz);
    let points = (args.uniform.as_slice(), args.targets.as_slice());
    let proof = args.proof.config();
    let (rows, notes) = run_sweep(&model, &config, &tuning, &proof, eval.as_ref(), points)
        .with_context(|| args.input.display().to_string())?;
    print_notes(&notes, args.quiet, console);
    let csv = crate::sweep::csv(&rows);
    if let Some(path) = &args.csv {
        write_atomic(path, csv.as_bytes())?;
    }
    if let Some(path) = &args.plot {
        let name = args.input.file_name().unwrap_or_default().to_string_lossy();
        let svg = crate::sweep::plot(&rows, &format!("{name}: output error vs size"))?;
        write_atomic(path, svg.as_bytes())?;
    }
    if !args.quiet {
        say!(console, "{csv}");
    }
    Ok(0)
}

/// `sora-onnx inspect IN`: the plan as a table or JSON, or the relation graph.
pub(super) fn inspect(args: InspectArgs, console: &mut Console) -> Result<u8> {
    let model = load(&args.input)?;
    let config = args.particles.config(&args.input, false)?;
    let context = || args.input.display().to_string();
    if let Some(format) = args.relations {
        let graph = crate::inspect::relations(&model, &config).with_context(context)?;
        match format {
            RelationsFormat::Dot => say!(console, "{}", graph.dot()),
            RelationsFormat::Json => {
                sayln!(console, "{}", serde_json::to_string_pretty(&graph.json())?)
            }
        }
        return Ok(0);
    }
    let inspection = crate::inspect(&model, &config).with_context(context)?;
    if args.json {
        sayln!(console, "{}", serde_json::to_string_pretty(&inspection)?);
        return Ok(0);
    }
    say!(
        console,
        "{}",
        inspection.table(&args.input.display().to_string())
    );
    Ok(0)
}

/// `sora-onnx validate A B`: both models on the same inputs, every output compared.
pub(super) fn validate(args: ValidateArgs, console: &mut Console) -> Result<u8> {
    let a = load(&args.a)?;
    let b = load(&args.b)?;
    let dirs = (model_dir(&args.a), model_dir(&args.b));
    let (a, b) = ((&a, dirs.0.as_path()), (&b, dirs.1.as_path()));
    let names = (args.a.display().to_string(), args.b.display().to_string());
    let proof = run_validate(a, b, &args.proof.config(), args.inputs.source().as_ref())
        .with_context(|| format!("{} vs {}", names.0, names.1))?;
    if args.json {
        sayln!(console, "{}", serde_json::to_string_pretty(&proof)?);
    } else {
        sayln!(console, "{}", proof.headline());
        say!(console, "{}", proof.table());
    }
    Ok(match proof.verdict {
        Verdict::Failed => 1,
        Verdict::Unproven => 3,
        Verdict::Proved | Verdict::Measured => 0,
    })
}
