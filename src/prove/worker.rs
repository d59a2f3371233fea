//! The proof's worker thread: loads both models in tract, runs the samples while the
//! budget allows, and reports each step, so that the caller can stop waiting at the
//! deadline whatever tract is doing.

use std::sync::{Arc, mpsc};
use std::time::Instant;

use tract_onnx::prelude::{DatumType, Tensor};

use super::Sums;
use crate::error::Result;
use crate::inputs::{InputSpec, InputValues, Samples};
use crate::rng::Rng;
use crate::runtime::{Level, Session};

/// What the proof's worker reports.
pub(super) enum Progress {
    /// Both models loaded, at these rungs.
    Loaded(Level, Level),
    /// The sums after one more sample.
    Sample(Vec<Sums>),
    /// The worker stopped: why, if it was not done with every planned sample, and
    /// whether that is a failure of the rewrite (not of tract).
    Stopped(Option<(String, bool)>),
}

/// Where a sample's inputs come from.
#[derive(Clone)]
pub(super) enum Feeds {
    Given(Arc<Samples>),
    Random(Vec<InputSpec>, u64, InputValues),
}

/// The proof's worker: loads both models, runs the `planned` samples (fewer if the
/// next would pass `deadline`), and reports each step on `tx`; stops when nobody
/// listens any more.
pub(super) fn worker(
    (original, rewritten): (Vec<u8>, Vec<u8>),
    facts: Vec<(DatumType, Vec<usize>)>,
    feeds: Feeds,
    (planned, outputs, deadline): (usize, usize, Instant),
    tx: mpsc::Sender<Progress>,
) {
    let stopped = |why: String, failed: bool| {
        let _ = tx.send(Progress::Stopped(Some((why, failed))));
    };
    let a = match Session::from_bytes(&original, "original", &facts) {
        Ok(a) => a,
        Err(e) => return stopped(e.to_string(), false),
    };
    let b = match Session::from_bytes(&rewritten, "rewritten", &facts) {
        Ok(b) => b,
        Err(e) => return stopped(e.to_string(), false),
    };
    if tx.send(Progress::Loaded(a.level, b.level)).is_err() {
        return;
    }
    let mut sums = vec![Sums::default(); outputs];
    let mut rng = match &feeds {
        Feeds::Random(_, seed, _) => Rng::new(*seed),
        Feeds::Given(_) => Rng::new(0),
    };
    let first = Instant::now();
    for s in 0..planned {
        if s > 0 {
            let per_sample = first.elapsed() / s as u32;
            if Instant::now() + per_sample > deadline {
                let why = format!(
                    "stopped after {s} samples, before the time budget would pass (--proof-seconds S allows more)"
                );
                return stopped(why, false);
            }
        }
        let feed: Result<Vec<Tensor>> = match &feeds {
            Feeds::Given(samples) => Ok(samples.samples[s].clone()),
            Feeds::Random(specs, _, values) => specs
                .iter()
                .map(|spec| spec.draw(&mut rng, values))
                .collect(),
        };
        let feed = match feed {
            Ok(feed) => feed,
            Err(e) => return stopped(e.to_string(), false),
        };
        let (out_a, out_b) = match (a.run(&feed), b.run(&feed)) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => return stopped(e.to_string(), false),
        };
        if out_a.len() != outputs || out_b.len() != outputs {
            let why = format!(
                "the rewritten model has {} outputs, the original {}",
                out_b.len(),
                out_a.len()
            );
            return stopped(why, true);
        }
        for ((sum, x), y) in sums.iter_mut().zip(&out_a).zip(&out_b) {
            if let Err(e) = sum.add(x, y) {
                return stopped(e.to_string(), true);
            }
        }
        if tx.send(Progress::Sample(sums.clone())).is_err() {
            return;
        }
    }
    let _ = tx.send(Progress::Stopped(None));
}
