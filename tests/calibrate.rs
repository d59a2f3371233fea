//! Calibration on hand-computed cases: measured sensitivity, bias correction folded
//! into a following bias, into Gemm's C, or added after the node, and the allocator's
//! size target.
//!
//! The weight is `W = [[1, 2], [3, 10]]`. At 1 bit per tensor its optimal codebook is
//! {2, 10} (cluster {1, 2, 3} and {10}), so `W_hat = [[2, 2], [2, 10]]` and
//! `W - W_hat = [[-1, 0], [1, 0]]`.

use sora_onnx::builder::{ModelBuilder, attr_float, attr_int};
use sora_onnx::calibrate::budget::rewrite_to_bits;
use sora_onnx::calibrate::{Calibrated, Sensitivity, calibrate};
use sora_onnx::config::GranularityChoice;
use sora_onnx::dump::dump;
use sora_onnx::graph::Graph;
use sora_onnx::inputs::Samples;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::tensor::{FloatType, float_tensor, float_values, i64_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::plan::{Plan, Setting};
use sora_onnx::rewrite::rewrite_plan;
use sora_onnx::rules::Select;
use sora_onnx::runtime::Session;
use sora_onnx::{Config, Rewritten};
use tract_onnx::prelude::{DatumType, Tensor};

const W: [f64; 4] = [1.0, 2.0, 3.0, 10.0];

fn config(bits: u32) -> Config {
    Config {
        bits,
        granularity: GranularityChoice::Fixed(Granularity::Tensor),
        select: Select {
            min_elements: 1,
            ..Select::default()
        },
        bias_correction: true,
        ..Config::default()
    }
}

/// Calibrates `model`'s plan under `config` on `samples`, measuring sensitivity on
/// the first `measured`.
fn calibrated(
    model: &ModelProto,
    config: &Config,
    samples: Samples,
    measured: usize,
) -> Calibrated {
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, config).unwrap();
    let sensitivity = Sensitivity {
        samples: measured,
        ..Sensitivity::default()
    };
    calibrate(&graph, &plan, config, samples, &sensitivity).unwrap()
}

/// Rewrites `model` under `config` with the statistics of `calibrated`.
fn rewrite_calibrated(model: &ModelProto, config: &Config, calibrated: &Calibrated) -> Rewritten {
    let graph = Graph::new(model).unwrap();
    let plan = Plan::new(&graph, config).unwrap();
    rewrite_plan(&graph, &plan, config, Some(calibrated.measured())).unwrap()
}

/// Samples of input `x` [1, 2].
fn samples(rows: &[[f32; 2]]) -> Samples {
    Samples {
        names: vec!["x".into()],
        samples: rows
            .iter()
            .map(|r| vec![Tensor::from_shape(&[1, 2], r).unwrap()])
            .collect(),
        notes: Vec::new(),
    }
}

/// `x [1, 2]` times `W`, then `tail` builds the rest and names the output.
fn model(tail: impl FnOnce(&mut ModelBuilder) -> &'static str) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 2]);
    b.initializer(float_tensor("w", &[2, 2], FloatType::F32, &W));
    let out = tail(&mut b);
    b.output_f32(out);
    b.build()
}

/// Mean of the first output over the samples.
fn mean_output(model: &ModelProto, calibration: &Samples) -> Vec<f64> {
    let session = Session::new(model, "test", &[(DatumType::F32, vec![1, 2])]).unwrap();
    let mut sum = [0.0; 2];
    for s in &calibration.samples {
        let out = session.run(s).unwrap();
        let t = out[0].cast_to::<f64>().unwrap();
        let values: Vec<f64> = t
            .to_plain_array_view::<f64>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        sum.iter_mut().zip(values).for_each(|(a, b)| *a += b);
    }
    let n = calibration.samples.len() as f64;
    sum.iter().map(|s| s / n).collect()
}

fn corrected(model: &ModelProto, calibration: &Samples) -> Rewritten {
    let calibrated = calibrated(model, &config(1), calibration.clone(), 0);
    rewrite_calibrated(model, &config(1), &calibrated)
}

fn initializer(model: &ModelProto, name: &str) -> Vec<f64> {
    let g = model.graph.as_ref().unwrap();
    let t = g.initializer.iter().find(|t| t.name() == name).unwrap();
    float_values(t, None).unwrap()
}

fn assert_close(a: &[f64], b: &[f64]) {
    assert!(
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5),
        "{a:?} != {b:?}"
    );
}

#[test]
fn sensitivity_is_the_relative_output_error_of_one_weight() {
    let m = model(|b| {
        b.node("MatMul", &["x", "w"], &["y"]);
        "y"
    });
    // x = [1, 0]: y = [1, 2], y_hat = [2, 2]; x = [0, 1]: y = [3, 10], y_hat = [2, 10].
    // Error (1 + 1) / (5 + 109).
    let calibration = samples(&[[1.0, 0.0], [0.0, 1.0]]);
    let calibrated = calibrated(&m, &config(4), calibration, 2);
    assert_eq!(calibrated.curves.len(), 1);
    let curve = &calibrated.curves[0];
    assert_eq!((curve.weight.as_str(), curve.elements), ("w", 4));
    let error = |bits, granularity| {
        let setting = Setting { bits, granularity };
        curve
            .points
            .iter()
            .find(|p| p.setting == setting)
            .unwrap()
            .error
    };
    assert!((error(1, Granularity::Tensor) - 2.0 / 114.0).abs() < 1e-12);
    // Per column, one bit holds each column's two values exactly; so do 2 bits.
    assert_eq!(error(1, Granularity::Channel), 0.0);
    assert_eq!(error(2, Granularity::Tensor), 0.0);
    // 8 bit widths, two granularities, each with the bytes its subgraph stores.
    assert_eq!(curve.points.len(), 16);
    assert!(curve.points.iter().all(|p| p.bytes > 0));
    // Two samples for the statistics, then 16 settings + 1 reference per sample.
    assert_eq!(calibrated.runs, 2 + 2 * 17);
}

#[test]
fn an_ir_3_weight_listed_as_an_input_is_probed_once() {
    // IR 3 lists every initializer as a graph input (here before the real one): the
    // probe feeds the weight through that one entry, after the samples' inputs.
    let mut b = ModelBuilder::new(17);
    b.input_f32("w", &[2, 2]);
    b.input_f32("x", &[1, 2]);
    b.initializer(float_tensor("w", &[2, 2], FloatType::F32, &W));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let mut m = b.build();
    m.ir_version = Some(3);
    let calibration = samples(&[[1.0, 0.0], [0.0, 1.0]]);
    let calibrated = calibrated(&m, &config(4), calibration, 2);
    let curve = &calibrated.curves[0];
    let point = (curve.points.iter())
        .find(|p| p.setting.bits == 1 && p.setting.granularity == Granularity::Tensor)
        .unwrap();
    assert!((point.error - 2.0 / 114.0).abs() < 1e-12);
}

#[test]
fn sensitivity_is_measured_on_the_logits_before_a_softmax() {
    // The error of 1 bit per tensor on y is 2/114 (as above), whatever squashes y.
    let one_bit_error = |m: &ModelProto| {
        let calibration = samples(&[[1.0, 0.0], [0.0, 1.0]]);
        let calibrated = calibrated(m, &config(4), calibration, 2);
        let setting = Setting {
            bits: 1,
            granularity: Granularity::Tensor,
        };
        let point = calibrated.curves[0]
            .points
            .iter()
            .find(|p| p.setting == setting)
            .unwrap()
            .error;
        (calibrated.compared, point)
    };
    let softmax = model(|b| {
        b.node("MatMul", &["x", "w"], &["y"]);
        b.node("Softmax", &["y"], &["p"]);
        b.initializer(i64_tensor("shape", &[2], &[2, 1]));
        b.node("Reshape", &["p", "shape"], &["out"]);
        "out"
    });
    let written_out = model(|b| {
        b.node("MatMul", &["x", "w"], &["y"]);
        b.node("ReduceMax", &["y"], &["max"]);
        b.node("Sub", &["y", "max"], &["z"]);
        b.node("Exp", &["z"], &["e"]);
        b.node("ReduceSum", &["e"], &["sum"]);
        b.node("Div", &["e", "sum"], &["p"]);
        "p"
    });
    for m in [&softmax, &written_out] {
        let (compared, error) = one_bit_error(m);
        assert_eq!(compared, ["y"]);
        assert!((error - 2.0 / 114.0).abs() < 1e-12, "{error}");
    }
    let plain = model(|b| {
        b.node("MatMul", &["x", "w"], &["y"]);
        b.node("Relu", &["y"], &["r"]);
        "r"
    });
    assert_eq!(one_bit_error(&plain).0, ["r"]);
}

#[test]
fn bias_correction_folds_into_the_following_add() {
    let m = model(|b| {
        b.initializer(float_tensor("b", &[2], FloatType::F32, &[0.5, -0.5]));
        b.node("MatMul", &["x", "w"], &["xw"]);
        b.node("Add", &["b", "xw"], &["y"]);
        "y"
    });
    // mean(x) = [1, 0.5]; c = mean . (W - W_hat) = [1 * -1 + 0.5 * 1, 0] = [-0.5, 0].
    let calibration = samples(&[[1.0, 0.0], [1.0, 1.0]]);
    let out = corrected(&m, &calibration);
    assert_eq!(initializer(&out.model, "b"), vec![0.0, -0.5]);
    assert_eq!(out.report.tensors[0].bias_corrected, 1);
    // The mean output over the calibration set is the original's: [3, 6.5].
    assert_close(&mean_output(&out.model, &calibration), &[3.0, 6.5]);
    assert_close(&mean_output(&m, &calibration), &[3.0, 6.5]);
}

#[test]
fn bias_correction_scales_into_gemm_c() {
    let m = model(|b| {
        b.initializer(float_tensor("c", &[2], FloatType::F32, &[1.0, 1.0]));
        let n = b.node("Gemm", &["x", "w", "c"], &["y"]);
        n.attribute.push(attr_float("alpha", 2.0));
        n.attribute.push(attr_float("beta", 0.5));
        "y"
    });
    let calibration = samples(&[[1.0, 0.0], [1.0, 1.0]]);
    let out = corrected(&m, &calibration);
    // C += alpha * c / beta = 2 * [-0.5, 0] / 0.5.
    assert_eq!(initializer(&out.model, "c"), vec![-1.0, 1.0]);
    assert_close(
        &mean_output(&out.model, &calibration),
        &mean_output(&m, &calibration),
    );
}

#[test]
fn bias_correction_adds_an_add_when_there_is_no_bias() {
    // Gemm with transA = 1 reads x transposed: features run down its first axis.
    let m = model(|b| {
        b.node("Transpose", &["x"], &["xt"]);
        let n = b.node("Gemm", &["xt", "w"], &["y"]);
        n.attribute.push(attr_int("transA", 1));
        "y"
    });
    let calibration = samples(&[[1.0, 0.0], [1.0, 1.0]]);
    let out = corrected(&m, &calibration);
    assert_eq!(
        initializer(&out.model, "w.bias_correction"),
        vec![-0.5, 0.0]
    );
    assert_close(
        &mean_output(&out.model, &calibration),
        &mean_output(&m, &calibration),
    );
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn target_bits_spends_bits_on_the_sensitive_weight() {
    // Two 128 x 128 weights; the second one's output is scaled by 100, so its errors
    // count 10^4 times more in the output.
    let weight = |name: &str, seed| {
        let values = sora_onnx::builder::pseudo_random(128 * 128, seed);
        float_tensor(name, &[128, 128], FloatType::F32, &values)
    };
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[1, 128]);
    b.initializer(weight("quiet", 1));
    b.initializer(weight("loud", 2));
    b.initializer(float_tensor("gain", &[1], FloatType::F32, &[100.0]));
    b.node("MatMul", &["x", "quiet"], &["a"]);
    b.node("MatMul", &["x", "loud"], &["b"]);
    b.node("Mul", &["b", "gain"], &["c"]);
    b.node("Add", &["a", "c"], &["y"]);
    b.output_f32("y");
    let m = b.build();
    let rows: Vec<Vec<Tensor>> = (0..4)
        .map(|s| {
            let x: Vec<f32> = sora_onnx::builder::pseudo_random(128, 10 + s)
                .iter()
                .map(|&v| v as f32)
                .collect();
            vec![Tensor::from_shape(&[1, 128], &x).unwrap()]
        })
        .collect();
    let calibration = Samples {
        names: vec!["x".into()],
        samples: rows,
        notes: Vec::new(),
    };
    let config = Config {
        select: Select {
            min_elements: 1,
            ..Select::default()
        },
        ..Config::default()
    };
    let calibrated = calibrated(&m, &config, calibration, 4);
    let graph = Graph::new(&m).unwrap();
    let plan = Plan::new(&graph, &config).unwrap();
    let out = rewrite_to_bits(&graph, &plan, &config, &calibrated, 4.0).unwrap();
    assert!(
        out.report.bits_per_weight <= 4.0,
        "{}",
        out.report.bits_per_weight
    );
    let bits = |name: &str| {
        let t = out.report.tensors.iter().find(|t| t.name == name).unwrap();
        (t.bits, t.sensitivity.unwrap(), t.error_share.unwrap())
    };
    let (quiet, loud) = (bits("quiet"), bits("loud"));
    assert!(loud.0 > quiet.0, "quiet {quiet:?}, loud {loud:?}");
    assert!((quiet.2 + loud.2 - 1.0).abs() < 1e-12);
}
