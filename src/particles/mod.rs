//! The particle math: plain slices in, plain values out; nothing here knows ONNX.
//!
//! A weight matrix is decomposed into codebooks of particle values and one narrow
//! particle index per weight ([`decompose`]); indices are bit-packed by [`pack`].

pub mod codebook;
pub mod compensate;
pub mod grid;
pub mod kmeans1d;
pub mod lloyd1d;
pub mod pack;
pub mod scaled;
pub mod subspace;
pub mod vector;

use rayon::prelude::*;

pub use codebook::{Codebook, CodebookFit, distinct_count, fit_codebook, fit_codebook_by};

/// How many weights share one codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One codebook for the whole tensor.
    Tensor,
    /// One codebook per output channel.
    Channel,
    /// One codebook per block of this many consecutive inputs of one output channel.
    Block(usize),
}

impl std::fmt::Display for Granularity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Granularity::Tensor => write!(f, "tensor"),
            Granularity::Channel => write!(f, "channel"),
            Granularity::Block(g) => write!(f, "block:{g}"),
        }
    }
}

impl serde::Serialize for Granularity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
    /// `channel_axis == 1` channel `j` is column `j` and inputs are rows.
    pub channel_axis: usize,
}

impl Matrix<'_> {
    /// Number of output channels and of inputs per channel.
    pub fn channels_and_inputs(&self) -> (usize, usize) {
        if self.channel_axis == 0 {
            (self.rows, self.cols)
        } else {
            (self.cols, self.rows)
        }
    }

    /// Number of input blocks per channel at `granularity` (1 unless per block).
    pub fn blocks(&self, granularity: Granularity) -> usize {
        match granularity {
            Granularity::Block(g) => self.channels_and_inputs().1.div_ceil(g.max(1)),
            _ => 1,
        }
    }

    /// Number of codebooks at `granularity`.
    pub fn codebooks(&self, granularity: Granularity) -> usize {
        match granularity {
            Granularity::Tensor => 1,
            _ => self.channels_and_inputs().0 * self.blocks(granularity),
        }
    }

    /// Channel and input number of position `pos`.
    fn channel_and_input(&self, pos: usize) -> (usize, usize) {
        let (row, col) = (pos / self.cols, pos % self.cols);
        if self.channel_axis == 0 {
            (row, col)
        } else {
            (col, row)
        }
    }

    fn position(&self, channel: usize, input: usize) -> usize {
        if self.channel_axis == 0 {
            channel * self.cols + input
        } else {
            input * self.cols + channel
        }
    }

    fn block_size(&self, granularity: Granularity) -> usize {
        match granularity {
            Granularity::Block(g) => g.max(1),
            _ => self.channels_and_inputs().1.max(1),
        }
    }

    /// The codebook that serves position `pos` at `granularity`. Codebooks are
    /// numbered `channel * blocks + block`.
    pub fn codebook_of(&self, pos: usize, granularity: Granularity) -> usize {
        if granularity == Granularity::Tensor {
            return 0;
        }
        let (channel, input) = self.channel_and_input(pos);
        channel * self.blocks(granularity) + input / self.block_size(granularity)
    }

    /// The most distinct values any codebook at `granularity` would have to hold.
    pub fn max_distinct(&self, granularity: Granularity) -> usize {
        (0..self.codebooks(granularity))
            .into_par_iter()
            .map(|id| {
                let values: Vec<f64> = self
                    .positions(granularity, id)
                    .iter()
                    .map(|&p| self.values[p])
                    .collect();
                distinct_count(&values)
            })
            .max()
            .unwrap_or(0)
    }

    /// The positions codebook `id` serves, in row-major order.
    pub fn positions(&self, granularity: Granularity, id: usize) -> Vec<usize> {
        if granularity == Granularity::Tensor {
            return (0..self.values.len()).collect();
        }
        let blocks = self.blocks(granularity);
        let size = self.block_size(granularity);
        let (channel, block) = (id / blocks, id % blocks);
        let inputs = self.channels_and_inputs().1;
        (block * size..((block + 1) * size).min(inputs))
            .map(|input| self.position(channel, input))
            .collect()
    }
}

/// A matrix decomposed into particles.
#[derive(Clone, Debug, PartialEq)]
pub struct Decomposition {
    /// The codebooks, numbered as [`Matrix::codebook_of`]. All have the same length
    /// (at most `2^bits`); one with fewer distinct values repeats its last particle.
    pub codebooks: Vec<Vec<f64>>,
    /// The particle index of every weight, row-major like the input.
    pub index: Vec<u8>,
    /// Upper bound on the squared error above the exact optimum (histogram binning).
    pub sse_bound: f64,
    /// Positions (ascending) whose weights keep their exact value, with that value;
    /// the codebooks were fitted without them and their index is 0.
    pub outliers: Vec<(usize, f64)>,
}

impl Decomposition {
    /// Number of particles in each codebook.
    pub fn particles_per_codebook(&self) -> usize {
        self.codebooks[0].len()
    }

    /// Squared error of the rebuilt weights against `matrix`, every particle first
    /// passed through `round`; computed without materializing the rebuilt matrix.
    pub fn squared_error(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        round: impl Fn(f64) -> f64,
    ) -> f64 {
        let books: Vec<Vec<f64>> = self
            .codebooks
            .iter()
            .map(|b| b.iter().map(|&p| round(p)).collect())
            .collect();
        let mut outliers = self.outliers.iter().peekable();
        let mut sse = 0.0;
        for (pos, (&i, &v)) in self.index.iter().zip(matrix.values).enumerate() {
            let decoded = match outliers.peek() {
                Some(&&(p, exact)) if p == pos => {
                    outliers.next();
                    exact
                }
                _ => books[matrix.codebook_of(pos, granularity)][i as usize],
            };
            sse += (v - decoded) * (v - decoded);
        }
        sse
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
        let mut decoded: Vec<f64> = self
            .index
            .iter()
            .enumerate()
            .map(|(pos, &i)| books[matrix.codebook_of(pos, granularity)][i as usize])
            .collect();
        for &(p, value) in &self.outliers {
            decoded[p] = value;
        }
        decoded
    }
}

/// Decomposes `matrix` into codebooks of `2^bits` particles at `granularity`, each by
/// exact optimal 1-D k-means ([`fit_codebook`]); codebooks are fitted in parallel.
pub fn decompose(matrix: &Matrix, granularity: Granularity, bits: u32) -> Decomposition {
    decompose_by(matrix, granularity, bits, CodebookFit::Exact)
}

/// [`decompose`] with every codebook fitted by `fit` ([`fit_codebook_by`]).
pub fn decompose_by(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    fit: CodebookFit,
) -> Decomposition {
    fit_codebooks(matrix, granularity, bits, fit, &[])
}

/// Indexes `matrix` into the given `codebooks` (each ascending, numbered as
/// [`Matrix::codebook_of`]): every weight gets its codebook's nearest particle. Used
/// when several weights share codebooks fitted on all of them.
pub fn assign(matrix: &Matrix, granularity: Granularity, codebooks: &[Vec<f64>]) -> Decomposition {
    let index = matrix
        .values
        .iter()
        .enumerate()
        .map(|(pos, &v)| {
            let book = &codebooks[matrix.codebook_of(pos, granularity)];
            let above = book.partition_point(|&p| p < v).min(book.len() - 1);
            let nearer_below = above > 0 && v - book[above - 1] <= book[above] - v;
            (if nearer_below { above - 1 } else { above }) as u8
        })
        .collect();
    Decomposition {
        codebooks: codebooks.to_vec(),
        index,
        sse_bound: 0.0,
        outliers: Vec::new(),
    }
}

/// Like [`decompose_by`], but the `fraction` of weights the codebooks serve worst keep
/// their exact value: after a first fit, those weights are set aside as outliers and
/// the codebooks are fitted again on the others.
pub fn decompose_with_outliers(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    fraction: f64,
    fit: CodebookFit,
) -> Decomposition {
    let first = decompose_by(matrix, granularity, bits, fit);
    let count = ((fraction * matrix.values.len() as f64).round() as usize).min(matrix.values.len());
    if count == 0 {
        return first;
    }
    let decoded = first.decoded(matrix, granularity, |x| x);
    let error = |p: &usize| (matrix.values[*p] - decoded[*p]).abs();
    let mut order: Vec<usize> = (0..matrix.values.len()).collect();
    order.select_nth_unstable_by(count - 1, |a, b| {
        error(b).total_cmp(&error(a)).then(a.cmp(b))
    });
    let mut outliers = order[..count].to_vec();
    outliers.sort_unstable();
    let mut excluded = vec![false; matrix.values.len()];
    for &p in &outliers {
        excluded[p] = true;
    }
    Decomposition {
        outliers: outliers.iter().map(|&p| (p, matrix.values[p])).collect(),
        ..fit_codebooks(matrix, granularity, bits, fit, &excluded)
    }
}

/// Fits every codebook by `fit` on the positions it serves that are not `excluded`
/// (an empty slice excludes nothing); excluded positions get index 0.
fn fit_codebooks(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    fit: CodebookFit,
    excluded: &[bool],
) -> Decomposition {
    let k = 1usize << bits;
    if granularity == Granularity::Tensor && excluded.is_empty() {
        // One codebook over every weight: no positions to gather or scatter.
        let book = fit_codebook_by(matrix.values, k, fit);
        return Decomposition {
            codebooks: vec![book.particles],
            index: book.index,
            sse_bound: book.sse_bound,
            outliers: Vec::new(),
        };
    }
    // The positions a codebook serves, less the excluded ones; computed again to
    // scatter the indices rather than kept for every codebook.
    let served = |id: usize| {
        let mut positions = matrix.positions(granularity, id);
        if !excluded.is_empty() {
            positions.retain(|&p| !excluded[p]);
        }
        positions
    };
    let books: Vec<Codebook> = (0..matrix.codebooks(granularity))
        .into_par_iter()
        .map(|id| {
            let values: Vec<f64> = served(id).iter().map(|&p| matrix.values[p]).collect();
            fit_codebook_by(&values, k, fit)
        })
        .collect();
    let width = books.iter().map(|b| b.particles.len()).max().unwrap_or(1);
    let mut index = vec![0u8; matrix.values.len()];
    for (id, book) in books.iter().enumerate() {
        for (p, &i) in served(id).into_iter().zip(&book.index) {
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
        outliers: Vec::new(),
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
    fn blocks_of_inputs_per_channel() {
        // 4 x 2, columns are channels, blocks of 2 rows: codebooks (channel, block).
        let values = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0];
        let m = Matrix {
            values: &values,
            rows: 4,
            cols: 2,
            channel_axis: 1,
        };
        let g = Granularity::Block(2);
        assert_eq!(m.codebooks(g), 4);
        assert_eq!(m.positions(g, 1), vec![4, 6]);
        assert_eq!(m.codebook_of(6, g), 1);
        let d = decompose(&m, g, 1);
        assert_eq!(
            d.codebooks,
            vec![
                vec![1.0, 2.0],
                vec![3.0, 4.0],
                vec![10.0, 20.0],
                vec![30.0, 40.0]
            ]
        );
        assert_eq!(d.decoded(&m, g, |x| x), values.to_vec());
        // Rows are channels, blocks of 3 columns over 4: the last block is short.
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 4,
            channel_axis: 0,
        };
        let g = Granularity::Block(3);
        assert_eq!(m.codebooks(g), 4);
        assert_eq!(m.positions(g, 1), vec![3]);
        assert_eq!(m.positions(g, 2), vec![4, 5, 6]);
        assert_eq!(decompose(&m, g, 2).decoded(&m, g, |x| x), values.to_vec());
    }

    #[test]
    fn outliers_keep_their_value_and_leave_the_codebook() {
        // 1 bit: 9.0 gets a particle of its own, so the 0.1s are served worst; the
        // first of them becomes the outlier and the codebook is refitted without it.
        let values = [0.0, 0.1, 0.0, 0.1, 9.0, 0.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 3,
            channel_axis: 1,
        };
        let d = decompose_with_outliers(&m, Granularity::Tensor, 1, 1.0 / 6.0, CodebookFit::Exact);
        assert_eq!(d.outliers, vec![(1, 0.1)]);
        assert_eq!(d.codebooks.len(), 1);
        assert!((d.codebooks[0][0] - 0.025).abs() < 1e-12 && d.codebooks[0][1] == 9.0);
        let decoded = d.decoded(&m, Granularity::Tensor, |x| x);
        assert_eq!(decoded[1], 0.1);
        assert!((decoded[3] - 0.025).abs() < 1e-12);
    }

    #[test]
    fn assignment_picks_the_nearest_particle() {
        let values = [0.1, 0.6, 2.9, -4.0];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 2,
            channel_axis: 1,
        };
        let d = assign(&m, Granularity::Tensor, &[vec![0.0, 1.0, 3.0]]);
        assert_eq!(d.index, vec![0, 1, 2, 0]);
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
