//! Particles on a uniform grid: every codebook is `(q - zero_point) * scale` for
//! `q = 0..2^bits`, the values `DequantizeLinear` computes from an unsigned integer
//! `q`. A grid is a codebook that a runtime can apply without a table, so onnxruntime
//! keeps the weight in its 4-bit kernel instead of decoding it at load.
//!
//! The grid of each codebook is fitted to its values: the range `[lo, hi]` (widened to
//! hold 0, so that the zero point is one of the levels) is clipped by each ratio of
//! [`CLIP_RATIOS`], the scale refined by least squares on the resulting assignment, and
//! the grid with the least squared error is kept.

use rayon::prelude::*;

use super::{Decomposition, Granularity, Matrix};

/// Fractions of the values' range a grid is tried on (the most extreme values clip).
pub const CLIP_RATIOS: [f64; 12] = [
    1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79, 0.76, 0.73, 0.7, 0.65,
];

/// One codebook's grid: level `q` is `(q - zero_point) * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// Distance between levels, as stored (rounded by the caller's `round_scale`).
    pub scale: f64,
    /// The level that is exactly 0.
    pub zero_point: u8,
}

impl Grid {
    /// The `levels` values of the grid, ascending.
    pub fn values(&self, levels: usize) -> Vec<f64> {
        (0..levels).map(|q| self.value(q as u8)).collect()
    }

    /// The value of level `q`.
    pub fn value(&self, q: u8) -> f64 {
        (f64::from(q) - f64::from(self.zero_point)) * self.scale
    }

    /// The level nearest to `v`.
    fn level(&self, v: f64, levels: usize) -> usize {
        if self.scale == 0.0 {
            return usize::from(self.zero_point);
        }
        let q = (v / self.scale).round() + f64::from(self.zero_point);
        q.clamp(0.0, (levels - 1) as f64) as usize
    }

    /// Squared error of `values` on their nearest levels.
    fn squared_error(&self, values: &[f64], levels: usize) -> f64 {
        values
            .iter()
            .map(|&v| {
                let d = v - self.value(self.level(v, levels) as u8);
                d * d
            })
            .sum()
    }
}

/// Weights decomposed onto grids, one per codebook (numbered as
/// [`Matrix::codebook_of`]). The levels are kept as a scale and a zero point, not as
/// tables: an 8-bit grid per block of 32 would hold 8 levels per weight.
#[derive(Clone, Debug, PartialEq)]
pub struct GridDecomposition {
    /// The level of every weight, row-major like the input.
    pub index: Vec<u8>,
    /// Scale and zero point of every codebook.
    pub grids: Vec<Grid>,
    /// Levels in every grid (`2^bits`).
    pub levels: usize,
}

impl GridDecomposition {
    /// The grids' levels as codebooks, for the forms and the compensation that take
    /// tables.
    pub fn codebooks(&self) -> Vec<Vec<f64>> {
        self.grids.iter().map(|g| g.values(self.levels)).collect()
    }

    /// The same particles as a [`Decomposition`] of codebooks.
    pub fn decomposition(&self) -> Decomposition {
        Decomposition {
            codebooks: self.codebooks(),
            index: self.index.clone(),
            sse_bound: 0.0,
            outliers: Vec::new(),
        }
    }

    /// The rebuilt weights, every level first passed through `round`.
    pub fn decoded(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        round: impl Fn(f64) -> f64,
    ) -> Vec<f64> {
        (self.index.iter().enumerate())
            .map(|(pos, &q)| round(self.grids[matrix.codebook_of(pos, granularity)].value(q)))
            .collect()
    }

    /// Squared error of the rebuilt weights against `matrix`, every level first passed
    /// through `round`.
    pub fn squared_error(
        &self,
        matrix: &Matrix,
        granularity: Granularity,
        round: impl Fn(f64) -> f64,
    ) -> f64 {
        (self.index.iter().zip(matrix.values).enumerate())
            .map(|(pos, (&q, &v))| {
                let d = v - round(self.grids[matrix.codebook_of(pos, granularity)].value(q));
                d * d
            })
            .sum()
    }
}

/// The grid of `2^bits` levels with the least squared error on `values`, its scale
/// passed through `round_scale` (the stored type) before it is judged.
pub fn fit_grid(values: &[f64], bits: u32, round_scale: impl Fn(f64) -> f64) -> Grid {
    let levels = 1usize << bits;
    let top = (levels - 1) as f64;
    let lo = values.iter().copied().fold(0.0, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let zero = Grid {
        scale: 0.0,
        zero_point: 0,
    };
    if hi == lo {
        return zero;
    }
    let mut best = (f64::INFINITY, zero);
    let mut consider = |grid: Grid| {
        if grid.scale > 0.0 && grid.scale.is_finite() {
            let error = grid.squared_error(values, levels);
            if error < best.0 {
                best = (error, grid);
            }
        }
    };
    for ratio in CLIP_RATIOS {
        let (lo, hi) = (lo * ratio, hi * ratio);
        let scale = round_scale((hi - lo) / top);
        let zero_point = (-lo / scale).round().clamp(0.0, top) as u8;
        let grid = Grid { scale, zero_point };
        consider(grid);
        // Least-squares scale for this assignment: sum(v * n) / sum(n^2), n = q - zp.
        let zp = f64::from(zero_point);
        let (vn, nn) = values.iter().fold((0.0, 0.0), |(vn, nn), &v| {
            let n = grid.level(v, levels) as f64 - zp;
            (vn + v * n, nn + n * n)
        });
        if nn > 0.0 {
            consider(Grid {
                scale: round_scale(vn / nn),
                zero_point,
            });
        }
    }
    best.1
}

/// Decomposes `matrix` onto one grid of `2^bits` levels per codebook at `granularity`
/// (fitted in parallel by [`fit_grid`]), every weight indexed to its nearest level.
pub fn decompose_grid(
    matrix: &Matrix,
    granularity: Granularity,
    bits: u32,
    round_scale: impl Fn(f64) -> f64 + Sync,
) -> GridDecomposition {
    let levels = 1usize << bits;
    let grids: Vec<Grid> = (0..matrix.codebooks(granularity))
        .into_par_iter()
        .map(|id| {
            let values: Vec<f64> = (matrix.positions(granularity, id).iter())
                .map(|&p| matrix.values[p])
                .collect();
            fit_grid(&values, bits, &round_scale)
        })
        .collect();
    let index = (matrix.values.iter().enumerate())
        .map(|(pos, &v)| grids[matrix.codebook_of(pos, granularity)].level(v, levels) as u8)
        .collect();
    GridDecomposition {
        index,
        grids,
        levels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_on_a_grid_are_rebuilt_exactly() {
        // 2 bits, scale 0.5, zero point 1: levels -0.5, 0, 0.5, 1.
        let values = [-0.5, 0.0, 0.5, 1.0, 1.0, 0.5];
        let grid = fit_grid(&values, 2, |s| s);
        assert_eq!(
            grid,
            Grid {
                scale: 0.5,
                zero_point: 1
            }
        );
        assert_eq!(grid.squared_error(&values, 4), 0.0);
    }

    #[test]
    fn an_outlier_is_clipped_when_that_costs_less() {
        // Uniform values in [-1, 1] and one at 1.3: clipping the range beats spreading
        // 16 levels over [-1, 1.3].
        let mut values: Vec<f64> = (0..200).map(|i| -1.0 + 2.0 * i as f64 / 199.0).collect();
        values.push(1.3);
        let full = {
            let scale = 2.3 / 15.0;
            Grid {
                scale,
                zero_point: (1.0 / scale).round() as u8,
            }
        };
        let fitted = fit_grid(&values, 4, |s| s);
        assert!(fitted.squared_error(&values, 16) < full.squared_error(&values, 16));
        assert!(fitted.scale < full.scale, "{fitted:?}");
    }

    #[test]
    fn positive_blocks_keep_zero_as_a_level() {
        let values = [2.0, 3.0, 4.0];
        let grid = fit_grid(&values, 2, |s| s);
        assert_eq!(grid.zero_point, 0);
        let levels = grid.values(4);
        assert_eq!(levels[0], 0.0);
        assert!(levels[3] >= 3.0, "{levels:?}");
    }

    #[test]
    fn blocks_get_grids_of_their_own() {
        // 4 x 2, columns are channels, blocks of 2 inputs: 4 grids.
        let values = [0.0, 8.0, 1.0, 9.0, 100.0, -3.0, 101.0, -2.0];
        let m = Matrix {
            values: &values,
            rows: 4,
            cols: 2,
            channel_axis: 1,
        };
        let d = decompose_grid(&m, Granularity::Block(2), 1, |s| s);
        assert_eq!(d.grids.len(), 4);
        let decoded = d.decoded(&m, Granularity::Block(2), |x| x);
        // One bit per block, and 0 is always a level: [0, 1] is exact; [8, 9] and
        // [100, 101] get 0 and the least-squares scale (8.5, 100.5).
        assert_eq!(&decoded[..4], &[0.0, 8.5, 1.0, 8.5]);
        assert_eq!((decoded[4], decoded[6]), (100.5, 100.5));
        let books = d.decomposition().codebooks;
        assert_eq!(books.len(), 4);
        for (book, grid) in books.iter().zip(&d.grids) {
            assert_eq!(book, &grid.values(2));
        }
        let sse: f64 = (values.iter().zip(&decoded))
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        assert_eq!(d.squared_error(&m, Granularity::Block(2), |x| x), sse);
    }

    #[test]
    fn a_constant_zero_block_has_a_zero_grid() {
        let grid = fit_grid(&[0.0; 5], 4, |s| s);
        assert_eq!(grid.scale, 0.0);
        assert_eq!(grid.values(16), vec![0.0; 16]);
    }
}
