//! Streamed statistics of the activations a weight multiplies: the feature means (for
//! bias correction) and optionally `H = X^T X` (for error-compensating rounding).
//! Memory is fixed by the number of features, whatever the number of samples.

/// Running statistics of one activation, seen as rows of `features` values.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationStats {
    /// Number of features per row.
    pub features: usize,
    /// Rows seen.
    pub rows: f64,
    /// Sum of the rows.
    pub sum: Vec<f64>,
    /// Sum of `x x^T` over rows, `features x features` row-major, when gathered.
    pub gram: Option<Vec<f64>>,
}

impl ActivationStats {
    /// Empty statistics for rows of `features` values; `gram` also sums `x x^T`.
    pub fn new(features: usize, gram: bool) -> Self {
        ActivationStats {
            features,
            rows: 0.0,
            sum: vec![0.0; features],
            gram: gram.then(|| vec![0.0; features * features]),
        }
    }

    /// Adds a matrix of `values` (row-major, rows of `features` values; with
    /// `transposed`, features run down the columns instead).
    pub fn add(&mut self, values: &[f64], transposed: bool) {
        let n = self.features;
        if n == 0 || !values.len().is_multiple_of(n) {
            return;
        }
        let count = values.len() / n;
        let row = |r: usize, scratch: &mut Vec<f64>| {
            scratch.clear();
            if transposed {
                scratch.extend((0..n).map(|f| values[f * count + r]));
            } else {
                scratch.extend_from_slice(&values[r * n..(r + 1) * n]);
            }
        };
        let mut x = Vec::with_capacity(n);
        for r in 0..count {
            row(r, &mut x);
            for (s, v) in self.sum.iter_mut().zip(&x) {
                *s += v;
            }
            if let Some(gram) = &mut self.gram {
                for (i, &xi) in x.iter().enumerate() {
                    if xi == 0.0 {
                        continue;
                    }
                    let line = &mut gram[i * n..(i + 1) * n];
                    for (g, &xj) in line[i..].iter_mut().zip(&x[i..]) {
                        *g += xi * xj;
                    }
                }
            }
        }
        self.rows += count as f64;
    }

    /// The mean row (zeros before any row is seen).
    pub fn mean(&self) -> Vec<f64> {
        let rows = self.rows.max(1.0);
        self.sum.iter().map(|s| s / rows).collect()
    }

    /// `H = X^T X`, both triangles filled, if gathered.
    pub fn hessian(&self) -> Option<Vec<f64>> {
        let n = self.features;
        let mut h = self.gram.clone()?;
        for i in 0..n {
            for j in 0..i {
                h[i * n + j] = h[j * n + i];
            }
        }
        Some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_gram_match_a_hand_computed_case() {
        let mut stats = ActivationStats::new(2, true);
        // Rows [1, 2] and [3, 4], fed as two separate batches.
        stats.add(&[1.0, 2.0], false);
        stats.add(&[3.0, 4.0], false);
        assert_eq!(stats.mean(), vec![2.0, 3.0]);
        // X^T X = [[1+9, 2+12], [2+12, 4+16]].
        assert_eq!(stats.hessian().unwrap(), vec![10.0, 14.0, 14.0, 20.0]);
        // The same rows as one transposed matrix (features down the columns).
        let mut t = ActivationStats::new(2, true);
        t.add(&[1.0, 3.0, 2.0, 4.0], true);
        assert_eq!(t, stats);
    }
}
