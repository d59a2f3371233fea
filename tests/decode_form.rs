//! The decode subgraph, run alone in tract, rebuilds exactly the weights the particle
//! math says it should: every index width, granularity, channel axis, element type and
//! opset from the oldest supported on (7; below 11 without GatherElements and Range).

use sora_onnx::builder::pseudo_random;
use sora_onnx::forms::decode::emit;
use sora_onnx::forms::{Subgraph, Target, vector};
use sora_onnx::graph::Names;
use sora_onnx::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use sora_onnx::onnx::tensor::FloatType;
use sora_onnx::particles::vector::decompose_vectors;
use sora_onnx::particles::{
    CodebookFit, Decomposition, Granularity, Matrix, decompose, decompose_with_outliers,
};
use tract_onnx::prelude::*;

/// A model with no inputs whose one output is the decoded weight.
fn decode_model(target: &Target, d: &Decomposition, g: Granularity, opset: i64) -> ModelProto {
    model_of(
        emit(target, d, g, &mut Names::default(), None),
        target.float_type,
        opset,
    )
}

/// A model with no inputs computing `sub`'s output.
fn model_of(sub: Subgraph, ty: FloatType, opset: i64) -> ModelProto {
    let output = sora_onnx::builder::value_info(&sub.output, ty.data_type(), None);
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("decode".into()),
            node: sub.nodes,
            initializer: sub.initializers,
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run_in_tract(model: &ModelProto) -> (Vec<f64>, Vec<usize>) {
    use prost::Message;
    let bytes = model.encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan.run(tvec!()).unwrap();
    let t = out[0].cast_to::<f64>().unwrap();
    let values = t
        .to_plain_array_view::<f64>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    (values, out[0].shape().to_vec())
}

/// One decode subgraph to build and run.
#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    cols: usize,
    bits: u32,
    granularity: Granularity,
    channel_axis: usize,
    ty: FloatType,
    codebook: FloatType,
    /// The weight's own dims, when not [rows, cols].
    dims: Option<Vec<i64>>,
    /// Fraction of weights kept exact.
    outliers: f64,
    opset: i64,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            rows: 16,
            cols: 9,
            bits: 4,
            granularity: Granularity::Channel,
            channel_axis: 1,
            ty: FloatType::F32,
            codebook: FloatType::F32,
            dims: None,
            outliers: 0.0,
            opset: 17,
        }
    }
}

fn check(case: Case) {
    let Case {
        rows,
        cols,
        bits,
        granularity,
        channel_axis,
        ty,
        codebook,
        ..
    } = case;
    // Weights as stored: rounded to their type.
    let values: Vec<f64> = pseudo_random(rows * cols, bits as u64 * 31 + rows as u64)
        .into_iter()
        .map(|v| ty.round(v))
        .collect();
    let matrix = Matrix {
        values: &values,
        rows,
        cols,
        channel_axis,
    };
    let decomposition = decompose_with_outliers(
        &matrix,
        granularity,
        bits,
        case.outliers,
        CodebookFit::Exact,
    );
    let expected = decomposition.decoded(&matrix, granularity, |v| ty.round(codebook.round(v)));
    let dims = case.dims.clone().unwrap_or(vec![rows as i64, cols as i64]);
    let target = Target {
        weight: "w",
        dims: &dims,
        shape: [rows, cols],
        float_type: ty,
        stored_type: codebook,
        channel_axis,
        bits,
        opset: case.opset,
    };
    let (got, shape) = run_in_tract(&decode_model(
        &target,
        &decomposition,
        granularity,
        case.opset,
    ));
    assert_eq!(got, expected, "{case:?}");
    assert_eq!(
        shape,
        dims.iter().map(|&d| d as usize).collect::<Vec<_>>(),
        "{case:?}"
    );
}

#[test]
fn every_index_width_decodes_exactly() {
    for bits in 1..=8 {
        // 7 x 5 = 35 weights: not a multiple of 8, so the packing pads.
        check(Case {
            rows: 7,
            cols: 5,
            bits,
            granularity: Granularity::Tensor,
            ..Case::default()
        });
        check(Case {
            bits,
            ..Case::default()
        });
    }
}

#[test]
fn channels_along_rows_decode_exactly() {
    for bits in [2, 4, 8] {
        check(Case {
            rows: 6,
            cols: 11,
            bits,
            channel_axis: 0,
            ..Case::default()
        });
    }
}

#[test]
fn blocks_of_inputs_decode_exactly() {
    for channel_axis in [0, 1] {
        for size in [3, 8] {
            check(Case {
                rows: 16,
                cols: 10,
                granularity: Granularity::Block(size),
                channel_axis,
                ..Case::default()
            });
        }
    }
}

#[test]
fn half_and_double_weights_decode_exactly() {
    check(Case {
        rows: 12,
        cols: 8,
        ty: FloatType::F16,
        codebook: FloatType::F16,
        ..Case::default()
    });
    let f64_case = Case {
        rows: 12,
        cols: 8,
        bits: 3,
        granularity: Granularity::Tensor,
        ty: FloatType::F64,
        codebook: FloatType::F64,
        ..Case::default()
    };
    check(f64_case);
}

#[test]
fn half_codebooks_are_cast_to_the_weight_type() {
    check(Case {
        codebook: FloatType::F16,
        ..Case::default()
    });
    check(Case {
        granularity: Granularity::Tensor,
        ty: FloatType::F64,
        codebook: FloatType::F16,
        ..Case::default()
    });
}

#[test]
fn conv_weights_are_reshaped_back() {
    // [O=4, C=3, 3, 2] viewed as [4, 18] with channels along rows.
    check(Case {
        rows: 4,
        cols: 18,
        channel_axis: 0,
        dims: Some(vec![4, 3, 3, 2]),
        ..Case::default()
    });
}

#[test]
fn outliers_are_scattered_back_exactly() {
    check(Case {
        outliers: 0.05,
        ..Case::default()
    });
    let conv = Case {
        rows: 4,
        cols: 18,
        channel_axis: 0,
        dims: Some(vec![4, 3, 3, 2]),
        outliers: 0.1,
        ..Case::default()
    };
    check(conv);
}

/// Runs the vector form of a `rows x cols` weight and compares with the particle math.
fn check_vectors(
    rows: usize,
    cols: usize,
    channel_axis: usize,
    dim: usize,
    stages: usize,
    bits: u32,
) {
    let values: Vec<f64> = pseudo_random(rows * cols, 5)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect();
    let matrix = Matrix {
        values: &values,
        rows,
        cols,
        channel_axis,
    };
    let decomposition = decompose_vectors(&matrix, dim, bits, stages, 0);
    let dims = [rows as i64, cols as i64];
    let target = Target {
        weight: "w",
        dims: &dims,
        shape: [rows, cols],
        float_type: FloatType::F32,
        stored_type: FloatType::F16,
        channel_axis,
        bits,
        opset: 17,
    };
    for opset in [7, 17] {
        let target = Target { opset, ..target };
        let sub = vector::emit(&target, &decomposition, &mut Names::default());
        let (got, shape) = run_in_tract(&model_of(sub, FloatType::F32, opset));
        // Each stage's f16 particles are cast to f32 and the stages summed in f32.
        let expected = decomposition.decoded(&matrix, |v| FloatType::F16.round(v));
        assert_eq!(shape, vec![rows, cols]);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0), "{g} vs {e}");
        }
    }
}

#[test]
fn vector_particles_decode_like_the_particle_math() {
    check_vectors(16, 6, 1, 2, 1, 4);
    check_vectors(6, 16, 0, 4, 2, 3);
    check_vectors(8, 8, 1, 1, 3, 2);
}

#[test]
fn below_opset_11_codebooks_are_read_by_a_flat_gather() {
    // Opset 7 is the oldest (broadcasting integer arithmetic); 9 and 10 keep Slice with
    // attributes and have no Range or GatherElements either.
    for opset in [7, 9, 10] {
        for bits in [1, 3, 4, 8] {
            for channel_axis in [0, 1] {
                for granularity in [
                    Granularity::Tensor,
                    Granularity::Channel,
                    Granularity::Block(3),
                ] {
                    check(Case {
                        rows: 7,
                        cols: 6,
                        bits,
                        granularity,
                        channel_axis,
                        opset,
                        ..Case::default()
                    });
                }
            }
        }
        check(Case {
            rows: 4,
            cols: 18,
            channel_axis: 0,
            dims: Some(vec![4, 3, 3, 2]),
            codebook: FloatType::F16,
            opset,
            ..Case::default()
        });
    }
}

#[test]
fn oldest_and_newest_opsets() {
    for opset in [11, 13, 17, 21] {
        check(Case {
            rows: 8,
            cols: 8,
            opset,
            ..Case::default()
        });
        check(Case {
            rows: 5,
            cols: 3,
            bits: 3,
            granularity: Granularity::Tensor,
            opset,
            ..Case::default()
        });
    }
}

#[test]
fn generated_names_derive_from_the_weight_and_avoid_taken_names() {
    let values = pseudo_random(64, 1);
    let matrix = Matrix {
        values: &values,
        rows: 8,
        cols: 8,
        channel_axis: 1,
    };
    let decomposition = decompose(&matrix, Granularity::Tensor, 2);
    let target = Target {
        weight: "layer/w",
        dims: &[8, 8],
        shape: [8, 8],
        float_type: FloatType::F32,
        stored_type: FloatType::F32,
        channel_axis: 1,
        bits: 2,
        opset: 17,
    };
    let mut names = Names::default();
    names.fresh("layer/w.particles");
    let sub = emit(
        &target,
        &decomposition,
        Granularity::Tensor,
        &mut names,
        None,
    );
    let initializers: Vec<&str> = sub.initializers.iter().map(|t| t.name()).collect();
    assert!(initializers.contains(&"layer/w.index"));
    assert!(initializers.contains(&"layer/w.particles.1"));
    assert_eq!(sub.output, "layer/w.decoded");
    assert!(
        sub.nodes
            .iter()
            .all(|n| n.name().starts_with("layer/w.decode/"))
    );
}
