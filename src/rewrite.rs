//! The driver: plans, decomposes every selected weight (in parallel), emits its decode
//! subgraph and is the only code that mutates the model.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use rayon::prelude::*;

use crate::bias::{BiasFix, corrections};
use crate::builder::{attr_ints, node};
use crate::config::{Config, Share};
use crate::error::Result;
use crate::fit::{Fit, Particles, fit_values, matrix};
use crate::forms::Subgraph;
use crate::graph::{Constant, ConstantSource, Graph, GraphStep, Names};
use crate::onnx::external_bytes;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, float_tensor, float_values};
use crate::particles::CodebookFit;
use crate::plan::{Plan, Skipped, WeightPlan, node_label, plan};
use crate::relation::{alike_groups, relate};
use crate::report::{GroupReport, KmeansMethod, Report, TensorReport};
use crate::rules::SkipReason;
use crate::sensitivity::{Stats, weight_hessian};

/// A rewritten model and what the rewrite did.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The model with every selected weight replaced by its decode subgraph.
    pub model: ModelProto,
    /// Sizes, per-tensor errors and skip reasons (no validation yet).
    pub report: Report,
}

/// Decomposes every weight the rules select and replaces its readers' inputs by the
/// decoded weight. The input model is not modified.
pub fn rewrite(model: &ModelProto, config: &Config) -> Result<Rewritten> {
    rewrite_calibrated(model, config, None)
}

/// [`rewrite`] with calibration statistics of the activations the weights multiply:
/// with `config.bias_correction` each rewritten MatMul/Gemm (in the decode form) gets its bias corrected
/// (see [`crate::bias`]).
pub fn rewrite_calibrated(
    model: &ModelProto,
    config: &Config,
    stats: Option<&Stats>,
) -> Result<Rewritten> {
    config.validate()?;
    let start = Instant::now();
    let graph = Graph::new(model)?;
    let mut plan = plan(&graph, config);
    let mut relations = relate(&mut plan, config, config.ties_weights())?;
    let groups = match config.share {
        Share::Alike(tolerance) => alike_groups(&plan, config, tolerance, &mut relations)?,
        _ => Vec::new(),
    };
    // The alike group of every grouped weight; its first member to be emitted stores
    // the shared table, the others read it.
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        group_of.extend(group.members.iter().map(|&m| (m, g)));
    }
    let mut shared_tables: Vec<Option<String>> = vec![None; groups.len()];
    let mut shared_reports = Vec::new();
    let Plan {
        weights,
        mut skipped,
    } = plan;
    let mut names = graph.names();
    let mut edits = Edits::default();
    let mut tensors = Vec::new();
    let progress = if config.progress {
        ProgressBar::new(weights.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} weights, {elapsed}")
            .unwrap_or(ProgressStyle::default_bar()),
    );
    let mut offset = 0;
    for chunk in memory_bounded_chunks(&weights) {
        let shared = |i: usize| group_of.get(&i).map(|&g| groups[g].codebooks.as_slice());
        let fits: Vec<Result<ReadAndFit>> = chunk
            .par_iter()
            .enumerate()
            .map(|(k, w)| {
                let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())?;
                let hessian = stats
                    .filter(|_| config.compensate)
                    .and_then(|s| weight_hessian(&graph, w, s));
                let fit = fit_values(w, &values, config, shared(offset + k), hessian.as_ref());
                Ok((values, fit))
            })
            .collect();
        for (k, (w, fit)) in chunk.iter().zip(fits).enumerate() {
            progress.inc(1);
            let group = group_of.get(&(offset + k)).copied();
            let (values, fit) = fit?;
            let fit = match fit {
                Ok(fit) => fit,
                Err(reason) => {
                    let readers = w
                        .patches
                        .iter()
                        .chain(w.ties.iter().flat_map(|t| &t.patches));
                    skipped.extend(readers.map(|p| Skipped {
                        node: node_label(&graph, p.node),
                        reason: reason.to_string(),
                    }));
                    continue;
                }
            };
            let table = group.and_then(|g| shared_tables[g].clone());
            let mut subgraph = fit.emit(w, &graph, &mut names, table.as_deref());
            if let Some(g) = group
                && shared_tables[g].is_none()
            {
                shared_tables[g] = subgraph.table.clone();
                let stored = subgraph
                    .initializers
                    .iter()
                    .find(|t| Some(t.name()) == subgraph.table.as_deref());
                shared_reports.push(GroupReport {
                    members: groups[g]
                        .members
                        .iter()
                        .map(|&m| weights[m].first().weight.name.to_string())
                        .collect(),
                    codebook_bytes: stored.map_or(0, Message::encoded_len),
                    extra_error: groups[g].extra_error,
                });
            }
            let tie_outputs = tie_outputs(w, &mut subgraph, &mut names);
            let fixes = match stats.filter(|_| config.bias_correction && fit.lut.is_none()) {
                Some(stats) => {
                    let decoded = fit.decoded(&matrix(w, &values), w.first().float_type);
                    corrections(&graph, w, &values, &decoded, stats, &mut names)
                }
                None => Vec::new(),
            };
            tensors.push(tensor_report(&graph, w, &fit, &subgraph, &fixes));
            edits.bias_fixes.extend(fixes);
            edits.add(&graph, w, subgraph, &tie_outputs);
        }
        offset += chunk.len();
    }
    progress.finish_and_clear();
    let mut rewritten = model.clone();
    edits.apply(&mut rewritten)?;
    let report = Report {
        input_bytes: model.encoded_len() + external_bytes(model) as usize,
        output_bytes: rewritten.encoded_len() + external_bytes(&rewritten) as usize,
        bits_per_weight: bits_per_weight(&tensors),
        tensors,
        groups: shared_reports,
        skipped,
        validation: None,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Rewritten {
        model: rewritten,
        report,
    })
}

/// A weight's values and its fit, or why it cannot be fitted.
type ReadAndFit = (Vec<f64>, Result<Fit, SkipReason>);

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

/// The report of one rewritten weight; its bytes include its bias `fixes`.
fn tensor_report(
    graph: &Graph,
    w: &WeightPlan,
    fit: &Fit,
    subgraph: &Subgraph,
    fixes: &[BiasFix],
) -> TensorReport {
    let patch = w.first();
    let elements = w.elements();
    let constant_bytes = |c: &Constant| match c.source {
        ConstantSource::Initializer(_) => c.tensor.encoded_len(),
        ConstantSource::Node(i) => graph.scopes[c.scope].graph.node[i].encoded_len(),
    };
    let bytes_before = constant_bytes(&patch.weight)
        + w.ties
            .iter()
            .map(|t| constant_bytes(&t.weight))
            .sum::<usize>();
    let bytes_after =
        subgraph.stored_bytes() + fixes.iter().map(BiasFix::stored_bytes).sum::<usize>();
    let (codebooks, particles, outliers, dim, sse_bound) = match &fit.particles {
        Particles::Scalar(d) => (
            d.codebooks.len(),
            d.particles_per_codebook(),
            d.outliers.len(),
            1,
            d.sse_bound,
        ),
        Particles::Vector(d) => (d.stages.len(), d.particles(), 0, d.dim, 0.0),
        Particles::Scaled(g) => (1, g.grid.len(), 0, 1, 0.0),
        Particles::Subspace(d) => (d.subspaces, d.particles, 0, d.dim, 0.0),
    };
    TensorReport {
        name: patch.weight.name.to_string(),
        nodes: w
            .patches
            .iter()
            .map(|p| node_label(graph, p.node))
            .collect(),
        tied: w
            .ties
            .iter()
            .map(|t| {
                format!(
                    "{}{}",
                    t.weight.name,
                    if t.transposed { " (transposed)" } else { "" }
                )
            })
            .collect(),
        shape: patch.shape,
        dtype: patch.float_type,
        codebook_dtype: fit.codebook_type,
        bits: fit.bits,
        granularity: fit.granularity,
        dim,
        elements,
        codebooks,
        particles,
        outliers,
        mse: fit.sse / elements as f64,
        sqnr_db: 10.0 * (fit.signal / fit.sse).log10(),
        bits_per_weight: 8.0 * bytes_after as f64 / elements as f64,
        bytes_before,
        bytes_after,
        kmeans: match (&fit.particles, sse_bound > 0.0) {
            (Particles::Vector(d), _) if d.dim > 1 => KmeansMethod::Lloyd,
            (Particles::Subspace(d), _) if d.dim > 1 => KmeansMethod::Lloyd,
            (Particles::Scaled(_), _) => KmeansMethod::ScaledGrid,
            (Particles::Scalar(_), _) if fit.codebook_fit == CodebookFit::Lloyd => {
                KmeansMethod::Lloyd
            }
            (_, true) => KmeansMethod::Histogram,
            _ => KmeansMethod::Exact,
        },
        mse_bound: sse_bound / elements as f64,
        bias_corrected: fixes.len(),
        sensitivity: None,
        error_share: None,
    }
}

/// Bits per weight over all rewritten weights, every stored byte counted.
fn bits_per_weight(tensors: &[TensorReport]) -> f64 {
    let elements: usize = tensors.iter().map(|t| t.elements).sum();
    let bytes: usize = tensors.iter().map(|t| t.bytes_after).sum();
    if elements == 0 {
        0.0
    } else {
        8.0 * bytes as f64 / elements as f64
    }
}

/// Changes to one graph.
#[derive(Default)]
struct ScopeEdits {
    path: Vec<GraphStep>,
    /// (position, order of the weight, replace the node at position?, nodes).
    insertions: Vec<(usize, usize, bool, Vec<NodeProto>)>,
    /// Names of the weights replaced: their initializers and value_info go.
    removed_names: HashSet<String>,
    initializers: Vec<TensorProto>,
}

/// Every change the rewrite makes, collected while the model is borrowed by the
/// index, then applied to a copy.
#[derive(Default)]
struct Edits {
    scopes: Vec<(usize, ScopeEdits)>,
    /// (path of the node's graph, node position, input slot, new input name).
    rewires: Vec<(Vec<GraphStep>, usize, usize, String)>,
    /// Bias corrections (main graph).
    bias_fixes: Vec<BiasFix>,
    count: usize,
}

impl Edits {
    fn scope(&mut self, graph: &Graph, scope: usize) -> &mut ScopeEdits {
        let at = match self.scopes.iter().position(|(s, _)| *s == scope) {
            Some(at) => at,
            None => {
                let path = graph.scopes[scope].path.clone();
                self.scopes.push((
                    scope,
                    ScopeEdits {
                        path,
                        ..Default::default()
                    },
                ));
                self.scopes.len() - 1
            }
        };
        &mut self.scopes[at].1
    }

    /// The decode subgraph goes just before the first reader of the weight or of its
    /// ties; their constants (initializers or Constant nodes) leave the model; every
    /// reader reads the decoded value, a transposed tie its Transpose (`tie_outputs`),
    /// and a reader the subgraph replaces (the LUT form) gives way to its replacement.
    fn add(&mut self, graph: &Graph, w: &WeightPlan, subgraph: Subgraph, tie_outputs: &[String]) {
        let scope = w.first().weight.scope;
        let readers = std::iter::once((w.first().weight, &w.patches, &subgraph.output)).chain(
            w.ties
                .iter()
                .zip(tie_outputs)
                .map(|(t, output)| (t.weight, &t.patches, output)),
        );
        let mut first = usize::MAX;
        let order = self.count;
        self.count += 1;
        for (weight, patches, output) in readers {
            for p in patches {
                first = first.min(graph.ancestor_in(p.node, scope));
                let replaced = subgraph.replacements.iter().find(|r| r.node == p.node);
                if let Some(r) = replaced {
                    let edits = self.scope(graph, p.node.scope);
                    edits
                        .insertions
                        .push((p.node.index, order, true, r.nodes.clone()));
                    continue;
                }
                let path = graph.scopes[p.node.scope].path.clone();
                self.rewires
                    .push((path, p.node.index, p.slot, output.clone()));
            }
            let edits = self.scope(graph, scope);
            edits.removed_names.insert(weight.name.to_string());
            if let ConstantSource::Node(i) = weight.source {
                edits.insertions.push((i, order, true, Vec::new()));
            }
        }
        let edits = self.scope(graph, scope);
        edits.insertions.push((first, order, false, subgraph.nodes));
        edits.initializers.extend(subgraph.initializers);
    }

    /// Rewires first (node positions are still those of the index), then edits each
    /// graph, deepest first, so positions in paths stay valid.
    fn apply(mut self, model: &mut ModelProto) -> Result<()> {
        for (path, node, slot, name) in &self.rewires {
            graph_at(model, path).node[*node].input[*slot] = name.clone();
        }
        for fix in std::mem::take(&mut self.bias_fixes) {
            match fix {
                BiasFix::Adjust { initializer, delta } => {
                    let g = graph_at(model, &[]);
                    let t = g
                        .initializer
                        .iter_mut()
                        .find(|t| t.name() == initializer)
                        .expect("the index found this bias");
                    let ty = FloatType::from_data_type(t.data_type()).ok_or_else(|| {
                        crate::Error::tensor(&initializer, "bias is not a float tensor")
                    })?;
                    let values: Vec<f64> = float_values(t, None)?
                        .iter()
                        .zip(&delta)
                        .map(|(v, d)| v + d)
                        .collect();
                    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                    *t = float_tensor(&initializer, &dims, ty, &values);
                }
                BiasFix::Insert {
                    node,
                    renamed,
                    nodes,
                    initializer,
                } => {
                    graph_at(model, &[]).node[node.index].output[0] = renamed;
                    let order = self.count;
                    self.count += 1;
                    let edits = self.scope_at_main();
                    edits.insertions.push((node.index + 1, order, false, nodes));
                    edits.initializers.push(*initializer);
                }
            }
        }
        self.scopes
            .sort_by_key(|(_, e)| std::cmp::Reverse(e.path.len()));
        for (_, mut edits) in self.scopes {
            let g = graph_at(model, &edits.path);
            // Last position first; at one position a replaced node before the nodes
            // inserted ahead of it.
            edits
                .insertions
                .sort_by_key(|&(pos, order, replace, _)| std::cmp::Reverse((pos, order, replace)));
            for (pos, _, replace, nodes) in edits.insertions {
                g.node.splice(pos..pos + usize::from(replace), nodes);
            }
            g.initializer
                .retain(|t| !edits.removed_names.contains(t.name()));
            g.value_info
                .retain(|v| !edits.removed_names.contains(v.name()));
            g.initializer.extend(edits.initializers);
        }
        Ok(())
    }

    /// The edits of the main graph.
    fn scope_at_main(&mut self) -> &mut ScopeEdits {
        if !self.scopes.iter().any(|(s, _)| *s == 0) {
            self.scopes.push((0, ScopeEdits::default()));
        }
        let at = self
            .scopes
            .iter()
            .position(|(s, _)| *s == 0)
            .expect("just added");
        &mut self.scopes[at].1
    }
}

/// The graph reached from the main graph by `path`.
fn graph_at<'a>(model: &'a mut ModelProto, path: &[GraphStep]) -> &'a mut GraphProto {
    let mut g = model
        .graph
        .as_mut()
        .expect("the index checked the model has a graph");
    for step in path {
        let a = &mut g.node[step.node].attribute[step.attribute];
        g = match step.graphs_index {
            None => a.g.as_mut().expect("the index saw this subgraph"),
            Some(i) => &mut a.graphs[i],
        };
    }
    g
}
