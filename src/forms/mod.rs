//! Emitters of the subgraphs a decomposed weight becomes (one module per form), and
//! the pieces they share: fresh names derived from the weight, stored particle tables,
//! index unpacking, reshaping back to the weight's dims.

pub mod decode;
pub mod half;
mod index;
pub mod lut;
pub mod qdq;
pub mod rows;
pub mod scaled;
pub mod subspace;
pub mod vector;

use prost::Message;

pub(crate) use index::unpacked_index;

use crate::builder::{attr_int, node};
use crate::config::{Config, Form};
use crate::graph::{Names, NodeId};
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, float_tensor, i32_tensor, i64_tensor};

/// Oldest default-domain opset the forms `config` asks for can be written in: the
/// decode, vector, subspace and scaled-grid forms from [`decode::MIN_OPSET`]; outliers
/// (ScatterElements) and the LUT form (GatherElements, Slice bounds as inputs) from 11;
/// the qdq form from [`qdq::MIN_OPSET`] (the job upgrades older models first).
pub fn min_opset(config: &Config) -> i64 {
    match config.form {
        Form::Qdq => qdq::MIN_OPSET,
        Form::Lut => 11,
        Form::Decode if config.outliers > 0.0 => 11,
        Form::Decode => decode::MIN_OPSET,
    }
}

/// What every form needs to know about the weight it rebuilds.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The weight's name; every generated name derives from it.
    pub weight: &'a str,
    /// The weight's own dims; the decoded matrix is reshaped to them when they are
    /// not those of the matrix view.
    pub dims: &'a [i64],
    /// Rows and columns of the matrix view the particles were fitted on.
    pub shape: [usize; 2],
    /// Element type of the weight.
    pub float_type: FloatType,
    /// Element type the particles are stored in; cast to `float_type` if different.
    pub stored_type: FloatType,
    /// 0 if output channels are rows, 1 if columns.
    pub channel_axis: usize,
    /// Bits per index.
    pub bits: u32,
    /// The model's default-domain opset: the ops the subgraph may use.
    pub opset: i64,
}

impl Target<'_> {
    /// Whether the weight's own dims are those of its matrix view, so the decoded
    /// matrix needs no Reshape.
    pub fn is_matrix(&self) -> bool {
        let [rows, cols] = self.shape;
        self.dims == [rows as i64, cols as i64]
    }
}

/// Nodes and initializers that compute one value.
#[derive(Clone, Debug, Default)]
pub struct Subgraph {
    /// Nodes, in execution order.
    pub nodes: Vec<NodeProto>,
    /// Initializers they read.
    pub initializers: Vec<TensorProto>,
    /// Name of the value computed: the decoded weight (empty when every reader is
    /// replaced instead).
    pub output: String,
    /// The particle table initializer this subgraph stored, which other weights of an
    /// alike group read instead of storing their own.
    pub table: Option<String>,
    /// Readers replaced as a whole (the LUT form): they do not read `output`.
    pub replacements: Vec<Replacement>,
}

/// The nodes that take the place of one reader of the weight; the last computes the
/// reader's output under its name.
#[derive(Clone, Debug)]
pub struct Replacement {
    /// The reader replaced.
    pub node: NodeId,
    /// Nodes, in execution order; the initializers they read are the subgraph's.
    pub nodes: Vec<NodeProto>,
}

impl Subgraph {
    /// Bytes the subgraph adds to the model file: its initializers and nodes, encoded.
    pub fn stored_bytes(&self) -> usize {
        self.initializers
            .iter()
            .map(Message::encoded_len)
            .sum::<usize>()
            + self.nodes.iter().map(Message::encoded_len).sum::<usize>()
    }
}

/// Emits nodes and initializers with fresh names derived from the weight's name.
pub(crate) struct Emitter<'a> {
    base: &'a str,
    /// Middle part of node names: `{base}.{role}/{op}`.
    role: &'static str,
    names: &'a mut Names,
    out: Subgraph,
}

impl<'a> Emitter<'a> {
    /// An emitter for the weight `base`, naming nodes `{base}.decode/{op}`.
    pub(crate) fn new(base: &'a str, names: &'a mut Names) -> Self {
        Self::with_role(base, "decode", names)
    }

    /// An emitter for the weight `base`, naming nodes `{base}.{role}/{op}`.
    pub(crate) fn with_role(base: &'a str, role: &'static str, names: &'a mut Names) -> Self {
        Emitter {
            base,
            role,
            names,
            out: Subgraph::default(),
        }
    }

    /// The nodes and initializers emitted, computing `output`.
    pub(crate) fn finish(mut self, output: String) -> Subgraph {
        self.out.output = output;
        self.out
    }

    pub(crate) fn constant(
        &mut self,
        suffix: &str,
        make: impl FnOnce(&str) -> TensorProto,
    ) -> String {
        let name = self.names.fresh(&format!("{}.{suffix}", self.base));
        self.out.initializers.push(make(&name));
        name
    }

    pub(crate) fn ints(&mut self, suffix: &str, dims: &[usize], values: &[i64]) -> String {
        self.constant(suffix, |name| i64_tensor(name, dims, values))
    }

    pub(crate) fn int32s(&mut self, suffix: &str, dims: &[usize], values: &[i32]) -> String {
        self.constant(suffix, |name| i32_tensor(name, dims, values))
    }

    pub(crate) fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        suffix: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let output = self.names.fresh(&format!("{}.{suffix}", self.base));
        self.op_to(op, inputs, &output, attributes);
        output
    }

    /// Emits `op` computing the value named `output` (a name the model already uses).
    pub(crate) fn op_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) {
        let name = self
            .names
            .fresh(&format!("{}.{}/{op}", self.base, self.role));
        self.out
            .nodes
            .push(node(op, &name, inputs, &[output], attributes));
    }

    /// Number of nodes emitted so far.
    pub(crate) fn emitted(&self) -> usize {
        self.out.nodes.len()
    }

    /// Moves the nodes emitted since the first `since` out, to replace `reader`.
    pub(crate) fn replace(&mut self, reader: NodeId, since: usize) {
        let nodes = self.out.nodes.split_off(since);
        self.out.replacements.push(Replacement {
            node: reader,
            nodes,
        });
    }
}

/// Stores a particle table of `dims` in the `stored` type and, if that is not the
/// weight's type, casts it in the graph.
pub(crate) fn particles(
    e: &mut Emitter,
    suffix: &str,
    dims: &[usize],
    values: &[f64],
    stored: FloatType,
    weight: FloatType,
) -> String {
    let table = e.constant(suffix, |n| float_tensor(n, dims, stored, values));
    cast_table(e, &table, suffix, stored, weight)
}

/// The particle table `table` (stored as `stored`) in the weight's type: itself, or a
/// Cast of it.
pub(crate) fn cast_table(
    e: &mut Emitter,
    table: &str,
    suffix: &str,
    stored: FloatType,
    weight: FloatType,
) -> String {
    if stored == weight {
        return table.to_string();
    }
    let to = vec![attr_int("to", weight.data_type() as i64)];
    e.op("Cast", &[table], &format!("{suffix}.cast"), to)
}

/// Reshapes the decoded value to the weight's own dims.
pub(crate) fn reshape(e: &mut Emitter, decoded: &str, dims: &[i64]) -> String {
    let shape = e.ints("decoded.shape", &[dims.len()], dims);
    e.op("Reshape", &[decoded, &shape], "decoded.reshaped", vec![])
}
