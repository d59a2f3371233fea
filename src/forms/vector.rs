//! The vector form: vector particles of `d` weights, summed over additive stages.
//!
//! ```text
//! stage t:      P_t = Gather(particles_t[K, d], index_t[A, B])         -> [A, B, d]
//! stages:       P = P_1 + P_2 + ...                                     (Add)
//! channels along columns (W [N, M]; a vector is d consecutive rows of a column):
//!               index [N/d, M];  W = Reshape(Transpose(P, [0, 2, 1]), [N, M])
//! channels along rows (W [M, N]; a vector is d consecutive columns of a row):
//!               index [M, N/d];  W = Reshape(P, [M, N])
//! ```
//!
//! Each stage's index is bit-packed and unpacked like the decode form's; particles
//! may be stored in half precision and cast. A weight of rank != 2 (Conv) is reshaped
//! to its dims at the end. Valid from opset 7 like the decode form.

use super::{Emitter, Subgraph, Target, particles, reshape, unpacked_index};
use crate::builder::{attr_int, attr_ints};
use crate::graph::Names;
use crate::particles::vector::VectorDecomposition;

/// Writes the vector form rebuilding `target` from `decomposition`.
pub fn emit(target: &Target, decomposition: &VectorDecomposition, names: &mut Names) -> Subgraph {
    let [rows, cols] = target.shape;
    let d = decomposition.dim;
    let index_shape = if target.channel_axis == 0 {
        [rows, cols / d]
    } else {
        [rows / d, cols]
    };
    let mut e = Emitter::new(target.weight, names);
    let mut sum: Option<String> = None;
    for (t, stage) in decomposition.stages.iter().enumerate() {
        let prefix = format!("stage{t}");
        let index = unpacked_index(
            &mut e,
            &format!("{prefix}.index"),
            &stage.index,
            target.bits,
            index_shape,
            target.opset,
        );
        let k = stage.codebook.len() / d;
        let table = particles(
            &mut e,
            &format!("{prefix}.particles"),
            &[k, d],
            &stage.codebook,
            target.stored_type,
            target.float_type,
        );
        let gathered = e.op(
            "Gather",
            &[&table, &index],
            &format!("{prefix}.vectors"),
            vec![attr_int("axis", 0)],
        );
        sum = Some(match sum {
            None => gathered,
            Some(previous) => e.op(
                "Add",
                &[&previous, &gathered],
                &format!("{prefix}.sum"),
                vec![],
            ),
        });
    }
    let mut vectors = sum.expect("a vector decomposition has a stage");
    if target.channel_axis == 1 {
        let perm = vec![attr_ints("perm", &[0, 2, 1])];
        vectors = e.op("Transpose", &[&vectors], "vectors.by_row", perm);
    }
    let decoded = reshape(&mut e, &vectors, target.dims);
    e.finish(decoded)
}
