//! The refit: codebook values moved to the least output error, the assignment fixed.

use std::ops::Range;

use rayon::prelude::*;

use super::Layout;
use super::dense::{axpy, cholesky, dot, hessian_times};

/// Copies of the tensor codebook's system in a refit, so that consecutive additions do
/// not wait on each other.
const COPIES: usize = 4;

/// Moves every codebook's values to the minimum of the output error with the
/// assignment fixed, codebook after codebook (blocks of a channel in input order, each
/// seeing the moves before it), then sorts every codebook ascending and renumbers the
/// index to match. A particle no weight with a live input uses keeps its value. Returns
/// the output error before and after.
pub(super) fn refit(
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
    let mut systems = vec![0.0; (chunk.max(COPIES) * k * k).next_power_of_two()];
    let mut gradients = vec![0.0; chunk.max(COPIES) * k];
    let mut delta = vec![
        0.0;
        if layout.blocks > 1 {
            layout.block * chunk
        } else {
            0
        }
    ];
    for first in (0..m).step_by(chunk) {
        let channels = first..(first + chunk).min(m);
        let width = channels.len();
        for block in 0..layout.blocks {
            let inputs = block * layout.block..((block + 1) * layout.block).min(n);
            let slots = if layout.tensor { 1 } else { width };
            let copies = if layout.tensor { COPIES } else { width };
            accumulate(
                layout,
                hessian,
                index,
                &product,
                (&channels, &inputs),
                (&mut systems, &mut gradients, k),
            );
            let system = &mut systems[..copies * k * k];
            let gradient = &mut gradients[..copies * k];
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
                let moves = (&steps[..], &channels, &inputs);
                pass_on(layout, hessian, index, moves, &mut delta, &mut product);
            }
        }
    }
    sort_books(layout, books, index);
    (before, after)
}

/// Updates `product = H E` of the inputs after a block for the moves `steps` of that
/// block's codebooks (one per channel of `channels`), so that the later blocks of
/// these channels see the moved particles. `delta` is scratch space.
fn pass_on(
    layout: &Layout,
    hessian: &[f64],
    index: &[u8],
    (steps, channels, inputs): (&[Vec<f64>], &Range<usize>, &Range<usize>),
    delta: &mut [f64],
    product: &mut [f64],
) {
    let (n, m, width) = (layout.inputs, layout.channels, channels.len());
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

/// Sums a pass's pair sums of `H` (see [`symmetrize`]) and gradients `Σ Aᵀ H e` into
/// one `k x k` system per channel, or for the tensor codebook into [`COPIES`] systems
/// that consecutive channels take in turn; `system.len()` is a power of two.
fn accumulate(
    layout: &Layout,
    hessian: &[f64],
    index: &[u8],
    product: &[f64],
    (channels, inputs): (&Range<usize>, &Range<usize>),
    (system, gradient, k): (&mut [f64], &mut [f64], usize),
) {
    let (n, m) = (layout.inputs, layout.channels);
    let slot = |s: usize| if layout.tensor { s % COPIES } else { s };
    system.fill(0.0);
    gradient.fill(0.0);
    let mut base = vec![0usize; channels.len()];
    // Every position is below the length, a power of two: masking spares bounds checks.
    let mask = system.len() - 1;
    let system = &mut system[..=mask];
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
                system[(b + y as usize) & mask] += h;
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
