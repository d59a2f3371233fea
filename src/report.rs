//! What a rewrite did: sizes, per-tensor errors, skip reasons and the proof, as JSON
//! (`--report`) and as the short human summary the command line prints.

use std::fmt::Write;

use indicatif::{ProgressBar, ProgressStyle};

use crate::onnx::tensor::FloatType;
use crate::particles::Granularity;
use crate::plan::Skipped;
use crate::prove::Validation;
use crate::upgrade::Upgraded;

/// The whole report. JSON numbers that are infinite (a lossless tensor's SQNR) are
/// written as `null`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// Size of the input model in bytes: encoded, plus its external data.
    pub input_bytes: usize,
    /// Size of the rewritten model in bytes: encoded, plus the external data it still
    /// refers to (the side file pads each tensor to 64 bytes on top).
    pub output_bytes: usize,
    /// Bits per weight over all rewritten weights: every index, codebook, constant and
    /// node byte of their decode subgraphs, over their element count.
    pub bits_per_weight: f64,
    /// One entry per rewritten weight.
    pub tensors: Vec<TensorReport>,
    /// Weights reading one shared codebook (`--share alike`).
    pub groups: Vec<GroupReport>,
    /// Nodes left alone and why.
    pub skipped: Vec<Skipped>,
    /// How the model's opset was upgraded first (`--form qdq` needs opset 21).
    pub opset_upgrade: Option<Upgraded>,
    /// The proof in tract, if it ran.
    pub validation: Option<Validation>,
    /// Wall time of the job (calibration, the data-free choice, the rewrite, and the
    /// proof once it ran), in seconds.
    pub seconds: f64,
}

/// Weights that read one joint codebook.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GroupReport {
    /// The weights; the first stores the table.
    pub members: Vec<String>,
    /// Encoded bytes of the shared codebook table (stored once).
    pub codebook_bytes: usize,
    /// Extra squared error of the joint codebooks over each member's own, a fraction.
    pub extra_error: f64,
}

/// How a tensor's codebooks were fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KmeansMethod {
    /// Exact optimal k-means on the distinct values.
    Exact,
    /// Optimal k-means on a fine histogram; error within `mse_bound` of the optimum.
    Histogram,
    /// Lloyd iterations (a local optimum): vector particles from k-means++ seeding, or
    /// scalar codebooks under `--fit fast`.
    Lloyd,
    /// `--lossless` found integers times a scale per channel: no k-means needed.
    ScaledGrid,
    /// No particles: the weight stored in half precision.
    Half,
    /// Uniform grids per block (`--form qdq`): scale and zero point from a search over
    /// clipped ranges with a least-squares scale.
    Grid,
}

/// One rewritten weight.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TensorReport {
    /// The weight's name.
    pub name: String,
    /// The nodes reading it.
    pub nodes: Vec<String>,
    /// Identical (or transposed) weights decoded with it and removed from the model.
    pub tied: Vec<String>,
    /// Rows and columns.
    pub shape: [usize; 2],
    /// Element type of the weight.
    pub dtype: FloatType,
    /// Element type its particles are stored in.
    pub codebook_dtype: FloatType,
    /// Bits per index.
    pub bits: u32,
    /// Codebook granularity.
    pub granularity: Granularity,
    /// Weights per particle (1: scalar particles).
    pub dim: usize,
    /// Number of weights.
    pub elements: usize,
    /// Number of codebooks (stages, for vector particles).
    pub codebooks: usize,
    /// Particles per codebook (per stage for vector particles).
    pub particles: usize,
    /// Elements kept exact as outliers.
    pub outliers: usize,
    /// Mean squared error of the decoded weight (particles rounded to `dtype`).
    pub mse: f64,
    /// Signal to quantization noise of the decoded weight, in dB.
    pub sqnr_db: f64,
    /// Stored bits per weight of this tensor's decode subgraph.
    pub bits_per_weight: f64,
    /// Encoded bytes of the original constant (and of its ties).
    pub bytes_before: usize,
    /// Encoded bytes of its decode subgraph (initializers and nodes).
    pub bytes_after: usize,
    /// How the codebooks were fitted.
    pub kmeans: KmeansMethod,
    /// Upper bound on `mse` minus the exact optimum's (0 when exact).
    pub mse_bound: f64,
    /// Readers whose bias was corrected from calibration means.
    pub bias_corrected: usize,
    /// Measured output error with only this weight decomposed at its setting
    /// (calibrated runs; see [`crate::sensitivity`]).
    pub sensitivity: Option<f64>,
    /// This weight's share of the summed sensitivities of all weights.
    pub error_share: Option<f64>,
    /// The SQNR the data-free default aimed this weight at, in dB.
    pub target_sqnr_db: Option<f64>,
}

fn mib(bytes: usize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// The short human summary: counts, sizes, per-output proof metrics, time.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let elements: usize = self.tensors.iter().map(|t| t.elements).sum();
        let _ = writeln!(
            s,
            "rewrote {} weight tensors ({elements} weights, {:.2} bits/weight), skipped {} nodes",
            self.tensors.len(),
            self.bits_per_weight,
            self.skipped.len()
        );
        let ratio = self.input_bytes as f64 / self.output_bytes.max(1) as f64;
        let _ = writeln!(
            s,
            "size: {} -> {} ({ratio:.2}x smaller)",
            mib(self.input_bytes),
            mib(self.output_bytes)
        );
        if let Some(v) = &self.validation {
            let _ = writeln!(s, "{}", v.headline());
            s.push_str(&v.table());
        }
        let _ = writeln!(s, "time: {:.2} s", self.seconds);
        s
    }

    /// A table of every rewritten tensor and every skipped node.
    pub fn details(&self) -> String {
        let mut s = String::new();
        for t in &self.tensors {
            let _ = writeln!(
                s,
                "  {:<40} {:>5}x{:<5} {} {}-bit {} mse {:.3e} sqnr {:5.1} dB  {:.2} b/w",
                t.name,
                t.shape[0],
                t.shape[1],
                dtype_name(t.dtype),
                t.bits,
                t.granularity,
                t.mse,
                t.sqnr_db,
                t.bits_per_weight
            );
        }
        for k in &self.skipped {
            let _ = writeln!(s, "  skipped {}: {}", k.node, k.reason);
        }
        s
    }
}

fn dtype_name(t: FloatType) -> &'static str {
    match t {
        FloatType::F16 => "f16",
        FloatType::F32 => "f32",
        FloatType::F64 => "f64",
    }
}

/// A progress bar on stderr over `len` steps counted in `unit`, or a hidden one.
pub fn progress_bar(show: bool, len: usize, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit}, {{elapsed}}");
    bar.set_style(ProgressStyle::with_template(&template).unwrap_or(ProgressStyle::default_bar()));
    bar
}
