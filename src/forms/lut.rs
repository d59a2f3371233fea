//! The LUT form: a MatMul or Gemm whose weight has subspace particles (see
//! `particles::subspace`) is replaced by lookups into per-subspace dot products, so the
//! weight is never rebuilt and stays compressed at run time.
//!
//! ```text
//! before:  Y[..., M] = MatMul(X[..., N], W[N, M])
//! after:   shared, once per weight (before its first reader):
//!            C     = Cast(codebooks)            [S, K, d]  (elements: [S, d, K])
//!            flat  = index[M, S] + s*K          int32      (elements: Reshape [1, M*S])
//!          per reader, rows (default; X as [B, N]):
//!            T = MatMul(C, Transpose(Reshape(X, [-1, S, d]), [1, 2, 0]))    [S, K, B]
//!                (every particle's dot product with its subspace, computed once)
//!            G = Gather(Reshape(T, [S*K, -1]), flat, axis=0)                  [M, S, B]
//!            Y = Transpose(ReduceSum(G, axes=[1]), [1, 0])                    [B, M]
//!          per reader, elements (--lut-gather elements):
//!            T = Reshape(MatMul(Reshape(X, [-1, S, 1, d]), C), [-1, S*K])     [B, S*K]
//!            G = GatherElements(T, Expand(flat, [B, M*S]), axis=1)            [B, M*S]
//!            Y = ReduceSum(Reshape(G, [-1, M, S]), axes=[2])                  [B, M]
//!          MatMul:  Y = Reshape(Y, Concat(Shape(X)[:-1], [M]))    leading dims restored
//!
//! Gemm(A, W, C; alpha, beta, transA, transB):
//!            X = transA ? Transpose(A) : A;  Y = alpha * LUT(X) + beta * C
//!            (Mul only when alpha or beta is not 1, Add only when C is given; transB
//!            is the weight's layout, already in the particles)
//! ```
//!
//! Both are DESIGN.md's gather-and-accumulate with the index laid out `[M, S]`; they
//! differ in how the dot products are laid out and read. Measured (benches/lut.py,
//! README): DESIGN.md's own layout (T `[B, S*K]`, Gather along axis 1) copies one
//! element at a time in onnxruntime and was 7-22x slower than the best there; rows
//! gathers contiguous rows of B values and was fastest or near it at batch 32 in both
//! runtimes; elements was fastest for one row in onnxruntime. Both hold a `[B, M, S]`
//! intermediate at run time (elements also its expanded index): for B larger than d
//! that is more than the dense weight. Every op is in the default domain; ReduceSum
//! takes its axes as an input from opset 13 and as an attribute before, so the form is
//! valid from opset 11 (GatherElements, Slice bounds as inputs).

use super::{Emitter, Subgraph, Target, cast_table, unpacked_index};
use crate::builder::{attr_int, attr_ints};
use crate::config::LutGather;
use crate::graph::{Names, NodeId};
use crate::onnx::proto::AttributeProto;
use crate::onnx::tensor::float_tensor;
use crate::particles::subspace::SubspaceDecomposition;
use crate::rules::{Bias, Linear};

/// Writes the shared tables for `target` and, for every reader in `readers` (each a
/// [`Linear`] reader of the weight, as its rule describes it), the nodes that replace
/// it, reading the dot products as `gather` says.
pub fn emit(
    target: &Target,
    d: &SubspaceDecomposition,
    readers: &[(NodeId, Linear)],
    opset: i64,
    gather: LutGather,
    names: &mut Names,
) -> Subgraph {
    let mut e = Emitter::with_role(target.weight, "lut", names);
    let (s, m, k, dim) = (d.subspaces, d.channels, d.particles, d.dim);
    let (dims, values) = match gather {
        LutGather::Rows => ([s, k, dim], d.codebooks.clone()),
        LutGather::Elements => {
            let columns = (0..s)
                .flat_map(|i| (0..dim).flat_map(move |j| (0..k).map(move |p| (i, j, p))))
                .map(|(i, j, p)| d.particle(i, p)[j])
                .collect();
            ([s, dim, k], columns)
        }
    };
    let ty = target.stored_type;
    let stored = e.constant("lut_codebooks", |n| float_tensor(n, &dims, ty, &values));
    let table = cast_table(&mut e, &stored, "lut_codebooks", ty, target.float_type);
    let by_channel: Vec<u8> = (0..m)
        .flat_map(|c| (0..s).map(move |i| d.index[i * m + c]))
        .collect();
    let index = unpacked_index(
        &mut e,
        "lut_index",
        &by_channel,
        target.bits,
        [m, s],
        target.opset,
    );
    let offsets: Vec<i32> = (0..s).map(|i| (i * k) as i32).collect();
    let offsets = e.int32s("lut_index.offsets", &[1, s], &offsets);
    let mut flat = e.op("Add", &[&index, &offsets], "lut_index.flat", vec![]);
    if gather == LutGather::Elements {
        let row = e.ints("lut_index.row_shape", &[2], &[1, (m * s) as i64]);
        flat = e.op("Reshape", &[&flat, &row], "lut_index.row", vec![]);
    }
    let lut = Lut {
        table,
        flat,
        s: s as i64,
        m: m as i64,
        k: k as i64,
        dim: dim as i64,
        opset,
        gather,
    };
    for &(id, linear) in readers {
        let since = e.emitted();
        let output = linear.y;
        if !linear.batched {
            matrix_product(&mut e, &lut, &linear, target, output);
        } else {
            let x = linear.x;
            let y = lut.products(&mut e, x, None);
            let shape = e.op("Shape", &[x], "lut.x_shape", vec![]);
            let lead = slice(&mut e, &shape, 0, -1, "lut.lead");
            let width = e.ints("lut.width", &[1], &[lut.m]);
            let axis = vec![attr_int("axis", 0)];
            let shape = e.op("Concat", &[&lead, &width], "lut.y_shape", axis);
            e.op_to("Reshape", &[&y, &shape], output, vec![]);
        }
        e.replace(id, since);
    }
    e.finish(String::new())
}

/// `input[start..end]` of a 1-D tensor.
fn slice(e: &mut Emitter, input: &str, start: i64, end: i64, suffix: &str) -> String {
    let starts = e.ints(&format!("{suffix}_starts"), &[1], &[start]);
    let ends = e.ints(&format!("{suffix}_ends"), &[1], &[end]);
    e.op("Slice", &[input, &starts, &ends], suffix, vec![])
}

/// The shared tables and sizes every reader's lookups use.
struct Lut {
    /// Codebooks in the weight's type: `[S, K, d]` (rows) or `[S, d, K]` (elements).
    table: String,
    /// int32 `i*K + index` for channel `c` and subspace `i`: `[M, S]` (rows) or
    /// `[1, M*S]` (elements).
    flat: String,
    s: i64,
    m: i64,
    k: i64,
    dim: i64,
    opset: i64,
    gather: LutGather,
}

impl Lut {
    /// `X[..., N] -> [B, M]`: the dot products, gathered and summed per channel; the
    /// result is named `output` if given.
    fn products(&self, e: &mut Emitter, x: &str, output: Option<&str>) -> String {
        let (s, m, k, dim) = (self.s, self.m, self.k, self.dim);
        match self.gather {
            LutGather::Rows => {
                let split = e.ints("lut.split_shape", &[3], &[-1, s, dim]);
                let split = e.op("Reshape", &[x, &split], "lut.x_split", vec![]);
                let perm = vec![attr_ints("perm", &[1, 2, 0])];
                let columns = e.op("Transpose", &[&split], "lut.x_columns", perm);
                let dots = e.op("MatMul", &[&self.table, &columns], "lut.dots", vec![]);
                let rows = e.ints("lut.dots_shape", &[2], &[s * k, -1]);
                let dots = e.op("Reshape", &[&dots, &rows], "lut.dots_rows", vec![]);
                let axis = vec![attr_int("axis", 0)];
                let picked = e.op("Gather", &[&dots, &self.flat], "lut.picked", axis);
                let sums = self.reduce_sum(e, &picked, 1, None);
                let perm = vec![attr_ints("perm", &[1, 0])];
                named(e, "Transpose", &[&sums], "lut.sum_rows", perm, output)
            }
            LutGather::Elements => {
                let split = e.ints("lut.split_shape", &[4], &[-1, s, 1, dim]);
                let split = e.op("Reshape", &[x, &split], "lut.x_split", vec![]);
                let dots = e.op("MatMul", &[&split, &self.table], "lut.dots", vec![]);
                let flat_shape = e.ints("lut.dots_shape", &[2], &[-1, s * k]);
                let dots = e.op("Reshape", &[&dots, &flat_shape], "lut.dots_flat", vec![]);
                let shape = e.op("Shape", &[&dots], "lut.dots_dims", vec![]);
                let batch = slice(e, &shape, 0, 1, "lut.batch");
                let width = e.ints("lut.lookups", &[1], &[m * s]);
                let axis = vec![attr_int("axis", 0)];
                let shape = e.op("Concat", &[&batch, &width], "lut.index_shape", axis);
                let index = e.op("Expand", &[&self.flat, &shape], "lut.index", vec![]);
                let axis = vec![attr_int("axis", 1)];
                let picked = e.op("GatherElements", &[&dots, &index], "lut.picked", axis);
                let by_channel = e.ints("lut.picked_shape", &[3], &[-1, m, s]);
                let picked = e.op("Reshape", &[&picked, &by_channel], "lut.by_channel", vec![]);
                self.reduce_sum(e, &picked, 2, output)
            }
        }
    }

    /// `ReduceSum(input, axes=[axis], keepdims=0)` at the model's opset, named
    /// `output` if given.
    fn reduce_sum(&self, e: &mut Emitter, input: &str, axis: i64, output: Option<&str>) -> String {
        let mut attributes = vec![attr_int("keepdims", 0)];
        let mut inputs = vec![input.to_string()];
        if self.opset >= 13 {
            inputs.push(e.ints("lut.sum_axes", &[1], &[axis]));
        } else {
            attributes.push(attr_ints("axes", &[axis]));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        named(e, "ReduceSum", &inputs, "lut.sum", attributes, output)
    }
}

/// `op` on `inputs`, computing `output` if given, else a fresh name from `suffix`.
fn named(
    e: &mut Emitter,
    op: &str,
    inputs: &[&str],
    suffix: &str,
    attributes: Vec<AttributeProto>,
    output: Option<&str>,
) -> String {
    match output {
        Some(output) => {
            e.op_to(op, inputs, output, attributes);
            output.to_string()
        }
        None => e.op(op, inputs, suffix, attributes),
    }
}

/// `Y = alpha * LUT(X^T if transposed, else X) + beta * C` into `output`, for a reader
/// whose `X` is a matrix (Gemm).
fn matrix_product(e: &mut Emitter, lut: &Lut, linear: &Linear, target: &Target, output: &str) {
    let alpha = linear.alpha;
    let mut a = linear.x.to_string();
    if linear.x_transposed {
        let perm = vec![attr_ints("perm", &[1, 0])];
        a = e.op("Transpose", &[&a], "lut.a", perm);
    }
    let (bias, beta) = match linear.bias {
        Bias::Input { name, beta } => (Some(name), beta),
        Bias::Absent | Bias::Following => (None, 1.0),
    };
    let ty = target.float_type;
    let scalar = |e: &mut Emitter, suffix: &str, v: f32| {
        e.constant(suffix, |n| float_tensor(n, &[], ty, &[f64::from(v)]))
    };
    let last = alpha == 1.0 && bias.is_none();
    let mut y = lut.products(e, &a, last.then_some(output));
    if alpha != 1.0 {
        let alpha = scalar(e, "lut.alpha", alpha);
        if bias.is_none() {
            e.op_to("Mul", &[&y, &alpha], output, vec![]);
            return;
        }
        y = e.op("Mul", &[&y, &alpha], "lut.scaled", vec![]);
    }
    if let Some(c) = bias {
        let mut c = c.to_string();
        if beta != 1.0 {
            let beta = scalar(e, "lut.beta", beta);
            c = e.op("Mul", &[&c, &beta], "lut.bias", vec![]);
        }
        e.op_to("Add", &[&y, &c], output, vec![]);
    }
}
