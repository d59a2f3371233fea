//! Calibration: the original model runs on calibration samples, and what it shows
//! decides the rewrite. The stages, in order:
//!
//! 1. [`probe`]: the model in tract with its planned weights as inputs and the
//!    activations they multiply as outputs, so one optimized model serves every run;
//! 2. [`gather`]: one run per sample gathers each activation's statistics (means for
//!    bias correction, `H = X^T X` for compensation);
//! 3. [`sensitivity`]: each weight alone is decomposed at every candidate setting and
//!    the compared values' error measured (on [`logits`] by default): end to end at
//!    one setting and scaled by the per-layer [`proxy`] where `H` was gathered;
//! 4. [`allocate`] and [`budget`]: a knapsack over the measured curves picks each
//!    weight's setting for a size budget, checked against the rewrite's bytes.

pub mod allocate;
pub mod budget;
pub mod gather;
pub mod logits;
pub mod probe;
pub mod proxy;
pub mod sensitivity;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::Result;
use crate::fit::Fits;
use crate::graph::Graph;
use crate::inputs::Samples;
use crate::plan::Plan;
use crate::plan::WeightPlan;
use crate::report::progress_bar;
use crate::rewrite::Measured;
use crate::stats::{Stats, activation};
use gather::gather_stats;
use logits::default_compared;
use probe::Probe;
use sensitivity::{Curve, Measurement, candidate_settings, measure};

/// What the sensitivity stage measures.
#[derive(Clone, Debug, Default)]
pub struct Sensitivity {
    /// Samples each weight's sensitivity is measured on (the first ones); 0 skips the
    /// stage.
    pub samples: usize,
    /// The values compared; empty: [`default_compared`].
    pub outputs: Vec<String>,
    /// The fewest bits a setting measured may have (1 when 0).
    pub min_bits: u32,
    /// Wall time the stage may take, judged from the first pass: fewer samples when
    /// it would take longer, none when one sample would.
    pub budget: Option<Duration>,
    /// Whether weights multiplying a gathered activation are measured at one setting
    /// and the rest scaled from the per-layer [`proxy`] (which gathers `H = X^T X`);
    /// else (the default here; the CLI's default is the proxy) every setting of every
    /// weight is run end to end.
    pub proxy: bool,
}

/// What calibration found.
#[derive(Clone, Debug)]
pub struct Calibrated {
    /// The samples run.
    pub samples: Arc<Samples>,
    /// Activation statistics of every rewritable MatMul/Gemm.
    pub stats: Stats,
    /// Sensitivity curves of the weights the probe could swap (empty unless asked).
    pub curves: Vec<Curve>,
    /// The fits the curves were measured with, for the rewrite to reuse.
    pub fits: Fits,
    /// Model runs made.
    pub runs: usize,
    /// Why sensitivity was measured on fewer samples than asked, or not at all.
    pub shortened: Option<String>,
    /// The values sensitivity was measured on (see [`default_compared`]).
    pub compared: Vec<String>,
}

impl Calibrated {
    /// What the rewrite reads from calibration: the statistics and the fits.
    pub fn measured(&self) -> Measured<'_> {
        Measured {
            stats: &self.stats,
            fits: &self.fits,
        }
    }

    /// The activations whose `H = X^T X` was gathered from fewer rows than they have
    /// features, as (name, rows, features), fewest rows per feature first: each such
    /// `H` is singular, and compensation there rests on its damping, not on the data.
    pub fn singular_hessians(&self) -> Vec<(&str, usize, usize)> {
        let mut short: Vec<_> = self
            .stats
            .iter()
            .filter(|(_, s)| s.gram.is_some() && s.rows < s.features as f64)
            .map(|(key, s)| (key.name.as_str(), s.rows as usize, s.features))
            .collect();
        short.sort_unstable_by_key(|&(name, rows, features)| (rows * 1_000_000 / features, name));
        short
    }
}

/// Whether `stats` hold `H` for every activation `w`'s readers multiply it by.
fn has_gram(w: &WeightPlan, stats: &Stats) -> bool {
    w.patches.iter().all(|p| {
        activation(p)
            .and_then(|key| stats.get(&key))
            .is_some_and(|s| s.gram.is_some())
    })
}

/// Runs the model `graph` indexes (external data inlined) on `samples` for the
/// `plan`'s weights: gathers activation statistics (with `H = X^T X` when
/// `config.compensate`) on every sample and measures every weight's sensitivity as
/// `sensitivity` says. Draws a progress bar when `config.progress`.
pub fn calibrate(
    graph: &Graph,
    plan: &Plan,
    config: &Config,
    samples: Samples,
    sensitivity: &Sensitivity,
) -> Result<Calibrated> {
    let compared = if sensitivity.outputs.is_empty() {
        default_compared(graph)
    } else {
        sensitivity.outputs.clone()
    };
    let probe = Probe::new(graph, &plan.weights, &samples, &compared)?;
    let start = Instant::now();
    let measuring = sensitivity.samples.min(samples.samples.len()) > 0;
    let proxy = sensitivity.proxy && measuring;
    let stats = gather_stats(&probe, &samples, config.compensate || proxy)?;
    let mut runs = samples.samples.len();
    let asked = sensitivity.samples.min(samples.samples.len());
    let per_run = start.elapsed().as_secs_f64() / runs.max(1) as f64;
    let trials: usize = (probe.weights.iter())
        .map(|p| {
            let w = &plan.weights[p.plan_index];
            if proxy && has_gram(w, &stats) {
                2
            } else {
                candidate_settings(w, config, sensitivity.min_bits).len() + 1
            }
        })
        .sum();
    let affordable = match sensitivity.budget {
        Some(budget) => (budget.as_secs_f64() / (per_run * trials as f64).max(1e-9)) as usize,
        None => usize::MAX,
    };
    let measured = asked.min(affordable);
    let shortened = (measured < asked).then(|| {
        format!(
            "sensitivity on {measured} of {asked} samples: {trials} runs a sample at {:.3} s a run would pass its {:.0} s budget",
            per_run,
            sensitivity.budget.unwrap_or_default().as_secs_f64()
        )
    });
    let (curves, fits) = if measured > 0 {
        let progress = progress_bar(
            config.progress,
            probe.weights.len() * measured,
            "sensitivity runs",
        );
        let how = Measurement {
            calibration: &samples,
            samples: measured,
            min_bits: sensitivity.min_bits,
            proxy,
        };
        let (curves, fits, measuring_runs) = measure(
            graph,
            &plan.weights,
            config,
            &probe,
            how,
            Some(&stats),
            &progress,
        )?;
        progress.finish_and_clear();
        runs += measuring_runs;
        (curves, fits)
    } else {
        (Vec::new(), Fits::default())
    };
    Ok(Calibrated {
        samples: Arc::new(samples),
        stats,
        curves,
        fits,
        runs,
        shortened,
        compared,
    })
}
