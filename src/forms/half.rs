//! The half form: the weight itself, stored in half precision and cast back to its
//! type. The data-free default's last resort for a small weight no codebook serves
//! within its target: exactly half the bytes of a float32 weight, at the rounding error
//! of half precision (about 70 dB).
//!
//! ```text
//! W = Cast(W16[dims])     W16: the weight rounded to float16
//! ```

use super::{Emitter, Subgraph, Target, particles};
use crate::graph::Names;
use crate::onnx::tensor::FloatType;

/// Writes the half form rebuilding `target` from its `values`.
pub fn emit(target: &Target, values: &[f64], names: &mut Names) -> Subgraph {
    let mut e = Emitter::new(target.weight, names);
    let dims: Vec<usize> = target.dims.iter().map(|&d| d as usize).collect();
    let decoded = particles(
        &mut e,
        "half",
        &dims,
        values,
        FloatType::F16,
        target.float_type,
    );
    e.finish(decoded)
}
