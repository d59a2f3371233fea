//! The first calibration pass: the original model runs on every sample and the
//! statistics of every activation a planned weight multiplies are gathered.

use rayon::prelude::*;
use tract_onnx::prelude::TValue;

use super::probe::Probe;
use crate::error::{Error, Result};
use crate::inputs::Samples;
use crate::runtime::values_f64;
use crate::stats::{ActivationKey, ActivationStats, Stats};

/// The most memory `X^T X` of every activation may take together (`f64`s), checked
/// before any is allocated.
pub const MAX_GRAM_BYTES: u64 = 8 << 30;

/// Runs the original model on every sample and gathers the statistics of every
/// exposed activation (with `H = X^T X` when `gram`). With `gram`, refuses before
/// allocating if the `H`s would pass [`MAX_GRAM_BYTES`] together.
pub fn gather_stats(probe: &Probe, samples: &Samples, gram: bool) -> Result<Stats> {
    let activations: Vec<(&ActivationKey, usize)> =
        probe.activations.iter().map(|(k, &p)| (k, p)).collect();
    let mut gathered: Option<Vec<Option<ActivationStats>>> = None;
    for sample in &samples.samples {
        let out = probe.run(sample, None)?;
        let stats = match &mut gathered {
            Some(stats) => stats,
            None => gathered.insert(empty_stats(&activations, &out, gram)?),
        };
        stats.par_iter_mut().zip(&activations).try_for_each(
            |(stats, &(key, position))| -> Result<()> {
                if let Some(stats) = stats {
                    stats.add(&values_f64(&out[position])?, key.transposed);
                }
                Ok(())
            },
        )?;
    }
    Ok(activations
        .into_iter()
        .zip(gathered.unwrap_or_default())
        .filter_map(|((key, _), stats)| Some((key.clone(), stats?)))
        .collect())
}

/// Empty statistics for every activation whose features the first run's `out` shows,
/// after checking that their `H`s (with `gram`) fit in [`MAX_GRAM_BYTES`].
fn empty_stats(
    activations: &[(&ActivationKey, usize)],
    out: &[TValue],
    gram: bool,
) -> Result<Vec<Option<ActivationStats>>> {
    let features: Vec<Option<usize>> = activations
        .iter()
        .map(
            |&(key, position)| match (key.transposed, out[position].shape()) {
                (true, [rows, _]) => Some(*rows),
                (false, [.., last]) => Some(*last),
                _ => None,
            },
        )
        .collect();
    let bytes: u128 = features
        .iter()
        .flatten()
        .map(|&n| (n as u128).pow(2) * 8)
        .sum();
    let largest = activations
        .iter()
        .zip(&features)
        .filter_map(|(&(key, _), n)| Some((key, (*n)?)))
        .max_by_key(|&(_, n)| n);
    if let (true, Some((key, n))) = (gram && bytes > MAX_GRAM_BYTES as u128, largest) {
        return Err(Error::Config(format!(
            "--compensate: X^T X of {} activations would take {:.1} GiB (limit {} GiB; \
             the largest, '{}', has {n} features); compensate fewer weights (--exclude)",
            features.iter().flatten().count(),
            bytes as f64 / (1u64 << 30) as f64,
            MAX_GRAM_BYTES >> 30,
            key.name,
        )));
    }
    Ok(features
        .into_iter()
        .map(|n| n.map(|n| ActivationStats::new(n, gram)))
        .collect())
}
