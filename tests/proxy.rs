//! The per-layer proxy of sensitivity against the end-to-end measurement it stands in
//! for: exact where the model is one linear layer, close on a small nonlinear MLP,
//! and an allocation from it nearly as good, at a fraction of the model runs.

use sora_onnx::Config;
use sora_onnx::builder::{ModelBuilder, float_matrix, pseudo_random};
use sora_onnx::calibrate::allocate::{Choice, allocate};
use sora_onnx::calibrate::{Calibrated, Sensitivity, calibrate};
use sora_onnx::config::GranularityChoice;
use sora_onnx::graph::Graph;
use sora_onnx::inputs::Samples;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::particles::Granularity;
use sora_onnx::plan::Plan;
use sora_onnx::rules::Select;
use tract_onnx::prelude::Tensor;

fn config() -> Config {
    Config {
        granularity: GranularityChoice::Fixed(Granularity::Tensor),
        select: Select {
            min_elements: 1,
            ..Select::default()
        },
        ..Config::default()
    }
}

fn calibrated(model: &ModelProto, samples: &Samples, proxy: bool) -> Calibrated {
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, &config()).unwrap();
    let sensitivity = Sensitivity {
        samples: samples.samples.len(),
        proxy,
        ..Sensitivity::default()
    };
    calibrate(&graph, &plan, &config(), samples.clone(), &sensitivity).unwrap()
}

/// `n` samples of `x [4, 12]`, features of different scales.
fn samples(n: usize) -> Samples {
    let values = pseudo_random(n * 48, 11);
    Samples {
        names: vec!["x".into()],
        samples: (0..n)
            .map(|s| {
                let rows: Vec<f32> = (0..48)
                    .map(|i| (values[s * 48 + i] * (1.0 + (i % 12) as f64 / 3.0)) as f32)
                    .collect();
                vec![Tensor::from_shape(&[4, 12], &rows).unwrap()]
            })
            .collect(),
        notes: Vec::new(),
    }
}

/// `x [4, 12]` through `layers` MatMuls (12 -> 16 -> ... -> 6), Tanh between them.
fn mlp(layers: usize) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[4, 12]);
    let mut x = "x".to_string();
    for l in 0..layers {
        let (rows, cols) = match (l, layers - 1 - l) {
            (0, 0) => (12, 6),
            (0, _) => (12, 16),
            (_, 0) => (16, 6),
            _ => (16, 16),
        };
        let w = format!("w{l}");
        b.initializer(float_matrix(&w, rows, cols, 3 + l as u64));
        let y = format!("y{l}");
        b.node("MatMul", &[&x, &w], &[&y]);
        x = y;
        if l + 1 < layers {
            let t = format!("t{l}");
            b.node("Tanh", &[&x], &[&t]);
            x = t;
        }
    }
    b.output_f32(&x);
    b.build()
}

#[test]
fn on_one_linear_layer_the_proxy_is_the_measurement() {
    let model = mlp(1);
    let samples = samples(3);
    let measured = calibrated(&model, &samples, false);
    let proxied = calibrated(&model, &samples, true);
    let (m, p) = (&measured.curves[0], &proxied.curves[0]);
    assert_eq!(m.anchor, None);
    assert_eq!(p.anchor.map(|s| s.bits), Some(4));
    // 16 settings (1..=8 bits per tensor and per channel): the statistics' 3 runs,
    // then 3 samples x 17 runs, against one original and one anchor run per sample.
    assert_eq!(m.points.len(), 16);
    assert_eq!(measured.runs, 3 + 3 * 17);
    assert_eq!(proxied.runs, 3 + 3 * 2);
    for (a, b) in m.points.iter().zip(&p.points) {
        assert_eq!(a.setting, b.setting);
        assert!(
            (a.error - b.error).abs() <= 1e-4 * a.error + 1e-9,
            "{a:?} {b:?}"
        );
    }
}

#[test]
fn on_a_nonlinear_mlp_the_proxy_ranks_and_allocates_like_the_measurement() {
    let model = mlp(3);
    let samples = samples(4);
    let measured = calibrated(&model, &samples, false);
    let proxied = calibrated(&model, &samples, true);
    assert_eq!(measured.curves.len(), 3);
    for (m, p) in measured.curves.iter().zip(&proxied.curves) {
        for (a, b) in m.points.iter().zip(&p.points) {
            // The last layer is linear to the output: the proxy is the measurement.
            // Through Tanh, within a factor of 2 (measured: 0.69-1.72), past the f32
            // noise of settings that keep every value.
            let ratio = b.error / a.error;
            let bound = if m.weight == "w2" { 1e-4 } else { 1.0 };
            if a.error > 1e-6 {
                assert!(
                    (ratio.ln() / 2f64.ln()).abs() <= bound,
                    "{} {a:?} {b:?}",
                    m.weight
                );
            }
        }
    }
    // The allocations at a 3-bit budget: the proxy's choice, judged by the measured
    // errors, is within 10% of the measured optimum.
    let items = |c: &Calibrated| -> Vec<Vec<Choice>> {
        (c.curves.iter())
            .map(|curve| {
                (curve.points.iter())
                    .map(|p| Choice {
                        bytes: p.bytes,
                        error: p.error,
                    })
                    .collect()
            })
            .collect()
    };
    let bytes: usize = (measured.curves.iter()).map(|c| c.points[2].bytes).sum();
    let best = allocate(&items(&measured), bytes).unwrap();
    let chosen = allocate(&items(&proxied), bytes).unwrap();
    let judged = |choice: &[usize]| -> f64 {
        (measured.curves.iter())
            .zip(choice)
            .map(|(c, &k)| c.points[k].error)
            .sum()
    };
    assert!(
        judged(&chosen) <= 1.1 * judged(&best),
        "{chosen:?} {best:?}"
    );
}
