//! The decode form: a subgraph that rebuilds a weight matrix from its particles.
//!
//! ```text
//! index  uint8 [bytes] --Cast(int32)--> bytes
//! 1, 2, 4 bits:  table[256, 8/b] = digits of every byte value (Range(0, 256), Div/Mul/Sub)
//!                digits = Gather(table, bytes)                      [bytes, 8/b]
//! 3, 5, 6, 7:    groups of 8 indices in b bytes; index s starts at bit b*s:
//!                pairs = Gather(bytes[G,b], first_byte) + 256 * Gather(bytes[G,b], next_byte)
//!                digits = (pairs / 2^(b*s mod 8)) mod 2^b           [G, 8]
//! index = Reshape[N,M](digits)  (Reshape[-1] + Slice[0:N*M] first when N*M % 8 != 0)
//!
//! per tensor:              W = Gather(particles[K], index[N,M])
//! per channel, columns:    W = GatherElements(particles[K,M], index[N,M], axis=0)
//! per channel, rows:       W = GatherElements(particles[N,K], index[N,M], axis=1)
//! per block of G inputs:   W = GatherElements(particles[B*K,M], index + (row/G)*K, axis=0)
//!                          (rows as channels: particles[N,B*K], index + (col/G)*K, axis=1)
//! below opset 11:          W = Gather(particles[C*K], index + K*(channel*B + block))
//!                          (one broadcast Add per row term and per column term)
//! f16 particles:           particles --Cast(weight type)--> before the gather
//! dims other than N x M:   W = Reshape(W[N,M], dims)      (Conv, LSTM, whole tensors)
//! outliers kept exact:     W = Reshape(ScatterElements(Reshape(W, [-1]), positions, values), dims)
//! ```
//!
//! With 8-bit indices the index is stored as uint8 [N,M] and only cast. For 1, 2 and 4
//! bits the only full-size ops are the Cast of the bytes and one Gather, so a runtime
//! that folds the decoding at load time (onnxruntime) holds few full-size
//! intermediates. Index arithmetic is int32, which Gather and GatherElements take as
//! indices: tract evaluates int64 Div through its symbolic-dimension arithmetic (~10x
//! slower), and tract 0.23 accumulates integer ReduceSum in i32, so the unpacking never
//! sums whole words. Every op is in the default domain and valid from opset
//! [`MIN_OPSET`] (7): below 11 codebooks are read by a flat Gather instead of
//! GatherElements, the byte table starts from stored bytes instead of Range, and below
//! 10 Slice takes attributes.

use super::{Emitter, Subgraph, Target, cast_table, reshape, unpacked_index};
use crate::builder::attr_int;
use crate::graph::Names;
use crate::onnx::tensor::float_tensor;
use crate::particles::{Decomposition, Granularity, Matrix};

/// Oldest default-domain opset the decode form can be written in: Cast to int32,
/// Reshape with a shape input, broadcasting integer Div/Mul/Sub/Add.
pub const MIN_OPSET: i64 = 7;

/// First opset with GatherElements, which per-channel codebooks read; before it they
/// are read by one Gather from the codebooks laid end to end.
pub const GATHER_ELEMENTS_OPSET: i64 = 11;

/// Writes the decode subgraph rebuilding `target` from `decomposition` at
/// `granularity`, valid in a model of opset >= [`MIN_OPSET`]. With `shared_table`, the
/// particles are read from that initializer (stored by another weight of an alike
/// group, with the same codebooks) instead of stored again.
pub fn emit(
    target: &Target,
    decomposition: &Decomposition,
    granularity: Granularity,
    names: &mut Names,
    shared_table: Option<&str>,
) -> Subgraph {
    let [rows, cols] = target.shape;
    let mut e = Emitter::new(target.weight, names);
    let mut index = unpacked_index(
        &mut e,
        "index",
        &decomposition.index,
        target.bits,
        target.shape,
        target.opset,
    );
    let matrix = Matrix {
        values: &[],
        rows,
        cols,
        channel_axis: target.channel_axis,
    };
    let books = &decomposition.codebooks;
    let k = decomposition.particles_per_codebook();
    let blocks = matrix.blocks(granularity);
    // Particle tables: [K] per tensor; per channel (and block) laid out so that
    // GatherElements along the input axis reads codebook (channel, block) at
    // index + block * K; below opset 11 every codebook end to end, [codebooks * K].
    let flat = granularity != Granularity::Tensor && target.opset < GATHER_ELEMENTS_OPSET;
    let (dims, values, axis): (Vec<usize>, Vec<f64>, Option<i64>) =
        match (granularity, target.channel_axis) {
            (Granularity::Tensor, _) => (vec![k], books[0].clone(), None),
            _ if flat => (
                vec![books.len() * k],
                books.iter().flatten().copied().collect(),
                None,
            ),
            (_, 0) => (
                vec![rows, blocks * k],
                books.iter().flatten().copied().collect(),
                Some(1),
            ),
            (_, _) => {
                let values = (0..blocks * k)
                    .flat_map(|r| (0..cols).map(move |c| books[c * blocks + r / k][r % k]))
                    .collect();
                (vec![blocks * k, cols], values, Some(0))
            }
        };
    let stored = match shared_table {
        Some(_) => None,
        None => {
            let ty = target.stored_type;
            Some(e.constant("particles", |n| float_tensor(n, &dims, ty, &values)))
        }
    };
    let table = stored
        .as_deref()
        .or(shared_table)
        .expect("a table is stored or shared");
    let particles = cast_table(
        &mut e,
        table,
        "particles",
        target.stored_type,
        target.float_type,
    );
    if flat {
        index = flat_index(&mut e, index, target, granularity, (blocks, k));
    }
    let mut decoded = match axis {
        None => e.op(
            "Gather",
            &[&particles, &index],
            "decoded",
            vec![attr_int("axis", 0)],
        ),
        Some(axis) => {
            if blocks > 1 {
                let Granularity::Block(size) = granularity else {
                    unreachable!("only block granularity has several blocks")
                };
                let inputs = if axis == 0 { rows } else { cols };
                let offsets: Vec<i32> = (0..inputs).map(|i| (i / size * k) as i32).collect();
                let shape = if axis == 0 { [rows, 1] } else { [1, cols] };
                let offsets = e.int32s("index.block_offsets", &shape, &offsets);
                index = e.op("Add", &[&index, &offsets], "index.in_block", vec![]);
            }
            e.op(
                "GatherElements",
                &[&particles, &index],
                "decoded",
                vec![attr_int("axis", axis)],
            )
        }
    };
    let outliers = &decomposition.outliers;
    if !outliers.is_empty() {
        let flat_shape = e.ints("decoded.flat_shape", &[1], &[-1]);
        let flat = e.op("Reshape", &[&decoded, &flat_shape], "decoded.flat", vec![]);
        let positions: Vec<i32> = outliers.iter().map(|&(p, _)| p as i32).collect();
        let positions = e.int32s("outliers.positions", &[positions.len()], &positions);
        let exact: Vec<f64> = outliers.iter().map(|&(_, v)| v).collect();
        let ty = target.float_type;
        let values = e.constant("outliers.values", |n| {
            float_tensor(n, &[exact.len()], ty, &exact)
        });
        let axis = vec![attr_int("axis", 0)];
        decoded = e.op(
            "ScatterElements",
            &[&flat, &positions, &values],
            "decoded.exact",
            axis,
        );
    }
    if !target.is_matrix() || !outliers.is_empty() {
        decoded = reshape(&mut e, &decoded, target.dims);
    }
    Subgraph {
        table: stored,
        ..e.finish(decoded)
    }
}

/// Below opset 11: where each weight's particle is in the codebooks laid end to end,
/// `index + K * (channel * blocks + block)`, added as one term per row and one per
/// column (broadcast), the channel's along the channel axis and the block's along the
/// other.
fn flat_index(
    e: &mut Emitter,
    mut index: String,
    target: &Target,
    granularity: Granularity,
    (blocks, k): (usize, usize),
) -> String {
    let [rows, cols] = target.shape;
    let size = match granularity {
        Granularity::Block(size) => size.max(1),
        _ => usize::MAX,
    };
    let channel = |c: usize| (c * blocks * k) as i32;
    let block = |i: usize| (i / size * k) as i32;
    let (by_row, by_column): (Vec<i32>, Vec<i32>) = if target.channel_axis == 0 {
        (
            (0..rows).map(channel).collect(),
            (0..cols).map(block).collect(),
        )
    } else {
        (
            (0..rows).map(block).collect(),
            (0..cols).map(channel).collect(),
        )
    };
    for (terms, shape) in [(by_row, [rows, 1]), (by_column, [1, cols])] {
        if terms.iter().all(|&t| t == 0) {
            continue;
        }
        let offsets = e.int32s("index.offsets", &shape, &terms);
        index = e.op("Add", &[&index, &offsets], "index.flat", vec![]);
    }
    index
}
