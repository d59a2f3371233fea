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

use super::{Emitter, Subgraph, particles, reshape, unpacked_index};
use crate::builder::attr_int;
use crate::graph::Names;
use crate::onnx::tensor::{FloatType, float_tensor};
use crate::particles::scaled::ScaledGrid;

/// A weight written as a scaled grid, ready to be emitted.
#[derive(Clone, Copy, Debug)]
pub struct ScaledInput<'a> {
    /// The weight's name; every generated name derives from it.
    pub weight: &'a str,
    /// The weight's own dims.
    pub dims: &'a [i64],
    /// Rows and columns of the matrix view.
    pub shape: [usize; 2],
    /// Element type of the weight (and of the scales).
    pub float_type: FloatType,
    /// Element type the grid is stored in.
    pub grid_type: FloatType,
    /// The grid, indices and scales.
    pub grid: &'a ScaledGrid,
    /// Bits per index.
    pub bits: u32,
}

/// Writes the scaled-grid form of `input`.
pub fn emit(input: &ScaledInput, names: &mut Names) -> Subgraph {
    let [rows, cols] = input.shape;
    let g = input.grid;
    let mut e = Emitter::new(input.weight, names);
    let index = unpacked_index(&mut e, "index", &g.index, input.bits, input.shape);
    let grid = particles(
        &mut e,
        "grid",
        &[g.grid.len()],
        &g.grid,
        input.grid_type,
        input.float_type,
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
    let ty = input.float_type;
    let scales = e.constant("scales", |n| float_tensor(n, &scale_dims, ty, &g.scales));
    let decoded = e.op("Mul", &[&values, &scales], "decoded", vec![]);
    let decoded = if input.dims.len() == 2 {
        decoded
    } else {
        reshape(&mut e, &decoded, input.dims)
    };
    e.finish(decoded)
}
