//! The driver: carries out a [`Plan`] in three stages, and is the only code that
//! mutates the model.
//!
//! 1. **fit**: every planned weight is read and decomposed at its setting (in
//!    parallel, a few weights at a time so memory stays bounded);
//! 2. **emit**: each fit becomes its subgraph (decode or LUT form), with bias
//!    corrections from calibration statistics;
//! 3. **apply**: the collected [`edits`] are applied to a copy of the model, and the
//!    report is made.

mod edits;
mod tensors;

use std::time::Instant;

use prost::Message;
use rayon::prelude::*;

use crate::bias::corrections;
use crate::builder::{attr_ints, node};
use crate::config::Config;
use crate::error::{Error, Result};
use std::sync::Arc;

use crate::fit::{Compensation, Fit, Fits, fit_values, matrix};
use crate::forms::Subgraph;
use crate::forms::qdq;
use crate::graph::{Graph, Names};
use crate::onnx::external_bytes;
use crate::onnx::proto::ModelProto;
use crate::onnx::tensor::float_values;
use crate::particles::compensate::ROUNDS;
use crate::plan::{Plan, Skipped, WeightPlan};
use crate::report::{GroupReport, KmeansMethod, Report, TensorReport, progress_bar};
use crate::rules::SkipReason;
use crate::stats::{Stats, weight_hessian};
use edits::Edits;
use tensors::{bits_per_weight, tensor_report};

/// A rewritten model and what the rewrite did.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The model with every selected weight replaced by its decode subgraph.
    pub model: ModelProto,
    /// Sizes, per-tensor errors and skip reasons (no validation yet).
    pub report: Report,
}

/// What calibration measured that the rewrite reads.
#[derive(Clone, Copy, Debug)]
pub struct Measured<'a> {
    /// Statistics of the activations the weights multiply.
    pub stats: &'a Stats,
    /// Fits already made, reused where a weight's setting has one.
    pub fits: &'a Fits,
}

/// Plans the rewrite of `model` under `config` and carries it out: every weight the
/// rules select is decomposed and its readers read the decoded weight (under
/// `--form qdq` the model's opset is upgraded to 21 first). The input model is not
/// modified.
pub fn rewrite(model: &ModelProto, config: &Config) -> Result<Rewritten> {
    let upgraded = qdq::upgraded(model, config)?;
    let graph = Graph::new(upgraded.as_ref().map_or(model, |(m, _)| m))?;
    let plan = Plan::new(&graph, config)?;
    let mut out = rewrite_plan(&graph, &plan, config, None)?;
    out.report.opset_upgrade = upgraded.map(|(_, u)| u);
    Ok(out)
}

/// Carries out `plan` (made from `graph` under `config`). With what calibration
/// `measured`, `config.bias_correction` corrects the bias of each rewritten MatMul/Gemm
/// in the decode form (see [`crate::bias`]), `config.compensate` fits by
/// error-compensating rounding, and fits already made are reused.
pub fn rewrite_plan(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    measured: Option<Measured>,
) -> Result<Rewritten> {
    let stats = measured.map(|m| m.stats);
    let start = Instant::now();
    let mut emission = Emission::new(graph, plan);
    let progress = progress_bar(config.progress, plan.weights.len(), "weights");
    let mut offset = 0;
    for chunk in memory_bounded_chunks(&plan.weights) {
        let fits = fit_chunk(graph, plan, (offset, chunk), config, measured);
        for (k, fit) in fits.into_iter().enumerate() {
            progress.inc(1);
            let (values, fit) = fit?;
            emission.emit(offset + k, &values, fit, config, stats);
        }
        offset += chunk.len();
    }
    progress.finish_and_clear();
    emission.apply(start)
}

/// Stage 1: reads and fits the weights of `chunk`, which starts at `offset` in the
/// plan, in parallel.
fn fit_chunk(
    graph: &Graph,
    plan: &Plan,
    (offset, chunk): (usize, &[WeightPlan]),
    config: &Config,
    measured: Option<Measured>,
) -> Vec<Result<ReadAndFit>> {
    let stats = measured.map(|m| m.stats);
    let shared = |i: usize| {
        let group = plan.groups.iter().find(|g| g.members.contains(&i))?;
        Some(group.codebooks.as_slice())
    };
    chunk
        .par_iter()
        .enumerate()
        .map(|(k, w)| {
            let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())
                .map_err(|e| Error::stage("read", w.name(), &graph.label(w.first().node), e))?;
            if let Some(fit) = measured.and_then(|m| m.fits.get(w.name(), w.setting)) {
                return Ok((values, Ok(fit)));
            }
            let hessian = stats
                .filter(|_| config.compensate)
                .and_then(|s| weight_hessian(w, s));
            let compensation = hessian.as_ref().map(|hessian| Compensation {
                hessian,
                rounds: ROUNDS,
            });
            let fit = fit_values(w, &values, config, shared(offset + k), compensation);
            Ok((values, fit.map(Arc::new)))
        })
        .collect()
}

/// What the emit stage has built so far.
struct Emission<'g, 'm> {
    graph: &'g Graph<'m>,
    plan: &'g Plan<'m>,
    names: Names,
    edits: Edits,
    tensors: Vec<TensorReport>,
    skipped: Vec<Skipped>,
    /// The shared table of each alike group, once its first member stored it.
    shared_tables: Vec<Option<String>>,
    groups: Vec<GroupReport>,
}

impl<'g, 'm> Emission<'g, 'm> {
    fn new(graph: &'g Graph<'m>, plan: &'g Plan<'m>) -> Self {
        Emission {
            graph,
            plan,
            names: graph.names(),
            edits: Edits::default(),
            tensors: Vec::new(),
            skipped: plan.skipped.clone(),
            shared_tables: vec![None; plan.groups.len()],
            groups: Vec::new(),
        }
    }

    /// Stage 2: the subgraph of weight `i` of the plan (with `values`) from its `fit`,
    /// or its readers skipped with the reason it could not be fitted. The first member
    /// of an alike group to be emitted stores the shared table; the others read it.
    fn emit(
        &mut self,
        i: usize,
        values: &[f64],
        fit: Result<Arc<Fit>, SkipReason>,
        config: &Config,
        stats: Option<&Stats>,
    ) {
        let (graph, w) = (self.graph, &self.plan.weights[i]);
        let fit = match fit {
            Ok(fit) => fit,
            Err(reason) => {
                self.skipped.extend(w.readers().map(|p| Skipped {
                    node: graph.label(p.node),
                    reason: reason.clone(),
                }));
                return;
            }
        };
        let group = self.plan.groups.iter().position(|g| g.members.contains(&i));
        let table = group.and_then(|g| self.shared_tables[g].clone());
        let names = &mut self.names;
        let mut subgraph = fit.emit(w, graph, names, table.as_deref());
        if let Some(g) = group
            && self.shared_tables[g].is_none()
        {
            self.shared_tables[g] = subgraph.table.clone();
            self.groups.push(group_report(self.plan, g, &subgraph));
        }
        let tie_outputs = tie_outputs(w, &mut subgraph, names);
        let fixes = match stats.filter(|_| config.bias_correction && fit.lut.is_none()) {
            Some(stats) => {
                let decoded = fit.decoded(&matrix(w, values), w.first().float_type);
                corrections(graph, w, values, &decoded, stats, names)
            }
            None => Vec::new(),
        };
        self.tensors
            .push(tensor_report(graph, w, &fit, &subgraph, &fixes));
        self.edits.bias_fixes.extend(fixes);
        self.edits.add(graph, w, subgraph, &tie_outputs);
    }

    /// Stage 3: applies the edits to a copy of the model and reports; `start` is when
    /// the rewrite began.
    fn apply(self, start: Instant) -> Result<Rewritten> {
        let model = self.graph.model;
        let mut rewritten = model.clone();
        self.edits.apply(&mut rewritten)?;
        if self.tensors.iter().any(|t| t.kmeans == KmeansMethod::Grid) {
            // 4-bit integers need IR 10, as opset 21 does.
            let ir = rewritten.ir_version.unwrap_or(0).max(qdq::MIN_IR_VERSION);
            rewritten.ir_version = Some(ir);
        }
        let report = Report {
            input_bytes: model.encoded_len() + external_bytes(model) as usize,
            output_bytes: rewritten.encoded_len() + external_bytes(&rewritten) as usize,
            bits_per_weight: bits_per_weight(&self.tensors),
            tensors: self.tensors,
            groups: self.groups,
            skipped: self.skipped,
            opset_upgrade: None,
            validation: None,
            seconds: start.elapsed().as_secs_f64(),
        };
        Ok(Rewritten {
            model: rewritten,
            report,
        })
    }
}

/// The report of alike group `g`, whose table `subgraph` stored.
fn group_report(plan: &Plan, g: usize, subgraph: &Subgraph) -> GroupReport {
    let group = &plan.groups[g];
    let stored = subgraph
        .initializers
        .iter()
        .find(|t| Some(t.name()) == subgraph.table.as_deref());
    GroupReport {
        members: group
            .members
            .iter()
            .map(|&m| plan.weights[m].name().to_string())
            .collect(),
        codebook_bytes: stored.map_or(0, Message::encoded_len),
        extra_error: group.extra_error,
    }
}

/// A weight's values and its fit, or why it cannot be fitted.
type ReadAndFit = (Vec<f64>, Result<Arc<Fit>, SkipReason>);

/// The value each tie's readers read: the decoded weight, or for a transposed tie a
/// Transpose of it (appended to the subgraph).
fn tie_outputs(w: &WeightPlan, subgraph: &mut Subgraph, names: &mut Names) -> Vec<String> {
    w.ties
        .iter()
        .map(|tie| {
            if !tie.transposed {
                return subgraph.output.clone();
            }
            let output = names.fresh(&format!("{}.decoded", tie.weight.name));
            let name = names.fresh(&format!("{}.decode/Transpose", tie.weight.name));
            let perm = vec![attr_ints("perm", &[1, 0])];
            subgraph.nodes.push(node(
                "Transpose",
                &name,
                &[&subgraph.output],
                &[&output],
                perm,
            ));
            output
        })
        .collect()
}

/// Weights fitted together: as many as there are threads, but no more elements than
/// [`CHUNK_ELEMENTS`] unless one weight alone has more. Memory then holds a few
/// weights' values and particles (8 bytes per element while fitting), not the model's.
fn memory_bounded_chunks<'a, 'm>(weights: &'a [WeightPlan<'m>]) -> Vec<&'a [WeightPlan<'m>]> {
    let threads = rayon::current_num_threads().max(1);
    let mut chunks = Vec::new();
    let (mut start, mut elements) = (0, 0);
    for (i, w) in weights.iter().enumerate() {
        if i > start && (i - start == threads || elements + w.elements() > CHUNK_ELEMENTS) {
            chunks.push(&weights[start..i]);
            (start, elements) = (i, 0);
        }
        elements += w.elements();
    }
    if start < weights.len() {
        chunks.push(&weights[start..]);
    }
    chunks
}

/// Most elements fitted at once when weights share a chunk (256 MiB of f64 values).
const CHUNK_ELEMENTS: usize = 1 << 25;
