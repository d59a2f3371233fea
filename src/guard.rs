//! The default without data: every weight gets the cheapest bits and granularity whose
//! weight SQNR (signal over decomposition noise, in dB) meets a target that grows as
//! the weight shrinks.
//!
//! Without calibration the tool cannot tell which weights the outputs are sensitive
//! to, so each weight's relative error counts the same. Spending bytes where they buy
//! the most of that error is then a Lagrangian: a weight of `n` elements should stop
//! at the relative error where one more bit (`n / 8` bytes) buys less than a fixed
//! price, which puts its SQNR 3 dB higher for every halving of its size. Measured on
//! real models, half that slope (`--sqnr-slope`, 1.5 dB) keeps them working and stores
//! them smaller: `target + slope * log2(2^20 / n)`. Weights under [`SMALL_ELEMENTS`]
//! aim at [`SMALL_TARGET_DB`] and ends (heads and stems, see [`ends`]) aim
//! [`END_BONUS_DB`] higher. Small weights get near-lossless codebooks for few bytes;
//! large ones, which hold the file's bytes, get the fewest bits that keep at least
//! `floor` dB. The SQNR is the channels' (see
//! `channel_sqnr_db`): a codebook that serves small channels badly scores badly.
//! Candidates are 4 to 8 bits per tensor or per channel (or the granularity
//! `--granularity` fixes) that store the weight in at most half its bytes: the error
//! of both granularities is measured at 4 bits and extrapolated at 6.02 dB per bit,
//! the cheapest candidate that meets the target (else the best one) is fitted, and one
//! more bit is added while the fit misses the target by more than [`TOLERANCE_DB`]. A
//! weight no candidate stores in half its bytes stays dense. The fits are kept for the
//! rewrite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

use crate::config::{Config, Form, GranularityChoice, Guard, QDQ_BITS};
use crate::error::Result;
use crate::fit::{Fit, Fits, HALF_BITS, check, fit_values, half, matrix};
use crate::graph::{Def, Graph, LAYOUT_ONLY, NodeId, Use};
use crate::onnx::tensor::float_values;
use crate::particles::Granularity;
use crate::particles::pack::packed_len;
use crate::plan::{Plan, Setting, WeightPlan};
use crate::rules::SkipReason;

/// Elements of the weight that aims at exactly the guard's target.
pub const REFERENCE_ELEMENTS: f64 = (1u64 << 20) as f64;

/// How far below its target a fitted weight may stay before it gets one more bit.
pub const TOLERANCE_DB: f64 = 1.0;

/// How much higher an end aims: a head, whose reader makes a model output through ops
/// that keep each channel apart, or a stem, whose reader takes a model input that way
/// (see [`ends`]). A head's errors reach the output undamped, and an argmax over many
/// classes turns small logit errors into wrong answers (measured: PP-OCRv5's
/// 18385-class head read 8 of 33 lines at 5 bits and all 33 at 6, with every other
/// weight at 8); a stem's errors pass through every layer after it, and a stem is often
/// fixed signal processing (a filterbank, an STFT) rather than learned features.
pub const END_BONUS_DB: f64 = 9.0;

/// Weights with fewer elements aim at [`SMALL_TARGET_DB`], which only half precision
/// reaches: they hold few bytes, and in small models they are the sensitive ones
/// (measured: a 4096-weight layer of a tabular regressor was off by 1.8% of the output
/// range at 8 bits, by 0.02% in half precision).
pub const SMALL_ELEMENTS: usize = 8192;

/// What weights under [`SMALL_ELEMENTS`] aim at, in dB.
pub const SMALL_TARGET_DB: f64 = 50.0;

/// Ops besides [`LAYOUT_ONLY`] a head's output passes through on its way to a model
/// output: they act on each value (or each channel) apart, so the head's errors arrive
/// as they are.
const PER_CHANNEL: [&str; 18] = [
    "Cast",
    "Softmax",
    "LogSoftmax",
    "Sigmoid",
    "Tanh",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Exp",
    "Log",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Concat",
    "Slice",
    "Split",
    "ReduceSum",
];

/// Whether values pass `op` as they are, value by value or channel by channel.
fn passes_through(op: &str) -> bool {
    LAYOUT_ONLY.contains(&op) || PER_CHANNEL.contains(&op)
}

/// The planned weights that are ends: heads, read by a node whose output reaches a
/// model output through [`passes_through`] ops only, and stems, read by a node that
/// takes a model input through them (at most 16 of them on the way).
pub fn ends(graph: &Graph, plan: &Plan) -> HashSet<usize> {
    let readers: HashMap<NodeId, usize> = (plan.weights.iter().enumerate())
        .flat_map(|(i, w)| w.readers().map(move |p| (p.node, i)))
        .collect();
    let main = graph.scopes[0].graph;
    let outputs = main.output.iter().map(|o| o.name());
    // Heads: back from the outputs, node by producing node, through computed inputs.
    let producer = |value: &str| match graph.resolve(0, value) {
        Some((0, Def::Output { node, .. })) => vec![NodeId {
            scope: 0,
            index: node,
        }],
        _ => Vec::new(),
    };
    let computed = |id: NodeId| {
        (graph.node(id).input.iter())
            .filter(|i| graph.constant(0, i).is_none())
            .cloned()
            .collect()
    };
    let mut ends = reached(graph, &readers, outputs, producer, computed);
    // Stems: on from the real inputs, node by reading node of the main graph.
    let inputs = (main.input.iter())
        .filter(|i| matches!(graph.resolve(0, i.name()), Some((0, Def::Input))))
        .map(|i| i.name());
    let readers_of = |value: &str| {
        (graph.uses(0, value).into_iter())
            .filter_map(|u| match u {
                Use::Node { node, .. } => Some(node),
                _ => None,
            })
            .collect()
    };
    // A reader inside a subgraph may be a stem; its outputs are not followed.
    let outputs_of = |id: NodeId| match id.scope {
        0 => graph.node(id).output.clone(),
        _ => Vec::new(),
    };
    ends.extend(reached(graph, &readers, inputs, readers_of, outputs_of));
    ends
}

/// The weights of `readers` whose reader a walk from `starts` reaches through at most
/// 16 [`passes_through`] nodes: `nodes` gives the nodes one step from a value, `onward`
/// the values a passing node leads to.
fn reached<'g>(
    graph: &Graph<'g>,
    readers: &HashMap<NodeId, usize>,
    starts: impl Iterator<Item = &'g str>,
    nodes: impl Fn(&str) -> Vec<NodeId>,
    onward: impl Fn(NodeId) -> Vec<String>,
) -> HashSet<usize> {
    let mut reached = HashSet::new();
    let mut seen = HashSet::new();
    let mut todo: Vec<(String, usize)> = starts.map(|s| (s.to_string(), 0)).collect();
    while let Some((value, depth)) = todo.pop() {
        if depth > 16 || !seen.insert(value.clone()) {
            continue;
        }
        for node in nodes(&value) {
            if let Some(&w) = readers.get(&node) {
                reached.insert(w);
                continue;
            }
            if passes_through(graph.node(node).op_type()) {
                todo.extend(onward(node).into_iter().map(|v| (v, depth + 1)));
            }
        }
    }
    reached
}

/// The setting recorded for a weight stored in half precision.
const HALF: Setting = Setting {
    bits: HALF_BITS,
    granularity: Granularity::Tensor,
};

/// The bits the guard chooses among.
const BITS: std::ops::RangeInclusive<u32> = 4..=8;

/// The bits a weight may get, fewest first: [`BITS`], or under `--form qdq` the
/// integer widths it stores ([`QDQ_BITS`]).
fn bit_steps(config: &Config) -> Vec<u32> {
    match config.form {
        Form::Qdq => QDQ_BITS.to_vec(),
        _ => BITS.collect(),
    }
}

/// The SQNR a weight of `elements` elements aims at under `guard`.
pub fn target_db(guard: &Guard, elements: usize) -> f64 {
    if elements < SMALL_ELEMENTS {
        return SMALL_TARGET_DB;
    }
    let halvings = (REFERENCE_ELEMENTS / elements as f64).log2();
    (guard.target_db + guard.slope_db * halvings).max(guard.floor_db)
}

/// The channel SQNR of `fit` for weight `w` with `values`: the mean over output
/// channels of each channel's noise over its signal (at least a hundredth of the mean
/// channel's), in dB (infinite when lossless).
/// A codebook shared by channels of very different scales serves the small ones badly;
/// after a normalisation those errors count in full, so the channels' mean is what
/// matters, not the tensor's total.
fn channel_sqnr_db(w: &WeightPlan, values: &[f64], fit: &Fit) -> f64 {
    let matrix = matrix(w, values);
    let decoded = fit.decoded(&matrix, w.first().float_type);
    let (channels, _) = matrix.channels_and_inputs();
    let mut noise = vec![0.0; channels];
    let mut signal = vec![0.0; channels];
    for (pos, (&v, &d)) in values.iter().zip(&decoded).enumerate() {
        let (row, col) = (pos / matrix.cols, pos % matrix.cols);
        let c = if matrix.channel_axis == 1 { col } else { row };
        noise[c] += (v - d) * (v - d);
        signal[c] += v * v;
    }
    // A channel of (nearly) zeros is judged against a hundredth of the mean channel:
    // its own signal would make any error infinite.
    let floor =
        (signal.iter().sum::<f64>() / channels.max(1) as f64 / 100.0).max(f64::MIN_POSITIVE);
    let relative: f64 = noise
        .iter()
        .zip(&signal)
        .map(|(&n, &s)| if n == 0.0 { 0.0 } else { n / s.max(floor) })
        .sum();
    -10.0 * (relative / channels.max(1) as f64).log10()
}

/// What the guard chose for every weight: settings by weight name, the fits made at
/// them, each weight's target, and the weights no setting stores in half their bytes.
pub struct Guarded {
    /// The chosen settings.
    pub settings: HashMap<String, Setting>,
    /// The fits at those settings, for the rewrite to reuse.
    pub fits: Fits,
    /// Each weight's target SQNR in dB.
    pub targets: HashMap<String, f64>,
    /// Weights left dense, and why.
    pub skipped: Vec<(String, SkipReason)>,
}

/// What the guard decided for one weight.
enum Choice {
    /// This setting, its fit, and the weight's target.
    Setting(Setting, Arc<Fit>, f64),
    /// Leave the weight dense.
    Skip(SkipReason),
    /// The fit stage refuses it; the rewrite says why.
    Refused,
}

/// Chooses every planned weight's setting under `guard` (see the module doc), the
/// ends of `graph` aiming [`END_BONUS_DB`] higher.
pub fn guard(graph: &Graph, plan: &Plan, config: &Config, guard: &Guard) -> Result<Guarded> {
    let ends = ends(graph, plan);
    let chosen: Vec<Choice> = (plan.weights.par_iter().enumerate())
        .map(|(i, w)| {
            let bonus = if ends.contains(&i) { END_BONUS_DB } else { 0.0 };
            choose(w, config, guard, bonus)
        })
        .collect::<Result<_>>()?;
    let mut out = Guarded {
        settings: HashMap::new(),
        fits: Fits::default(),
        targets: HashMap::new(),
        skipped: Vec::new(),
    };
    for (w, choice) in plan.weights.iter().zip(chosen) {
        match choice {
            Choice::Setting(setting, fit, target) => {
                out.settings.insert(w.name().to_string(), setting);
                out.fits.insert(w.name(), setting, fit);
                out.targets.insert(w.name().to_string(), target);
            }
            Choice::Skip(reason) => out.skipped.push((w.name().to_string(), reason)),
            Choice::Refused => {}
        }
    }
    Ok(out)
}

/// The bytes a weight's index and codebooks take at `setting` (under `--form qdq`,
/// its integers and a scale and zero point per block).
pub(crate) fn setting_bytes(w: &WeightPlan, setting: Setting, config: &Config) -> usize {
    let float_type = w.first().float_type;
    let codebooks = matrix(w, &[]).codebooks(setting.granularity);
    let per_codebook = match config.form {
        // A scale and a zero point.
        Form::Qdq => float_type.size() * 8 + setting.bits as usize,
        _ => {
            let particle_size = config.codebook_type.resolve(float_type, &[], false).size();
            (1 << setting.bits) * particle_size * 8
        }
    };
    packed_len(w.elements(), setting.bits) + (codebooks * per_codebook).div_ceil(8)
}

/// The setting, fit and target of one weight, whose target is `bonus` dB higher.
fn choose(w: &WeightPlan, config: &Config, guard: &Guard, bonus: f64) -> Result<Choice> {
    let values = float_values(w.first().weight.tensor, config.external_dir.as_deref())?;
    if check(w, &values, config).is_err() {
        return Ok(Choice::Refused);
    }
    let target = target_db(guard, w.elements()) + bonus;
    let fit_at = |setting: Setting| {
        let at = WeightPlan {
            setting,
            ..w.clone()
        };
        let fit = fit_values(&at, &values, config, None, None).ok()?;
        Some((channel_sqnr_db(w, &values, &fit), Arc::new(fit)))
    };
    let p = w.first();
    let granularities: Vec<Granularity> = match config.granularity {
        _ if config.form == Form::Qdq => config.granularity.qdq_blocks(),
        GranularityChoice::Fixed(g) => vec![g],
        GranularityChoice::Auto if p.shape[p.channel_axis] > 1 => {
            vec![Granularity::Tensor, Granularity::Channel]
        }
        GranularityChoice::Auto => vec![Granularity::Tensor],
    };
    let steps = bit_steps(config);
    let bytes = |s: Setting| setting_bytes(w, s, config);
    let cap = w.elements() * p.float_type.size() / 2;
    let mut probes = Vec::new();
    for &granularity in &granularities {
        let setting = Setting {
            bits: steps[0],
            granularity,
        };
        if bytes(setting) > cap {
            continue;
        }
        if let Some((db, fit)) = fit_at(setting) {
            probes.push((setting, db, fit));
        }
    }
    let candidates = probes.iter().flat_map(|&(probe, db, _)| {
        steps.iter().map(move |&bits| {
            let setting = Setting { bits, ..probe };
            (setting, db + 6.02 * f64::from(bits - probe.bits))
        })
    });
    let affordable = candidates.filter(|&(s, _)| bytes(s) <= cap);
    let meeting = affordable.clone().filter(|&(_, db)| db >= target);
    let best = meeting
        .min_by_key(|&(s, _)| (bytes(s), s.bits))
        .or_else(|| affordable.max_by(|a, b| a.1.total_cmp(&b.1)));
    let half = || {
        let fit = half(w, &values)?;
        let db = channel_sqnr_db(w, &values, &fit);
        (2 * w.elements() <= cap).then(|| (db, Arc::new(fit)))
    };
    let Some((mut setting, _)) = best else {
        if let Some((_, fit)) = half() {
            return Ok(Choice::Setting(HALF, fit, target));
        }
        let least = granularities
            .iter()
            .map(|&granularity| {
                bytes(Setting {
                    bits: steps[0],
                    granularity,
                })
            })
            .min()
            .unwrap_or(0);
        return Ok(Choice::Skip(SkipReason::TooCostly(
            w.name().into(),
            least,
            2 * cap,
        )));
    };
    let fitted = match probes.iter().find(|(s, _, _)| *s == setting) {
        Some((_, db, fit)) => Some((*db, fit.clone())),
        None => fit_at(setting),
    };
    let Some((mut db, mut fit)) = fitted else {
        return Ok(Choice::Refused);
    };
    while db < target - TOLERANCE_DB {
        let Some(&bits) = steps.iter().find(|&&b| b > setting.bits) else {
            break;
        };
        let next = Setting { bits, ..setting };
        if bytes(next) > cap {
            break;
        }
        let Some((next_db, next_fit)) = fit_at(next) else {
            break;
        };
        (setting, db, fit) = (next, next_db, next_fit);
    }
    if db < target - TOLERANCE_DB
        && let Some((_, half_fit)) = half().filter(|(half_db, _)| *half_db > db)
    {
        return Ok(Choice::Setting(HALF, half_fit, target));
    }
    Ok(Choice::Setting(setting, fit, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_rise_3_db_per_halving_down_to_the_floor() {
        let guard = Guard {
            target_db: 24.0,
            slope_db: 3.0,
            floor_db: 20.0,
        };
        assert_eq!(target_db(&guard, 1 << 20), 24.0);
        assert_eq!(target_db(&guard, 1 << 19), 27.0);
        assert_eq!(target_db(&guard, 1 << 13), 45.0);
        assert_eq!(target_db(&guard, (1 << 13) - 1), SMALL_TARGET_DB);
        assert_eq!(target_db(&guard, 1 << 24), 20.0);
    }
}
