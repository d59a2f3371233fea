//! Tests of the compensation.

use super::dense::{axpy, cholesky};
use super::refit::refit;
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
                let compensated = case.error_of(&compensate(&m, g, bits, &case.hessian, 0.01), g);
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

#[test]
fn an_empty_matrix_has_nothing_to_round() {
    let m = Matrix {
        values: &[],
        rows: 3,
        cols: 0,
        channel_axis: 1,
    };
    let d = compensate(&m, Granularity::Channel, 2, &[0.0; 9], 0.01);
    assert!(d.codebooks.is_empty() && d.index.is_empty());
}
