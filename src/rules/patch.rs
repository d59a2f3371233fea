//! What a rule hands the driver: the weight input to replace, its matrix view, and for
//! readers that multiply an activation by the weight, how they do it. Also the checks
//! every rule shares on a weight input.

use super::{Match, Select, SkipReason, Unselected};
use crate::graph::{Constant, Graph, NodeId};
use crate::onnx::proto::TensorProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{FloatType, data_type_name, element_count};

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
    /// A weight of any rank viewed as `[n, elements / n]`, channels along rows: row `r`
    /// is the `r`-th of `n` equal consecutive blocks of the flat weight (LSTM's W is
    /// `Rows(directions * gates)`: one channel per direction and gate). [`Layout::WHOLE`]
    /// is the whole tensor as one channel.
    Rows(usize),
}

impl Layout {
    /// The whole tensor as one channel, `[1, elements]`: one codebook for the tensor at
    /// tensor and channel granularity (blocks of `--granularity block:G` still split it).
    pub const WHOLE: Layout = Layout::Rows(1);
}

/// A reader that computes `Y = alpha * X . W (+ beta * C)` from an activation `X` and
/// the weight `W`: what calibration gathers as the weight's activation, what bias
/// correction adjusts, and what the LUT form replaces.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Linear<'m> {
    /// The activation `X`, the node input multiplied by the weight.
    pub x: &'m str,
    /// The node's output `Y`.
    pub y: &'m str,
    /// `X`'s features run along its first axis (Gemm `transA = 1`), not its last.
    pub x_transposed: bool,
    /// `X` may have leading dims that broadcast (MatMul); else it is a matrix (Gemm).
    pub batched: bool,
    /// The factor on the product (Gemm `alpha`).
    pub alpha: f32,
    /// Where a bias enters.
    pub bias: Bias<'m>,
}

/// Where a [`Linear`] reader's bias enters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bias<'m> {
    /// An input of the node, added as `beta * C` (Gemm's C).
    Input {
        /// The bias input.
        name: &'m str,
        /// Its factor.
        beta: f32,
    },
    /// The node could take a bias input but has none.
    Absent,
    /// The node has no bias input; a bias, if any, is an Add reading its output.
    Following,
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
    /// How the node multiplies an activation by the weight, if it does.
    pub linear: Option<Linear<'m>>,
}

impl<'m> Match<'m> {
    /// This match with `linear` set on its patch.
    pub fn with_linear(self, linear: Linear<'m>) -> Self {
        match self {
            Match::Rewrite(patch) => Match::Rewrite(WeightPatch {
                linear: Some(linear),
                ..patch
            }),
            other => other,
        }
    }
}

/// The checks every rule shares: input `slot` of `node` must be a constant float
/// tensor of the `layout`'s rank with at least `--min-elements` elements, selected by
/// the globs.
pub fn weight_input<'m>(
    graph: &Graph<'m>,
    node: NodeId,
    slot: usize,
    layout: Layout,
    select: &Select,
) -> Match<'m> {
    let n = graph.node(node);
    let name = n.input.get(slot).map(String::as_str).unwrap_or_default();
    let skip = Match::Skip;
    if let Err(unselected) = select.names.check(n.name(), name) {
        return skip(match unselected {
            Unselected::NotIncluded => SkipReason::NotIncluded,
            Unselected::Excluded(p) => SkipReason::Excluded(p),
        });
    }
    let Some(weight) = weight_constant(graph, node.scope, name, select) else {
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
        (Layout::Rows(n), _) if n > 0 && elements > 0 && elements % n == 0 => {
            ([n, elements / n], 0)
        }
        _ => return not_matrix(),
    };
    if elements < select.min_elements {
        return skip(SkipReason::TooSmall(
            name.into(),
            elements,
            select.min_elements,
        ));
    }
    Match::Rewrite(WeightPatch {
        node,
        slot,
        weight,
        shape,
        float_type,
        channel_axis,
        linear: None,
    })
}

/// The constant that input `name` of a node in `scope` reads, if it is one. An
/// initializer of the main graph that is also a graph input counts in a model of IR
/// version < 4 (where every initializer must be listed as an input: it is the input's
/// default, not an invitation to override it) and under `--initializer-inputs`.
pub fn weight_constant<'m>(
    graph: &Graph<'m>,
    scope: usize,
    name: &str,
    select: &Select,
) -> Option<Constant<'m>> {
    let defaults = select.initializer_inputs || matches!(graph.model.ir_version, Some(v) if v < 4);
    graph.constant_with_defaults(scope, name, defaults)
}

/// The tensor input `slot` of `node` holds when the model stores it (a constant, or
/// an initializer that is also a graph input, which [`weight_input`] then rewrites or
/// skips as [`weight_constant`] says); `None` for a value computed at run time.
pub fn stored_input<'m>(graph: &Graph<'m>, node: NodeId, slot: usize) -> Option<&'m TensorProto> {
    let name = graph.node(node).input.get(slot).filter(|n| !n.is_empty())?;
    let stored = graph.constant_with_defaults(node.scope, name, true);
    stored.map(|c| c.tensor)
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
