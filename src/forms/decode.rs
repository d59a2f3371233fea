//! The decode form: a subgraph that rebuilds a weight matrix from its particles.
//!
//! ```text
//! index  uint8 [G*b] --Cast(int32)--Reshape[G,b]--> bytes [G,b]
//! pairs   = Gather(bytes, first_byte[8], axis 1) + 256 * Gather(bytes, next_byte[8], axis 1)
//! digits  = (pairs / 2^(b*s mod 8)) mod 2^b          (mod as x - (x / 2^b) * 2^b)  [G,8]
//! index   = Reshape[N,M](Slice[0:N*M](Reshape[-1](digits)))                  int32 [N,M]
//!
//! per tensor:              W = Gather(particles[K], index[N,M])
//! per channel, columns:    W = GatherElements(particles[K,M], index[N,M], axis=0)
//! per channel, rows:       W = GatherElements(particles[N,K], index[N,M], axis=1)
//! per block of G inputs:   W = GatherElements(particles[B*K,M], index + (row/G)*K, axis=0)
//!                          (rows as channels: particles[N,B*K], index + (col/G)*K, axis=1)
//! f16 particles:           particles --Cast(weight type)--> before the gather
//! weights of rank != 2:    W = Reshape(W[O, rest], dims)        (Conv)
//! outliers kept exact:     W = Reshape(ScatterElements(Reshape(W, [-1]), positions, values), dims)
//! ```
//!
//! Index `s` of a group of 8 starts at bit `b*s` of the group's `b` bytes, in byte
//! `first_byte[s] = b*s/8`; when it runs into the next byte (only for b = 3, 5, 6, 7)
//! that byte is added at 256 times its value, so every intermediate stays below 2^16.
//! (A word-sized sum would be shorter but tract 0.23 accumulates integer ReduceSum in
//! i32, which overflows from 4-bit groups on.) With 8-bit indices the index is stored
//! as uint8 [N,M] and only cast to int32. Index arithmetic is int32, which Gather and
//! GatherElements take as indices (tract evaluates int64 Div through its symbolic-dim
//! arithmetic, ~10x slower). The Slice appears only when N*M is not a
//! multiple of 8 (the packing's padding). Every op is in the default domain and valid
//! from opset [`MIN_OPSET`].

use super::{Emitter, Subgraph, particles, reshape, unpacked_index};
use crate::builder::attr_int;
use crate::graph::Names;
use crate::onnx::tensor::{FloatType, float_tensor};
use crate::particles::{Decomposition, Granularity, Matrix};

/// Oldest default-domain opset the decode form can be written in (GatherElements).
pub const MIN_OPSET: i64 = 11;

/// A decomposed weight, ready to be written as a decode subgraph.
#[derive(Clone, Copy, Debug)]
pub struct DecodeInput<'a> {
    /// The weight's name; every generated name derives from it.
    pub weight: &'a str,
    /// The weight's own dims; the decoded matrix is reshaped to them when they are
    /// not 2-D.
    pub dims: &'a [i64],
    /// Rows and columns of the matrix view the particles were fitted on.
    pub shape: [usize; 2],
    /// Element type of the weight.
    pub float_type: FloatType,
    /// Element type the particles are stored in; cast to `float_type` if different.
    pub codebook_type: FloatType,
    /// Its particles and indices.
    pub decomposition: &'a Decomposition,
    /// How many weights share a codebook.
    pub granularity: Granularity,
    /// 0 if output channels are rows, 1 if columns.
    pub channel_axis: usize,
    /// Bits per index.
    pub bits: u32,
}

/// Writes the decode subgraph of `input`, valid in a model of opset >= [`MIN_OPSET`].
pub fn emit(input: &DecodeInput, names: &mut Names) -> Subgraph {
    let [rows, cols] = input.shape;
    let mut e = Emitter::new(input.weight, names);
    let mut index = unpacked_index(
        &mut e,
        "index",
        &input.decomposition.index,
        input.bits,
        input.shape,
    );
    let matrix = Matrix {
        values: &[],
        rows,
        cols,
        channel_axis: input.channel_axis,
    };
    let books = &input.decomposition.codebooks;
    let k = input.decomposition.particles_per_codebook();
    let blocks = matrix.blocks(input.granularity);
    // Particle tables: [K] per tensor; per channel (and block) laid out so that
    // GatherElements along the input axis reads codebook (channel, block) at
    // index + block * K.
    let (dims, values, axis): (Vec<usize>, Vec<f64>, Option<i64>) =
        match (input.granularity, input.channel_axis) {
            (Granularity::Tensor, _) => (vec![k], books[0].clone(), None),
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
    let particles = particles(
        &mut e,
        "particles",
        &dims,
        &values,
        input.codebook_type,
        input.float_type,
    );
    let mut decoded = match axis {
        None => e.op(
            "Gather",
            &[&particles, &index],
            "decoded",
            vec![attr_int("axis", 0)],
        ),
        Some(axis) => {
            if blocks > 1 {
                let Granularity::Block(size) = input.granularity else {
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
    let outliers = &input.decomposition.outliers;
    if !outliers.is_empty() {
        let flat_shape = e.ints("decoded.flat_shape", &[1], &[-1]);
        let flat = e.op("Reshape", &[&decoded, &flat_shape], "decoded.flat", vec![]);
        let positions: Vec<i32> = outliers.iter().map(|&(p, _)| p as i32).collect();
        let positions = e.int32s("outliers.positions", &[positions.len()], &positions);
        let exact: Vec<f64> = outliers.iter().map(|&(_, v)| v).collect();
        let ty = input.float_type;
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
    if input.dims.len() != 2 || !outliers.is_empty() {
        decoded = reshape(&mut e, &decoded, input.dims);
    }
    e.finish(decoded)
}
