//! Optimal 1-D k-means by dynamic programming (the Ckmeans.1d.dp family, Wang & Song
//! 2011; Grønlund et al. 2017).
//!
//! In one dimension an optimal clustering is a split of the sorted values into `k`
//! contiguous runs, so `D[c][i]`, the least squared error of the first `i` points in
//! `c` clusters, obeys `D[c][i] = min_j D[c-1][j] + sse(j, i)`. The cost `sse` is Monge,
//! so the best `j` never decreases with `i`, and each layer is solved by divide and
//! conquer in `O(m log m)`: `O(k m log m)` in all for `m` points. Points carry weights
//! (run lengths of equal values, or histogram bins) and `sse` is exact for them.

/// A run of the sorted input summarised by its count, sum and sum of squares.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Group {
    /// How many values the group holds.
    pub count: f64,
    /// The sum of its values.
    pub sum: f64,
    /// The sum of their squares.
    pub sum_sq: f64,
}

impl Group {
    /// A group of `count` copies of `value`.
    pub fn repeated(value: f64, count: f64) -> Self {
        Group {
            count,
            sum: value * count,
            sum_sq: value * value * count,
        }
    }

    /// Adds one value to the group.
    pub fn push(&mut self, value: f64) {
        self.count += 1.0;
        self.sum += value;
        self.sum_sq += value * value;
    }
}

/// The optimal split of a sequence of groups into contiguous clusters.
#[derive(Clone, Debug, PartialEq)]
pub struct Clusters {
    /// Index of the first group of each cluster, ascending; `starts[0] == 0`.
    pub starts: Vec<usize>,
    /// Weighted mean of each cluster.
    pub centroids: Vec<f64>,
    /// Total squared error of the split.
    pub sse: f64,
}

/// Prefix sums over the groups (entry `i` sums groups `0..i`): segment costs in O(1).
struct Prefix(Vec<Group>);

impl Prefix {
    fn new(groups: &[Group]) -> Self {
        let mut acc = Group::default();
        let mut sums = Vec::with_capacity(groups.len() + 1);
        sums.push(acc);
        for g in groups {
            acc.count += g.count;
            acc.sum += g.sum;
            acc.sum_sq += g.sum_sq;
            sums.push(acc);
        }
        Prefix(sums)
    }

    /// Squared error of groups `a..b` around their mean (`a < b`).
    fn sse(&self, a: usize, b: usize) -> f64 {
        segment_sse(&self.0[a], &self.0[b])
    }

    fn mean(&self, a: usize, b: usize) -> f64 {
        (self.0[b].sum - self.0[a].sum) / (self.0[b].count - self.0[a].count)
    }
}

/// Squared error of the values between two prefix sums, around their mean.
#[inline]
fn segment_sse(from: &Group, to: &Group) -> f64 {
    let count = to.count - from.count;
    let sum = to.sum - from.sum;
    (to.sum_sq - from.sum_sq - sum * sum / count).max(0.0)
}

/// Splits `groups` (in ascending order of value, each with a positive count) into
/// `min(k, groups.len())` contiguous clusters with the least total squared error.
///
/// Ties go to the leftmost split, so the result is deterministic.
pub fn optimal_clusters(groups: &[Group], k: usize) -> Clusters {
    let m = groups.len();
    let k = k.clamp(1, m.max(1));
    if m == 0 {
        return Clusters {
            starts: vec![0],
            centroids: vec![0.0],
            sse: 0.0,
        };
    }
    let prefix = Prefix::new(groups);
    // Rows of layer c are i in [c, m - (k - c)]: every later cluster needs a group.
    let width = m - k + 1;
    let mut previous: Vec<f64> = (1..=width).map(|i| prefix.sse(0, i)).collect();
    let mut split_at: Vec<u32> = Vec::with_capacity((k - 1) * width);
    for c in 2..=k {
        let layer = Layer {
            prefix: &prefix,
            previous: &previous,
            c,
        };
        let mut current = vec![f64::INFINITY; width];
        let mut argmin = vec![0u32; width];
        if c == k {
            // Only D[k][m] is needed from the last layer.
            let i = m;
            let (cost, j) = layer.best(i, c - 1, i - 1);
            current[width - 1] = cost;
            argmin[width - 1] = j as u32;
        } else {
            layer.solve(
                c,
                m - k + c,
                c - 1,
                m - k + c - 1,
                &mut current,
                &mut argmin,
            );
        }
        split_at.extend_from_slice(&argmin);
        previous = current;
    }
    let mut starts = vec![0usize; k];
    let mut end = m;
    for c in (2..=k).rev() {
        let j = split_at[(c - 2) * width + (end - c)] as usize;
        starts[c - 1] = j;
        end = j;
    }
    let centroids = (0..k)
        .map(|c| {
            let end = starts.get(c + 1).copied().unwrap_or(m);
            prefix.mean(starts[c], end)
        })
        .collect();
    Clusters {
        starts,
        centroids,
        sse: previous[width - 1],
    }
}

/// One layer `c` of the dynamic program, reading layer `c - 1`.
struct Layer<'a> {
    prefix: &'a Prefix,
    /// `D[c-1][i]` stored at `i - (c - 1)`.
    previous: &'a [f64],
    c: usize,
}

impl Layer<'_> {
    /// The best split `j` in `lo..=hi` for row `i`, and its cost.
    fn best(&self, i: usize, lo: usize, hi: usize) -> (f64, usize) {
        let end = &self.prefix.0[i];
        let starts = &self.prefix.0[lo..=hi];
        let previous = &self.previous[lo - (self.c - 1)..=hi - (self.c - 1)];
        let mut best = (f64::INFINITY, lo);
        for (n, (start, before)) in starts.iter().zip(previous).enumerate() {
            let cost = before + segment_sse(start, end);
            if cost < best.0 {
                best = (cost, lo + n);
            }
        }
        best
    }

    /// Fills rows `lo..=hi` knowing their best splits lie in `opt_lo..=opt_hi`.
    fn solve(
        &self,
        lo: usize,
        hi: usize,
        opt_lo: usize,
        opt_hi: usize,
        current: &mut [f64],
        argmin: &mut [u32],
    ) {
        if lo > hi {
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let (cost, j) = self.best(mid, opt_lo, opt_hi.min(mid - 1));
        current[mid - self.c] = cost;
        argmin[mid - self.c] = j as u32;
        if mid > lo {
            self.solve(lo, mid - 1, opt_lo, j, current, argmin);
        }
        self.solve(mid + 1, hi, j, opt_hi, current, argmin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(values: &[f64]) -> Vec<Group> {
        values.iter().map(|&v| Group::repeated(v, 1.0)).collect()
    }

    /// Least squared error over every split of `values` into `k` runs.
    fn brute_force(values: &[f64], k: usize) -> f64 {
        fn sse(v: &[f64]) -> f64 {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - mean) * (x - mean)).sum()
        }
        fn go(v: &[f64], k: usize) -> f64 {
            if k == 1 {
                return sse(v);
            }
            (1..=v.len() - k + 1)
                .map(|cut| sse(&v[..cut]) + go(&v[cut..], k - 1))
                .fold(f64::INFINITY, f64::min)
        }
        go(values, k)
    }

    /// A small deterministic pseudo-random sequence (xorshift).
    fn sample(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut values: Vec<f64> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5).powi(3) * 8.0
            })
            .collect();
        values.sort_by(f64::total_cmp);
        values
    }

    #[test]
    fn matches_brute_force_on_small_inputs() {
        for seed in 0..40 {
            let n = 2 + (seed as usize % 11);
            let values = sample(seed, n);
            for k in 1..=n.min(5) {
                let clusters = optimal_clusters(&groups(&values), k);
                let expected = brute_force(&values, k);
                assert!(
                    (clusters.sse - expected).abs() <= 1e-9 * (1.0 + expected),
                    "seed {seed} n {n} k {k}: dp {} brute {expected}",
                    clusters.sse
                );
                assert_eq!(clusters.starts.len(), k);
            }
        }
    }

    #[test]
    fn exact_clusters_on_a_known_input() {
        let values = [1.0, 1.1, 1.2, 5.0, 5.2, 9.0];
        let clusters = optimal_clusters(&groups(&values), 3);
        assert_eq!(clusters.starts, vec![0, 3, 5]);
        let expected = [1.1, 5.1, 9.0];
        for (c, e) in clusters.centroids.iter().zip(expected) {
            assert!((c - e).abs() < 1e-12, "{c} vs {e}");
        }
        assert!((clusters.sse - (0.02 + 0.02)).abs() < 1e-12);
    }

    #[test]
    fn weights_count_as_repeated_values() {
        let weighted = [Group::repeated(0.0, 3.0), Group::repeated(1.0, 1.0)];
        let clusters = optimal_clusters(&weighted, 1);
        assert!((clusters.centroids[0] - 0.25).abs() < 1e-12);
        assert!((clusters.sse - 0.75).abs() < 1e-12);
    }

    #[test]
    fn more_clusters_than_groups_gives_each_group_its_own() {
        let clusters = optimal_clusters(&groups(&[-1.0, 2.0]), 16);
        assert_eq!(clusters.starts, vec![0, 1]);
        assert_eq!(clusters.centroids, vec![-1.0, 2.0]);
        assert_eq!(clusters.sse, 0.0);
    }
}
