//! Why a node is left alone: one value per reason, shown as one sentence naming the
//! weight, and written as that sentence in reports.

use std::fmt;

/// Why a node is left alone. Displayed as one sentence naming the weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The weight input is computed at run time.
    DynamicWeight(String),
    /// The weight is computed from integers at run time: it is already quantized.
    AlreadyQuantized(String, String),
    /// The weight is an initializer that is also a graph input, so callers may feed
    /// another value.
    OverridableInitializer(String),
    /// The weight's element type is not FLOAT16, FLOAT or DOUBLE.
    NotFloat(String, String),
    /// The weight does not have the rank the op's rule needs.
    NotMatrix(String, Vec<i64>),
    /// The weight has fewer elements than `--min-elements`.
    TooSmall(String, usize, usize),
    /// The weight's data lives in an external file and no model folder was given.
    ExternalData(String),
    /// The node and weight names match no `--include` glob.
    NotIncluded,
    /// The node or weight name matches an `--exclude` glob.
    Excluded(String),
    /// The weight is also read by something that is not a rewritable weight input.
    OtherUse(String, String),
    /// `--lossless`: a codebook would need more than `2^bits` particles.
    NotLossless(String, usize, u32),
    /// `--dim`: the number of inputs per channel is not a multiple of the vector size.
    NotDivisible(String, usize, usize),
    /// The weight holds NaN or infinite values.
    NonFinite(String),
    /// The model's opset lacks an op the decoding needs.
    OpsetTooOld(i64, i64),
    /// An attribute value the rule does not handle.
    Unsupported(String),
    /// No setting the data-free default allows stores the weight in half its bytes:
    /// (weight, least bytes, the weight's bytes).
    TooCostly(String, usize, usize),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SkipReason::*;
        match self {
            DynamicWeight(w) => write!(f, "weight '{w}' is computed at run time, not a constant"),
            AlreadyQuantized(w, how) => write!(f, "weight '{w}' is already quantized ({how})"),
            OverridableInitializer(w) => {
                write!(
                    f,
                    "weight '{w}' is an initializer that is also a graph input, so callers may override it (--initializer-inputs rewrites it anyway and removes the input)"
                )
            }
            NotFloat(w, t) => write!(f, "weight '{w}' is {t}, not FLOAT16, FLOAT or DOUBLE"),
            NotMatrix(w, shape) => write!(
                f,
                "weight '{w}' has shape {shape:?}, not the rank this op's rule rewrites"
            ),
            TooSmall(w, n, min) => write!(
                f,
                "weight '{w}' has {n} elements, fewer than --min-elements {min}"
            ),
            ExternalData(w) => write!(
                f,
                "weight '{w}' stores its data in an external file, and the model's folder is unknown (load it from a path)"
            ),
            NotIncluded => write!(f, "no --include glob matches the node or its weight"),
            Excluded(p) => write!(f, "excluded by --exclude '{p}'"),
            OtherUse(w, user) => write!(
                f,
                "weight '{w}' is also read by {user}, which reads it densely"
            ),
            NonFinite(w) => write!(f, "weight '{w}' holds NaN or infinite values"),
            NotDivisible(w, inputs, dim) => {
                write!(
                    f,
                    "weight '{w}' has {inputs} inputs per channel, not a multiple of --dim {dim}"
                )
            }
            NotLossless(w, distinct, bits) => write!(
                f,
                "weight '{w}' has {distinct} distinct values per codebook, more than 2^{bits}: not representable losslessly"
            ),
            OpsetTooOld(opset, needs) => write!(
                f,
                "the model's opset {opset} is older than {needs}, which the decoding needs"
            ),
            Unsupported(what) => write!(f, "{what}"),
            TooCostly(w, least, bytes) => write!(
                f,
                "weight '{w}' would take at least {least} bytes as particles, not half of its {bytes}: it stays dense"
            ),
        }
    }
}

impl serde::Serialize for SkipReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
