//! Emitters of the subgraphs a decomposed weight becomes (one module per form), and
//! the pieces they share: fresh names derived from the weight, stored particle tables,
//! index unpacking, reshaping back to the weight's dims.

pub mod decode;
pub mod scaled;
pub mod vector;

use crate::builder::{attr_int, node};
use crate::graph::Names;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, float_tensor, i32_tensor, i64_tensor, u8_tensor};
use crate::particles::pack::{GROUP, pack};

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
}

/// Nodes and initializers that compute one value.
#[derive(Clone, Debug, Default)]
pub struct Subgraph {
    /// Nodes, in execution order.
    pub nodes: Vec<NodeProto>,
    /// Initializers they read.
    pub initializers: Vec<TensorProto>,
    /// Name of the value computed: the decoded weight.
    pub output: String,
}

/// Emits nodes and initializers with fresh names derived from the weight's name.
pub(crate) struct Emitter<'a> {
    base: &'a str,
    names: &'a mut Names,
    out: Subgraph,
}

impl<'a> Emitter<'a> {
    /// An emitter for the weight `base`.
    pub(crate) fn new(base: &'a str, names: &'a mut Names) -> Self {
        Emitter {
            base,
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
        let name = self.names.fresh(&format!("{}.decode/{op}", self.base));
        self.out
            .nodes
            .push(node(op, &name, inputs, &[&output], attributes));
        output
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
    if stored == weight {
        return table;
    }
    let to = vec![attr_int("to", weight.data_type() as i64)];
    e.op("Cast", &[&table], &format!("{suffix}.cast"), to)
}

/// Reshapes the decoded value to the weight's own dims.
pub(crate) fn reshape(e: &mut Emitter, decoded: &str, dims: &[i64]) -> String {
    let shape = e.ints("decoded.shape", &[dims.len()], dims);
    e.op("Reshape", &[decoded, &shape], "decoded.reshaped", vec![])
}

/// Stores a particle index (`prefix`, bit-packed) and emits the ops that turn it into an
/// int32 `shape` tensor; every name derives from `prefix`.
pub(crate) fn unpacked_index(
    e: &mut Emitter,
    prefix: &str,
    index: &[u8],
    bits: u32,
    shape: [usize; 2],
) -> String {
    let [rows, cols] = shape;
    let count = rows * cols;
    let int32 = || vec![attr_int("to", DataType::Int32 as i64)];
    if bits >= 8 {
        let stored = e.constant(prefix, |n| u8_tensor(n, &[rows, cols], index.to_vec()));
        return e.op("Cast", &[&stored], &format!("{prefix}.i32"), int32());
    }
    let b = bits as usize;
    let groups = count.div_ceil(GROUP);
    let stored = e.constant(prefix, |n| u8_tensor(n, &[groups * b], pack(index, bits)));
    let bytes = e.op("Cast", &[&stored], &format!("{prefix}.i32"), int32());
    let grouped_shape = e.ints(
        &format!("{prefix}.grouped_shape"),
        &[2],
        &[groups as i64, b as i64],
    );
    let grouped = e.op(
        "Reshape",
        &[&bytes, &grouped_shape],
        &format!("{prefix}.grouped"),
        vec![],
    );
    // Index s of a group starts at bit b*s: in byte b*s/8, possibly running into the next.
    let first: Vec<i32> = (0..GROUP).map(|s| (b * s / 8) as i32).collect();
    let next: Vec<i32> = (0..GROUP).map(|s| ((b * s + b - 1) / 8) as i32).collect();
    let first_byte = e.int32s(&format!("{prefix}.first_byte"), &[GROUP], &first);
    let mut pairs = e.op(
        "Gather",
        &[&grouped, &first_byte],
        &format!("{prefix}.low"),
        vec![attr_int("axis", 1)],
    );
    if first != next {
        let next_byte = e.int32s(&format!("{prefix}.next_byte"), &[GROUP], &next);
        let high = e.op(
            "Gather",
            &[&grouped, &next_byte],
            &format!("{prefix}.high_byte"),
            vec![attr_int("axis", 1)],
        );
        let carry: Vec<i32> = first
            .iter()
            .zip(&next)
            .map(|(f, n)| if f == n { 0 } else { 256 })
            .collect();
        let carry = e.int32s(&format!("{prefix}.carry"), &[GROUP], &carry);
        let high = e.op(
            "Mul",
            &[&high, &carry],
            &format!("{prefix}.high_scaled"),
            vec![],
        );
        pairs = e.op("Add", &[&pairs, &high], &format!("{prefix}.pairs"), vec![]);
    }
    let shifts: Vec<i32> = (0..GROUP).map(|s| 1i32 << (b * s % 8)).collect();
    let shifts = e.int32s(&format!("{prefix}.shifts"), &[GROUP], &shifts);
    let shifted = e.op(
        "Div",
        &[&pairs, &shifts],
        &format!("{prefix}.shifted"),
        vec![],
    );
    let modulus = e.int32s(&format!("{prefix}.modulus"), &[], &[1i32 << b]);
    let high = e.op(
        "Div",
        &[&shifted, &modulus],
        &format!("{prefix}.quotient"),
        vec![],
    );
    let high = e.op(
        "Mul",
        &[&high, &modulus],
        &format!("{prefix}.quotient_scaled"),
        vec![],
    );
    let mut digits = e.op(
        "Sub",
        &[&shifted, &high],
        &format!("{prefix}.digits"),
        vec![],
    );
    if count % GROUP != 0 {
        let flat_shape = e.ints(&format!("{prefix}.flat_shape"), &[1], &[-1]);
        let flat = e.op(
            "Reshape",
            &[&digits, &flat_shape],
            &format!("{prefix}.flat"),
            vec![],
        );
        let starts = e.ints(&format!("{prefix}.slice_starts"), &[1], &[0]);
        let ends = e.ints(&format!("{prefix}.slice_ends"), &[1], &[count as i64]);
        digits = e.op(
            "Slice",
            &[&flat, &starts, &ends],
            &format!("{prefix}.trimmed"),
            vec![],
        );
    }
    let shape = e.ints(
        &format!("{prefix}.shape"),
        &[2],
        &[rows as i64, cols as i64],
    );
    e.op(
        "Reshape",
        &[&digits, &shape],
        &format!("{prefix}.unpacked"),
        vec![],
    )
}
