//! The library's error type. Every variant names the file, tensor or node at fault, so
//! the command line can print it as one line.

use std::path::PathBuf;

/// Everything that can go wrong in sora-onnx.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, written or renamed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// The bytes are not an ONNX model: protobuf decoding failed (garbage, truncated
    /// file) or the decoded message has no graph.
    #[error("{}: not an ONNX model: {what}", path.display())]
    NotOnnx {
        /// The file involved.
        path: PathBuf,
        /// Why decoding failed.
        what: String,
    },
    /// The model decodes but breaks an ONNX rule the pass relies on (a missing name,
    /// a cycle, an opset it cannot read).
    #[error("invalid model: {what}")]
    InvalidModel {
        /// What is wrong, naming the node or tensor.
        what: String,
    },
    /// A tensor's data does not match its declared type and shape.
    #[error("tensor '{name}': {what}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong with it.
        what: String,
    },
    /// An option or argument is out of range or inconsistent.
    #[error("invalid option: {0}")]
    Config(String),
    /// A stage of the rewrite failed on one weight.
    #[error("{stage} of weight '{weight}' (read by node '{node}'): {error}")]
    Stage {
        /// The stage: "read", "fit", "emit".
        stage: &'static str,
        /// The weight.
        weight: String,
        /// Its first reader.
        node: String,
        /// What went wrong.
        error: Box<Error>,
    },
    /// The proof could not run.
    #[error("proof failed to run (pass --no-validate to skip it): {0}")]
    Proof(Box<Error>),
    /// A node has no equivalent at the newer opset an upgrade asked for.
    #[error("cannot upgrade node '{node}' ({op}) from opset {from} to {to}: {why}")]
    Upgrade {
        /// The node's name (or op type and position when it has none).
        node: String,
        /// Its op type.
        op: String,
        /// The model's default-domain opset.
        from: i64,
        /// The opset asked for.
        to: i64,
        /// Why it cannot be carried over.
        why: String,
    },
    /// tract could not load or run a model during the proof.
    #[error("tract could not {action} the {model} model: {message}")]
    Tract {
        /// What tract was doing: "load", "optimize", "run".
        action: &'static str,
        /// Which model: "original" or "rewritten".
        model: String,
        /// tract's message, on one line.
        message: String,
    },
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Tensor`] for the tensor `name`.
    pub fn tensor(name: &str, what: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_string(),
            what: what.into(),
        }
    }

    /// An [`Error::Stage`]: `error` happened in `stage` on `weight`, read by `node`.
    pub fn stage(stage: &'static str, weight: &str, node: &str, error: Error) -> Self {
        Error::Stage {
            stage,
            weight: weight.to_string(),
            node: node.to_string(),
            error: Box::new(error),
        }
    }

    /// An [`Error::InvalidModel`] with the given description.
    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidModel { what: what.into() }
    }
}
