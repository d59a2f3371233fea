//! Error-compensating rounding: codebooks tuned to a weight's output on calibration data.
//!
//! On calibration rows `X` a weight computes `X W`; replacing `W` by the decoded `Ŵ`
//! costs `||X (W - Ŵ)||² = Σ_channels (w - ŵ)ᵀ H (w - ŵ)` with `H = XᵀX` over the
//! weight's input axis ([`output_error`]). [`compensate`] lowers that cost in two steps:
//!
//! 1. **Rounding with feedback** (GPTQ/OBQ with codebooks, as in GPTVQ): inputs are
//!    rounded in order `0..N`, every weight to its codebook's nearest particle, and the
//!    inputs not yet rounded absorb the errors so far. With the damped `H = R Rᵀ` (`R`
//!    upper triangular), input `i` is rounded from the target
//!    `w_i + Σ_{k<i} R[k,i] / R[i,i] · (w_k - q_k)`, the value that would cancel the
//!    earlier errors in the output; this is GPTQ's update written with the Cholesky factor
//!    of `H` instead of that of `H⁻¹` (Babai's nearest plane), so no inverse is formed.
//! 2. **Refit**: with the assignment fixed, every codebook's values move to the exact
//!    minimum of the output error over them (a `K x K` linear system), one codebook after
//!    another, so the output error never rises.
//!
//! Rounding again with the refitted codebooks and refitting again is a further round;
//! [`compensate`] runs a few and keeps the best.

mod dense;
mod refit;
#[cfg(test)]
mod tests;

use rayon::prelude::*;

use super::{Decomposition, Granularity, Matrix, assign, decompose};
use dense::{axpy, cholesky, hessian_times};
use refit::refit;

/// Inputs rounded together before their errors reach the later inputs (GPTQ's lazy
/// batch): the batch's errors stay in cache while every later input reads them.
const BATCH: usize = 64;

/// Damping tries after the requested one, each ten times larger, before falling back
/// to nearest rounding.
const DAMPING_TRIES: usize = 8;

/// Decomposes `matrix` into `2^bits` particles per codebook at `granularity`, rounded
/// and refitted against the calibration output in up to [`ROUNDS`] rounds.
///
/// `hessian` is the symmetric `N x N` (`N` = inputs per channel) row-major sum of
/// `x xᵀ` over calibration rows `x` of the weight's input; `damping` (e.g. 0.01) is the
/// fraction of its mean diagonal added to the diagonal for the rounding. An input whose
/// diagonal is zero never reaches the output: its weights keep nearest rounding. If the
/// damped `H` is not positive definite the damping grows tenfold until it is; an `H`
/// with a non-finite entry, or one no damping rescues, gives nearest rounding of the
/// weight-space codebooks.
///
/// The codebooks start as [`decompose`]'s. A round rounds every weight with feedback and
/// refits the codebooks; the next round rounds again with the refitted codebooks. The
/// result is the round with the least output error. `sse_bound` is 0 (the result does
/// not aim at the weight-space optimum).
///
/// # Panics
/// If `hessian.len() != N * N`.
pub fn compensate(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    hessian: &[f64],
    damping: f64,
) -> Decomposition {
    compensate_in_rounds(matrix, granularity, bits, hessian, damping, ROUNDS)
}

/// Rounds of rounding and refit [`compensate`] runs at most. On synthetic minilm-shaped
/// weights (`benches/compensate.rs`) rounds two to four lowered the output error of
/// per-channel and per-block codebooks by a further 10-30%; each round costs about as
/// much again as the first.
pub const ROUNDS: usize = 4;

/// A round is followed by another only if its refit lowered the output error by at
/// least this fraction: re-rounding can only exploit particles that moved. (A tensor
/// codebook's refit lowered it by under 0.5% in the same measurement, so it gets one
/// round.)
const ROUND_GAIN: f64 = 0.01;

/// [`compensate`] with at most `rounds` (at least one) rounds.
///
/// # Panics
/// If `hessian.len() != N * N`.
pub fn compensate_in_rounds(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    hessian: &[f64],
    damping: f64,
    rounds: usize,
) -> Decomposition {
    Hessian::new(hessian.to_vec(), damping).decompose(matrix, granularity, bits, rounds)
}

/// A weight's `H = X^T X` with the rounding feedback of its damped form, factored once
/// for every setting fitted against it.
pub struct Hessian {
    values: Vec<f64>,
    inputs: usize,
    feedback: Option<Feedback>,
}

impl Hessian {
    /// Factors the symmetric row-major `values` (`N x N`) damped by `damping`, as
    /// [`compensate`] describes.
    ///
    /// # Panics
    /// If `values.len()` is not a square.
    pub fn new(values: Vec<f64>, damping: f64) -> Self {
        let inputs = (values.len() as f64).sqrt().round() as usize;
        assert_eq!(inputs * inputs, values.len(), "hessian must be square");
        let feedback = Feedback::new(&values, inputs, damping);
        Hessian {
            values,
            inputs,
            feedback,
        }
    }

    /// `N`, the inputs per channel of the weights it fits.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// [`compensate_in_rounds`] with this factored `H`.
    ///
    /// # Panics
    /// If `matrix` does not have [`inputs`](Self::inputs) inputs per channel.
    pub fn decompose(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        bits: u32,
        rounds: usize,
    ) -> Decomposition {
        let layout = Layout::new(matrix, granularity);
        let n = layout.inputs;
        assert_eq!(self.inputs, n, "hessian must be {n} x {n}");
        let start = decompose(matrix, granularity, bits);
        if matrix.values.is_empty() {
            return start;
        }
        let Some(feedback) = &self.feedback else {
            return assign(matrix, granularity, &start.codebooks);
        };
        let hessian = &self.values;
        let weights = inputs_major(matrix, matrix.values);
        let mut books = start.codebooks;
        let mut best: Option<(f64, Vec<Vec<f64>>, Vec<u8>)> = None;
        for _ in 0..rounds.max(1) {
            let mut index = feedback.round(&layout, &weights, &books);
            let (before, after) = refit(&layout, &weights, hessian, &mut books, &mut index);
            if best.as_ref().is_none_or(|(error, _, _)| after < *error) {
                best = Some((after, books.clone(), index));
            }
            if after > before * (1.0 - ROUND_GAIN) {
                break;
            }
        }
        let (_, codebooks, index) = best.expect("at least one round");
        Decomposition {
            codebooks,
            index: layout.matrix_order(matrix, &index),
            sse_bound: 0.0,
            outliers: Vec::new(),
        }
    }

    /// Rounds `matrix` with error feedback into the fixed `codebooks` (each ascending,
    /// numbered as [`Matrix::codebook_of`]), without refitting them: GPTQ on given
    /// grids. Nearest rounding when `H` gives no feedback (see [`compensate`]).
    ///
    /// # Panics
    /// If `matrix` does not have [`inputs`](Self::inputs) inputs per channel.
    pub fn round_into(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        codebooks: &[Vec<f64>],
    ) -> Decomposition {
        let layout = Layout::new(matrix, granularity);
        assert_eq!(self.inputs, layout.inputs, "hessian must match the inputs");
        let Some(feedback) = self.feedback.as_ref().filter(|_| !matrix.values.is_empty()) else {
            return assign(matrix, granularity, codebooks);
        };
        let weights = inputs_major(matrix, matrix.values);
        let index = feedback.round(&layout, &weights, codebooks);
        Decomposition {
            codebooks: codebooks.to_vec(),
            index: layout.matrix_order(matrix, &index),
            sse_bound: 0.0,
            outliers: Vec::new(),
        }
    }
}

/// The calibration output's squared error `Σ_channels (w - ŵ)ᵀ H (w - ŵ)` of the
/// `decoded` weights (row-major like `matrix.values`), with `hessian` as in
/// [`compensate`].
pub fn output_error(matrix: &Matrix, decoded: &[f64], hessian: &[f64]) -> f64 {
    let (m, n) = matrix.channels_and_inputs();
    let diff: Vec<f64> = matrix
        .values
        .iter()
        .zip(decoded)
        .map(|(w, d)| w - d)
        .collect();
    let errors = inputs_major(matrix, &diff);
    let product = hessian_times(hessian, n, &errors, m);
    errors.iter().zip(&product).map(|(e, p)| e * p).sum()
}

/// The values of `matrix`'s shape laid out input after input (`N x M`, channels
/// contiguous), whatever the channel axis.
fn inputs_major(matrix: &Matrix, values: &[f64]) -> Vec<f64> {
    if matrix.channel_axis == 1 {
        return values.to_vec();
    }
    let mut out = vec![0.0; values.len()];
    for (channel, row) in values.chunks(matrix.cols).enumerate() {
        for (input, &v) in row.iter().enumerate() {
            out[input * matrix.rows + channel] = v;
        }
    }
    out
}

/// Shape of the inputs-major work and which codebook serves each weight, numbered as
/// [`Matrix::codebook_of`].
struct Layout {
    channels: usize,
    inputs: usize,
    blocks: usize,
    block: usize,
    tensor: bool,
}

impl Layout {
    fn new(matrix: &Matrix, granularity: Granularity) -> Self {
        let (channels, inputs) = matrix.channels_and_inputs();
        let block = match granularity {
            Granularity::Block(g) => g.max(1),
            _ => inputs.max(1),
        };
        Layout {
            channels,
            inputs,
            blocks: matrix.blocks(granularity),
            block,
            tensor: granularity == Granularity::Tensor,
        }
    }

    fn book(&self, channel: usize, input: usize) -> usize {
        if self.tensor {
            0
        } else {
            channel * self.blocks + input / self.block
        }
    }

    /// An inputs-major index back in `matrix`'s row-major order.
    fn matrix_order(&self, matrix: &Matrix, index: &[u8]) -> Vec<u8> {
        if matrix.channel_axis == 1 {
            return index.to_vec();
        }
        let mut out = vec![0u8; index.len()];
        for (input, row) in index.chunks(self.channels).enumerate() {
            for (channel, &i) in row.iter().enumerate() {
                out[channel * self.inputs + input] = i;
            }
        }
        out
    }
}

/// The nearest particle of an ascending `book` to `v` (the lower one on a tie, as
/// [`assign`] picks).
fn nearest(book: &[f64], v: f64) -> u8 {
    let above = book.partition_point(|&p| p < v).min(book.len() - 1);
    let nearer_below = above > 0 && v - book[above - 1] <= book[above] - v;
    (if nearer_below { above - 1 } else { above }) as u8
}

/// The rounding feedback: `coef[i * n + k] = R[k,i] / R[i,i]` for `k < i` (the
/// diagonal holds `R[i,i]`), where the damped `H = R Rᵀ`.
struct Feedback {
    n: usize,
    coef: Vec<f64>,
}

impl Feedback {
    /// The feedback of the damped `hessian`, or `None` when it has a non-finite entry
    /// or stays indefinite under every damping tried.
    fn new(hessian: &[f64], n: usize, damping: f64) -> Option<Self> {
        if hessian.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let live: Vec<bool> = (0..n).map(|i| hessian[i * n + i] > 0.0).collect();
        let live_count = live.iter().filter(|&&l| l).count();
        let mean = (0..n)
            .filter(|&i| live[i])
            .map(|i| hessian[i * n + i])
            .sum::<f64>()
            / live_count.max(1) as f64;
        let mean = if mean > 0.0 { mean } else { 1.0 };
        // Reversed and with dead inputs cut loose: A = P H P, a lower Cholesky factor of
        // which is R reversed.
        let reversed = |a: usize, b: usize| {
            let (i, j) = (n - 1 - a, n - 1 - b);
            match (live[i], live[j]) {
                _ if i == j && !live[i] => mean,
                (true, true) => hessian[i * n + j],
                _ => 0.0,
            }
        };
        let mut fraction = damping.max(0.0);
        for _ in 0..=DAMPING_TRIES {
            if let Some(l) = cholesky(n, reversed, fraction * mean) {
                return Some(Feedback::from_reversed_factor(n, l));
            }
            fraction = (fraction * 10.0).max(1e-6);
        }
        None
    }

    /// `R[k,i] = L[n-1-k, n-1-i]` for the lower factor `L` of the reversed `H`: `L`
    /// mirrored about its anti-diagonal (in place, which keeps it lower triangular),
    /// then every row divided by its diagonal.
    fn from_reversed_factor(n: usize, mut l: Vec<f64>) -> Self {
        for a in 0..n {
            for b in 0..=a {
                let (i, k) = (n - 1 - b, n - 1 - a);
                if (i, k) > (a, b) {
                    l.swap(a * n + b, i * n + k);
                }
            }
        }
        for row in l
            .chunks_mut(n.max(1))
            .enumerate()
            .map(|(i, row)| &mut row[..=i])
        {
            let (before, diagonal) = row.split_at_mut(row.len() - 1);
            for c in before {
                *c /= diagonal[0];
            }
        }
        Feedback { n, coef: l }
    }

    /// Rounds the inputs-major `weights` input after input into `books`; returns the
    /// inputs-major index.
    fn round(&self, layout: &Layout, weights: &[f64], books: &[Vec<f64>]) -> Vec<u8> {
        let (n, m) = (self.n, layout.channels);
        let mut target = weights.to_vec();
        let mut index = vec![0u8; n * m];
        let mut errors = vec![0.0; BATCH * m];
        for start in (0..n).step_by(BATCH) {
            let end = (start + BATCH).min(n);
            for k in start..end {
                let row = k * m..(k + 1) * m;
                let error = &mut errors[(k - start) * m..(k - start + 1) * m];
                for (j, (&t, (&w, (e, a)))) in target[row.clone()]
                    .iter()
                    .zip(
                        weights[row.clone()]
                            .iter()
                            .zip(error.iter_mut().zip(&mut index[row])),
                    )
                    .enumerate()
                {
                    let book = &books[layout.book(j, k)];
                    *a = nearest(book, t);
                    *e = w - book[*a as usize];
                }
                let error = &errors[(k - start) * m..(k - start + 1) * m];
                for i in k + 1..end {
                    axpy(&mut target[i * m..(i + 1) * m], self.coef[i * n + k], error);
                }
            }
            let batch = &errors[..(end - start) * m];
            target[end * m..]
                .par_chunks_mut(m.max(1))
                .enumerate()
                .for_each(|(r, row)| {
                    let coef = &self.coef[(end + r) * n + start..(end + r) * n + end];
                    for (&c, error) in coef.iter().zip(batch.chunks(m)) {
                        axpy(row, c, error);
                    }
                });
        }
        index
    }
}
