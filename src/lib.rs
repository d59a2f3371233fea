//! sora-onnx makes ONNX models smaller by particle decomposition.
//!
//! Every constant weight the rules select is decomposed into particles: a small
//! codebook of values and a narrow index per weight. The rewrite replaces the weight by
//! a subgraph of standard ONNX ops that rebuilds it, so any ONNX runtime runs the
//! result; a proof in tract compares the original and rewritten models.
//!
//! The pass, in the order it runs: [`graph`] indexes the model, [`rules`] match the
//! weights, [`plan`] relates them, [`calibrate`] measures them when
//! samples are given, [`rewrite`] fits ([`fit`], [`particles`]) and emits ([`forms`],
//! [`bias`]) and applies, [`prove`] runs both models ([`runtime`], [`inputs`]) and
//! [`report`] tells. [`job`] runs a whole command; [`options`] are its flags;
//! [`cli`] is the command line, for the binary and the Python bindings (feature
//! `python`) alike.
//!
//! ```no_run
//! use std::path::Path;
//! let model = sora_onnx::onnx::load_model(Path::new("in.onnx"))?;
//! let rewritten = sora_onnx::rewrite(&model, &sora_onnx::Config::default())?;
//! let proof = sora_onnx::validate(&model, &rewritten.model, &Default::default())?;
//! assert!(proof.outputs.iter().all(|o| o.cosine > 0.99));
//! sora_onnx::onnx::save_model(&rewritten.model, Path::new("out.onnx"))?;
//! # Ok::<(), sora_onnx::Error>(())
//! ```

pub mod bias;
pub mod builder;
pub mod calibrate;
pub mod cli;
pub mod config;
pub mod dump;
pub mod error;
pub mod fit;
pub mod forms;
pub mod graph;
pub mod guard;
pub mod inputs;
pub mod inspect;
pub mod job;
pub mod onnx;
pub mod options;
pub mod particles;
pub mod plan;
pub mod prove;
#[cfg(feature = "python")]
mod python;
pub mod report;
pub mod rewrite;
pub mod rng;
pub mod rules;
pub mod runtime;
pub mod stats;
pub mod sweep;
pub mod upgrade;

pub use config::Config;
pub use error::{Error, Result};
pub use inspect::{Inspection, inspect};
pub use prove::{ProofConfig, Validation, validate};
pub use report::Report;
pub use rewrite::{Rewritten, rewrite};
pub use rules::Selection;
