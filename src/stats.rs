//! Streamed statistics of the activations a weight multiplies: the feature means (for
//! bias correction) and optionally `H = X^T X` (for error-compensating rounding).
//! Memory is fixed by the number of features, whatever the number of samples.
//! Calibration gathers them; the rewrite reads them.

use std::collections::HashMap;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use crate::particles::compensate::Hessian;
use crate::plan::WeightPlan;
use crate::rules::WeightPatch;

/// An activation whose statistics calibration gathers: a value name, and whether its
/// features run along its first axis (Gemm with `transA = 1`) instead of its last.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ActivationKey {
    /// The value's name.
    pub name: String,
    /// Whether features run along axis 0 of a matrix.
    pub transposed: bool,
}

/// Statistics of every activation a rewritten MatMul/Gemm multiplies by its weight.
pub type Stats = HashMap<ActivationKey, ActivationStats>;

/// The activation a main-graph reader multiplies the weight by, if it is a linear
/// reader (see [`crate::rules::Linear`]).
pub fn activation(patch: &WeightPatch) -> Option<ActivationKey> {
    let linear = patch.linear.filter(|_| patch.node.scope == 0)?;
    Some(ActivationKey {
        name: linear.x.to_string(),
        transposed: linear.x_transposed,
    })
}

/// Damping of `H` for error-compensating rounding: this fraction of its mean diagonal
/// is added to the diagonal (GPTQ's usual 1%).
const DAMPING: f64 = 0.01;

/// `H` for a weight, factored: [`weight_gram`], damped.
pub fn weight_hessian(w: &WeightPlan, stats: &Stats) -> Option<Hessian> {
    Some(Hessian::new(weight_gram(w, stats)?, DAMPING))
}

/// The sum of `X^T X` over the activations a weight's readers multiply it by
/// (row-major, inputs x inputs), when every reader has one gathered.
pub fn weight_gram(w: &WeightPlan, stats: &Stats) -> Option<Vec<f64>> {
    let mut total: Option<Vec<f64>> = None;
    for patch in &w.patches {
        let h = stats.get(&activation(patch)?)?.hessian()?;
        match &mut total {
            Some(t) if t.len() == h.len() => t.iter_mut().zip(&h).for_each(|(a, b)| *a += b),
            Some(_) => return None,
            None => total = Some(h),
        }
    }
    total
}

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
    /// `transposed`, features run down the columns instead). `X^T X` is one matrix
    /// product per call.
    pub fn add(&mut self, values: &[f64], transposed: bool) {
        let n = self.features;
        if n == 0 || !values.len().is_multiple_of(n) {
            return;
        }
        let count = values.len() / n;
        let rows = if transposed {
            ArrayView2::from_shape((n, count), values).map(|x| x.reversed_axes())
        } else {
            ArrayView2::from_shape((count, n), values)
        };
        let Ok(x) = rows else { return };
        for (s, column) in self.sum.iter_mut().zip(x.columns()) {
            *s += column.sum();
        }
        if let Some(gram) = &mut self.gram
            && let Ok(mut gram) = ArrayViewMut2::from_shape((n, n), gram)
        {
            general_mat_mul(1.0, &x.t(), &x, 1.0, &mut gram);
        }
        self.rows += count as f64;
    }

    /// The mean row (zeros before any row is seen).
    pub fn mean(&self) -> Vec<f64> {
        let rows = self.rows.max(1.0);
        self.sum.iter().map(|s| s / rows).collect()
    }

    /// `H = X^T X`, if gathered.
    pub fn hessian(&self) -> Option<Vec<f64>> {
        self.gram.clone()
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
