//! The rows form: a Gather of a decomposed table looks up exactly the rows the particles
//! decode to (negative ids included) for codebooks per tensor, per column and per block
//! of rows and for qdq grids, at widths that divide 8 and widths that straddle bytes;
//! the rewrite chooses it only where every reader is a row lookup and rows pack whole.

mod common;

use common::run;
use sora_onnx::builder::{Dim, ModelBuilder, float_matrix, pseudo_random, value_info};
use sora_onnx::config::{Form, GranularityChoice};
use sora_onnx::dump::dump;
use sora_onnx::forms::Target;
use sora_onnx::forms::rows::{self, Levels};
use sora_onnx::graph::{Names, NodeId};
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::proto::{GraphProto, ModelProto, OperatorSetIdProto};
use sora_onnx::onnx::tensor::FloatType;
use sora_onnx::particles::grid::decompose_grid;
use sora_onnx::particles::{Granularity, Matrix, decompose};
use sora_onnx::rules::Select;
use sora_onnx::{Config, rewrite};
use tract_onnx::prelude::Tensor;

const V: usize = 40;

/// Ids [2, 5], two of them negative (counted from the end).
fn ids() -> (Tensor, Vec<usize>) {
    let ids: Vec<i64> = vec![0, 39, -1, 7, 8, -40, 15, 16, 23, 33];
    let rows = ids
        .iter()
        .map(|&i| i.rem_euclid(V as i64) as usize)
        .collect();
    (Tensor::from_shape(&[2, 5], &ids).unwrap(), rows)
}

/// Emits the rows form of a `[V, cols]` table decomposed into `levels`, runs it in
/// tract on [`ids`] and checks that every looked-up row is exactly the row `decoded`
/// holds.
fn looks_up_decoded_rows(
    cols: usize,
    bits: u32,
    granularity: Granularity,
    levels: Levels,
    decoded: &[f64],
) {
    let dims = [V as i64, cols as i64];
    let target = Target {
        weight: "table",
        dims: &dims,
        shape: [V, cols],
        float_type: FloatType::F32,
        stored_type: FloatType::F32,
        channel_axis: 1,
        bits,
        opset: 21,
    };
    let gather = sora_onnx::builder::node("Gather", "lookup", &["table", "ids"], &["y"], vec![]);
    assert!(rows::applies(&target, levels, granularity, &[&gather]));
    let id = NodeId { scope: 0, index: 0 };
    let sub = rows::emit(
        &target,
        levels,
        granularity,
        &[(id, &gather)],
        &mut Names::default(),
    );
    assert_eq!(sub.replacements.len(), 1);
    let mut nodes = sub.nodes.clone();
    nodes.extend(sub.replacements[0].nodes.clone());
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(21),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: sub.initializers,
            input: vec![value_info(
                "ids",
                DataType::Int64,
                Some(&[Dim::Fixed(2), Dim::Fixed(5)]),
            )],
            output: vec![value_info("y", DataType::Float, None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let (ids, rows) = ids();
    let out = run(&model, &[ids], 0);
    // [2, 5, cols] as 2 rows of 5 * cols.
    let looked_up: Vec<f64> = out.concat();
    let expected: Vec<f64> = (rows.iter())
        .flat_map(|&r| decoded[r * cols..(r + 1) * cols].to_vec())
        .collect();
    assert_eq!(looked_up, expected, "{bits} bits {granularity:?}");
}

fn table(cols: usize) -> Vec<f64> {
    pseudo_random(V * cols, 3)
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + (i % 3) as f64))
        .collect()
}

/// `values` as a `[V, len / V]` table whose columns are the channels.
fn columns_as_channels(values: &[f64]) -> Matrix<'_> {
    Matrix {
        values,
        rows: V,
        cols: values.len() / V,
        channel_axis: 1,
    }
}

#[test]
fn codebook_rows_are_the_decoded_rows() {
    for (cols, bits, granularity) in [
        (16, 4, Granularity::Channel),
        (16, 3, Granularity::Channel),
        (8, 8, Granularity::Tensor),
        (5, 8, Granularity::Channel),
        (24, 2, Granularity::Block(8)),
        (16, 5, Granularity::Block(16)),
        (16, 1, Granularity::Tensor),
    ] {
        let values = table(cols);
        let matrix = columns_as_channels(&values);
        let d = decompose(&matrix, granularity, bits);
        let decoded = d.decoded(&matrix, granularity, |v| FloatType::F32.round(v));
        looks_up_decoded_rows(cols, bits, granularity, Levels::Codebooks(&d), &decoded);
    }
}

#[test]
fn grid_rows_are_the_decoded_rows() {
    for (cols, bits, block) in [(16, 4, 16), (8, 8, 32), (24, 4, 7)] {
        let values = table(cols);
        let matrix = columns_as_channels(&values);
        let granularity = Granularity::Block(block);
        let g = decompose_grid(&matrix, granularity, bits, |s| FloatType::F32.round(s));
        let decoded = g.decoded(&matrix, granularity, |v| FloatType::F32.round(v));
        looks_up_decoded_rows(cols, bits, granularity, Levels::Grids(&g), &decoded);
    }
}

/// `e = Gather(table [V, cols], ids)`; with `also_matmul` the same table is read by
/// `z = MatMul(x [2, V], table)` too.
fn embedding(cols: usize, also_matmul: bool) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input("ids", DataType::Int64, &[Dim::Named("B"), Dim::Fixed(5)]);
    b.initializer(float_matrix("table", V, cols, 5));
    b.node("Gather", &["table", "ids"], &["e"]);
    b.output_f32("e");
    if also_matmul {
        b.input_f32("x", &[2, V]);
        b.node("MatMul", &["x", "table"], &["z"]);
        b.output_f32("z");
    }
    b.build()
}

fn config(bits: u32, form: Form) -> Config {
    Config {
        bits,
        form,
        granularity: GranularityChoice::Fixed(match form {
            Form::Qdq => Granularity::Block(32),
            _ => Granularity::Channel,
        }),
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    }
}

fn rows_nodes(model: &ModelProto) -> usize {
    let graph = model.graph.as_ref().unwrap();
    graph
        .node
        .iter()
        .filter(|n| n.name().contains(".rows/"))
        .count()
}

#[test]
fn the_rewrite_looks_up_rows_only_where_every_reader_is_a_row_lookup() {
    let out = rewrite(&embedding(16, false), &config(4, Form::Decode)).unwrap();
    assert!(rows_nodes(&out.model) > 0);
    let graph = out.model.graph.as_ref().unwrap();
    assert!(!graph.node.iter().any(|n| n.name() == "Gather_0"));
    // The index is stored as [V, D*b/8] bytes.
    let index = (graph.initializer.iter())
        .find(|t| t.name() == "table.index")
        .unwrap();
    assert_eq!(index.dims, vec![V as i64, 8]);
    // The same table read by a MatMul too: one decoding serves both.
    let tied = rewrite(&embedding(16, true), &config(4, Form::Decode)).unwrap();
    assert_eq!(rows_nodes(&tied.model), 0);
    // Rows of 12 three-bit indices do not pack into whole groups: the decode form.
    let straddling = rewrite(&embedding(12, false), &config(3, Form::Decode)).unwrap();
    assert_eq!(rows_nodes(&straddling.model), 0);
    let whole = rewrite(&embedding(12, false), &config(8, Form::Decode)).unwrap();
    assert!(rows_nodes(&whole.model) > 0);
    // Under --form qdq the embedding's grids are looked up by rows as well.
    let qdq = rewrite(&embedding(16, false), &config(4, Form::Qdq)).unwrap();
    let graph = qdq.model.graph.as_ref().unwrap();
    assert!(graph.node.iter().any(|n| n.name() == "table.rows/Mul"));
    let zero_point = (graph.initializer.iter())
        .find(|t| t.name() == "table.zero_point")
        .unwrap();
    // Two blocks of 32 rows (the last cut short), 16 four-bit zero points per row.
    assert_eq!(zero_point.dims, vec![2, 8]);
}

#[test]
fn a_two_bit_rows_form_dumps_as_the_snapshot() {
    let model = embedding(8, false);
    let out = rewrite(&model, &config(2, Form::Decode)).unwrap();
    insta::assert_snapshot!(dump(&out.model));
}
