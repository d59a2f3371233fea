//! The qdq form: every layout the emitter writes dequantizes (by the ONNX definition,
//! as the proof's decoded twin computes it) to exactly the grid values the particle
//! math fitted; rewritten models keep the MatMul/Gemm nodes, read one
//! `DequantizeLinear` each, and prove through the twin; the options it refuses say why.

use sora_onnx::builder::{ModelBuilder, attr_int, float_matrix, pseudo_random, value_info};
use sora_onnx::config::{Form, GranularityChoice};
use sora_onnx::dump::dump;
use sora_onnx::forms::{Target, qdq};
use sora_onnx::graph::Names;
use sora_onnx::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use sora_onnx::onnx::tensor::{FloatType, float_values};
use sora_onnx::particles::grid::decompose_grid;
use sora_onnx::particles::{Granularity, Matrix};
use sora_onnx::prove::decoded_twin;
use sora_onnx::report::KmeansMethod;
use sora_onnx::rules::Select;
use sora_onnx::{Config, ProofConfig, rewrite, validate};

struct Case {
    rows: usize,
    cols: usize,
    bits: u32,
    block: usize,
    channel_axis: usize,
    ty: FloatType,
    dims: Option<Vec<i64>>,
}

/// Emits the qdq subgraph of `case`, folds it as the proof's twin does, and returns
/// the folded values and the values the grids decode to.
fn folded_and_expected(case: &Case) -> (Vec<f64>, Vec<f64>) {
    let values: Vec<f64> = pseudo_random(case.rows * case.cols, 7)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i % 5) as f64))
        .collect();
    let matrix = Matrix {
        values: &values,
        rows: case.rows,
        cols: case.cols,
        channel_axis: case.channel_axis,
    };
    let granularity = Granularity::Block(case.block);
    let grids = decompose_grid(&matrix, granularity, case.bits, |s| case.ty.round(s));
    let dims = case
        .dims
        .clone()
        .unwrap_or(vec![case.rows as i64, case.cols as i64]);
    let target = Target {
        weight: "w",
        dims: &dims,
        shape: [case.rows, case.cols],
        float_type: case.ty,
        stored_type: case.ty,
        channel_axis: case.channel_axis,
        bits: case.bits,
        opset: 21,
    };
    let sub = qdq::emit(&target, &grids, granularity, &mut Names::default(), &[]);
    let model = ModelProto {
        ir_version: Some(10),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(21),
        }],
        graph: Some(GraphProto {
            node: sub.nodes,
            initializer: sub.initializers,
            output: vec![value_info(&sub.output, case.ty.data_type(), None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (twin, _) = decoded_twin(&model).unwrap().unwrap();
    let graph = twin.graph.unwrap();
    // A Reshape (non-matrix dims) stays; the folded matrix is then its input.
    let folded_name = graph
        .node
        .first()
        .map_or(sub.output.clone(), |n| n.input[0].clone());
    let folded = graph
        .initializer
        .iter()
        .find(|t| t.name() == folded_name)
        .expect("the DequantizeLinear output is an initializer");
    assert_eq!(folded.dims, vec![case.rows as i64, case.cols as i64]);
    let expected = grids.decoded(&matrix, granularity, |v| case.ty.round(v));
    (float_values(folded, None).unwrap(), expected)
}

#[test]
fn every_layout_dequantizes_to_the_fitted_grids() {
    let cases = [
        // MatMul [K, N]: blocks of rows; a last block cut short (40 rows, blocks of 16).
        (40, 6, 4, 16, 1, FloatType::F32, None),
        (64, 3, 8, 32, 1, FloatType::F32, None),
        // A [N, K] weight read by other than a Gemm: blocks of columns, an odd count
        // of 4-bit values.
        (5, 33, 4, 16, 0, FloatType::F32, None),
        (4, 64, 8, 16, 0, FloatType::F16, None),
        // A whole tensor viewed as a matrix: Reshape after.
        (32, 4, 4, 16, 1, FloatType::F32, Some(vec![2, 16, 4])),
    ];
    for (rows, cols, bits, block, channel_axis, ty, dims) in cases {
        let case = Case {
            rows,
            cols,
            bits,
            block,
            channel_axis,
            ty,
            dims,
        };
        let (folded, expected) = folded_and_expected(&case);
        assert_eq!(
            folded, expected,
            "{rows}x{cols} {bits} bits block {block} axis {channel_axis}"
        );
    }
}

fn qdq_config(bits: u32, granularity: GranularityChoice) -> Config {
    Config {
        bits,
        granularity,
        form: Form::Qdq,
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    }
}

fn matmul_and_gemm() -> ModelProto {
    let mut b = ModelBuilder::new(21);
    b.input_f32("x", &[3, 64]);
    b.initializer(float_matrix("w", 64, 32, 1));
    b.initializer(float_matrix("v", 16, 32, 2));
    b.node("MatMul", &["x", "w"], &["h"]);
    b.node("Gemm", &["h", "v"], &["y"])
        .attribute
        .push(attr_int("transB", 1));
    b.output_f32("y");
    b.build()
}

#[test]
fn matmul_and_gemm_read_one_dequantize_each() {
    let model = matmul_and_gemm();
    let config = qdq_config(4, GranularityChoice::Auto);
    let out = rewrite(&model, &config).unwrap();
    assert_eq!(out.model.ir_version, Some(10));
    let methods: Vec<(KmeansMethod, Granularity, u32)> = (out.report.tensors.iter())
        .map(|t| (t.kmeans, t.granularity, t.bits))
        .collect();
    let block = (KmeansMethod::Grid, Granularity::Block(32), 4);
    assert_eq!(methods, [block, block]);
    let proof = validate(&model, &out.model, &ProofConfig::default()).unwrap();
    assert_eq!(proof.folded_dequantize, 2);
    assert!(proof.outputs[0].rel_l2 < 0.1, "{proof:?}");
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn eight_bits_come_close() {
    let model = matmul_and_gemm();
    let errors: Vec<f64> = [4, 8]
        .iter()
        .map(|&bits| {
            let out = rewrite(&model, &qdq_config(bits, GranularityChoice::Auto)).unwrap();
            validate(&model, &out.model, &ProofConfig::default())
                .unwrap()
                .outputs[0]
                .rel_l2
        })
        .collect();
    assert!(
        errors[1] < errors[0] / 10.0 && errors[1] < 1e-2,
        "{errors:?}"
    );
}

#[test]
fn refusals_say_what_the_form_takes() {
    let model = matmul_and_gemm();
    let refused = |config: Config| rewrite(&model, &config).unwrap_err().to_string();
    assert_eq!(
        refused(qdq_config(3, GranularityChoice::Auto)),
        "invalid option: --form qdq stores 4- or 8-bit integers, not --bits 3"
    );
    let channel = GranularityChoice::Fixed(Granularity::Channel);
    assert!(
        refused(qdq_config(4, channel)).contains("block:G with G a power of two of at least 16"),
    );
    let odd = GranularityChoice::Fixed(Granularity::Block(24));
    assert!(refused(qdq_config(4, odd)).contains("not block:24"));
    let vectors = Config {
        dim: 2,
        ..qdq_config(4, GranularityChoice::Auto)
    };
    assert!(refused(vectors).contains("does not combine with --dim"));
}
