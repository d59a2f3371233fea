//! Vector particles and additive stages.
//!
//! `dim` consecutive weights along the input axis of one output channel form a vector;
//! one codebook of `2^bits` vectors serves the whole matrix and each vector stores the
//! index of its particle. With several stages, each stage is fitted to the residual the
//! previous stages leave, and the weight is the sum of one particle per stage.
//! Vectors are fitted by k-means++ seeding and Lloyd iterations (seeded, so runs
//! repeat); scalar stages (`dim == 1`) use the exact 1-D k-means instead.

use rayon::prelude::*;

use super::Matrix;
use super::codebook::fit_codebook;
use crate::rng::Rng;

/// Most Lloyd iterations per stage.
pub const MAX_ITERATIONS: usize = 30;

/// One stage: a codebook of vectors and the index of every vector into it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// `particles x dim` values, particle after particle.
    pub codebook: Vec<f64>,
    /// For every vector (in [`vector_order`]), its particle.
    pub index: Vec<u8>,
}

/// A matrix decomposed into vector particles over one or more additive stages.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorDecomposition {
    /// Weights per vector.
    pub dim: usize,
    /// The stages, in fitting order.
    pub stages: Vec<Stage>,
}

impl VectorDecomposition {
    /// Number of particles in each stage's codebook.
    pub fn particles(&self) -> usize {
        self.stages[0].codebook.len() / self.dim
    }

    /// The weights as the stages rebuild them (row-major), every particle value first
    /// passed through `round`.
    pub fn decoded(&self, matrix: &Matrix, round: impl Fn(f64) -> f64) -> Vec<f64> {
        let mut vectors = vec![0.0; matrix.values.len()];
        for stage in &self.stages {
            for (v, &i) in stage.index.iter().enumerate() {
                let particle = &stage.codebook[i as usize * self.dim..(i as usize + 1) * self.dim];
                for (d, &p) in particle.iter().enumerate() {
                    vectors[v * self.dim + d] += round(p);
                }
            }
        }
        let mut out = vec![0.0; matrix.values.len()];
        for (n, p) in vector_order(matrix, self.dim).into_iter().enumerate() {
            out[p] = vectors[n];
        }
        out
    }
}

/// Positions of the matrix in vector order: vector after vector, `dim` weights each.
/// With channels along columns (`[inputs, channels]`) vector `(r, j)` is rows
/// `r*dim..(r+1)*dim` of column `j`, vectors ordered `[inputs/dim, channels]`; with
/// channels along rows it is columns `r*dim..` of row `j`, ordered `[channels,
/// inputs/dim]`. `dim` must divide the number of inputs.
pub fn vector_order(matrix: &Matrix, dim: usize) -> Vec<usize> {
    let (rows, cols) = (matrix.rows, matrix.cols);
    if matrix.channel_axis == 0 {
        (0..rows * cols).collect()
    } else {
        (0..rows / dim)
            .flat_map(|r| {
                (0..cols).flat_map(move |j| (0..dim).map(move |d| (r * dim + d) * cols + j))
            })
            .collect()
    }
}

/// Decomposes `matrix` into `stages` additive stages of `2^bits` particles of `dim`
/// weights each. `dim` must divide the number of inputs per channel.
pub fn decompose_vectors(
    matrix: &Matrix,
    dim: usize,
    bits: u32,
    stages: usize,
    seed: u64,
) -> VectorDecomposition {
    let k = 1usize << bits;
    let mut residual: Vec<f64> = vector_order(matrix, dim)
        .iter()
        .map(|&p| matrix.values[p])
        .collect();
    let mut fitted = Vec::with_capacity(stages);
    for s in 0..stages {
        let stage = if dim == 1 {
            let book = fit_codebook(&residual, k);
            Stage {
                codebook: book.particles,
                index: book.index,
            }
        } else {
            fit_vectors(&residual, dim, k, seed.wrapping_add(s as u64))
        };
        for (v, &i) in stage.index.iter().enumerate() {
            for d in 0..dim {
                residual[v * dim + d] -= stage.codebook[i as usize * dim + d];
            }
        }
        fitted.push(stage);
    }
    VectorDecomposition {
        dim,
        stages: fitted,
    }
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The nearest particle (lowest index on ties) of `vector` and its squared distance.
fn nearest(codebook: &[f64], dim: usize, vector: &[f64]) -> (usize, f64) {
    codebook
        .chunks_exact(dim)
        .map(|p| distance(p, vector))
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |best, (i, d)| if d < best.1 { (i, d) } else { best },
        )
}

/// k-means of the `dim`-vectors in `points` into at most `k` particles: k-means++
/// seeding, then Lloyd iterations until no assignment changes (at most
/// [`MAX_ITERATIONS`]). A particle left without vectors keeps its position.
pub fn fit_vectors(points: &[f64], dim: usize, k: usize, seed: u64) -> Stage {
    let n = points.len() / dim;
    let vector = |i: usize| &points[i * dim..(i + 1) * dim];
    let k = k.min(n).max(1);
    let mut rng = Rng::new(seed);
    // k-means++: each next particle is a vector drawn with probability proportional to
    // its squared distance from the nearest particle so far.
    let mut codebook: Vec<f64> = vector(rng.below(n as i64) as usize).to_vec();
    let mut closest: Vec<f64> = (0..n).map(|i| distance(vector(i), &codebook)).collect();
    while codebook.len() < k * dim {
        let total: f64 = closest.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = rng.uniform() * total;
        let pick = closest.iter().position(|&d| {
            target -= d;
            target < 0.0
        });
        let chosen = vector(pick.unwrap_or(n - 1)).to_vec();
        closest
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, c)| *c = c.min(distance(vector(i), &chosen)));
        codebook.extend(chosen);
    }
    let particles = codebook.len() / dim;
    let mut index = vec![0usize; n];
    for iteration in 0..MAX_ITERATIONS {
        let assigned: Vec<usize> = (0..n)
            .into_par_iter()
            .map(|i| nearest(&codebook, dim, vector(i)).0)
            .collect();
        if iteration > 0 && assigned == index {
            break;
        }
        index = assigned;
        let mut sums = vec![0.0; particles * dim];
        let mut counts = vec![0usize; particles];
        for (i, &p) in index.iter().enumerate() {
            counts[p] += 1;
            for (s, v) in sums[p * dim..(p + 1) * dim].iter_mut().zip(vector(i)) {
                *s += v;
            }
        }
        for p in 0..particles {
            if counts[p] > 0 {
                for d in 0..dim {
                    codebook[p * dim + d] = sums[p * dim + d] / counts[p] as f64;
                }
            }
        }
    }
    let index = (0..n)
        .into_par_iter()
        .map(|i| nearest(&codebook, dim, vector(i)).0 as u8)
        .collect();
    Stage { codebook, index }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_run_along_the_input_axis() {
        let values: Vec<f64> = (0..8).map(f64::from).collect();
        // [4 inputs, 2 channels]: vector (r, j) is rows 2r, 2r+1 of column j.
        let m = Matrix {
            values: &values,
            rows: 4,
            cols: 2,
            channel_axis: 1,
        };
        assert_eq!(vector_order(&m, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
        // [2 channels, 4 inputs]: vectors are contiguous.
        let m = Matrix {
            channel_axis: 0,
            rows: 2,
            cols: 4,
            ..m
        };
        assert_eq!(vector_order(&m, 2), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn clustered_vectors_are_found_exactly() {
        // Three well separated 2-D points, each repeated: 2 bits hold them exactly.
        let centers = [[0.0, 0.0], [5.0, 1.0], [-3.0, 4.0]];
        let points: Vec<f64> = (0..30).flat_map(|i| centers[i % 3]).collect();
        let stage = fit_vectors(&points, 2, 4, 7);
        for (i, &p) in stage.index.iter().enumerate() {
            let particle = &stage.codebook[p as usize * 2..p as usize * 2 + 2];
            assert_eq!(particle, &centers[i % 3][..]);
        }
    }

    #[test]
    fn stages_fit_the_residual() {
        let values: Vec<f64> = crate::builder::pseudo_random(64 * 8, 3);
        let m = Matrix {
            values: &values,
            rows: 64,
            cols: 8,
            channel_axis: 1,
        };
        let error = |d: &VectorDecomposition| {
            let decoded = d.decoded(&m, |x| x);
            values
                .iter()
                .zip(&decoded)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
        };
        let one = decompose_vectors(&m, 2, 4, 1, 0);
        let two = decompose_vectors(&m, 2, 4, 2, 0);
        assert_eq!(two.stages.len(), 2);
        assert!(
            error(&two) < 0.5 * error(&one),
            "{} vs {}",
            error(&two),
            error(&one)
        );
        // Same seed, same result.
        assert_eq!(decompose_vectors(&m, 2, 4, 2, 0), two);
    }

    #[test]
    fn scalar_stages_use_exact_kmeans() {
        let values = [0.0, 1.0, 10.0, 11.0];
        let m = Matrix {
            values: &values,
            rows: 4,
            cols: 1,
            channel_axis: 1,
        };
        let d = decompose_vectors(&m, 1, 1, 2, 0);
        assert_eq!(d.stages[0].codebook, vec![0.5, 10.5]);
        assert_eq!(d.decoded(&m, |x| x), values.to_vec());
    }
}
