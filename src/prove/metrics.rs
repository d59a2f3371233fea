//! How far each output of the rewritten model is from the original's: running sums
//! over the samples, the metrics they give, and the warnings a clear divergence earns.

use tract_onnx::prelude::TValue;

use crate::error::{Error, Result};
use crate::runtime::values_f64;

/// Relative L2 error from which an output clearly diverges.
pub const DIVERGING_REL_L2: f64 = 0.3;

/// Agreement (of argmax or decoded sequences) under which an output clearly diverges.
pub const DIVERGING_AGREEMENT: f64 = 0.9;

/// How far one output of the rewritten model is from the original's, over all samples.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutputMetrics {
    /// The output's name.
    pub name: String,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// `||b - a|| / ||a||`, with `a` the original output.
    pub rel_l2: f64,
    /// Cosine similarity of the flattened outputs.
    pub cosine: f64,
    /// Signal to noise, `10 log10(||a||^2 / ||b - a||^2)`, in dB.
    pub sqnr_db: f64,
    /// For outputs with a last axis of classes (rank >= 2, at least 2 classes): the
    /// fraction of rows whose largest class is the same.
    pub argmax_agreement: Option<f64>,
    /// For sequence outputs (rank 3): the fraction of samples whose greedy decoding
    /// (argmax per row, repeats merged, class 0 dropped, as CTC decodes) is the same.
    pub sequence_agreement: Option<f64>,
}

impl OutputMetrics {
    /// Why this output clearly diverges, if it does.
    pub fn divergence(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.rel_l2.is_nan() || self.rel_l2 >= DIVERGING_REL_L2 {
            why.push(format!("relative error {:.3}", self.rel_l2));
        }
        if let Some(a) = self.argmax_agreement.filter(|&a| a < DIVERGING_AGREEMENT) {
            why.push(format!(
                "largest class changed on {:.0}% of rows",
                100.0 * (1.0 - a)
            ));
        }
        if let Some(a) = self.sequence_agreement.filter(|&a| a < DIVERGING_AGREEMENT) {
            why.push(format!(
                "decoded sequence changed on {:.0}% of samples",
                100.0 * (1.0 - a)
            ));
        }
        (!why.is_empty()).then(|| format!("output '{}' diverges: {}", self.name, why.join(", ")))
    }
}

/// Running sums for one output's metrics.
#[derive(Clone, Debug, Default)]
pub struct Sums {
    max_abs: f64,
    aa: f64,
    bb: f64,
    ab: f64,
    diff: f64,
    rows: usize,
    same_rows: usize,
    sequences: usize,
    same_sequences: usize,
}

/// The position of the largest of `row` (the first on ties; NaN never wins).
fn argmax(row: &[f64]) -> usize {
    (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best })
}

/// The greedy decoding of `classes`, one per row: repeats merged, class 0 dropped.
fn decoded(classes: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut previous = None;
    for &c in classes {
        if previous != Some(c) && c != 0 {
            out.push(c);
        }
        previous = Some(c);
    }
    out
}

impl Sums {
    /// Adds one sample's output `a` (original) and `b` (rewritten).
    pub fn add(&mut self, a: &TValue, b: &TValue) -> Result<()> {
        if a.shape() != b.shape() {
            return Err(Error::invalid(format!(
                "an output has shape {:?} in the original and {:?} in the rewritten model",
                a.shape(),
                b.shape()
            )));
        }
        let (x, y) = (values_f64(a)?, values_f64(b)?);
        self.add_values(&x, &y, a.shape());
        Ok(())
    }

    /// Adds one sample's values of shape `shape`, `x` original, `y` rewritten.
    pub fn add_values(&mut self, x: &[f64], y: &[f64], shape: &[usize]) {
        for (&x, &y) in x.iter().zip(y) {
            if x.is_nan() && y.is_nan() {
                continue;
            }
            let d = if x.is_nan() || y.is_nan() {
                f64::INFINITY
            } else {
                (x - y).abs()
            };
            self.max_abs = self.max_abs.max(d);
            self.aa += x * x;
            self.bb += y * y;
            self.ab += x * y;
            self.diff += d * d;
        }
        let classes = shape.last().copied().unwrap_or(0);
        if shape.len() < 2 || classes < 2 || x.is_empty() {
            return;
        }
        let (ca, cb): (Vec<usize>, Vec<usize>) = x
            .chunks(classes)
            .zip(y.chunks(classes))
            .map(|(a, b)| (argmax(a), argmax(b)))
            .unzip();
        self.rows += ca.len();
        self.same_rows += ca.iter().zip(&cb).filter(|(a, b)| a == b).count();
        if shape.len() == 3 {
            self.sequences += 1;
            self.same_sequences += usize::from(decoded(&ca) == decoded(&cb));
        }
    }

    /// The metrics of output `name`.
    pub fn metrics(&self, name: String) -> OutputMetrics {
        let rel_l2 = if self.diff == 0.0 {
            0.0
        } else {
            (self.diff / self.aa).sqrt()
        };
        let cosine = if self.aa == 0.0 && self.bb == 0.0 {
            1.0
        } else {
            self.ab / (self.aa * self.bb).sqrt()
        };
        let fraction = |same: usize, all: usize| (all > 0).then(|| same as f64 / all as f64);
        OutputMetrics {
            name,
            max_abs: self.max_abs,
            rel_l2,
            cosine,
            sqnr_db: 10.0 * (self.aa / self.diff).log10(),
            argmax_agreement: fraction(self.same_rows, self.rows),
            sequence_agreement: fraction(self.same_sequences, self.sequences),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_decoded_sequences_are_compared() {
        // Two rows of three classes; the second row's largest class changes.
        let mut sums = Sums::default();
        sums.add_values(
            &[0.0, 2.0, 1.0, 3.0, 0.0, 1.0],
            &[0.0, 2.0, 1.0, 0.0, 0.0, 1.0],
            &[2, 3],
        );
        let m = sums.metrics("y".into());
        assert_eq!(
            (m.argmax_agreement, m.sequence_agreement),
            (Some(0.5), None)
        );
        // Sequences [1, 1, 0, 2] and [1, 0, 0, 2] both decode to [1, 2].
        let rows = |classes: &[usize]| -> Vec<f64> {
            classes
                .iter()
                .flat_map(|&c| (0..3).map(move |k| f64::from(u8::from(k == c))))
                .collect()
        };
        let mut sums = Sums::default();
        sums.add_values(&rows(&[1, 1, 0, 2]), &rows(&[1, 0, 0, 2]), &[1, 4, 3]);
        let m = sums.metrics("ctc".into());
        assert_eq!(
            (m.argmax_agreement, m.sequence_agreement),
            (Some(0.75), Some(1.0))
        );
        assert_eq!(decoded(&[0, 3, 3, 0, 3, 1]), vec![3, 3, 1]);
        assert!(m.divergence().unwrap().contains("relative error"));
    }
}
