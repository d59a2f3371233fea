//! The decoded twin: tract cannot load 4-bit integer tensors (nor blocked
//! `DequantizeLinear`), so the proof runs a copy of a qdq model in which every
//! `DequantizeLinear` of constant integers is replaced by the float initializer it
//! computes, worked out here by the ONNX definition:
//!
//! ```text
//! y = (x - zero_point) * scale     computed in f64, stored in the scale's type
//! scale index: per tensor (scalar), per axis ([d_axis]: the coordinate on `axis`),
//!              per block (x's dims, `axis` divided by `block_size`: coordinate / block)
//! ```
//!
//! The twin proves the same values as the qdq model only if onnxruntime computes them
//! as defined; the repository's onnxruntime cross-check compares the two.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::graph::is_default;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, element_count, float_tensor, float_values};

/// `model` with every `DequantizeLinear` of constant integer inputs (any graph) folded
/// to its float value, and how many were folded; `None` when it has none.
pub fn decoded_twin(model: &ModelProto) -> Result<Option<(ModelProto, usize)>> {
    let mut twin = model.clone();
    let folded = match twin.graph.as_mut() {
        Some(graph) => fold_graph(graph)?,
        None => 0,
    };
    Ok((folded > 0).then_some((twin, folded)))
}

/// Folds the graph's own `DequantizeLinear` nodes, then those of its subgraphs.
fn fold_graph(graph: &mut GraphProto) -> Result<usize> {
    let initializers: HashMap<String, usize> = (graph.initializer.iter().enumerate())
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    let mut folded = Vec::new();
    let mut kept = Vec::new();
    for node in std::mem::take(&mut graph.node) {
        let constant = |slot: usize| {
            node.input
                .get(slot)
                .filter(|n| !n.is_empty())
                .and_then(|n| initializers.get(n))
                .map(|&i| &graph.initializer[i])
        };
        let foldable = node.op_type() == "DequantizeLinear"
            && is_default(node.domain())
            && node.input.len() >= 2
            && constant(0).is_some_and(|x| integers(x).is_some())
            && constant(1).is_some()
            && (node.input.len() < 3 || node.input[2].is_empty() || constant(2).is_some());
        if foldable {
            let zero_point = constant(2);
            folded.push(dequantize(
                &node,
                constant(0).unwrap(),
                constant(1).unwrap(),
                zero_point,
            )?);
        } else {
            kept.push(node);
        }
    }
    let count = folded.len();
    graph.node = kept;
    graph.initializer.extend(folded);
    // The integers folded are dropped unless something else reads them: tract does
    // not load a model holding a 4-bit tensor at all.
    if count > 0 {
        let mut read = HashSet::new();
        reads(graph, &mut read);
        let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name()).collect();
        graph
            .initializer
            .retain(|t| read.contains(t.name()) || outputs.contains(t.name()));
    }
    let mut nested = 0;
    for node in &mut graph.node {
        for attribute in &mut node.attribute {
            for g in attribute.g.iter_mut().chain(attribute.graphs.iter_mut()) {
                nested += fold_graph(g)?;
            }
        }
    }
    Ok(count + nested)
}

/// Adds every name a node of `graph` (or of its subgraphs) reads to `read`.
fn reads(graph: &GraphProto, read: &mut HashSet<String>) {
    for node in &graph.node {
        read.extend(node.input.iter().cloned());
        for attribute in &node.attribute {
            for g in attribute.g.iter().chain(&attribute.graphs) {
                reads(g, read);
            }
        }
    }
}

/// The values of an integer tensor `DequantizeLinear` takes (4- and 8-bit, raw data),
/// or `None` for another type or layout.
fn integers(t: &TensorProto) -> Option<Vec<i64>> {
    let count = element_count(t.name(), &t.dims).ok()?;
    let raw = t.raw_data.as_deref()?;
    let nibble = |i: usize| (raw[i / 2] >> (4 * (i % 2))) & 0x0f;
    let values: Vec<i64> = match DataType::try_from(t.data_type()).ok()? {
        DataType::Uint4 if raw.len() == count.div_ceil(2) => {
            (0..count).map(|i| i64::from(nibble(i))).collect()
        }
        DataType::Int4 if raw.len() == count.div_ceil(2) => (0..count)
            .map(|i| i64::from(((nibble(i) << 4) as i8) >> 4))
            .collect(),
        DataType::Uint8 if raw.len() == count => raw.iter().map(|&b| i64::from(b)).collect(),
        DataType::Int8 if raw.len() == count => raw.iter().map(|&b| i64::from(b as i8)).collect(),
        _ => return None,
    };
    Some(values)
}

/// The initializer `node` computes from `x`, `scale` and `zero_point`.
fn dequantize(
    node: &NodeProto,
    x: &TensorProto,
    scale: &TensorProto,
    zero_point: Option<&TensorProto>,
) -> Result<TensorProto> {
    let bad = |what: String| Error::InvalidModel {
        what: format!("DequantizeLinear '{}': {what}", node.name()),
    };
    let values = integers(x).expect("checked foldable");
    let ty = FloatType::from_data_type(scale.data_type())
        .ok_or_else(|| bad("its scale is not a float tensor".into()))?;
    let scales = float_values(scale, None)?;
    let zeros = match zero_point {
        Some(z) => integers(z).ok_or_else(|| bad("unreadable zero point".into()))?,
        None => vec![0; scales.len()],
    };
    if zeros.len() != scales.len() {
        return Err(bad("zero point and scale differ in size".into()));
    }
    let dims: Vec<usize> = x.dims.iter().map(|&d| d as usize).collect();
    let attribute = |name: &str| {
        (node.attribute.iter())
            .find(|a| a.name() == name)
            .and_then(|a| a.i)
    };
    let rank = dims.len() as i64;
    let axis = attribute("axis").unwrap_or(1);
    let axis = if axis < 0 { axis + rank } else { axis };
    let block = attribute("block_size").unwrap_or(0).max(0) as usize;
    let scale_of = scale_index(&dims, axis, block, &scale.dims, scales.len()).ok_or_else(|| {
        bad(format!(
            "scale dims {:?} do not fit x dims {dims:?}",
            scale.dims
        ))
    })?;
    let y: Vec<f64> = (values.iter().enumerate())
        .map(|(i, &q)| {
            let s = scale_of(i);
            (q - zeros[s]) as f64 * scales[s]
        })
        .collect();
    let output = node.output.first().ok_or_else(|| bad("no output".into()))?;
    Ok(float_tensor(output, &dims, ty, &y))
}

/// Maps a position of `x` (row-major, `dims`) to the position of its scale: one scale
/// for all, one per coordinate on `axis`, or one per block of `block` along `axis`.
fn scale_index(
    dims: &[usize],
    axis: i64,
    block: usize,
    scale_dims: &[i64],
    scales: usize,
) -> Option<Box<dyn Fn(usize) -> usize>> {
    if scales == 1 {
        return Some(Box::new(|_| 0));
    }
    let axis = usize::try_from(axis).ok().filter(|&a| a < dims.len())?;
    let inner: usize = dims[axis + 1..].iter().product();
    let along = dims[axis];
    if block == 0 {
        return (scales == along)
            .then(|| Box::new(move |i: usize| (i / inner) % along) as Box<dyn Fn(usize) -> usize>);
    }
    let blocks = along.div_ceil(block);
    let expected: Vec<i64> = (dims.iter().enumerate())
        .map(|(a, &d)| if a == axis { blocks } else { d } as i64)
        .collect();
    (scale_dims == expected.as_slice()).then(|| {
        Box::new(move |i: usize| {
            let (outer, rest) = (i / (along * inner), i % (along * inner));
            let (coordinate, within) = (rest / inner, rest % inner);
            (outer * blocks + coordinate / block) * inner + within
        }) as Box<dyn Fn(usize) -> usize>
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{attr_int, node};
    use crate::onnx::tensor::{u8_tensor, uint4_tensor};

    fn dq(inputs: &[&str], axis: i64, block: i64) -> NodeProto {
        node(
            "DequantizeLinear",
            "dq",
            inputs,
            &["y"],
            vec![attr_int("axis", axis), attr_int("block_size", block)],
        )
    }

    #[test]
    fn blocks_along_rows_take_their_block_scale() {
        // x [4, 2] uint4, blocks of 2 rows: scale [2, 2].
        let x = uint4_tensor("x", &[4, 2], &[0, 1, 2, 3, 4, 5, 6, 15]);
        let scale = float_tensor("s", &[2, 2], FloatType::F32, &[1.0, 10.0, 0.5, 0.25]);
        let zp = uint4_tensor("z", &[2, 2], &[1, 0, 2, 8]);
        let y = dequantize(&dq(&["x", "s", "z"], 0, 2), &x, &scale, Some(&zp)).unwrap();
        let expected = [-1.0, 10.0, 1.0, 30.0, 1.0, -0.75, 2.0, 1.75];
        assert_eq!(float_values(&y, None).unwrap(), expected);
        assert_eq!(y.name(), "y");
    }

    #[test]
    fn blocks_along_columns_and_signed_nibbles() {
        // x [2, 4] int4 (-8..7), blocks of 2 columns: scale [2, 2].
        let mut x = uint4_tensor("x", &[2, 4], &[0xf, 1, 2, 0x8, 0, 0, 7, 7]);
        x.data_type = Some(DataType::Int4 as i32);
        let scale = float_tensor("s", &[2, 2], FloatType::F32, &[1.0, 2.0, 3.0, 4.0]);
        let y = dequantize(&dq(&["x", "s"], 1, 2), &x, &scale, None).unwrap();
        let expected = [-1.0, 1.0, 4.0, -16.0, 0.0, 0.0, 28.0, 28.0];
        assert_eq!(float_values(&y, None).unwrap(), expected);
    }

    #[test]
    fn a_model_is_folded_and_other_nodes_stay() {
        let x = u8_tensor("x", &[2, 2], vec![3, 4, 5, 6]);
        let scale = float_tensor("s", &[2], FloatType::F32, &[2.0, 0.5]);
        let graph = GraphProto {
            node: vec![
                dq(&["x", "s"], 1, 0),
                node("MatMul", "mm", &["a", "y"], &["out"], vec![]),
            ],
            initializer: vec![x, scale],
            ..Default::default()
        };
        let model = ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        let (twin, folded) = decoded_twin(&model).unwrap().unwrap();
        assert_eq!(folded, 1);
        let g = twin.graph.unwrap();
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.node[0].op_type(), "MatMul");
        let names: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            ["y"],
            "the integers and scales read by nothing are dropped"
        );
        assert_eq!(
            float_values(&g.initializer[0], None).unwrap(),
            [6.0, 2.0, 10.0, 3.0]
        );
        assert!(decoded_twin(&ModelProto::default()).unwrap().is_none());
    }
}
