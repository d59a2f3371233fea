//! The decode form of subspace particles (`--subspaces`): one codebook per subspace of
//! `d` inputs, shared by every output channel.
//!
//! ```text
//! codebooks [S*K, d]  (subspace s's particles at rows s*K..(s+1)*K)
//! flat   = index[S, M] + offsets[S, 1]          offsets[s] = s*K        (int32)
//! P      = Gather(codebooks, flat, axis=0)      [S, M, d]
//! channels along columns (W [N, M]):  W = Reshape(Transpose(P, [0, 2, 1]), [N, M])
//! channels along rows    (W [M, N]):  W = Reshape(Transpose(P, [1, 0, 2]), [M, N])
//! ```
//!
//! The index is bit-packed and unpacked like the decode form's, the codebooks may be
//! stored in half precision and cast; a weight of rank != 2 (Conv) is reshaped to its
//! dims. Valid from opset 7 like the decode form. The LUT form (`forms::lut`) reads
//! the same particles without rebuilding the weight.

use super::{Emitter, Subgraph, Target, particles, reshape, unpacked_index};
use crate::builder::{attr_int, attr_ints};
use crate::graph::Names;
use crate::particles::subspace::SubspaceDecomposition;

/// Writes the subgraph rebuilding `target` from its subspace particles.
pub fn emit(target: &Target, d: &SubspaceDecomposition, names: &mut Names) -> Subgraph {
    let mut e = Emitter::new(target.weight, names);
    let (s, m, k) = (d.subspaces, d.channels, d.particles);
    let index = unpacked_index(&mut e, "index", &d.index, target.bits, [s, m], target.opset);
    let offsets: Vec<i32> = (0..s).map(|i| (i * k) as i32).collect();
    let offsets = e.int32s("index.offsets", &[s, 1], &offsets);
    let flat = e.op("Add", &[&index, &offsets], "index.flat", vec![]);
    let table = particles(
        &mut e,
        "particles",
        &[s * k, d.dim],
        &d.codebooks,
        target.stored_type,
        target.float_type,
    );
    let vectors = e.op(
        "Gather",
        &[&table, &flat],
        "vectors",
        vec![attr_int("axis", 0)],
    );
    let perm = if target.channel_axis == 1 {
        [0, 2, 1]
    } else {
        [1, 0, 2]
    };
    let ordered = e.op(
        "Transpose",
        &[&vectors],
        "vectors.ordered",
        vec![attr_ints("perm", &perm)],
    );
    let decoded = reshape(&mut e, &ordered, target.dims);
    e.finish(decoded)
}
