//! A command run with its files in a temporary folder and its output captured, for
//! the Python bindings: models given as bytes are written there, `rewrite` writes its
//! model and report there, and both are read back.

use std::path::{Path, PathBuf};

use super::{Console, run};

/// A model for a command: a file (its external data next to it) or its bytes.
pub enum ModelInput {
    /// An ONNX file.
    Path(PathBuf),
    /// A serialized ModelProto.
    Bytes(Vec<u8>),
}

/// What a command printed and wrote.
#[derive(Debug, Default)]
pub struct Captured {
    /// The exit code, as the binary's.
    pub code: u8,
    /// Whether clap rejected the command line (the code is then 2).
    pub usage: bool,
    /// What it printed on stdout, the temporary folder's path left out of file names.
    pub stdout: String,
    /// What it printed on stderr, likewise.
    pub stderr: String,
    /// `rewrite`: the model written, if one was.
    pub model: Option<Vec<u8>>,
    /// `rewrite`: the report JSON, if one was written.
    pub report: Option<String>,
    /// `rewrite`: whether the model was written with a side file of tensor data (then
    /// `model` alone is incomplete).
    pub side_data: bool,
}

/// The names models given as bytes get, in order, for each command.
fn input_names(command: &str) -> &'static [&'static str] {
    match command {
        "validate" => &["a.onnx", "b.onnx"],
        _ => &["model.onnx"],
    }
}

/// Runs `sora-onnx COMMAND MODELS... ARGS...` in a temporary folder: `rewrite` also
/// gets an output file and `--report`, `inspect` and `validate` get `--json`.
/// Progress bars are drawn only if `progress`. Never fails: a folder that cannot be
/// made or read is reported as exit code 2 with its `error:` line.
pub fn run_in_memory(
    command: &str,
    models: Vec<ModelInput>,
    args: &[String],
    progress: bool,
) -> Captured {
    run_in_folder(command, models, args, progress).unwrap_or_else(|e| Captured {
        code: 2,
        stderr: format!("error: {e}\n"),
        ..Captured::default()
    })
}

fn run_in_folder(
    command: &str,
    models: Vec<ModelInput>,
    args: &[String],
    progress: bool,
) -> std::io::Result<Captured> {
    let dir = tempfile::TempDir::new()?;
    let mut argv: Vec<PathBuf> = vec!["sora-onnx".into(), command.into()];
    for (model, name) in models.into_iter().zip(input_names(command)) {
        argv.push(match model {
            ModelInput::Path(path) => path,
            ModelInput::Bytes(bytes) => {
                let path = dir.path().join(name);
                std::fs::write(&path, bytes)?;
                path
            }
        });
    }
    let (output, report) = (
        dir.path().join("output.onnx"),
        dir.path().join("report.json"),
    );
    match command {
        "rewrite" => argv.push(output.clone()),
        "inspect" | "validate" => argv.push("--json".into()),
        _ => {}
    }
    argv.extend(args.iter().map(PathBuf::from));
    if command == "rewrite" {
        argv.extend(["--report".into(), report.clone()]);
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut console = Console {
        out: &mut out,
        err: &mut err,
        bars: progress,
    };
    let (code, usage) = match run(argv, &mut console) {
        Ok(code) => (code, false),
        Err(e) => {
            err = e.render().to_string().into_bytes();
            (u8::try_from(e.exit_code()).unwrap_or(2), true)
        }
    };
    let known = [
        "model.onnx",
        "a.onnx",
        "b.onnx",
        "output.onnx",
        "report.json",
    ];
    let mut side_data = false;
    for entry in std::fs::read_dir(dir.path())? {
        side_data |= !known
            .iter()
            .any(|k| entry.as_ref().is_ok_and(|e| e.file_name() == *k));
    }
    Ok(Captured {
        code,
        usage,
        stdout: unfold(&out, dir.path()),
        stderr: unfold(&err, dir.path()),
        model: read_if_there(&output)?,
        report: read_if_there(&report)?.map(|r| String::from_utf8_lossy(&r).into_owned()),
        side_data,
    })
}

/// `text` with the temporary folder left out of the file names in it.
fn unfold(text: &[u8], dir: &Path) -> String {
    let prefix = format!("{}{}", dir.display(), std::path::MAIN_SEPARATOR);
    String::from_utf8_lossy(text).replace(&prefix, "")
}

/// The bytes of `path`, or `None` if there is no such file.
fn read_if_there(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_onnx_exit_2_naming_the_input() {
        let models = vec![ModelInput::Bytes(b"not a model".to_vec())];
        let run = run_in_memory("inspect", models, &[], false);
        assert_eq!((run.code, run.usage), (2, false));
        assert!(
            run.stderr.starts_with("error: model.onnx: "),
            "{}",
            run.stderr
        );
    }

    #[test]
    fn a_bad_flag_value_is_a_usage_error() {
        let models = vec![ModelInput::Bytes(Vec::new())];
        let args = ["--bits".to_string(), "x".to_string()];
        let run = run_in_memory("inspect", models, &args, false);
        assert_eq!((run.code, run.usage), (2, true));
        assert!(run.stderr.contains("--bits"), "{}", run.stderr);
    }

    #[test]
    fn flags_know_switches_lists_and_repeats() {
        let flags = crate::cli::flags("rewrite").unwrap();
        let kind = |name: &str| flags.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
        use crate::cli::FlagKind;
        assert_eq!(kind("bits"), Some(FlagKind::Value));
        assert_eq!(kind("no-validate"), Some(FlagKind::Switch));
        assert_eq!(kind("ops"), Some(FlagKind::List));
        assert_eq!(kind("input-dim"), Some(FlagKind::Repeated));
        assert_eq!(kind("help"), None);
    }
}
