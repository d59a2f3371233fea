//! Error-compensating rounding on synthetic weights shaped like minilm's FFN
//! (384 x 1536 and 1536 x 384, inputs along rows) with correlated calibration rows:
//! the calibration-output error of `compensate` (one round, and the default of up to
//! `ROUNDS`) against nearest rounding of the same codebooks, and the seconds per weight
//! of the default (CPU seconds of the process, and wall seconds). Run with
//! `RAYON_NUM_THREADS=1 cargo bench --bench compensate` for one core.

use std::time::Instant;

use sora_onnx::particles::compensate::{compensate, compensate_in_rounds, output_error};
use sora_onnx::particles::{Decomposition, Granularity, Matrix, assign, decompose};
use sora_onnx::rng::Rng;

/// Calibration rows.
const ROWS: usize = 2048;
/// Shared factors behind the correlation of the inputs.
const FACTORS: usize = 32;

/// `H = XᵀX` of rows `x = s ⊙ (0.6 z + 0.8 u V)`: per-input scales `s` (log-normal, one
/// input in a hundred ten times larger), independent noise `z` and `FACTORS` shared
/// factors `u` mixed by `V`.
fn hessian(rng: &mut Rng, n: usize) -> Vec<f64> {
    let scale: Vec<f64> = (0..n)
        .map(|i| (0.5 * rng.normal()).exp() * if i % 100 == 7 { 10.0 } else { 1.0 })
        .collect();
    let mix: Vec<f64> = (0..FACTORS * n)
        .map(|_| rng.normal() / (FACTORS as f64).sqrt())
        .collect();
    let mut h = vec![0.0; n * n];
    let mut x = vec![0.0; n];
    for _ in 0..ROWS {
        let u: Vec<f64> = (0..FACTORS).map(|_| rng.normal()).collect();
        for (i, xi) in x.iter_mut().enumerate() {
            let shared: f64 = (0..FACTORS).map(|t| u[t] * mix[t * n + i]).sum();
            *xi = scale[i] * (0.6 * rng.normal() + 0.8 * shared);
        }
        for i in 0..n {
            for (hij, &xj) in h[i * n..(i + 1) * n].iter_mut().zip(&x) {
                *hij += x[i] * xj;
            }
        }
    }
    h
}

/// CPU seconds this process has spent in user mode, all threads.
fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage struct, which `usage` is.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_utime.tv_sec as f64 + usage.ru_utime.tv_usec as f64 * 1e-6
}

fn main() {
    println!(
        "{} threads, {ROWS} calibration rows",
        rayon::current_num_threads()
    );
    println!(
        "| inputs x channels | granularity | bits | compensate / nearest, 1 round | default | CPU s | wall s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rng = Rng::new(1);
    for (inputs, channels) in [(384, 1536), (1536, 384)] {
        let h = hessian(&mut rng, inputs);
        let values: Vec<f64> = (0..inputs * channels)
            .map(|_| 0.05 * rng.normal())
            .collect();
        let matrix = Matrix {
            values: &values,
            rows: inputs,
            cols: channels,
            channel_axis: 1,
        };
        for granularity in [
            Granularity::Tensor,
            Granularity::Channel,
            Granularity::Block(32),
        ] {
            for bits in [2, 3, 4] {
                let nearest = assign(
                    &matrix,
                    granularity,
                    &decompose(&matrix, granularity, bits).codebooks,
                );
                let error = |d: &Decomposition| {
                    output_error(&matrix, &d.decoded(&matrix, granularity, |x| x), &h)
                };
                let one = compensate_in_rounds(&matrix, granularity, bits, &h, 0.01, 1);
                let (cpu, start) = (cpu_seconds(), Instant::now());
                let compensated = compensate(&matrix, granularity, bits, &h, 0.01);
                let (cpu, wall) = (cpu_seconds() - cpu, start.elapsed().as_secs_f64());
                let nearest = error(&nearest);
                println!(
                    "| {inputs} x {channels} | {granularity} | {bits} | {:.3} | {:.3} | {cpu:.2} | {wall:.2} |",
                    error(&one) / nearest,
                    error(&compensated) / nearest,
                );
            }
        }
    }
}
