//! Scaled grids: weights that are small integers times one scale per channel (what an
//! int8 quantizer leaves behind once dequantized). Then `w[i] = grid[index[i]] * scale`
//! reproduces every weight bit for bit with one shared codebook of integers (the grid)
//! and one scale per channel, which is far cheaper than a codebook per channel.

use rayon::prelude::*;

use super::Matrix;

/// A matrix written as a shared grid of integers times a scale per row or column.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledGrid {
    /// The distinct integers, ascending (at most 256).
    pub grid: Vec<f64>,
    /// For every weight (row-major), the position of its integer in `grid`.
    pub index: Vec<u8>,
    /// One scale per row (`scale_axis == 0`) or per column (`scale_axis == 1`).
    pub scales: Vec<f64>,
    /// 0: a scale per row; 1: a scale per column.
    pub scale_axis: usize,
}

impl ScaledGrid {
    /// The weights the grid rebuilds, each product rounded by `round` (the weight's
    /// type): bit-exact when [`find_scaled_grid`] accepted the matrix.
    pub fn decoded(&self, matrix: &Matrix, round: impl Fn(f64) -> f64) -> Vec<f64> {
        self.index
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                let scale = self.scales[if self.scale_axis == 0 {
                    pos / matrix.cols
                } else {
                    pos % matrix.cols
                }];
                round(round(self.grid[i as usize]) * scale)
            })
            .collect()
    }
}

/// Writes `matrix` as integers in `-limit..=limit` times one scale per row
/// (`scale_axis == 0`) or per column, if every weight is reproduced exactly by
/// `round(q * scale)` and there are at most 256 distinct integers. `round` is the
/// weight type's rounding, applied to the product as the runtime's multiply does.
pub fn find_scaled_grid(
    matrix: &Matrix,
    scale_axis: usize,
    limit: i64,
    round: impl Fn(f64) -> f64 + Sync,
) -> Option<ScaledGrid> {
    let (channels, stride, step) = if scale_axis == 0 {
        (matrix.rows, 1, matrix.cols)
    } else {
        (matrix.cols, matrix.cols, 1)
    };
    let length = if scale_axis == 0 {
        matrix.cols
    } else {
        matrix.rows
    };
    let fits: Vec<(f64, Vec<i64>)> = (0..channels)
        .into_par_iter()
        .map(|c| {
            let values: Vec<f64> = (0..length)
                .map(|i| matrix.values[c * step + i * stride])
                .collect();
            channel_scale(&values, limit, &round)
        })
        .collect::<Option<_>>()?;
    let mut grid: Vec<i64> = fits.iter().flat_map(|(_, q)| q.iter().copied()).collect();
    grid.sort_unstable();
    grid.dedup();
    if grid.len() > 256 {
        return None;
    }
    let mut index = vec![0u8; matrix.values.len()];
    for (c, (_, q)) in fits.iter().enumerate() {
        for (i, v) in q.iter().enumerate() {
            index[c * step + i * stride] =
                grid.binary_search(v).expect("grid holds every integer") as u8;
        }
    }
    Some(ScaledGrid {
        grid: grid.iter().map(|&q| q as f64).collect(),
        index,
        scales: fits.iter().map(|(s, _)| *s).collect(),
        scale_axis,
    })
}

/// The scale and integers of one channel: the scale that maps the largest magnitude
/// to the smallest integer `m <= limit` (with the neighbouring representable scales,
/// as quantizers round their scale) for which all values are exact integer multiples,
/// so the integers stay as few as possible.
fn channel_scale(
    values: &[f64],
    limit: i64,
    round: &impl Fn(f64) -> f64,
) -> Option<(f64, Vec<i64>)> {
    let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if largest == 0.0 {
        return Some((1.0, vec![0; values.len()]));
    }
    for m in 1..=limit {
        let estimate = round(largest / m as f64);
        for candidate in neighbours(estimate, &round) {
            let integer = |v: f64| (v / candidate).round();
            let exact = values.iter().all(|&v| {
                let q = integer(v);
                q.abs() <= limit as f64 && round(q * candidate) == v
            });
            if exact {
                return Some((
                    candidate,
                    values.iter().map(|&v| integer(v) as i64).collect(),
                ));
            }
        }
    }
    None
}

/// `scale` and the two representable values on either side of it (in the weight
/// type, found by nudging through `round`).
fn neighbours(scale: f64, round: &impl Fn(f64) -> f64) -> Vec<f64> {
    let mut out = vec![scale];
    let mut lower = scale;
    let mut upper = scale;
    for _ in 0..2 {
        let mut delta = scale.abs() * 1e-9;
        while round(lower - delta) == lower && delta < scale.abs() {
            delta *= 2.0;
        }
        lower = round(lower - delta);
        let mut delta = scale.abs() * 1e-9;
        while round(upper + delta) == upper && delta < scale.abs() {
            delta *= 2.0;
        }
        upper = round(upper + delta);
        out.extend([lower, upper]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_round(v: f64) -> f64 {
        v as f32 as f64
    }

    #[test]
    fn int8_times_column_scales_is_found_exactly() {
        let scales = [0.0123f32, 0.5, 3.75e-3];
        let q = [[-127, 3, 64], [0, -128 + 1, 127], [5, 127, -2]];
        let values: Vec<f64> = (0..3)
            .flat_map(|r| (0..3).map(move |c| (q[r][c] as f32 * scales[c]) as f64))
            .collect();
        let m = Matrix {
            values: &values,
            rows: 3,
            cols: 3,
            channel_axis: 1,
        };
        let grid = find_scaled_grid(&m, 1, 127, f32_round).unwrap();
        assert_eq!(grid.scales.len(), 3);
        assert_eq!(grid.decoded(&m, f32_round), values);
        assert!(grid.grid.len() <= 9);
        // Row scales do not fit these values.
        assert!(find_scaled_grid(&m, 0, 127, f32_round).is_none());
    }

    #[test]
    fn arbitrary_floats_are_refused() {
        let values = crate::builder::pseudo_random(64, 1);
        let m = Matrix {
            values: &values,
            rows: 8,
            cols: 8,
            channel_axis: 1,
        };
        assert!(find_scaled_grid(&m, 1, 127, f32_round).is_none());
    }
}
