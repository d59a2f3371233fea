//! The LUT form (`--form lut`): every MatMul/Gemm shape it replaces runs in tract and
//! agrees with the decode form of the same subspace particles (`--subspaces`) within
//! 1e-4 relative error; options it cannot serve are refused or skipped with a reason.

mod common;

use common::{cosine, real_model, run, sentences};
use sora_onnx::builder::{Dim, ModelBuilder, attr_float, attr_int, float_matrix};
use sora_onnx::config::{Form, GranularityChoice, LutGather};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::particles::Granularity;
use sora_onnx::rules::{Select, SkipReason};
use sora_onnx::{Config, ProofConfig, Rewritten, rewrite, validate};

fn lut(dim: usize, bits: u32) -> Config {
    Config {
        dim,
        bits,
        form: Form::Lut,
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    }
}

/// Rewrites `model` in both forms with the same particles and returns the LUT
/// rewrite after checking that it replaced `replaced` nodes and agrees with the decode
/// form within 1e-4 relative L2 error on every output (batch dim `B` = 3).
fn lut_matches_decode(model: &ModelProto, config: &Config, replaced: usize) -> Rewritten {
    let out = rewrite(model, config).unwrap();
    let decode = Config {
        form: Form::Decode,
        subspaces: true,
        ..config.clone()
    };
    let decoded = rewrite(model, &decode).unwrap();
    let lut_nodes = out.model.graph.as_ref().unwrap().node.iter();
    let lookups = lut_nodes
        .filter(|n| n.output[0].contains(".lut.picked"))
        .count();
    assert_eq!(lookups, replaced);
    let proof = ProofConfig {
        input_dims: [("B".to_string(), 3)].into(),
        ..ProofConfig::default()
    };
    let agreement = validate(&decoded.model, &out.model, &proof).unwrap();
    for o in &agreement.outputs {
        assert!(o.rel_l2 < 1e-4, "{o:?}");
    }
    // And both approximate the original.
    let original = validate(model, &out.model, &proof).unwrap();
    for o in &original.outputs {
        assert!(o.cosine > 0.8, "{o:?}");
    }
    out
}

#[test]
fn matmul_with_2d_and_3d_inputs() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DataType::Float, &[Dim::Named("B"), Dim::Fixed(32)]);
    b.input(
        "z",
        DataType::Float,
        &[Dim::Named("B"), Dim::Fixed(5), Dim::Fixed(32)],
    );
    b.initializer(float_matrix("w", 32, 24, 1));
    b.initializer(float_matrix("v", 32, 24, 2));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.node("MatMul", &["z", "v"], &["u"]);
    b.output_f32("y");
    b.output_f32("u");
    let model = b.build();
    let out = lut_matches_decode(&model, &lut(4, 3), 2);
    let t = &out.report.tensors[0];
    // 8 subspaces of 4 inputs, 8 particles each.
    assert_eq!((t.dim, t.codebooks, t.particles), (4, 8, 8));
    let nodes = &out.model.graph.as_ref().unwrap().node;
    assert!(
        nodes
            .iter()
            .all(|n| n.op_type() != "MatMul" || n.input[0] != "x")
    );
    assert_eq!(nodes.iter().filter(|n| n.output[0] == "u").count(), 1);
}

#[test]
fn both_gathers_compute_the_same_values() {
    let mut b = ModelBuilder::new(17);
    b.input(
        "x",
        DataType::Float,
        &[Dim::Named("B"), Dim::Fixed(2), Dim::Fixed(32)],
    );
    b.initializer(float_matrix("w", 32, 24, 9));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let elements = Config {
        lut_gather: LutGather::Elements,
        ..lut(8, 4)
    };
    let out = lut_matches_decode(&model, &elements, 1);
    let rows = lut_matches_decode(&model, &lut(8, 4), 1);
    let ops = |m: &ModelProto| -> Vec<String> {
        let g = m.graph.as_ref().unwrap();
        g.node.iter().map(|n| n.op_type().to_string()).collect()
    };
    assert!(ops(&out.model).contains(&"GatherElements".to_string()));
    assert!(!ops(&rows.model).contains(&"GatherElements".to_string()));
}

#[test]
fn gemm_keeps_trans_a_trans_b_alpha_beta_and_bias() {
    for (trans_a, trans_b, bias) in [(0, 1, true), (1, 0, true), (1, 1, false), (0, 0, false)] {
        let mut b = ModelBuilder::new(13);
        let a_dims = if trans_a == 1 { [32, 3] } else { [3, 32] };
        b.input(
            "a",
            DataType::Float,
            &[Dim::Fixed(a_dims[0]), Dim::Fixed(a_dims[1])],
        );
        let (rows, cols) = if trans_b == 1 { (24, 32) } else { (32, 24) };
        b.initializer(float_matrix("w", rows, cols, 3));
        b.initializer(float_matrix("bias", 1, 24, 4));
        let inputs: &[&str] = if bias {
            &["a", "w", "bias"]
        } else {
            &["a", "w"]
        };
        let gemm = b.node("Gemm", inputs, &["y"]);
        gemm.attribute.push(attr_int("transA", trans_a));
        gemm.attribute.push(attr_int("transB", trans_b));
        gemm.attribute.push(attr_float("alpha", 0.5));
        gemm.attribute.push(attr_float("beta", 2.0));
        b.output_f32("y");
        let model = b.build();
        lut_matches_decode(&model, &lut(2, 4), 1);
    }
}

#[test]
fn oldest_opset_takes_reduce_sum_axes_as_an_attribute() {
    let mut b = ModelBuilder::new(11);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_matrix("w", 16, 8, 5));
    b.node("Gemm", &["x", "w"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let out = lut_matches_decode(&model, &lut(4, 2), 1);
    let sum = out.model.graph.as_ref().unwrap().node.iter();
    let sum = sum
        .filter(|n| n.op_type() == "ReduceSum")
        .collect::<Vec<_>>();
    assert_eq!((sum.len(), sum[0].input.len()), (1, 1));
    assert_eq!(sum[0].attribute[1].name(), "axes");
}

#[test]
fn weight_shared_by_two_matmuls_is_stored_once() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_matrix("w", 16, 8, 6));
    b.node("MatMul", &["x", "w"], &["a"]);
    b.node("Relu", &["a"], &["r"]);
    b.node("MatMul", &["x", "w"], &["c"]);
    b.output_f32("r");
    b.output_f32("c");
    let model = b.build();
    let out = lut_matches_decode(&model, &lut(2, 2), 2);
    let g = out.model.graph.as_ref().unwrap();
    let codebooks = g
        .initializer
        .iter()
        .filter(|t| t.name() == "w.lut_codebooks");
    assert_eq!(codebooks.count(), 1);
    assert!(g.initializer.iter().all(|t| t.name() != "w"));
}

#[test]
fn rewritten_graph_dump() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 8]);
    b.initializer(float_matrix("w", 8, 4, 7));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let out = lut_matches_decode(&model, &lut(2, 2), 1);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn lut_refuses_what_it_cannot_serve() {
    let refused = |config: Config| rewrite(&ModelBuilder::new(17).build(), &config).unwrap_err();
    let message = "invalid option: --form lut and --subspaces use one codebook per subspace of --dim inputs; they do not combine with --stages, --lossless, --outliers, --share alike or --granularity channel/block";
    let stages = Config {
        dim: 1,
        stages: 2,
        ..lut(1, 4)
    };
    assert_eq!(refused(stages).to_string(), message);
    let channel = Config {
        granularity: GranularityChoice::Fixed(Granularity::Channel),
        ..lut(1, 4)
    };
    assert_eq!(refused(channel).to_string(), message);
    // A weight whose inputs --dim does not divide is left alone, with the reason.
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 15]);
    b.initializer(float_matrix("w", 15, 8, 8));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    let out = rewrite(&b.build(), &lut(2, 4)).unwrap();
    assert_eq!(
        out.report.skipped[0].reason,
        SkipReason::NotDivisible("w".into(), 15, 2)
    );
}

#[test]
fn minilm_l3_lut_runs_in_tract_and_agrees_with_decode() {
    let (_, model) = real_model("minilm_l3");
    let config = Config {
        select: Select {
            ops: vec!["MatMul".into(), "Gemm".into()],
            ..Select::default()
        },
        ..lut(2, 5)
    };
    let out = rewrite(&model, &config).unwrap();
    assert_eq!(out.report.tensors.len(), 18);
    let decode = Config {
        form: Form::Decode,
        subspaces: true,
        ..config
    };
    let decoded = rewrite(&model, &decode).unwrap();
    // Eight sentences of 32 tokens: the lookups hold [256, M, S] values at run time.
    let (ids, mask, _) = sentences("minilm_eval.json");
    let n = 8;
    let inputs = [ids.slice(0, 0, n).unwrap(), mask.slice(0, 0, n).unwrap()];
    let reference = run(&model, &inputs, 3);
    let a = run(&decoded.model, &inputs, 3);
    let b = run(&out.model, &inputs, 3);
    let (mut diff, mut norm) = (0.0, 0.0);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        diff += (x - y) * (x - y);
        norm += x * x;
    }
    let rel = (diff / norm).sqrt();
    assert!(rel < 1e-4, "LUT vs decode relative L2 error {rel}");
    let mean = reference
        .iter()
        .zip(&b)
        .map(|(x, y)| cosine(x, y))
        .sum::<f64>()
        / n as f64;
    // 2 inputs per particle, 32 particles per subspace: 3.6 bits per weight.
    assert!(mean > 0.9, "mean sentence cosine {mean}");
}
