//! Alike weights: weights of one shape whose codebooks, fitted on all of them
//! together, cost at most a given fraction of extra squared error, read one shared
//! codebook initializer, each with its own index (`--share alike`).

use super::WeightPlan;
use super::relation::{Relation, RelationGraph};
use crate::config::Config;
use crate::error::Result;
use crate::onnx::tensor::float_values;
use crate::particles::{Granularity, Matrix, assign, decompose};

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

/// Groups the planned scalar-codebook `weights` whose joint codebooks cost at most
/// `config.alike_error` extra squared error (measured: each weight joins the group, among
/// those of its scope, type, shape, channel axis and granularity, whose joint fit
/// costs least, if within the tolerance). Adds an `alike` edge per member to the
/// relation graph. Weights that join no group are singletons (not returned).
pub fn alike_groups(
    weights: &[WeightPlan],
    config: &Config,
    relations: &mut RelationGraph,
) -> Result<Vec<AlikeGroup>> {
    let tolerance = config.alike_error;
    let mut candidates: Vec<Candidate> = Vec::with_capacity(weights.len());
    let mut groups: Vec<(Vec<usize>, Vec<Vec<f64>>, f64)> = Vec::new();
    let mut keys: Vec<(usize, i32, [usize; 2], usize, Granularity)> = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let p = w.first();
        let granularity = w.setting.granularity;
        let values = float_values(p.weight.tensor, config.external_dir.as_deref())?;
        let matrix = Matrix {
            values: &values,
            rows: p.shape[0],
            cols: p.shape[1],
            channel_axis: p.channel_axis,
        };
        let own_error = decompose(&matrix, granularity, w.setting.bits).squared_error(
            &matrix,
            granularity,
            |x| x,
        );
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
                (g, joint_cost(&together, granularity, w.setting.bits))
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
        let names: Vec<&str> = members.iter().map(|&m| weights[m].name()).collect();
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
