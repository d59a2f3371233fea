//! Bit allocation: given, for every weight, the measured (bytes, error) of each setting,
//! pick one setting per weight so that the total bytes stay within a budget and the
//! summed error is least: a multiple-choice knapsack, solved by dynamic programming
//! over the budget. Plain numbers in, choices out.
//!
//! Bytes are counted in units of `ceil(budget / MAX_UNITS)` bytes, each cost rounded up,
//! so a returned choice never exceeds the budget; with a budget of at most
//! [`MAX_UNITS`] bytes the unit is one byte and the result is the exact optimum.

/// Most budget units the table spans.
pub const MAX_UNITS: usize = 1 << 15;

/// One option of one item: what it costs and what it loses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// Bytes it stores.
    pub bytes: usize,
    /// The error it adds.
    pub error: f64,
}

/// One choice per item (its position in the item's list) with total bytes at most
/// `budget` and least total error; ties go to fewer bytes. `None` when even the
/// cheapest choices exceed the budget or an item has no choice.
pub fn allocate(items: &[Vec<Choice>], budget: usize) -> Option<Vec<usize>> {
    let unit = budget.div_ceil(MAX_UNITS).max(1);
    let units = budget / unit;
    let cost = |c: &Choice| c.bytes.div_ceil(unit);
    // best[u]: least error of the items so far within u units; from[i][u]: the choice
    // item i takes in that solution.
    let mut best = vec![0.0f64; units + 1];
    let mut from: Vec<Vec<u8>> = Vec::with_capacity(items.len());
    for choices in items {
        if choices.is_empty() || choices.len() > usize::from(u8::MAX) {
            return None;
        }
        let mut next = vec![f64::INFINITY; units + 1];
        let mut picked = vec![u8::MAX; units + 1];
        for (k, c) in choices.iter().enumerate() {
            let w = cost(c);
            for u in w..=units {
                let e = best[u - w] + c.error;
                if e < next[u] {
                    next[u] = e;
                    picked[u] = k as u8;
                }
            }
        }
        best = next;
        from.push(picked);
    }
    // The least-error budget use, the smallest on ties.
    let mut at = (0..=units).min_by(|&a, &b| best[a].total_cmp(&best[b]).then(a.cmp(&b)))?;
    if !best[at].is_finite() {
        return None;
    }
    let mut chosen = vec![0; items.len()];
    for (i, choices) in items.iter().enumerate().rev() {
        let k = from[i][at];
        if k == u8::MAX {
            return None;
        }
        chosen[i] = usize::from(k);
        at -= cost(&choices[chosen[i]]);
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(list: &[(usize, f64)]) -> Vec<Choice> {
        list.iter()
            .map(|&(bytes, error)| Choice { bytes, error })
            .collect()
    }

    /// Every combination, for checking the table against.
    fn brute_force(items: &[Vec<Choice>], budget: usize) -> f64 {
        let mut best = f64::INFINITY;
        let mut pick = vec![0; items.len()];
        loop {
            let bytes: usize = pick.iter().zip(items).map(|(&k, c)| c[k].bytes).sum();
            if bytes <= budget {
                let error: f64 = pick.iter().zip(items).map(|(&k, c)| c[k].error).sum();
                best = best.min(error);
            }
            let Some(i) = (0..items.len()).find(|&i| pick[i] + 1 < items[i].len()) else {
                return best;
            };
            pick[i] += 1;
            pick[..i].iter_mut().for_each(|p| *p = 0);
        }
    }

    #[test]
    fn spends_bits_where_they_buy_most() {
        // Two weights of equal size whose error falls 4x per bit; a is 100x more
        // sensitive. With 7 bits to share, a5 + b2 (100/1024 + 1/16 = 0.160) beats
        // a4 + b3 (0.406) and a6 + b1 (0.274).
        let curve = |scale: f64| -> Vec<Choice> {
            (1..=8)
                .map(|bits| Choice {
                    bytes: bits,
                    error: scale / 4f64.powi(bits as i32),
                })
                .collect()
        };
        let items = vec![curve(100.0), curve(1.0)];
        let chosen = allocate(&items, 7).unwrap();
        assert_eq!(chosen, vec![4, 1]);
        let error: f64 = chosen.iter().zip(&items).map(|(&k, c)| c[k].error).sum();
        assert_eq!(error, brute_force(&items, 7));
    }

    #[test]
    fn matches_brute_force_on_uneven_curves() {
        let items = vec![
            choices(&[(3, 9.0), (5, 4.0), (9, 1.0)]),
            choices(&[(2, 5.0), (4, 2.5), (7, 0.5), (8, 0.4)]),
            choices(&[(1, 3.0), (6, 0.1)]),
        ];
        for budget in 6..=25 {
            let chosen = allocate(&items, budget).unwrap();
            let bytes: usize = chosen.iter().zip(&items).map(|(&k, c)| c[k].bytes).sum();
            let error: f64 = chosen.iter().zip(&items).map(|(&k, c)| c[k].error).sum();
            assert!(bytes <= budget);
            assert_eq!(error, brute_force(&items, budget), "budget {budget}");
        }
        assert_eq!(allocate(&items, 5), None);
    }

    #[test]
    fn large_budgets_round_costs_up_and_stay_within_budget() {
        let items = vec![
            choices(&[(1_000_000, 1.0), (2_000_001, 0.1)]),
            choices(&[(1_000_000, 1.0), (2_000_001, 0.2)]),
        ];
        // Units of 92 bytes: the choices cost 10870 + 21740 units; 3_000_300 bytes
        // hold 32611 units. At 3_000_001 bytes (32608 units) the rounding loses them.
        assert_eq!(allocate(&items, 3_000_300), Some(vec![1, 0]));
        assert_eq!(allocate(&items, 3_000_001), Some(vec![0, 0]));
        assert_eq!(allocate(&items, 4_000_001), Some(vec![1, 0]));
        assert_eq!(allocate(&items, 5_000_000), Some(vec![1, 1]));
        assert_eq!(allocate(&items, 1_999_999), None);
    }
}
