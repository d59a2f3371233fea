//! The qdq form: a weight on uniform grids, one per block of inputs of an output
//! channel, becomes one standard `DequantizeLinear` (opset [`MIN_OPSET`]) that
//! onnxruntime fuses with the MatMul or Gemm reading it into its 4- or 8-bit kernel
//! (`MatMulNBits`), so the weight stays small in memory as well as in the file.
//!
//! ```text
//! MatMul B [K, N] (inputs are rows), blocks of G rows:
//!   B = DequantizeLinear(q uint4|uint8 [K, N], scale [ceil(K/G), N],
//!                        zero_point uint4|uint8 [ceil(K/G), N], axis=0, block_size=G)
//! Gemm transB=1, B [N, K] (inputs are columns): the same with axis=1, scale [N, ceil(K/G)]
//! dims other than the matrix view:  B = Reshape(B, dims)
//! ```
//!
//! Level `q` of a block is `(q - zero_point) * scale`, computed in the weight's type,
//! which is the scale's; onnxruntime fuses axis 0 only (a Gemm with `transB = 1` is
//! valid but runs on decoded weights).

use super::{Emitter, Subgraph, Target, reshape};
use crate::builder::attr_int;
use crate::graph::Names;
use crate::onnx::tensor::{FloatType, float_tensor, u8_tensor, uint4_tensor};
use crate::particles::grid::GridDecomposition;
use crate::particles::{Granularity, Matrix};

/// First opset with blocked `DequantizeLinear` (`block_size`) and 4-bit integers.
pub const MIN_OPSET: i64 = 21;

/// First IR version with 4-bit integer tensors (that of opset 21).
pub const MIN_IR_VERSION: i64 = 10;

/// Whether a weight of `float_type` at `bits` with `granularity` can take the qdq
/// form: half or single precision (the types a scale may have), 4 or 8 bits, blocks
/// of inputs.
pub fn applies(float_type: FloatType, bits: u32, granularity: Granularity) -> bool {
    matches!(float_type, FloatType::F16 | FloatType::F32)
        && matches!(bits, 4 | 8)
        && matches!(granularity, Granularity::Block(_))
}

/// Writes the `DequantizeLinear` rebuilding `target` from its grids at `granularity`
/// (blocks of inputs; see [`applies`]).
pub fn emit(
    target: &Target,
    grids: &GridDecomposition,
    granularity: Granularity,
    names: &mut Names,
) -> Subgraph {
    let [rows, cols] = target.shape;
    let Granularity::Block(block) = granularity else {
        unreachable!("the qdq form takes blocks of inputs (see applies)")
    };
    let matrix = Matrix {
        values: &[],
        rows,
        cols,
        channel_axis: target.channel_axis,
    };
    let blocks = matrix.blocks(granularity);
    // Codebooks are numbered channel * blocks + block; scales are laid out as the
    // weight, blocks along the input axis.
    let (dims, book): ([usize; 2], Box<dyn Fn(usize) -> usize>) = match target.channel_axis {
        1 => (
            [blocks, cols],
            Box::new(move |i| (i % cols) * blocks + i / cols),
        ),
        _ => ([rows, blocks], Box::new(|i| i)),
    };
    let count = dims[0] * dims[1];
    let scales: Vec<f64> = (0..count).map(|i| grids.grids[book(i)].scale).collect();
    let zero_points: Vec<u8> = (0..count)
        .map(|i| grids.grids[book(i)].zero_point)
        .collect();
    let index = &grids.decomposition.index;
    let mut e = Emitter::with_role(target.weight, "qdq", names);
    let integers = |name: &str, dims: &[usize], values: &[u8]| match target.bits {
        4 => uint4_tensor(name, dims, values),
        _ => u8_tensor(name, dims, values.to_vec()),
    };
    let quantized = e.constant("quantized", |n| integers(n, &[rows, cols], index));
    let scale = e.constant("scale", |n| {
        float_tensor(n, &dims, target.float_type, &scales)
    });
    let zero_point = e.constant("zero_point", |n| integers(n, &dims, &zero_points));
    let axis = 1 - target.channel_axis as i64;
    let decoded = e.op(
        "DequantizeLinear",
        &[&quantized, &scale, &zero_point],
        "decoded",
        vec![attr_int("axis", axis), attr_int("block_size", block as i64)],
    );
    let output = if target.is_matrix() {
        decoded
    } else {
        reshape(&mut e, &decoded, target.dims)
    };
    e.finish(output)
}
