//! The per-layer proxy of sensitivity: how far a weight's own output moves when the
//! weight is decomposed, `||X (W - W_hat)||^2 = sum over outputs of d^T H d` with
//! `H = X^T X` gathered in calibration's one streamed pass, scaled to the model's
//! outputs by one end-to-end measurement per weight (the anchor).
//!
//! Measuring every setting end to end costs a model run per setting, weight and
//! sample; the proxy costs one matrix product per setting and one run per weight and
//! sample, so the cost of sensitivity grows with the model instead of with its square.

use ndarray::{Array2, ArrayView2};

/// Most output channels [`output_error`] sums over; past it, evenly spaced channels
/// stand for the rest.
pub const PROXY_CHANNELS: usize = 256;

/// `||X (decoded - values)||^2` for a weight viewed as a `rows x cols` matrix
/// (row-major) whose inputs run along rows (`channel_axis` 1) or columns
/// (`channel_axis` 0), with `gram` = `X^T X` (inputs x inputs, row-major): the sum
/// over output channels of `d^T H d`. Over more than [`PROXY_CHANNELS`] channels, the
/// sum over that many evenly spaced ones, scaled to all: the proxy ranks settings of
/// one weight, so it needs its ratios, not every channel.
///
/// # Panics
/// If the lengths do not match the shape.
pub fn output_error(
    values: &[f64],
    decoded: &[f64],
    [rows, cols]: [usize; 2],
    channel_axis: usize,
    gram: &[f64],
) -> f64 {
    let (channels, inputs) = if channel_axis == 1 {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let picked = channels.min(PROXY_CHANNELS);
    let channel = |j: usize| j * channels / picked.max(1);
    let d = Array2::from_shape_fn((inputs, picked), |(i, j)| {
        let at = match channel_axis {
            1 => i * cols + channel(j),
            _ => channel(j) * cols + i,
        };
        decoded[at] - values[at]
    });
    let h = ArrayView2::from_shape((inputs, inputs), gram).expect("gram is inputs x inputs");
    (&h.dot(&d) * &d).sum() * channels as f64 / picked.max(1) as f64
}

/// Which of the settings with proxy errors `proxies` is measured end to end: among
/// those of `anchor_bits` bits (`bits[i]`), the one the proxy rates worst (its error
/// is the largest, so the measurement is least lost in noise); the worst of all when
/// none has those bits.
pub fn anchor(proxies: &[f64], bits: &[u32], anchor_bits: u32) -> Option<usize> {
    let worst = |pick: &dyn Fn(usize) -> bool| {
        (0..proxies.len())
            .filter(|&i| pick(i))
            .max_by(|&a, &b| proxies[a].total_cmp(&proxies[b]))
    };
    worst(&|i| bits[i] == anchor_bits).or_else(|| worst(&|_| true))
}

/// The end-to-end errors the proxies predict from the `anchor`'s measured `error`:
/// every proxy times `error / proxies[anchor]` (all 0 when the anchor's proxy is 0).
pub fn scaled(proxies: &[f64], anchor: usize, error: f64) -> Vec<f64> {
    let at = proxies[anchor];
    let gain = if at > 0.0 { error / at } else { 0.0 };
    proxies.iter().map(|p| p * gain).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_error_is_the_squared_norm_of_x_times_the_change() {
        // X = [[1, 2], [0, 1], [3, 0]] (3 rows of 2 inputs): X^T X = [[10, 2], [2, 5]].
        let gram = [10.0, 2.0, 2.0, 5.0];
        // A change [1, -1] of one channel: X d = [-1, -1, 3], squared norm 11.
        assert_eq!(
            output_error(&[0.0; 2], &[1.0, -1.0], [2, 1], 1, &gram),
            11.0
        );
        assert_eq!(
            output_error(&[0.0; 2], &[1.0, -1.0], [1, 2], 0, &gram),
            11.0
        );
        // Two channels add up: [1, 0] gives X d = [1, 0, 3] (10).
        let two = [1.0, 1.0, -1.0, 0.0];
        assert_eq!(output_error(&[0.0; 4], &two, [2, 2], 1, &gram), 21.0);
        // 512 equal channels: 256 of them, times 2.
        let many: Vec<f64> = (0..1024)
            .map(|i| if i < 512 { 1.0 } else { -1.0 })
            .collect();
        assert_eq!(
            output_error(&[0.0; 1024], &many, [2, 512], 1, &gram),
            512.0 * 11.0
        );
    }

    #[test]
    fn the_anchor_is_the_worst_of_its_bits_and_scales_every_proxy() {
        let proxies = [8.0, 4.0, 2.0, 0.5];
        let bits = [4, 4, 8, 8];
        assert_eq!(anchor(&proxies, &bits, 4), Some(0));
        assert_eq!(anchor(&proxies, &bits, 8), Some(2));
        assert_eq!(anchor(&proxies, &bits, 3), Some(0));
        assert_eq!(scaled(&proxies, 1, 2.0), vec![4.0, 2.0, 1.0, 0.25]);
        assert_eq!(scaled(&[0.0, 0.0], 0, 1.0), vec![0.0, 0.0]);
    }
}
