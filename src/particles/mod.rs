//! The particle math: plain slices in, plain values out; nothing here knows ONNX.
//!
//! A weight matrix is decomposed into codebooks of particle values and one narrow
//! particle index per weight ([`decompose`]); indices are bit-packed by [`pack`].

pub mod codebook;
pub mod kmeans1d;
pub mod pack;

use rayon::prelude::*;

pub use codebook::{Codebook, fit_codebook};

/// How many weights share one codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// One codebook for the whole tensor.
    Tensor,
    /// One codebook per output channel.
    Channel,
}

/// A row-major matrix of weights, `values.len() == rows * cols`.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    /// The weights, row after row.
    pub values: &'a [f64],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// The axis (0: rows, 1: columns) along which output channels run: with
    /// `channel_axis == 1` channel `j` is column `j`.
    pub channel_axis: usize,
}

impl Matrix<'_> {
    /// The codebook that serves position `pos` at `granularity`.
    pub fn codebook_of(&self, pos: usize, granularity: Granularity) -> usize {
        match (granularity, self.channel_axis) {
            (Granularity::Tensor, _) => 0,
            (Granularity::Channel, 0) => pos / self.cols,
            (Granularity::Channel, _) => pos % self.cols,
        }
    }

    fn channels(&self) -> usize {
        if self.channel_axis == 0 {
            self.rows
        } else {
            self.cols
        }
    }

    /// The positions of channel `c`'s weights, in row-major order.
    fn channel_positions(&self, c: usize) -> Box<dyn Iterator<Item = usize> + '_> {
        if self.channel_axis == 0 {
            Box::new(c * self.cols..(c + 1) * self.cols)
        } else {
            Box::new((0..self.rows).map(move |r| r * self.cols + c))
        }
    }
}

/// A matrix decomposed into particles.
#[derive(Clone, Debug, PartialEq)]
pub struct Decomposition {
    /// The codebooks: one, or one per channel. All have the same length (at most
    /// `2^bits`); a channel with fewer distinct values repeats its last particle.
    pub codebooks: Vec<Vec<f64>>,
    /// The particle index of every weight, row-major like the input.
    pub index: Vec<u8>,
    /// Upper bound on the squared error above the exact optimum (histogram binning).
    pub sse_bound: f64,
}

impl Decomposition {
    /// Number of particles in each codebook.
    pub fn particles_per_codebook(&self) -> usize {
        self.codebooks[0].len()
    }

    /// The weights as the particles rebuild them, with every particle first passed
    /// through `round` (the rounding to the stored element type).
    pub fn decoded(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        round: impl Fn(f64) -> f64,
    ) -> Vec<f64> {
        let books: Vec<Vec<f64>> = self
            .codebooks
            .iter()
            .map(|b| b.iter().map(|&p| round(p)).collect())
            .collect();
        self.index
            .iter()
            .enumerate()
            .map(|(pos, &i)| books[matrix.codebook_of(pos, granularity)][i as usize])
            .collect()
    }
}

/// Decomposes `matrix` into codebooks of `2^bits` particles at `granularity`, each by
/// exact optimal 1-D k-means ([`fit_codebook`]); channels are fitted in parallel.
pub fn decompose(matrix: &Matrix, granularity: Granularity, bits: u32) -> Decomposition {
    let k = 1usize << bits;
    match granularity {
        Granularity::Tensor => {
            let book = fit_codebook(matrix.values, k);
            Decomposition {
                codebooks: vec![book.particles],
                index: book.index,
                sse_bound: book.sse_bound,
            }
        }
        Granularity::Channel => {
            let books: Vec<Codebook> = (0..matrix.channels())
                .into_par_iter()
                .map(|c| {
                    let values: Vec<f64> = matrix
                        .channel_positions(c)
                        .map(|p| matrix.values[p])
                        .collect();
                    fit_codebook(&values, k)
                })
                .collect();
            let width = books.iter().map(|b| b.particles.len()).max().unwrap_or(1);
            let mut index = vec![0u8; matrix.values.len()];
            for (c, book) in books.iter().enumerate() {
                for (p, &i) in matrix.channel_positions(c).zip(&book.index) {
                    index[p] = i;
                }
            }
            let sse_bound = books.iter().map(|b| b.sse_bound).sum();
            let codebooks = books
                .into_iter()
                .map(|b| {
                    let last = *b.particles.last().expect("a codebook has a particle");
                    let mut particles = b.particles;
                    particles.resize(width, last);
                    particles
                })
                .collect();
            Decomposition {
                codebooks,
                index,
                sse_bound,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_codebooks_follow_the_channel_axis() {
        // 2 x 3, columns are channels: each column has two distinct values.
        let values = [1.0, 10.0, -5.0, 2.0, 20.0, -6.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 3,
            channel_axis: 1,
        };
        let d = decompose(&m, Granularity::Channel, 1);
        assert_eq!(
            d.codebooks,
            vec![vec![1.0, 2.0], vec![10.0, 20.0], vec![-6.0, -5.0]]
        );
        assert_eq!(d.index, vec![0, 0, 1, 1, 1, 0]);
        assert_eq!(d.decoded(&m, Granularity::Channel, |x| x), values.to_vec());
    }

    #[test]
    fn per_row_channels_and_padding() {
        // Rows are channels; row 0 has one distinct value, row 1 three.
        let values = [3.0, 3.0, 3.0, 0.0, 1.0, 9.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 3,
            channel_axis: 0,
        };
        let d = decompose(&m, Granularity::Channel, 2);
        assert_eq!(d.codebooks, vec![vec![3.0, 3.0, 3.0], vec![0.0, 1.0, 9.0]]);
        assert_eq!(d.index, vec![0, 0, 0, 0, 1, 2]);
        assert_eq!(d.decoded(&m, Granularity::Channel, |x| x), values.to_vec());
    }

    #[test]
    fn one_tensor_codebook() {
        let values = [0.0, 0.1, 5.0, 5.1];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 2,
            channel_axis: 1,
        };
        let d = decompose(&m, Granularity::Tensor, 1);
        assert_eq!(d.codebooks.len(), 1);
        assert!((d.codebooks[0][0] - 0.05).abs() < 1e-12);
        assert!((d.codebooks[0][1] - 5.05).abs() < 1e-12);
        assert_eq!(d.index, vec![0, 0, 1, 1]);
    }
}
