//! The particle relation graph: which weights can share particles.
//!
//! Nodes are the planned weights; an edge says two of them are *identical* (same
//! shape and values) or one is the *transpose* of the other. With `--share identical`
//! (the default) every such group is decomposed once: the other members' readers read
//! the one decoding (through a Transpose for transposed members) and their constants
//! leave the model. Relations are found from the values themselves: a hash of each
//! weight (and of its transpose) proposes candidates, which are then compared exactly.
//! With `--share alike`, weights of the same shape whose joint codebooks cost at most a
//! given fraction of extra squared error (measured by fitting them jointly) read one
//! shared codebook initializer, each with its own index.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use petgraph::graph::{NodeIndex, UnGraph};

use std::path::Path;

use super::{Tie, WeightPlan};
use crate::error::Result;
use crate::graph::Constant;
use crate::onnx::tensor::float_values;

/// How two weights relate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// Same shape, same values.
    Identical,
    /// One is the other's transpose.
    Transposed,
    /// A joint codebook serves both for this much extra squared error (a fraction).
    Alike {
        /// Joint over separate squared error, minus 1.
        extra_error: f64,
    },
}

/// A weight in the relation graph.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WeightNode {
    /// The weight's name.
    pub name: String,
    /// Its dims.
    pub dims: Vec<i64>,
}

/// The relation graph of a plan's weights.
#[derive(Clone, Debug, Default)]
pub struct RelationGraph {
    /// Weights and the relations found between them.
    pub graph: UnGraph<WeightNode, Relation>,
}

/// One edge, for JSON.
#[derive(serde::Serialize)]
struct Edge<'a> {
    a: &'a str,
    b: &'a str,
    relation: Relation,
}

impl RelationGraph {
    /// The graph in Graphviz DOT.
    pub fn dot(&self) -> String {
        let mut out = String::from("graph relations {\n  node [shape=box];\n");
        for i in self.graph.node_indices() {
            let w = &self.graph[i];
            out.push_str(&format!(
                "  n{} [label=\"{} {:?}\"];\n",
                i.index(),
                w.name.replace('"', "\\\""),
                w.dims
            ));
        }
        for e in self.graph.edge_indices() {
            let (a, b) = self.graph.edge_endpoints(e).expect("an edge has endpoints");
            let label = match self.graph[e] {
                Relation::Identical => "identical".to_string(),
                Relation::Transposed => "transposed".to_string(),
                Relation::Alike { extra_error } => format!("alike +{:.1}%", 100.0 * extra_error),
            };
            out.push_str(&format!(
                "  n{} -- n{} [label=\"{label}\"];\n",
                a.index(),
                b.index()
            ));
        }
        out.push_str("}\n");
        out
    }

    /// The graph as JSON: `{"weights": [...], "edges": [{"a", "b", "relation"}]}`.
    pub fn json(&self) -> serde_json::Value {
        let weights: Vec<&WeightNode> = self.graph.node_weights().collect();
        let edges: Vec<Edge> = self
            .graph
            .edge_indices()
            .map(|e| {
                let (a, b) = self.graph.edge_endpoints(e).expect("an edge has endpoints");
                Edge {
                    a: &self.graph[a].name,
                    b: &self.graph[b].name,
                    relation: self.graph[e],
                }
            })
            .collect();
        serde_json::json!({ "weights": weights, "edges": edges })
    }
}

/// A weight's values and a hash of them (and of its transpose, for 2-D weights); the
/// hashes only propose candidates, which are then compared value by value.
struct Fingerprint {
    values: Vec<f64>,
    hash: u64,
    transposed_hash: Option<u64>,
}

fn hash_values(values: impl Iterator<Item = f64>, dims: &[i64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dims.hash(&mut h);
    values.for_each(|v| v.to_bits().hash(&mut h));
    h.finish()
}

fn fingerprint(weight: &Constant, dir: Option<&Path>) -> Result<Fingerprint> {
    let values = float_values(weight.tensor, dir)?;
    let dims = &weight.tensor.dims;
    let hash = hash_values(values.iter().copied(), dims);
    let transposed_hash = match dims.as_slice() {
        &[rows, cols] => {
            let (rows, cols) = (rows as usize, cols as usize);
            let transposed = (0..cols)
                .flat_map(|c| (0..rows).map(move |r| r * cols + c))
                .map(|p| values[p]);
            Some(hash_values(transposed, &[dims[1], dims[0]]))
        }
        _ => None,
    };
    Ok(Fingerprint {
        values,
        hash,
        transposed_hash,
    })
}

/// Whether `b` holds exactly the values of `a` transposed (`a` is `rows x cols`).
fn is_transpose(a: &[f64], b: &[f64], rows: usize, cols: usize) -> bool {
    a.len() == b.len()
        && (0..rows)
            .all(|r| (0..cols).all(|c| a[r * cols + c].to_bits() == b[c * rows + r].to_bits()))
}

/// Finds identical and transposed weights among the planned `weights` (values read
/// from the model folder `dir`) and, with `share`, folds each into the first weight it
/// relates to as a [`Tie`]. Only weights of the same scope and element type are
/// related. Returns the relation graph (over the weights as planned, before folding).
pub fn relate(
    weights: &mut Vec<WeightPlan>,
    dir: Option<&Path>,
    share: bool,
) -> Result<RelationGraph> {
    let mut relations = RelationGraph::default();
    let nodes: Vec<NodeIndex> = weights
        .iter()
        .map(|w| {
            let weight = w.first().weight;
            relations.graph.add_node(WeightNode {
                name: weight.name.to_string(),
                dims: weight.tensor.dims.clone(),
            })
        })
        .collect();
    // Only weights whose shape (or its transpose) another weight of the same scope and
    // type also has can be related: the others are never read here.
    let shape_key = |w: &WeightPlan| {
        let t = w.first().weight;
        let mut dims = t.tensor.dims.clone();
        if dims.len() == 2 {
            dims.sort_unstable();
        }
        (t.scope, t.tensor.data_type(), dims)
    };
    let mut shapes: HashMap<_, usize> = HashMap::new();
    for w in weights.iter() {
        *shapes.entry(shape_key(w)).or_default() += 1;
    }
    // Weights by (scope, type, hash), for candidates; values are read one weight at a
    // time and kept only for weights that have a partner candidate.
    let mut by_hash: HashMap<(usize, i32, u64), Vec<usize>> = HashMap::new();
    let mut hashes: Vec<Option<(u64, Option<u64>)>> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        if shapes[&shape_key(w)] < 2 {
            hashes.push(None);
            continue;
        }
        let weight = w.first().weight;
        let f = fingerprint(&weight, dir)?;
        by_hash
            .entry((weight.scope, weight.tensor.data_type(), f.hash))
            .or_default()
            .push(i);
        hashes.push(Some((f.hash, f.transposed_hash)));
    }
    let key = |i: usize, hash: u64| {
        let weight = weights[i].first().weight;
        (weight.scope, weight.tensor.data_type(), hash)
    };
    // target[j] = (i, transposed): weight j folds into weight i.
    let mut target: Vec<Option<(usize, bool)>> = vec![None; weights.len()];
    for i in 0..weights.len() {
        if target[i].is_some() {
            continue;
        }
        let Some((hash, transposed_hash)) = hashes[i] else {
            continue;
        };
        let mut candidates: Vec<(usize, bool)> = Vec::new();
        if let Some(same) = by_hash.get(&key(i, hash)) {
            candidates.extend(same.iter().filter(|&&j| j > i).map(|&j| (j, false)));
        }
        if let Some(others) = transposed_hash.and_then(|t| by_hash.get(&key(i, t))) {
            candidates.extend(others.iter().filter(|&&j| j > i).map(|&j| (j, true)));
        }
        if candidates.is_empty() {
            continue;
        }
        let a = weights[i].first().weight;
        let a_values = fingerprint(&a, dir)?.values;
        for (j, transposed) in candidates {
            if target[j].is_some() {
                continue;
            }
            let b = weights[j].first().weight;
            let b_values = fingerprint(&b, dir)?.values;
            let related = if transposed {
                let &[rows, cols] = a.tensor.dims.as_slice() else {
                    continue;
                };
                b.tensor.dims == [cols, rows]
                    && is_transpose(&a_values, &b_values, rows as usize, cols as usize)
            } else {
                b.tensor.dims == a.tensor.dims
                    && a_values
                        .iter()
                        .zip(&b_values)
                        .all(|(x, y)| x.to_bits() == y.to_bits())
            };
            if related {
                let relation = if transposed {
                    Relation::Transposed
                } else {
                    Relation::Identical
                };
                relations.graph.add_edge(nodes[i], nodes[j], relation);
                target[j] = Some((i, transposed));
            }
        }
    }
    if share {
        let mut kept: Vec<Option<WeightPlan>> =
            std::mem::take(weights).into_iter().map(Some).collect();
        for j in 0..kept.len() {
            if let Some((i, transposed)) = target[j] {
                let tied = kept[j].take().expect("each weight folds once");
                let weight = tied.first().weight;
                kept[i]
                    .as_mut()
                    .expect("targets are never folded")
                    .ties
                    .push(Tie {
                        weight,
                        transposed,
                        patches: tied.patches,
                    });
            }
        }
        *weights = kept.into_iter().flatten().collect();
    }
    Ok(relations)
}
