//! Scalar codebooks: the optimal `K` particle values for a slice of weights and the
//! particle index of every weight.

use super::kmeans1d::{Group, optimal_clusters};
use super::lloyd1d::lloyd_clusters;

/// How a scalar codebook is fitted (`--fit exact|fast`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CodebookFit {
    /// Exact optimal 1-D k-means (dynamic program; a fine histogram first for very
    /// many distinct values).
    #[default]
    Exact,
    /// Lloyd iterations on the sorted values from a companded start: a local optimum,
    /// several times faster (see [`lloyd_clusters`]).
    #[value(name = "fast")]
    Lloyd,
}

/// Most points the exact dynamic program takes for a codebook of `k` particles; more
/// distinct values than this are first binned into a fine histogram (see
/// [`fit_codebook`]). `k * limit = 2^20` keeps one codebook's DP near 2^24 cost
/// evaluations (tens of milliseconds) and its split table at 4 MiB.
pub fn exact_limit(k: usize) -> usize {
    ((1usize << 20) / k.max(1)).max(1 << 10)
}

/// The particles of one codebook and the index of every value into them.
#[derive(Clone, Debug, PartialEq)]
pub struct Codebook {
    /// Particle values, ascending; at most `k` of them (fewer when the input has fewer
    /// distinct values).
    pub particles: Vec<f64>,
    /// For every input value, the position of its particle.
    pub index: Vec<u8>,
    /// Squared error of the input against its particles.
    pub sse: f64,
    /// Upper bound on how much larger `sse` is than the exact optimum: 0 when the
    /// dynamic program ran on the distinct values, positive when it ran on a histogram.
    /// 0 under [`CodebookFit::Lloyd`] too, which has no bound.
    pub sse_bound: f64,
}

/// Fits the `k <= 256` particle values that minimise the squared error of `values`
/// (all finite) and indexes every value.
///
/// With at most `k` distinct values the particles are those values (lossless). Up to
/// [`exact_limit`] distinct values the result is the exact optimum. Beyond that the
/// values are binned into `exact_limit(k)` equal-width bins first and clusters never
/// split a bin; then the error exceeds the optimum by at most `2 * width * range *
/// largest_bin` (each of the `k - 1` cuts moves to a bin edge; a moved value lies within
/// `width` of the midpoint between its old and new particle), reported as `sse_bound`.
pub fn fit_codebook(values: &[f64], k: usize) -> Codebook {
    fit_codebook_by(values, k, CodebookFit::Exact)
}

/// [`fit_codebook`] by the method `fit`. [`CodebookFit::Lloyd`] always clusters the
/// distinct values (no histogram) and keeps them when there are at most `k`, like
/// the exact fit; otherwise its error is at least the exact optimum's.
pub fn fit_codebook_by(values: &[f64], k: usize, fit: CodebookFit) -> Codebook {
    assert!((1..=256).contains(&k), "codebook size {k} outside 1..=256");
    if values.is_empty() {
        return Codebook {
            particles: vec![0.0],
            index: Vec::new(),
            sse: 0.0,
            sse_bound: 0.0,
        };
    }
    // The dynamic program sums values around their mean, for precision.
    let shift = values.iter().sum::<f64>() / values.len() as f64;
    let sorted = sorted(values);
    // Clusters of the distinct values, or of histogram bins.
    let on_distinct = fit == CodebookFit::Lloyd || count_runs(&sorted) <= exact_limit(k);
    let distinct = if on_distinct {
        runs(&sorted)
    } else {
        Vec::new()
    };
    let (groups, upper, sse_bound) = if on_distinct {
        let upper = distinct.iter().map(|&(v, _)| v).collect();
        let groups = distinct
            .iter()
            .map(|&(v, n)| Group::repeated(v - shift, n))
            .collect();
        (groups, upper, 0.0)
    } else {
        histogram(&sorted, exact_limit(k), shift)
    };
    let clusters = match fit {
        CodebookFit::Exact => optimal_clusters(&groups, k),
        CodebookFit::Lloyd => lloyd_clusters(&groups, k),
    };
    let bounds = |c: usize| {
        (
            clusters.starts[c],
            clusters.starts.get(c + 1).copied().unwrap_or(groups.len()),
        )
    };
    // A cluster of one distinct value keeps that value exactly (lossless codebooks).
    let particles = (0..clusters.starts.len())
        .map(|c| match bounds(c) {
            (start, end) if on_distinct && end == start + 1 => distinct[start].0,
            _ => clusters.centroids[c] + shift,
        })
        .collect();
    // Largest value of each cluster: the cut points for indexing.
    let cuts: Vec<f64> = (0..clusters.starts.len())
        .map(|c| upper[bounds(c).1 - 1])
        .collect();
    let last = cuts.len() - 1;
    let index = values
        .iter()
        .map(|&v| cuts[..last].partition_point(|&cut| cut < v) as u8)
        .collect();
    Codebook {
        particles,
        index,
        sse: clusters.sse,
        sse_bound,
    }
}

/// Number of distinct values in `values`.
pub fn distinct_count(values: &[f64]) -> usize {
    count_runs(&sorted(values))
}

/// `values` in the order of [`f64::total_cmp`], sorted as integer keys (a plain
/// integer sort is about twice as fast as sorting by `total_cmp`).
fn sorted(values: &[f64]) -> Vec<f64> {
    // Flipping every bit of a negative and the sign bit of a positive orders the bit
    // patterns as `total_cmp` orders the values; the same flip undone restores them.
    let flip = |bits: u64| bits ^ ((((bits as i64) >> 63) as u64) | (1 << 63));
    let unflip = |key: u64| {
        if key >> 63 == 1 {
            key ^ (1 << 63)
        } else {
            !key
        }
    };
    let mut keys: Vec<u64> = values.iter().map(|v| flip(v.to_bits())).collect();
    keys.sort_unstable();
    keys.into_iter()
        .map(|k| f64::from_bits(unflip(k)))
        .collect()
}

/// Number of distinct values of a sorted slice.
fn count_runs(sorted: &[f64]) -> usize {
    sorted.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!sorted.is_empty())
}

/// Distinct values of a sorted slice with their counts.
fn runs(sorted: &[f64]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &v in sorted {
        match out.last_mut() {
            Some((last, n)) if *last == v => *n += 1.0,
            _ => out.push((v, 1.0)),
        }
    }
    out
}

/// Bins a sorted slice into `bins` equal-width bins; returns the non-empty bins (their
/// values less `shift`), the largest value in each, and the bound on the extra error of
/// bin-respecting clusters.
fn histogram(sorted: &[f64], bins: usize, shift: f64) -> (Vec<Group>, Vec<f64>, f64) {
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let width = (hi - lo) / bins as f64;
    let mut groups: Vec<Group> = Vec::new();
    let mut upper: Vec<f64> = Vec::new();
    let mut current_bin = usize::MAX;
    for &v in sorted {
        let bin = (((v - lo) / width) as usize).min(bins - 1);
        if bin != current_bin {
            current_bin = bin;
            groups.push(Group::default());
            upper.push(v);
        }
        groups.last_mut().expect("a bin was pushed").push(v - shift);
        *upper.last_mut().expect("a bin was pushed") = v;
    }
    let largest = groups.iter().map(|g| g.count).fold(0.0, f64::max);
    (groups, upper, 2.0 * width * (hi - lo) * largest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_codebook_for_a_small_input() {
        let values = [0.9, -1.0, 1.1, -1.2, 3.0, 1.0];
        let book = fit_codebook(&values, 4);
        let expected = [-1.2, -1.0, 1.0, 3.0];
        assert_eq!(book.particles.len(), 4);
        for (p, e) in book.particles.iter().zip(expected) {
            assert!((p - e).abs() < 1e-12, "{:?}", book.particles);
        }
        assert_eq!(book.index, vec![2, 1, 2, 0, 3, 2]);
        assert!((book.sse - 0.02).abs() < 1e-12);
        assert_eq!(book.sse_bound, 0.0);
    }

    #[test]
    fn few_distinct_values_are_kept_exactly() {
        let values = [0.5, -0.25, 0.5, 0.5, -0.25, 2.0];
        let book = fit_codebook(&values, 16);
        assert_eq!(book.particles, vec![-0.25, 0.5, 2.0]);
        assert_eq!(book.index, vec![1, 0, 1, 1, 0, 2]);
        assert_eq!(book.sse, 0.0);
    }

    #[test]
    fn indexes_every_value_to_its_nearest_particle() {
        let values: Vec<f64> = (0..5000)
            .map(|i| ((i * 7919) % 1000) as f64 / 37.0)
            .collect();
        let book = fit_codebook(&values, 8);
        let mut sse = 0.0;
        for (v, &i) in values.iter().zip(&book.index) {
            let p = book.particles[i as usize];
            let nearest = book
                .particles
                .iter()
                .map(|q| (v - q).abs())
                .fold(f64::INFINITY, f64::min);
            assert!((v - p).abs() <= nearest + 1e-9);
            sse += (v - p) * (v - p);
        }
        assert!((sse - book.sse).abs() < 1e-6 * sse.max(1.0));
    }

    #[test]
    fn integer_keys_sort_as_total_cmp() {
        let values = [
            3.5,
            -0.0,
            0.0,
            -2.0,
            f64::MIN_POSITIVE,
            -1e300,
            1e300,
            -f64::MIN_POSITIVE,
        ];
        let mut expected = values.to_vec();
        expected.sort_by(f64::total_cmp);
        let got = sorted(&values);
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(distinct_count(&values), 7);
    }

    #[test]
    fn histogram_stays_within_its_bound() {
        let k = 256;
        let n = exact_limit(k) + 5000;
        let values: Vec<f64> = (0..n)
            .map(|i| ((i as f64) * 0.618_034).fract().powi(3))
            .collect();
        let book = fit_codebook(&values, k);
        assert!(book.sse_bound > 0.0);
        // The exact optimum is at least the optimum over a subset's structure; compare
        // with the dynamic program on the distinct values directly.
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let exact = optimal_clusters(
            &sorted
                .iter()
                .map(|&v| Group::repeated(v, 1.0))
                .collect::<Vec<_>>(),
            k,
        );
        assert!(book.sse >= exact.sse - 1e-9);
        assert!(book.sse <= exact.sse + book.sse_bound);
    }

    /// A seeded channel of `n` weights: mostly a bell (sum of three uniforms), with
    /// a few large outliers.
    fn channel(seed: u64, n: usize) -> Vec<f64> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|i| {
                let bell = rng.uniform() + rng.uniform() + rng.uniform() - 1.5;
                if i % 97 == 3 { bell * 20.0 } else { bell }
            })
            .collect()
    }

    /// Lloyd's error is at least the optimum's; on these channels (1% outliers at
    /// 20 times the bell's scale, which leave Lloyd at poor local optima more often
    /// than minilm_l3's weights do) it is at most 4 times it, 1.35 times on average.
    #[test]
    fn lloyd_fit_is_within_a_bound_of_the_optimum() {
        let mut ratios = Vec::new();
        for seed in 0..40 {
            let n = 50 + (seed as usize * 389) % 1600;
            let values = channel(seed, n);
            for k in [2, 4, 8, 16] {
                let exact = fit_codebook(&values, k);
                let fast = fit_codebook_by(&values, k, CodebookFit::Lloyd);
                assert!(fast.sse >= exact.sse * (1.0 - 1e-12), "seed {seed} k {k}");
                ratios.push(fast.sse / exact.sse);
                // The error the indices make is the reported one.
                let sse: f64 = values
                    .iter()
                    .zip(&fast.index)
                    .map(|(v, &i)| (v - fast.particles[i as usize]).powi(2))
                    .sum();
                assert!((sse - fast.sse).abs() <= 1e-9 * sse, "seed {seed} k {k}");
                assert_eq!(fast.particles.len(), k);
                assert!(fast.particles.windows(2).all(|w| w[0] < w[1]));
            }
        }
        let worst = ratios.iter().copied().fold(1.0, f64::max);
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        assert!(worst <= 4.0 && mean <= 1.35, "worst {worst}, mean {mean}");
    }

    #[test]
    fn lloyd_codebooks_of_small_inputs() {
        let values = [9.0, 1.1, 5.0, 1.0, 5.2, 1.2];
        let book = fit_codebook_by(&values, 3, CodebookFit::Lloyd);
        for (p, e) in book.particles.iter().zip([1.1, 5.1, 9.0]) {
            assert!((p - e).abs() < 1e-12, "{:?}", book.particles);
        }
        assert_eq!(book.index, vec![2, 0, 1, 0, 1, 0]);
        assert!((book.sse - 0.04).abs() < 1e-12);
        // The input of exact_codebook_for_a_small_input: Lloyd stops at {-1.2, -1.0}
        // {0.9} {1.0, 1.1} {3.0} (error 0.025; the optimum {-1.2} {-1.0} {0.9, 1.0,
        // 1.1} {3.0} has 0.02).
        let values = [0.9, -1.0, 1.1, -1.2, 3.0, 1.0];
        let book = fit_codebook_by(&values, 4, CodebookFit::Lloyd);
        for (p, e) in book.particles.iter().zip([-1.1, 0.9, 1.05, 3.0]) {
            assert!((p - e).abs() < 1e-12, "{:?}", book.particles);
        }
        assert_eq!(book.index, vec![1, 0, 2, 0, 3, 2]);
        assert!((book.sse - 0.025).abs() < 1e-12);
        // At most k distinct values: kept exactly, as by the exact fit.
        let values = [0.5, -0.25, 0.5, 0.5, -0.25, 2.0];
        assert_eq!(
            fit_codebook_by(&values, 16, CodebookFit::Lloyd),
            fit_codebook(&values, 16)
        );
    }
}
