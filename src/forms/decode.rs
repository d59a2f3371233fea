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

use crate::builder::{attr_int, node};
use crate::graph::Names;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, float_tensor, i32_tensor, i64_tensor, u8_tensor};
use crate::particles::pack::{GROUP, pack};
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
struct Emitter<'a> {
    base: &'a str,
    names: &'a mut Names,
    out: Subgraph,
}

impl Emitter<'_> {
    fn constant(&mut self, suffix: &str, make: impl FnOnce(&str) -> TensorProto) -> String {
        let name = self.names.fresh(&format!("{}.{suffix}", self.base));
        self.out.initializers.push(make(&name));
        name
    }

    fn ints(&mut self, suffix: &str, dims: &[usize], values: &[i64]) -> String {
        self.constant(suffix, |name| i64_tensor(name, dims, values))
    }

    fn int32s(&mut self, suffix: &str, dims: &[usize], values: &[i32]) -> String {
        self.constant(suffix, |name| i32_tensor(name, dims, values))
    }

    fn op(
        &mut self,
        op: &str,
        inputs: &[&str],
        suffix: &str,
        attributes: Vec<crate::onnx::proto::AttributeProto>,
    ) -> String {
        let output = self.names.fresh(&format!("{}.{suffix}", self.base));
        let name = self.names.fresh(&format!("{}.decode/{op}", self.base));
        self.out
            .nodes
            .push(node(op, &name, inputs, &[&output], attributes));
        output
    }
}

/// Writes the decode subgraph of `input`, valid in a model of opset >= [`MIN_OPSET`].
pub fn emit(input: &DecodeInput, names: &mut Names) -> Subgraph {
    let [rows, cols] = input.shape;
    let mut e = Emitter {
        base: input.weight,
        names,
        out: Subgraph::default(),
    };
    let mut index = unpacked_index(&mut e, input);
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
    let stored = input.codebook_type;
    let mut particles = e.constant("particles", |n| float_tensor(n, &dims, stored, &values));
    if stored != input.float_type {
        let to = vec![attr_int("to", input.float_type.data_type() as i64)];
        particles = e.op("Cast", &[&particles], "particles.cast", to);
    }
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
        let shape = e.ints("decoded.shape", &[input.dims.len()], input.dims);
        decoded = e.op("Reshape", &[&decoded, &shape], "decoded.reshaped", vec![]);
    }
    e.out.output = decoded;
    e.out
}

/// Stores the index and emits the ops that turn it into an int32 [N, M] tensor.
fn unpacked_index(e: &mut Emitter, input: &DecodeInput) -> String {
    let [rows, cols] = input.shape;
    let count = rows * cols;
    let bits = input.bits;
    let index = &input.decomposition.index;
    let int32 = || vec![attr_int("to", DataType::Int32 as i64)];
    if bits >= 8 {
        let stored = e.constant("index", |n| u8_tensor(n, &[rows, cols], index.clone()));
        return e.op("Cast", &[&stored], "index.i32", int32());
    }
    let b = bits as usize;
    let groups = count.div_ceil(GROUP);
    let stored = e.constant("index", |n| u8_tensor(n, &[groups * b], pack(index, bits)));
    let bytes = e.op("Cast", &[&stored], "index.i32", int32());
    let grouped_shape = e.ints("index.grouped_shape", &[2], &[groups as i64, b as i64]);
    let grouped = e.op(
        "Reshape",
        &[&bytes, &grouped_shape],
        "index.grouped",
        vec![],
    );
    // Index s of a group starts at bit b*s: in byte b*s/8, possibly running into the next.
    let first: Vec<i32> = (0..GROUP).map(|s| (b * s / 8) as i32).collect();
    let next: Vec<i32> = (0..GROUP).map(|s| ((b * s + b - 1) / 8) as i32).collect();
    let first_byte = e.int32s("index.first_byte", &[GROUP], &first);
    let mut pairs = e.op(
        "Gather",
        &[&grouped, &first_byte],
        "index.low",
        vec![attr_int("axis", 1)],
    );
    if first != next {
        let next_byte = e.int32s("index.next_byte", &[GROUP], &next);
        let high = e.op(
            "Gather",
            &[&grouped, &next_byte],
            "index.high_byte",
            vec![attr_int("axis", 1)],
        );
        let carry: Vec<i32> = first
            .iter()
            .zip(&next)
            .map(|(f, n)| if f == n { 0 } else { 256 })
            .collect();
        let carry = e.int32s("index.carry", &[GROUP], &carry);
        let high = e.op("Mul", &[&high, &carry], "index.high_scaled", vec![]);
        pairs = e.op("Add", &[&pairs, &high], "index.pairs", vec![]);
    }
    let shifts: Vec<i32> = (0..GROUP).map(|s| 1i32 << (b * s % 8)).collect();
    let shifts = e.int32s("index.shifts", &[GROUP], &shifts);
    let shifted = e.op("Div", &[&pairs, &shifts], "index.shifted", vec![]);
    let modulus = e.int32s("index.modulus", &[], &[1i32 << b]);
    let high = e.op("Div", &[&shifted, &modulus], "index.quotient", vec![]);
    let high = e.op("Mul", &[&high, &modulus], "index.quotient_scaled", vec![]);
    let mut digits = e.op("Sub", &[&shifted, &high], "index.digits", vec![]);
    if count % GROUP != 0 {
        let flat_shape = e.ints("index.flat_shape", &[1], &[-1]);
        let flat = e.op("Reshape", &[&digits, &flat_shape], "index.flat", vec![]);
        let starts = e.ints("index.slice_starts", &[1], &[0]);
        let ends = e.ints("index.slice_ends", &[1], &[count as i64]);
        digits = e.op("Slice", &[&flat, &starts, &ends], "index.trimmed", vec![]);
    }
    let shape = e.ints("index.shape", &[2], &[rows as i64, cols as i64]);
    e.op("Reshape", &[&digits, &shape], "index.unpacked", vec![])
}
