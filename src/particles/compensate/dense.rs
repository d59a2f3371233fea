//! Dense kernels of the compensation: the Cholesky factor, `H E`, dot products.

use rayon::prelude::*;

/// Rows that the dense products (Cholesky factor, `H E`) handle together.
const GROUP: usize = 4;

/// `y += a * x` over the shorter of the two.
pub(super) fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `H E` for the symmetric `n x n` `h` and the inputs-major `n x m` `e`, `GROUP` rows
/// of `H` at a time so that each row of `e` is read once for all of them.
pub(super) fn hessian_times(h: &[f64], n: usize, e: &[f64], m: usize) -> Vec<f64> {
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

/// The lower Cholesky factor (row-major `n x n`) of the symmetric matrix `a(i, j) +
/// shift · [i == j]`, or `None` if it is not positive definite.
pub(super) fn cholesky(n: usize, a: impl Fn(usize, usize) -> f64, shift: f64) -> Option<Vec<f64>> {
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
pub(super) fn dot(x: &[f64], y: &[f64]) -> f64 {
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
