//! The rewrite rules, one per file, in the order the driver tries them. A rule looks
//! at one node and either names the constant weight input it can replace by a particle
//! decoding ([`Match::Rewrite`]), says why not ([`Match::Skip`]), or says the node is
//! not its business ([`Match::NotCandidate`]). Rules never touch the model; the driver
//! applies what they return. `--ops` selects rules by op type.

mod conv;
mod gather;
mod gemm;
mod matmul;

use std::fmt;

use crate::config::{Config, Unselected};
use crate::graph::{Constant, Graph, NodeId};
use crate::onnx::external::is_external;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{FloatType, data_type_name, element_count};

/// A rule: looks at the node `NodeId` of the op type it is registered for.
pub type Rule = for<'m> fn(&Graph<'m>, NodeId, &Config) -> Match<'m>;

/// Every rule, by the default-domain op type it matches.
pub const RULES: &[(&str, Rule)] = &[
    ("MatMul", matmul::rule),
    ("Gemm", gemm::rule),
    ("Gather", gather::rule),
    ("Conv", conv::rule),
];

/// What a rule decided about a node.
#[derive(Debug)]
pub enum Match<'m> {
    /// Replace a weight input by its particle decoding.
    Rewrite(WeightPatch<'m>),
    /// Leave the node alone, for this reason.
    Skip(SkipReason),
    /// The node is not what the rule rewrites (a Gather over a computed or integer
    /// tensor): nothing to report.
    NotCandidate,
}

/// How a weight's elements map to the matrix the particles are fitted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// A 2-D weight; output channels run along `channel_axis` (0: rows, 1: columns).
    Matrix {
        /// 0 or 1.
        channel_axis: usize,
    },
    /// A weight of rank >= 2 whose first axis is the output channel (Conv): viewed as
    /// `[dims[0], product of the rest]` with channels along rows.
    ChannelsFirst,
}

/// The rewrite a rule asks for: input `slot` of `node` reads the constant `weight`,
/// viewed as a matrix whose output channels run along `channel_axis`; the driver
/// replaces that input by a subgraph that decodes the weight (in its own shape) from
/// particles.
#[derive(Clone, Copy, Debug)]
pub struct WeightPatch<'m> {
    /// The node whose input is replaced.
    pub node: NodeId,
    /// Which input.
    pub slot: usize,
    /// The constant weight it reads.
    pub weight: Constant<'m>,
    /// Rows and columns of the matrix view of the weight.
    pub shape: [usize; 2],
    /// Its element type.
    pub float_type: FloatType,
    /// 0 if output channels are rows, 1 if they are columns.
    pub channel_axis: usize,
}

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
                    "weight '{w}' is an initializer that is also a graph input, so callers may override it"
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
        }
    }
}

/// The checks every rule shares: input `slot` of `node` must be a constant float
/// tensor of the `layout`'s rank with at least `--min-elements` elements, selected by
/// the globs.
fn weight_input<'m>(
    graph: &Graph<'m>,
    node: NodeId,
    slot: usize,
    layout: Layout,
    config: &Config,
) -> Match<'m> {
    let n = graph.node(node);
    let name = n.input.get(slot).map(String::as_str).unwrap_or_default();
    let skip = Match::Skip;
    if let Err(unselected) = config.selection.check(n.name(), name) {
        return skip(match unselected {
            Unselected::NotIncluded => SkipReason::NotIncluded,
            Unselected::Excluded(p) => SkipReason::Excluded(p),
        });
    }
    let Some(weight) = graph.constant(node.scope, name) else {
        if graph.is_overridable_initializer(node.scope, name) {
            return skip(SkipReason::OverridableInitializer(name.into()));
        }
        return skip(match dequantized_from(graph, node.scope, name) {
            Some(how) => SkipReason::AlreadyQuantized(name.into(), how),
            None => SkipReason::DynamicWeight(name.into()),
        });
    };
    let t = weight.tensor;
    let Some(float_type) = FloatType::from_data_type(t.data_type()) else {
        return skip(SkipReason::NotFloat(
            name.into(),
            data_type_name(t.data_type()),
        ));
    };
    let not_matrix = || skip(SkipReason::NotMatrix(name.into(), t.dims.clone()));
    let Ok(elements) = element_count(name, &t.dims) else {
        return not_matrix();
    };
    let (shape, channel_axis) = match (layout, t.dims.as_slice()) {
        (Layout::Matrix { channel_axis }, &[rows, cols]) => {
            ([rows as usize, cols as usize], channel_axis)
        }
        (Layout::ChannelsFirst, &[channels, _, ..]) if channels > 0 => {
            ([channels as usize, elements / channels as usize], 0)
        }
        _ => return not_matrix(),
    };
    if elements < config.min_elements {
        return skip(SkipReason::TooSmall(
            name.into(),
            elements,
            config.min_elements,
        ));
    }
    if is_external(t) && config.external_dir.is_none() {
        return skip(SkipReason::ExternalData(name.into()));
    }
    Match::Rewrite(WeightPatch {
        node,
        slot,
        weight,
        shape,
        float_type,
        channel_axis,
    })
}

/// How `name` is dequantized from integers at run time, if it visibly is: the output
/// of `DequantizeLinear`, or a `Mul`/`Div` of a `Cast` of an integer constant.
fn dequantized_from(graph: &Graph, scope: usize, name: &str) -> Option<String> {
    let producer = graph.producer(scope, name)?;
    match producer.op_type() {
        "DequantizeLinear" => Some(format!("by DequantizeLinear '{}'", producer.name())),
        "Mul" | "Div" => producer.input.iter().find_map(|input| {
            let cast = graph
                .producer(scope, input)
                .filter(|c| c.op_type() == "Cast")?;
            let source = graph.constant(scope, cast.input.first()?)?;
            let is_integer = matches!(
                DataType::try_from(source.tensor.data_type()),
                Ok(DataType::Int8
                    | DataType::Uint8
                    | DataType::Int4
                    | DataType::Uint4
                    | DataType::Int16
                    | DataType::Uint16)
            );
            is_integer.then(|| {
                format!(
                    "{} '{}' cast to float and scaled by {}",
                    data_type_name(source.tensor.data_type()),
                    source.name,
                    producer.op_type()
                )
            })
        }),
        _ => None,
    }
}
