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

use std::ops::Range;

use rayon::prelude::*;

use super::{Decomposition, Granularity, Matrix, assign, decompose};

/// Copies of the tensor codebook's system in a refit, so that consecutive additions do
/// not wait on each other.
const COPIES: usize = 4;

/// Inputs rounded together before their errors reach the later inputs (GPTQ's lazy
/// batch): the batch's errors stay in cache while every later input reads them.
const BATCH: usize = 64;

/// Rows that the dense products (Cholesky factor, `H E`) handle together.
const GROUP: usize = 4;

/// Damping tries after the requested one, each ten times larger, before falling back
/// to nearest rounding.
const DAMPING_TRIES: usize = 8;

/// Decomposes `matrix` into `2^bits` particles per codebook at `granularity`, rounded
/// and refitted against the calibration output in up to [`ROUNDS`] rounds
/// ([`compensate_in_rounds`]).
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
/// weights the second to fourth rounds lowered the output error of per-channel and
/// per-block codebooks by a further 10-25% (one round costs about as much as the first).
pub const ROUNDS: usize = 4;

/// A round is followed by another only if its refit lowered the output error by at
/// least this fraction: re-rounding can only exploit particles that moved. (A tensor
/// codebook's refit moves it by well under 1%, so it gets one round.)
const ROUND_GAIN: f64 = 0.01;

/// [`compensate`] with at most `rounds` (at least one) rounds.
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
pub fn compensate_in_rounds(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    hessian: &[f64],
    damping: f64,
    rounds: usize,
) -> Decomposition {
    let layout = Layout::new(matrix, granularity);
    let n = layout.inputs;
    assert_eq!(hessian.len(), n * n, "hessian must be {n} x {n}");
    let start = decompose(matrix, granularity, bits);
    let Some(feedback) = Feedback::new(hessian, n, damping) else {
        return assign(matrix, granularity, &start.codebooks);
    };
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

/// `y += a * x` over the shorter of the two.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `H E` for the symmetric `n x n` `h` and the inputs-major `n x m` `e`, `GROUP` rows
/// of `H` at a time so that each row of `e` is read once for all of them.
fn hessian_times(h: &[f64], n: usize, e: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    out.par_chunks_mut(GROUP * m.max(1))
        .zip(h.par_chunks(GROUP * n.max(1)))
        .for_each(|(out, h)| {
            for (q, e) in e.chunks(m.max(1)).enumerate() {
                for (row, h) in out.chunks_mut(m.max(1)).zip(h.chunks(n)) {
                    axpy(row, h[q], e);
                }
            }
        });
    out
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

/// The lower Cholesky factor (row-major `n x n`) of the symmetric matrix `a(i, j) +
/// shift · [i == j]`, or `None` if it is not positive definite.
fn cholesky(n: usize, a: impl Fn(usize, usize) -> f64, shift: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for first in (0..n).step_by(GROUP) {
        let rows = GROUP.min(n - first);
        let (done, group) = l.split_at_mut(first * n);
        let group = &mut group[..rows * n];
        // Columns left of the group: each finished row is read once for all its rows.
        for j in 0..first {
            let sums = dots(group, n, &done[j * n..j * n + j]);
            for (r, sum) in sums.iter().enumerate().take(rows) {
                group[r * n + j] = (a(first + r, j) - sum) / done[j * n + j];
            }
        }
        for r in 0..rows {
            let i = first + r;
            for j in first..i {
                let above = (j - first) * n;
                let s = a(i, j) - dot(&group[r * n..r * n + j], &group[above..above + j]);
                group[r * n + j] = s / group[above + j];
            }
            let row = &group[r * n..r * n + i];
            let s = a(i, i) + shift - dot(row, row);
            if !(s > 0.0 && s.is_finite()) {
                return None;
            }
            group[r * n + i] = s.sqrt();
        }
    }
    Some(l)
}

/// The dot products of `y` with the first `y.len()` values of each row (stride `n`)
/// of `rows`, `GROUP` rows at a time so that `y` is read once.
fn dots(rows: &[f64], n: usize, y: &[f64]) -> [f64; GROUP] {
    let mut sums = [0.0; GROUP];
    let len = y.len();
    if rows.len() < GROUP * n {
        for (r, sum) in sums.iter_mut().enumerate().take(rows.len() / n) {
            *sum = dot(&rows[r * n..r * n + len], y);
        }
        return sums;
    }
    let mut lanes = [[0.0; 4]; GROUP];
    let whole = len - len % 4;
    for c in (0..whole).step_by(4) {
        let y = &y[c..c + 4];
        for (r, lane) in lanes.iter_mut().enumerate() {
            let x = &rows[r * n + c..r * n + c + 4];
            for l in 0..4 {
                lane[l] += x[l] * y[l];
            }
        }
    }
    for (r, sum) in sums.iter_mut().enumerate() {
        let tail: f64 = (whole..len).map(|c| rows[r * n + c] * y[c]).sum();
        *sum = lanes[r].iter().sum::<f64>() + tail;
    }
    sums
}

/// `x · y`, summed in four lanes so that it vectorizes.
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut lanes = [0.0; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let tail: f64 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for l in 0..4 {
            lanes[l] += a[l] * b[l];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Moves every codebook's values to the minimum of the output error with the
/// assignment fixed, codebook after codebook (blocks of a channel in input order, each
/// seeing the moves before it), then sorts every codebook ascending and renumbers the
/// index to match. A particle no weight with a live input uses keeps its value. Returns
/// the output error before and after.
fn refit(
    layout: &Layout,
    weights: &[f64],
    hessian: &[f64],
    books: &mut [Vec<f64>],
    index: &mut [u8],
) -> (f64, f64) {
    let (n, m) = (layout.inputs, layout.channels);
    let k = books[0].len();
    let errors: Vec<f64> = weights
        .iter()
        .zip(index.iter())
        .enumerate()
        .map(|(pos, (&w, &a))| w - books[layout.book(pos % m, pos / m)][a as usize])
        .collect();
    // H E, kept current for the inputs whose codebooks are still to move.
    let mut product = hessian_times(hessian, n, &errors, m);
    let before: f64 = errors.iter().zip(&product).map(|(e, p)| e * p).sum();
    let mut after = before;
    // Channels per pass: each keeps a K x K system of its own.
    let chunk = if layout.tensor {
        m.max(1)
    } else {
        ((1 << 15) / (k * k)).clamp(1, m.max(1))
    };
    let mut systems = vec![0.0; chunk.max(COPIES) * k * k];
    let mut gradients = vec![0.0; chunk.max(COPIES) * k];
    let mut delta = vec![0.0; layout.block * chunk];
    for first in (0..m).step_by(chunk) {
        let channels = first..(first + chunk).min(m);
        let width = channels.len();
        for block in 0..layout.blocks {
            let inputs = block * layout.block..((block + 1) * layout.block).min(n);
            let slots = if layout.tensor { 1 } else { width };
            let copies = if layout.tensor { COPIES } else { width };
            let system = &mut systems[..copies * k * k];
            let gradient = &mut gradients[..copies * k];
            accumulate(
                layout,
                hessian,
                index,
                &product,
                (&channels, &inputs),
                system,
                gradient,
            );
            if layout.tensor {
                fold_copies(system, k * k);
                fold_copies(gradient, k);
            }
            let steps: Vec<Vec<f64>> = (0..slots)
                .map(|s| {
                    let system = &mut system[s * k * k..(s + 1) * k * k];
                    symmetrize(system, k);
                    let (step, change) = descent_step(system, &gradient[s * k..(s + 1) * k], k);
                    after += change;
                    step
                })
                .collect();
            for (s, step) in steps.iter().enumerate() {
                let channel = if layout.tensor { 0 } else { first + s };
                let book = &mut books[layout.book(channel, inputs.start)];
                for (p, d) in book.iter_mut().zip(step) {
                    *p += d;
                }
            }
            if inputs.end < n && !layout.tensor {
                // The later blocks of these channels see the moved particles.
                let delta = &mut delta[..inputs.len() * width];
                for (r, p) in inputs.clone().enumerate() {
                    let ap = &index[p * m + channels.start..p * m + channels.end];
                    for (s, &a) in ap.iter().enumerate() {
                        delta[r * width + s] = steps[s][a as usize];
                    }
                }
                let delta = &*delta;
                product[inputs.end * m..]
                    .par_chunks_mut(m)
                    .enumerate()
                    .for_each(|(r, row)| {
                        let h = &hessian[(inputs.end + r) * n..(inputs.end + r + 1) * n];
                        let row = &mut row[channels.clone()];
                        for (p, change) in inputs.clone().zip(delta.chunks(width)) {
                            axpy(row, -h[p], change);
                        }
                    });
            }
        }
    }
    sort_books(layout, books, index);
    (before, after)
}

/// Sums a pass's pair sums of `H` (see [`symmetrize`]) and gradients `Σ Aᵀ H e` into
/// one system per channel, or for the tensor codebook into [`COPIES`] systems that
/// consecutive channels take in turn.
fn accumulate(
    layout: &Layout,
    hessian: &[f64],
    index: &[u8],
    product: &[f64],
    (channels, inputs): (&Range<usize>, &Range<usize>),
    system: &mut [f64],
    gradient: &mut [f64],
) {
    let (n, m) = (layout.inputs, layout.channels);
    let k = system.len() / gradient.len();
    let slot = |s: usize| if layout.tensor { s % COPIES } else { s };
    system.fill(0.0);
    gradient.fill(0.0);
    let mut base = vec![0usize; channels.len()];
    for p in inputs.clone() {
        let ap = &index[p * m + channels.start..p * m + channels.end];
        for (s, (b, &x)) in base.iter_mut().zip(ap).enumerate() {
            *b = slot(s) * k * k + x as usize * k;
        }
        for q in p..inputs.end {
            // The diagonal pair counts once, the others in both orders.
            let h = hessian[p * n + q] * if q == p { 0.5 } else { 1.0 };
            if h == 0.0 {
                continue;
            }
            let aq = &index[q * m + channels.start..q * m + channels.end];
            for (&b, &y) in base.iter().zip(aq) {
                system[b + y as usize] += h;
            }
        }
        let row = &product[p * m + channels.start..p * m + channels.end];
        for (s, (&x, &g)) in ap.iter().zip(row).enumerate() {
            gradient[slot(s) * k + x as usize] += g;
        }
    }
}

/// Adds every `size`-long copy in `copies` into the first.
fn fold_copies(copies: &mut [f64], size: usize) {
    let (first, rest) = copies.split_at_mut(size);
    for copy in rest.chunks(size) {
        for (a, b) in first.iter_mut().zip(copy) {
            *a += b;
        }
    }
}

/// Turns the pair sums (`[x][y]` += `H[p,q]` for `p < q`, half of it for `p == q`)
/// into the full symmetric system `S + Sᵀ`.
fn symmetrize(system: &mut [f64], k: usize) {
    for x in 0..k {
        for y in x..k {
            let sum = system[x * k + y] + system[y * k + x];
            system[x * k + y] = sum;
            system[y * k + x] = sum;
        }
    }
}

/// The move of a codebook's particles that minimises `f(d) = dᵀ G d - 2 dᵀ g`, the
/// change of the output error, over the particles in use (`G[x,x] > 0`); the others
/// stay. When `G` is singular a growing ridge makes it invertible; a move that would not
/// lower `f` (which rounding could cause) is dropped. Returns the move and `f` of it.
fn descent_step(system: &[f64], gradient: &[f64], k: usize) -> (Vec<f64>, f64) {
    let mut step = vec![0.0; k];
    let used: Vec<usize> = (0..k).filter(|&x| system[x * k + x] > 0.0).collect();
    let u = used.len();
    let largest = used.iter().map(|&x| system[x * k + x]).fold(0.0, f64::max);
    for ridge in [0.0, 1e-12, 1e-9, 1e-6].map(|r| r * largest) {
        let Some(l) = cholesky(u, |i, j| system[used[i] * k + used[j]], ridge) else {
            continue;
        };
        let mut y = vec![0.0; u];
        for i in 0..u {
            y[i] = (gradient[used[i]] - dot(&l[i * u..i * u + i], &y[..i])) / l[i * u + i];
        }
        for i in (0..u).rev() {
            let later: f64 = (i + 1..u).map(|r| l[r * u + i] * y[r]).sum();
            y[i] = (y[i] - later) / l[i * u + i];
        }
        for (&x, &d) in used.iter().zip(&y) {
            step[x] = d;
        }
        let change: f64 = (0..k)
            .map(|x| step[x] * (dot(&system[x * k..(x + 1) * k], &step) - 2.0 * gradient[x]))
            .sum();
        if change <= 0.0 && step.iter().all(|d| d.is_finite()) {
            return (step, change);
        }
        step.fill(0.0);
    }
    (step, 0.0)
}

/// Sorts every codebook ascending and renumbers the index (inputs-major) to match.
fn sort_books(layout: &Layout, books: &mut [Vec<f64>], index: &mut [u8]) {
    let mut ranks = Vec::with_capacity(books.len());
    let mut moved = false;
    for book in books.iter_mut() {
        let mut order: Vec<usize> = (0..book.len()).collect();
        order.sort_by(|&x, &y| book[x].total_cmp(&book[y]));
        let mut rank = vec![0u8; book.len()];
        for (new, &old) in order.iter().enumerate() {
            rank[old] = new as u8;
        }
        moved |= order.iter().enumerate().any(|(new, &old)| new != old);
        *book = order.iter().map(|&old| book[old]).collect();
        ranks.push(rank);
    }
    if !moved {
        return;
    }
    let m = layout.channels;
    for (pos, a) in index.iter_mut().enumerate() {
        *a = ranks[layout.book(pos % m, pos / m)][*a as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A weight's matrix (`inputs x channels` when `channel_axis == 1`, transposed
    /// otherwise) and the `H` of correlated calibration rows, one input always zero if
    /// `dead` is given.
    struct Case {
        values: Vec<f64>,
        rows: usize,
        cols: usize,
        channel_axis: usize,
        hessian: Vec<f64>,
    }

    impl Case {
        fn new(seed: u64, inputs: usize, channels: usize, channel_axis: usize) -> Self {
            Self::with_dead(seed, inputs, channels, channel_axis, None)
        }

        fn with_dead(
            seed: u64,
            inputs: usize,
            channels: usize,
            channel_axis: usize,
            dead: Option<usize>,
        ) -> Self {
            let mut rng = Rng::new(seed);
            let calibration = 64;
            let z: Vec<f64> = (0..calibration * inputs).map(|_| rng.normal()).collect();
            let mix: Vec<f64> = (0..inputs * inputs).map(|_| rng.normal()).collect();
            let mut x = vec![0.0; calibration * inputs];
            for r in 0..calibration {
                for c in 0..inputs {
                    if Some(c) != dead {
                        x[r * inputs + c] = (0..inputs)
                            .map(|t| z[r * inputs + t] * mix[t * inputs + c])
                            .sum();
                    }
                }
            }
            let mut hessian = vec![0.0; inputs * inputs];
            for r in 0..calibration {
                let row = &x[r * inputs..(r + 1) * inputs];
                for i in 0..inputs {
                    axpy(&mut hessian[i * inputs..(i + 1) * inputs], row[i], row);
                }
            }
            let values = (0..inputs * channels).map(|_| rng.normal()).collect();
            let (rows, cols) = if channel_axis == 1 {
                (inputs, channels)
            } else {
                (channels, inputs)
            };
            Case {
                values,
                rows,
                cols,
                channel_axis,
                hessian,
            }
        }

        fn matrix(&self) -> Matrix<'_> {
            Matrix {
                values: &self.values,
                rows: self.rows,
                cols: self.cols,
                channel_axis: self.channel_axis,
            }
        }

        fn error_of(&self, d: &Decomposition, g: Granularity) -> f64 {
            let m = self.matrix();
            output_error(&m, &d.decoded(&m, g, |x| x), &self.hessian)
        }
    }

    fn nearest_rounding(m: &Matrix, g: Granularity, bits: u32) -> Decomposition {
        assign(m, g, &decompose(m, g, bits).codebooks)
    }

    #[test]
    fn identity_hessian_gives_nearest_rounding() {
        for (axis, g) in [(1, Granularity::Tensor), (0, Granularity::Channel)] {
            let case = Case::new(3, 24, 10, axis);
            let m = case.matrix();
            let n = 24;
            let identity: Vec<f64> = (0..n * n)
                .map(|i| if i % (n + 1) == 0 { 1.0 } else { 0.0 })
                .collect();
            let got = compensate(&m, g, 2, &identity, 0.01);
            let want = nearest_rounding(&m, g, 2);
            assert_eq!(got.index, want.index);
            // The refit moves k-means centroids nowhere.
            for (a, b) in got
                .codebooks
                .iter()
                .flatten()
                .zip(want.codebooks.iter().flatten())
            {
                assert!((a - b).abs() < 1e-12, "{a} {b}");
            }
        }
    }

    #[test]
    fn feedback_flips_the_second_input() {
        // Inputs are rows, two channels. 1-bit k-means over {0, 0.4, 0.6, 1} gives
        // particles {0.2, 0.8}; nearest rounding takes 0.8 for channel 1's 0.6. Input 0's
        // error in channel 1 is 0.4 - 0.2 = 0.2, and with H = [[1, -0.9], [-0.9, 1]]
        // input 1 is rounded from 0.6 - 0.9 * 0.2 = 0.42: particle 0.2.
        let values = [0.0, 0.4, 1.0, 0.6];
        let m = Matrix {
            values: &values,
            rows: 2,
            cols: 2,
            channel_axis: 1,
        };
        let hessian = [1.0, -0.9, -0.9, 1.0];
        assert_eq!(
            nearest_rounding(&m, Granularity::Tensor, 1).index,
            vec![0, 0, 1, 1]
        );
        let d = compensate_in_rounds(&m, Granularity::Tensor, 1, &hessian, 0.0, 1);
        assert_eq!(d.index, vec![0, 0, 1, 0]);
        // Refit: G = [[1.2, -0.9], [-0.9, 1]] and Σ Aᵀ H w = (-0.8, 1) give
        // particles (10/39, 48/39).
        let book = &d.codebooks[0];
        assert!((book[0] - 10.0 / 39.0).abs() < 1e-12, "{book:?}");
        assert!((book[1] - 48.0 / 39.0).abs() < 1e-12, "{book:?}");
        // Output error: 0.152 per channel for nearest rounding; flipping channel 1
        // takes it from 0.152 to 0.056 (0.208 in all); the refit takes it to 304/4875.
        let nearest = nearest_rounding(&m, Granularity::Tensor, 1);
        let before = output_error(
            &m,
            &nearest.decoded(&m, Granularity::Tensor, |x| x),
            &hessian,
        );
        assert!((before - 0.304).abs() < 1e-12, "{before}");
        let after = output_error(&m, &d.decoded(&m, Granularity::Tensor, |x| x), &hessian);
        assert!((after - 304.0 / 4875.0).abs() < 1e-12, "{after}");
    }

    #[test]
    fn compensation_beats_nearest_rounding_on_correlated_inputs() {
        for axis in [0, 1] {
            for g in [Granularity::Tensor, Granularity::Channel] {
                for bits in [2, 3, 4] {
                    let case = Case::new(11 + bits as u64, 48, 12, axis);
                    let m = case.matrix();
                    let nearest = case.error_of(&nearest_rounding(&m, g, bits), g);
                    let one = compensate_in_rounds(&m, g, bits, &case.hessian, 0.01, 1);
                    let one = case.error_of(&one, g);
                    let compensated =
                        case.error_of(&compensate(&m, g, bits, &case.hessian, 0.01), g);
                    assert!(
                        one < 0.8 * nearest,
                        "axis {axis} {g} {bits} bits: {one} vs {nearest}"
                    );
                    if bits == 2 {
                        let again = compensate(&m, g, bits, &case.hessian, 0.01);
                        assert_eq!(case.error_of(&again, g), compensated);
                    }
                    // Further rounds keep the best; per channel they find a better one.
                    assert!(compensated <= one, "{g} {bits}: {compensated} vs {one}");
                    if g == Granularity::Channel {
                        assert!(compensated < one, "{bits}: {compensated} vs {one}");
                    }
                }
            }
        }
    }

    /// Textbook GPTQ: the upper Cholesky factor `U` of the damped `H⁻¹`, and each
    /// input's working error `(w - q) / U[i,i]` pushed onto later inputs by `U[i, i..]`.
    fn reference_gptq(case: &Case, books: &[Vec<f64>], damping: f64) -> Vec<u8> {
        let m = case.matrix();
        let (channels, n) = m.channels_and_inputs();
        let mean = (0..n).map(|i| case.hessian[i * n + i]).sum::<f64>() / n as f64;
        // Gauss-Jordan inverse of the damped H.
        let mut a: Vec<f64> = case.hessian.clone();
        let mut inverse = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] += damping * mean;
            inverse[i * n + i] = 1.0;
        }
        for c in 0..n {
            let pivot = a[c * n + c];
            for j in 0..n {
                a[c * n + j] /= pivot;
                inverse[c * n + j] /= pivot;
            }
            for r in (0..n).filter(|&r| r != c) {
                let f = a[r * n + c];
                for j in 0..n {
                    a[r * n + j] -= f * a[c * n + j];
                    inverse[r * n + j] -= f * inverse[c * n + j];
                }
            }
        }
        // H⁻¹ = L Lᵀ = Uᵀ U with U = Lᵀ.
        let l = cholesky(n, |i, j| inverse[i * n + j], 0.0).unwrap();
        let mut w = inputs_major(&m, &case.values);
        let mut index = vec![0u8; n * channels];
        for i in 0..n {
            for j in 0..channels {
                let a = nearest(&books[0], w[i * channels + j]);
                index[i * channels + j] = a;
                let error = (w[i * channels + j] - books[0][a as usize]) / l[i * n + i];
                for k in i + 1..n {
                    w[k * channels + j] -= error * l[k * n + i];
                }
            }
        }
        index
    }

    #[test]
    fn rounding_matches_textbook_gptq() {
        for axis in [0, 1] {
            let case = Case::new(5, 150, 7, axis);
            let m = case.matrix();
            let layout = Layout::new(&m, Granularity::Tensor);
            let books = decompose(&m, Granularity::Tensor, 3).codebooks;
            let feedback = Feedback::new(&case.hessian, 150, 0.01).unwrap();
            let weights = inputs_major(&m, &case.values);
            let got = feedback.round(&layout, &weights, &books);
            assert_eq!(got, reference_gptq(&case, &books, 0.01));
        }
    }

    #[test]
    fn refit_never_raises_the_output_error() {
        for g in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Block(12),
        ] {
            for bits in [1, 2, 3] {
                let case = Case::new(20 + bits as u64, 30, 9, (bits % 2) as usize);
                let m = case.matrix();
                let layout = Layout::new(&m, g);
                let mut books = decompose(&m, g, bits).codebooks;
                let weights = inputs_major(&m, &case.values);
                let feedback = Feedback::new(&case.hessian, 30, 0.01).unwrap();
                let mut index = feedback.round(&layout, &weights, &books);
                let error = |books: &[Vec<f64>], index: &[u8]| {
                    let d = Decomposition {
                        codebooks: books.to_vec(),
                        index: layout.matrix_order(&m, index),
                        sse_bound: 0.0,
                        outliers: Vec::new(),
                    };
                    case.error_of(&d, g)
                };
                let before = error(&books, &index);
                let tracked = refit(&layout, &weights, &case.hessian, &mut books, &mut index);
                let after = error(&books, &index);
                assert!(
                    (tracked.0 - before).abs() < 1e-9 * before,
                    "{tracked:?} {before}"
                );
                assert!(
                    (tracked.1 - after).abs() < 1e-9 * before,
                    "{tracked:?} {after}"
                );
                assert!(
                    after <= before * (1.0 + 1e-12),
                    "{g} {bits}: {after} > {before}"
                );
                assert!(after < before, "{g} {bits}: {after} vs {before}");
                assert!(books.iter().all(|b| b.is_sorted()));
            }
        }
    }

    #[test]
    fn singular_and_broken_hessians_stay_finite() {
        // Input 4 is always zero: H has a zero row and column.
        for g in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Block(8),
        ] {
            let case = Case::with_dead(9, 20, 6, 1, Some(4));
            let m = case.matrix();
            let d = compensate(&m, g, 2, &case.hessian, 0.0);
            assert!(d.codebooks.iter().flatten().all(|p| p.is_finite()));
            assert!(d.index.iter().all(|&a| a < 4));
            let error = case.error_of(&d, g);
            assert!(error.is_finite());
            let nearest = case.error_of(&nearest_rounding(&m, g, 2), g);
            assert!(error < nearest, "{g}: {error} vs {nearest}");
        }
        // Fewer calibration rows than inputs (rank 64 of 80), no damping asked for.
        let case = Case::new(10, 80, 6, 0);
        let m = case.matrix();
        let d = compensate(&m, Granularity::Channel, 2, &case.hessian, 0.0);
        assert!(d.codebooks.iter().flatten().all(|p| p.is_finite()));
        // All zero, or not a number: nearest rounding.
        for h in [0.0, f64::NAN] {
            let hessian = vec![h; 20 * 20];
            let case = Case::new(12, 20, 6, 1);
            let m = case.matrix();
            let d = compensate(&m, Granularity::Tensor, 2, &hessian, 0.01);
            assert_eq!(d, nearest_rounding(&m, Granularity::Tensor, 2));
        }
    }
}
