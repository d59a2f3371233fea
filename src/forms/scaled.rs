//! The scaled-grid form: a shared grid of integers times one scale per channel, for
//! weights that are dequantized integers (bit-exact under `--lossless`).
//!
//! ```text
//! index uint8 (bit-packed) --unpack--> index int32 [N, M]
//! W = Mul(Gather(grid[G], index), scales[N, 1] or [1, M])     then Reshape to dims
//! ```
//!
//! The grid holds small integers, stored in half precision when that is exact and cast
//! to the weight's type; the scales keep the weight's type, so `grid[q] * scale` is the
//! same multiply the dequantizing graph did.

use super::{Emitter, Subgraph, Target, particles, reshape, unpacked_index};
use crate::builder::attr_int;
use crate::graph::Names;
use crate::onnx::tensor::float_tensor;
use crate::particles::scaled::ScaledGrid;

/// Writes the scaled-grid form rebuilding `target` from `grid` (the grid is stored as
/// `target.stored_type`, the scales as the weight's type).
pub fn emit(target: &Target, grid: &ScaledGrid, names: &mut Names) -> Subgraph {
    let [rows, cols] = target.shape;
    let g = grid;
    let mut e = Emitter::new(target.weight, names);
    let index = unpacked_index(
        &mut e,
        "index",
        &g.index,
        target.bits,
        target.shape,
        target.opset,
    );
    let grid = particles(
        &mut e,
        "grid",
        &[g.grid.len()],
        &g.grid,
        target.stored_type,
        target.float_type,
    );
    let values = e.op(
        "Gather",
        &[&grid, &index],
        "integers",
        vec![attr_int("axis", 0)],
    );
    let scale_dims = if g.scale_axis == 0 {
        [rows, 1]
    } else {
        [1, cols]
    };
    let ty = target.float_type;
    let scales = e.constant("scales", |n| float_tensor(n, &scale_dims, ty, &g.scales));
    let decoded = e.op("Mul", &[&values, &scales], "decoded", vec![]);
    let decoded = if target.is_matrix() {
        decoded
    } else {
        reshape(&mut e, &decoded, target.dims)
    };
    e.finish(decoded)
}
