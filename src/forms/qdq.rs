//! The qdq form: a weight on uniform grids, one per block of inputs of an output
//! channel, becomes one standard `DequantizeLinear` (opset [`MIN_OPSET`]) that
//! onnxruntime fuses with the MatMul or Gemm reading it into its 4- or 8-bit kernel
//! (`MatMulNBits`), so the weight stays small in memory as well as in the file.
//!
//! ```text
//! MatMul B [K, N] (inputs are rows), blocks of G rows:
//!   B = DequantizeLinear(q uint4|uint8 [K, N], scale [ceil(K/G), N],
//!                        zero_point uint4|uint8 [ceil(K/G), N], axis=0, block_size=G)
//! Gemm transB=1, B [N, K], every reader such a Gemm: the integers stored transposed,
//!   [K, N], as above, and each Gemm replaced by the same Gemm with transB=0 reading it
//! another reader of a [N, K] weight: B = DequantizeLinear(q [N, K], scale [N, ceil(K/G)],
//!   zero_point [N, ceil(K/G)], axis=1, block_size=G)
//! dims other than the matrix view:  B = Reshape(B, dims)
//! ```
//!
//! Level `q` of a block is `(q - zero_point) * scale`, computed in the weight's type,
//! which is the scale's. onnxruntime fuses blocks along axis 0 into a MatMul or a Gemm
//! with `transB = 0` only, hence the transposed Gemm weights.

use super::{Emitter, Subgraph, Target, reshape};
use crate::builder::attr_int;
use crate::config::{Config, Form};
use crate::error::Result;
use crate::graph::is_default;
use crate::graph::{Names, NodeId};
use crate::onnx::proto::{ModelProto, NodeProto};
use crate::onnx::tensor::{FloatType, float_tensor, u8_tensor, uint4_tensor};
use crate::particles::grid::GridDecomposition;
use crate::particles::{Granularity, Matrix};
use crate::upgrade::{Upgraded, upgrade_opset};

/// First opset with blocked `DequantizeLinear` (`block_size`) and 4-bit integers.
pub const MIN_OPSET: i64 = 21;

/// First IR version with 4-bit integer tensors (that of opset 21).
pub const MIN_IR_VERSION: i64 = 10;

/// `model` upgraded to [`MIN_OPSET`] when `config` asks for the qdq form and the
/// model's default-domain opset is older, with what the upgrade changed; `None` when
/// the model is used as it is. Errors name the node no upgrade can carry.
pub fn upgraded(model: &ModelProto, config: &Config) -> Result<Option<(ModelProto, Upgraded)>> {
    let opset = (model.opset_import.iter())
        .find(|o| is_default(o.domain()))
        .map_or(0, |o| o.version());
    if config.form != Form::Qdq || opset >= MIN_OPSET {
        return Ok(None);
    }
    let mut upgraded = model.clone();
    let changed = upgrade_opset(&mut upgraded, MIN_OPSET)?;
    Ok(Some((upgraded, changed)))
}

/// Whether a weight of `float_type` at `bits` with `granularity` can take the qdq
/// form: half or single precision (the types a scale may have), 4 or 8 bits, blocks
/// of inputs.
pub fn applies(float_type: FloatType, bits: u32, granularity: Granularity) -> bool {
    matches!(float_type, FloatType::F16 | FloatType::F32)
        && matches!(bits, 4 | 8)
        && matches!(granularity, Granularity::Block(_))
}

/// Writes the `DequantizeLinear` rebuilding `target` from its grids at `granularity`
/// (blocks of inputs; see [`applies`]). With `gemm_readers` (the Gemm nodes with
/// `transB = 1` that are the weight's only readers), the integers are stored
/// transposed and each of those nodes is replaced by one with `transB = 0`.
pub fn emit(
    target: &Target,
    grids: &GridDecomposition,
    granularity: Granularity,
    names: &mut Names,
    gemm_readers: &[(NodeId, &NodeProto)],
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
    let transpose = target.channel_axis == 0 && !gemm_readers.is_empty();
    let index = &grids.index;
    // Integers as stored, and the codebook of each scale position (codebooks are
    // numbered channel * blocks + block); blocks run along the stored input axis.
    let (stored, dims, book): (_, [usize; 2], Box<dyn Fn(usize) -> usize>) =
        match (target.channel_axis, transpose) {
            (1, _) => (
                ([rows, cols], index.clone()),
                [blocks, cols],
                Box::new(move |i| (i % cols) * blocks + i / cols),
            ),
            (_, true) => {
                let t = (0..rows * cols).map(|i| index[(i % rows) * cols + i / rows]);
                (
                    ([cols, rows], t.collect()),
                    [blocks, rows],
                    Box::new(move |i| (i % rows) * blocks + i / rows),
                )
            }
            (_, false) => (
                ([rows, cols], index.clone()),
                [rows, blocks],
                Box::new(|i| i),
            ),
        };
    let ((stored_dims, integers_stored), count) = (stored, dims[0] * dims[1]);
    let scales: Vec<f64> = (0..count).map(|i| grids.grids[book(i)].scale).collect();
    let zero_points: Vec<u8> = (0..count)
        .map(|i| grids.grids[book(i)].zero_point)
        .collect();
    let mut e = Emitter::with_role(target.weight, "qdq", names);
    let integers = |name: &str, dims: &[usize], values: &[u8]| match target.bits {
        4 => uint4_tensor(name, dims, values),
        _ => u8_tensor(name, dims, values.to_vec()),
    };
    let quantized = e.constant("quantized", |n| integers(n, &stored_dims, &integers_stored));
    let scale = e.constant("scale", |n| {
        float_tensor(n, &dims, target.float_type, &scales)
    });
    let zero_point = e.constant("zero_point", |n| integers(n, &dims, &zero_points));
    let axis = if transpose {
        0
    } else {
        1 - target.channel_axis as i64
    };
    let decoded = e.op(
        "DequantizeLinear",
        &[&quantized, &scale, &zero_point],
        if transpose {
            "decoded.transposed"
        } else {
            "decoded"
        },
        vec![attr_int("axis", axis), attr_int("block_size", block as i64)],
    );
    if transpose {
        for &(id, gemm) in gemm_readers {
            let since = e.emitted();
            let mut inputs: Vec<&str> = gemm.input.iter().map(String::as_str).collect();
            inputs[1] = &decoded;
            let attributes = (gemm.attribute.iter())
                .filter(|a| a.name() != "transB")
                .cloned()
                .collect();
            e.op_to("Gemm", &inputs, &gemm.output[0], attributes);
            e.replace(id, since);
        }
    }
    let output = if target.is_matrix() || transpose {
        decoded
    } else {
        reshape(&mut e, &decoded, target.dims)
    };
    e.finish(output)
}
