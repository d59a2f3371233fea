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

use crate::config::Config;
use crate::error::Result;
use crate::graph::Constant;
use crate::onnx::tensor::float_values;
use crate::particles::{Granularity, Matrix, assign, decompose};
use crate::plan::{Plan, Tie, WeightPlan};

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

fn fingerprint(weight: &Constant, config: &Config) -> Result<Fingerprint> {
    let values = float_values(weight.tensor, config.external_dir.as_deref())?;
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

/// Finds identical and transposed weights among `plan`'s weights and, unless sharing
/// is off, folds each into the first weight it relates to as a [`Tie`]. Only weights of
/// the same scope and element type are related. Returns the relation graph (over the
/// weights as planned, before folding).
pub fn relate(plan: &mut Plan, config: &Config, share: bool) -> Result<RelationGraph> {
    let mut relations = RelationGraph::default();
    let nodes: Vec<NodeIndex> = plan
        .weights
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
    for w in &plan.weights {
        *shapes.entry(shape_key(w)).or_default() += 1;
    }
    // Weights by (scope, type, hash), for candidates; values are read one weight at a
    // time and kept only for weights that have a partner candidate.
    let mut by_hash: HashMap<(usize, i32, u64), Vec<usize>> = HashMap::new();
    let mut hashes: Vec<Option<(u64, Option<u64>)>> = Vec::with_capacity(plan.weights.len());
    for (i, w) in plan.weights.iter().enumerate() {
        if shapes[&shape_key(w)] < 2 {
            hashes.push(None);
            continue;
        }
        let weight = w.first().weight;
        let f = fingerprint(&weight, config)?;
        by_hash
            .entry((weight.scope, weight.tensor.data_type(), f.hash))
            .or_default()
            .push(i);
        hashes.push(Some((f.hash, f.transposed_hash)));
    }
    let key = |i: usize, hash: u64| {
        let weight = plan.weights[i].first().weight;
        (weight.scope, weight.tensor.data_type(), hash)
    };
    // target[j] = (i, transposed): weight j folds into weight i.
    let mut target: Vec<Option<(usize, bool)>> = vec![None; plan.weights.len()];
    for i in 0..plan.weights.len() {
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
        let a = plan.weights[i].first().weight;
        let a_values = fingerprint(&a, config)?.values;
        for (j, transposed) in candidates {
            if target[j].is_some() {
                continue;
            }
            let b = plan.weights[j].first().weight;
            let b_values = fingerprint(&b, config)?.values;
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
        let weights = std::mem::take(&mut plan.weights);
        let mut kept: Vec<Option<WeightPlan>> = weights.into_iter().map(Some).collect();
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
        plan.weights = kept.into_iter().flatten().collect();
    }
    Ok(relations)
}

/// Weights that read one joint codebook under `--share alike`.
#[derive(Clone, Debug)]
pub struct AlikeGroup {
    /// Positions in the plan's weights; the first stores the shared table.
    pub members: Vec<usize>,
    /// The joint codebooks, fitted on all members' values together.
    pub codebooks: Vec<Vec<f64>>,
    /// How much more squared error the joint codebooks leave than each member's own
    /// optimal codebooks, as a fraction (0.05: 5% more).
    pub extra_error: f64,
}

/// A member's values, matrix view and own optimal squared error.
struct Candidate {
    values: Vec<f64>,
    shape: [usize; 2],
    channel_axis: usize,
    own_error: f64,
}

impl Candidate {
    fn matrix(&self) -> Matrix<'_> {
        Matrix {
            values: &self.values,
            rows: self.shape[0],
            cols: self.shape[1],
            channel_axis: self.channel_axis,
        }
    }
}

/// Codebooks fitted on `members` together (same shape and channel axis): their
/// matrices stacked along the input axis, so channel `c` of the stack holds channel
/// `c` of every member.
fn joint_codebooks(members: &[&Candidate], granularity: Granularity, bits: u32) -> Vec<Vec<f64>> {
    let [rows, cols] = members[0].shape;
    let (values, stacked_rows, stacked_cols): (Vec<f64>, usize, usize) =
        if members[0].channel_axis == 1 {
            (
                members
                    .iter()
                    .flat_map(|m| m.values.iter().copied())
                    .collect(),
                rows * members.len(),
                cols,
            )
        } else {
            let values = (0..rows)
                .flat_map(|r| {
                    members
                        .iter()
                        .flat_map(move |m| m.values[r * cols..(r + 1) * cols].iter().copied())
                })
                .collect();
            (values, rows, cols * members.len())
        };
    let matrix = Matrix {
        values: &values,
        rows: stacked_rows,
        cols: stacked_cols,
        channel_axis: members[0].channel_axis,
    };
    decompose(&matrix, granularity, bits).codebooks
}

/// Extra error of `members` sharing codebooks fitted on all of them.
fn joint_cost(members: &[&Candidate], granularity: Granularity, bits: u32) -> (Vec<Vec<f64>>, f64) {
    let codebooks = joint_codebooks(members, granularity, bits);
    let joint: f64 = members
        .iter()
        .map(|m| {
            assign(&m.matrix(), granularity, &codebooks).squared_error(
                &m.matrix(),
                granularity,
                |x| x,
            )
        })
        .sum();
    let own: f64 = members.iter().map(|m| m.own_error).sum();
    let extra = if own > 0.0 {
        joint / own - 1.0
    } else if joint > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    (codebooks, extra)
}

/// Groups `plan`'s scalar-codebook weights whose joint codebooks cost at most
/// `tolerance` extra squared error (measured: each weight joins the group, among
/// those of its scope, type, shape, channel axis and granularity, whose joint fit
/// costs least, if within the tolerance). Adds an `alike` edge per member to the
/// relation graph. Weights that join no group are singletons (not returned).
pub fn alike_groups(
    plan: &Plan,
    config: &Config,
    tolerance: f64,
    relations: &mut RelationGraph,
) -> Result<Vec<AlikeGroup>> {
    let mut candidates: Vec<Candidate> = Vec::with_capacity(plan.weights.len());
    let mut groups: Vec<(Vec<usize>, Vec<Vec<f64>>, f64)> = Vec::new();
    let mut keys: Vec<(usize, i32, [usize; 2], usize, Granularity)> = Vec::new();
    for (i, w) in plan.weights.iter().enumerate() {
        let p = w.first();
        let granularity = w.granularity(config);
        let values = float_values(p.weight.tensor, config.external_dir.as_deref())?;
        let matrix = Matrix {
            values: &values,
            rows: p.shape[0],
            cols: p.shape[1],
            channel_axis: p.channel_axis,
        };
        let own_error =
            decompose(&matrix, granularity, config.bits).squared_error(&matrix, granularity, |x| x);
        candidates.push(Candidate {
            values,
            shape: p.shape,
            channel_axis: p.channel_axis,
            own_error,
        });
        let key = (
            p.weight.scope,
            p.weight.tensor.data_type(),
            p.shape,
            p.channel_axis,
            granularity,
        );
        keys.push(key);
        // Block codebooks would not line up across stacked weights; NaN cannot be fitted.
        let groupable = matches!(granularity, Granularity::Tensor | Granularity::Channel)
            && candidates[i].values.iter().all(|v| v.is_finite());
        let best = groups
            .iter()
            .enumerate()
            .filter(|(_, (members, _, _))| groupable && keys[members[0]] == key)
            .map(|(g, (members, _, _))| {
                let together: Vec<&Candidate> = members
                    .iter()
                    .chain([&i])
                    .map(|&m| &candidates[m])
                    .collect();
                (g, joint_cost(&together, granularity, config.bits))
            })
            .filter(|(_, (_, extra))| *extra <= tolerance)
            .min_by(|a, b| a.1.1.total_cmp(&b.1.1));
        match best {
            Some((g, (codebooks, extra))) => {
                groups[g].0.push(i);
                groups[g].1 = codebooks;
                groups[g].2 = extra;
            }
            None => groups.push((vec![i], Vec::new(), 0.0)),
        }
    }
    let index_of = |name: &str| {
        relations
            .graph
            .node_indices()
            .find(|&n| relations.graph[n].name == name)
    };
    let mut alike = Vec::new();
    let mut edges = Vec::new();
    for (members, codebooks, extra_error) in groups.into_iter().filter(|(m, _, _)| m.len() > 1) {
        let names: Vec<&str> = members
            .iter()
            .map(|&m| plan.weights[m].first().weight.name)
            .collect();
        for other in &names[1..] {
            if let (Some(a), Some(b)) = (index_of(names[0]), index_of(other)) {
                edges.push((a, b, extra_error));
            }
        }
        alike.push(AlikeGroup {
            members,
            codebooks,
            extra_error,
        });
    }
    for (a, b, extra_error) in edges {
        relations
            .graph
            .add_edge(a, b, Relation::Alike { extra_error });
    }
    Ok(alike)
}
