//! What a rewrite would do, without doing it: the plan `rewrite` carries out (its
//! weights, ties, skip reasons) and the estimated size of each decode subgraph.

use std::fmt::Write;

use prost::Message;

use crate::config::{Config, Form};
use crate::error::Result;
use crate::fit::{HALF_BITS, check, fit_values};
use crate::forms::qdq;
use crate::graph::Graph;
use crate::guard::{guard, setting_bytes};
use crate::onnx::proto::ModelProto;
use crate::onnx::tensor::FloatType;
use crate::onnx::tensor::float_values;
use crate::particles::Matrix;
use crate::particles::pack::packed_len;
use crate::plan::{Plan, RelationGraph, Skipped, WeightPlan};
use crate::upgrade::Upgraded;

/// A weight the rewrite would decompose.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Candidate {
    /// The weight's name.
    pub name: String,
    /// The nodes reading it.
    pub nodes: Vec<String>,
    /// Identical (or transposed) weights decoded with it.
    pub tied: Vec<String>,
    /// Bits per index (16: stored in half precision).
    pub bits: u32,
    /// Codebook granularity.
    pub granularity: crate::particles::Granularity,
    /// Rows and columns.
    pub shape: [usize; 2],
    /// Element type.
    pub dtype: FloatType,
    /// Number of weights.
    pub elements: usize,
    /// Encoded bytes now.
    pub bytes_before: usize,
    /// Index plus codebook bytes after the rewrite (an upper bound: a codebook may
    /// need fewer particles; the few bytes of nodes and small constants not counted).
    pub estimated_bytes_after: usize,
}

/// The whole inspection.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Inspection {
    /// Encoded size of the model.
    pub model_bytes: usize,
    /// Default-domain opset.
    pub opset: i64,
    /// How the opset would be upgraded first (`--form qdq` below opset 21).
    pub opset_upgrade: Option<Upgraded>,
    /// Weights that would be rewritten.
    pub candidates: Vec<Candidate>,
    /// Nodes that would be left alone and why.
    pub skipped: Vec<Skipped>,
    /// Estimated encoded size after the rewrite.
    pub estimated_model_bytes: usize,
}

impl Inspection {
    /// The human table of the inspection of the model called `name`: one line per
    /// candidate and per skipped node, then the totals.
    pub fn table(&self, name: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{name}: opset {}, {} bytes{}",
            self.opset,
            self.model_bytes,
            self.opset_upgrade
                .as_ref()
                .map(|u| format!("; --form qdq upgrades {u}"))
                .unwrap_or_default()
        );
        for c in &self.candidates {
            let tied = match c.tied.len() {
                0 => String::new(),
                n => format!("  (+{n} tied)"),
            };
            let _ = writeln!(
                s,
                "  rewrite {:<40} {:>5}x{:<5} {:?} {:>2}-bit {:<8} {:>9} params  {:>9} -> ~{} bytes{tied}",
                c.name,
                c.shape[0],
                c.shape[1],
                c.dtype,
                c.bits,
                c.granularity.to_string(),
                c.elements,
                c.bytes_before,
                c.estimated_bytes_after
            );
        }
        for skipped in &self.skipped {
            let _ = writeln!(s, "  skip {}: {}", skipped.node, skipped.reason);
        }
        let _ = writeln!(
            s,
            "{} weights to rewrite, {} nodes skipped; estimated size {} -> {} bytes",
            self.candidates.len(),
            self.skipped.len(),
            self.model_bytes,
            self.estimated_model_bytes
        );
        s
    }
}

/// The relation graph of the weights `config` would rewrite (values are read):
/// identical and transposed pairs, and under `--share alike` the measured alike groups.
pub fn relations(model: &ModelProto, config: &Config) -> Result<RelationGraph> {
    let graph = Graph::new(model)?;
    Ok(Plan::new(&graph, config)?.relations)
}

/// Plans the rewrite of `model` under `config` (with the settings the data-free default
/// chooses, when `config.guard` is set) and estimates its size. Weights the fit stage
/// would refuse (values not finite, inputs `--dim` does not divide, not lossless
/// under `--lossless`) are skipped with the reason, as `rewrite` skips them.
pub fn inspect(model: &ModelProto, config: &Config) -> Result<Inspection> {
    let upgraded = qdq::upgraded(model, config)?;
    let graph = Graph::new(upgraded.as_ref().map_or(model, |(m, _)| m))?;
    let mut plan = Plan::new(&graph, config)?;
    if let Some(g) = &config.guard {
        let guarded = guard(&graph, &plan, config, g)?;
        plan = plan
            .with_settings(&guarded.settings)
            .without(&graph, &guarded.skipped);
    }
    let mut skipped = plan.skipped.clone();
    let mut candidates = Vec::new();
    for w in &plan.weights {
        let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())?;
        let fits = check(w, &values, config).and_then(|()| match config.lossless {
            true => fit_values(w, &values, config, None, None).map(|_| ()),
            false => Ok(()),
        });
        match fits {
            Ok(()) => candidates.push(candidate(&graph, w, config)),
            Err(reason) => skipped.extend(w.readers().map(|p| Skipped {
                node: graph.label(p.node),
                reason: reason.clone(),
            })),
        }
    }
    let model_bytes = model.encoded_len();
    let saved: usize = candidates
        .iter()
        .map(|c| c.bytes_before.saturating_sub(c.estimated_bytes_after))
        .sum();
    Ok(Inspection {
        model_bytes,
        opset: upgraded.as_ref().map_or(graph.opset, |(_, u)| u.from),
        opset_upgrade: upgraded.map(|(_, u)| u),
        estimated_model_bytes: model_bytes - saved,
        candidates,
        skipped,
    })
}

/// What inspect shows of the planned weight `w`.
fn candidate(graph: &Graph, w: &WeightPlan, config: &Config) -> Candidate {
    let p = w.first();
    let [rows, cols] = p.shape;
    let matrix = Matrix {
        values: &[],
        rows,
        cols,
        channel_axis: p.channel_axis,
    };
    let bits = w.setting.bits;
    let codebooks = matrix.codebooks(w.setting.granularity);
    let particle_size = config
        .codebook_type
        .resolve(p.float_type, &[], false)
        .size();
    Candidate {
        name: p.weight.name.to_string(),
        nodes: w.patches.iter().map(|q| graph.label(q.node)).collect(),
        tied: w.ties.iter().map(|t| t.weight.name.to_string()).collect(),
        bits,
        granularity: w.setting.granularity,
        shape: p.shape,
        dtype: p.float_type,
        elements: rows * cols,
        bytes_before: p.weight.tensor.encoded_len()
            + w.ties
                .iter()
                .map(|t| t.weight.tensor.encoded_len())
                .sum::<usize>(),
        estimated_bytes_after: if bits == HALF_BITS {
            rows * cols * 2
        } else if config.form == Form::Qdq {
            setting_bytes(w, w.setting, config)
        } else if config.uses_vectors() {
            let (stages, dim) = (config.stages, config.dim);
            stages * (packed_len(rows * cols / dim, bits) + (1 << bits) * dim * particle_size)
        } else {
            packed_len(rows * cols, bits) + codebooks * (1 << bits) * particle_size
        },
    }
}
