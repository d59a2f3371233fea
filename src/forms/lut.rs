//! The LUT form: a MatMul or Gemm whose weight has subspace particles (see
//! `particles::subspace`) is replaced by lookups into per-subspace dot products, so the
//! weight is never rebuilt and stays compressed at run time.
//!
//! ```text
//! before:  Y[..., M] = MatMul(X[..., N], W[N, M])
//! after:   shared, once per weight (before its first reader):
//!            CT    = Cast(codebooks)                              [S, d, K]
//!            flat  = Reshape(index[M, S] + s*K, [1, M*S])         int32
//!          per reader:
//!            T     = MatMul(Reshape(X, [-1, S, 1, d]), CT)         [B, S, 1, K]
//!            T     = Reshape(T, [-1, S*K])                         every particle's dot
//!                                                                  product, computed once
//!            G     = GatherElements(T, Expand(flat, [B, M*S]), axis=1)     [B, M*S]
//!            Y     = ReduceSum(Reshape(G, [-1, M, S]), axes=[2])           [B, M]
//!            Y     = Reshape(Y, Concat(Shape(X)[:-1], [M]))        leading dims restored
//!
//! Gemm(A, W, C; alpha, beta, transA, transB):
//!            X = transA ? Transpose(A) : A;  Y = alpha * LUT(X) + beta * C
//!            (Mul only when alpha or beta is not 1; Add only when C is given; transB
//!            is the weight's layout, already in the particles)
//! ```
//!
//! This is DESIGN.md's gather-and-accumulate with the index laid out `[M, S]` and read
//! by GatherElements, which measured fastest at batch 1 (benches/lut.py: Gather along
//! axis 1 copies one element at a time and was 5-15x slower in onnxruntime). Every op
//! is in the default domain; ReduceSum takes its axes as an input from opset 13 and as
//! an attribute before, so the form is valid from opset 11 like the decode form.

use super::{Emitter, Subgraph, Target, unpacked_index};
use crate::builder::{attr_int, attr_ints};
use crate::graph::{Names, NodeId};
use crate::onnx::proto::NodeProto;
use crate::onnx::tensor::float_tensor;
use crate::particles::subspace::SubspaceDecomposition;

/// Whether the LUT form can replace `node` (a reader of a weight the rules matched):
/// MatMul and Gemm, whose weight is input B.
pub fn replaces(node: &NodeProto) -> bool {
    matches!(node.op_type(), "MatMul" | "Gemm")
}

/// Writes the shared tables for `target` and, for every reader in `readers` (MatMul
/// or Gemm reading the weight as input B), the nodes that replace it.
pub fn emit(
    target: &Target,
    d: &SubspaceDecomposition,
    readers: &[(NodeId, &NodeProto)],
    opset: i64,
    names: &mut Names,
) -> Subgraph {
    let mut e = Emitter::with_role(target.weight, "lut", names);
    let (s, m, k, dim) = (d.subspaces, d.channels, d.particles, d.dim);
    // Codebooks stored [S, d, K]: each subspace's particles as columns.
    let transposed: Vec<f64> = (0..s)
        .flat_map(|i| (0..dim).flat_map(move |j| (0..k).map(move |p| (i, j, p))))
        .map(|(i, j, p)| d.particle(i, p)[j])
        .collect();
    let ty = target.stored_type;
    let stored = e.constant("lut_codebooks", |n| {
        float_tensor(n, &[s, dim, k], ty, &transposed)
    });
    let table = super::cast_table(&mut e, &stored, "lut_codebooks", ty, target.float_type);
    let by_channel: Vec<u8> = (0..m)
        .flat_map(|c| (0..s).map(move |i| d.index[i * m + c]))
        .collect();
    let index = unpacked_index(&mut e, "lut_index", &by_channel, target.bits, [m, s]);
    let offsets: Vec<i32> = (0..s).map(|i| (i * k) as i32).collect();
    let offsets = e.int32s("lut_index.offsets", &[1, s], &offsets);
    let flat = e.op("Add", &[&index, &offsets], "lut_index.flat", vec![]);
    let row = e.ints("lut_index.row_shape", &[2], &[1, (m * s) as i64]);
    let flat = e.op("Reshape", &[&flat, &row], "lut_index.row", vec![]);
    let lut = Lut {
        table,
        flat,
        s,
        m,
        k,
        dim,
        opset,
    };
    for &(id, node) in readers {
        let since = e.emitted();
        let output = node.output[0].as_str();
        if node.op_type() == "Gemm" {
            gemm(&mut e, &lut, node, target, output);
        } else {
            let x = node.input[0].as_str();
            let y = lut.products(&mut e, x, None);
            let shape = e.op("Shape", &[x], "lut.x_shape", vec![]);
            let starts = e.ints("lut.lead_starts", &[1], &[0]);
            let ends = e.ints("lut.lead_ends", &[1], &[-1]);
            let lead = e.op("Slice", &[&shape, &starts, &ends], "lut.lead", vec![]);
            let width = e.ints("lut.width", &[1], &[m as i64]);
            let axis = vec![attr_int("axis", 0)];
            let shape = e.op("Concat", &[&lead, &width], "lut.y_shape", axis);
            e.op_to("Reshape", &[&y, &shape], output, vec![]);
        }
        e.replace(id, since);
    }
    e.finish(String::new())
}

/// The shared tables and sizes every reader's lookups use.
struct Lut {
    /// Codebooks `[S, d, K]` in the weight's type.
    table: String,
    /// `[1, M*S]` int32: for channel `c` and subspace `i`, `i*K + index`.
    flat: String,
    s: usize,
    m: usize,
    k: usize,
    dim: usize,
    opset: i64,
}

impl Lut {
    /// `X[..., N] -> [B, M]`: the dot products, gathered and summed per channel; the
    /// sum is named `output` if given.
    fn products(&self, e: &mut Emitter, x: &str, output: Option<&str>) -> String {
        let (s, m, k) = (self.s as i64, self.m as i64, self.k as i64);
        let split = e.ints("lut.split_shape", &[4], &[-1, s, 1, self.dim as i64]);
        let split = e.op("Reshape", &[x, &split], "lut.x_split", vec![]);
        let dots = e.op("MatMul", &[&split, &self.table], "lut.dots", vec![]);
        let flat_shape = e.ints("lut.dots_shape", &[2], &[-1, s * k]);
        let dots = e.op("Reshape", &[&dots, &flat_shape], "lut.dots_flat", vec![]);
        let shape = e.op("Shape", &[&dots], "lut.dots_dims", vec![]);
        let starts = e.ints("lut.batch_starts", &[1], &[0]);
        let ends = e.ints("lut.batch_ends", &[1], &[1]);
        let batch = e.op("Slice", &[&shape, &starts, &ends], "lut.batch", vec![]);
        let width = e.ints("lut.lookups", &[1], &[m * s]);
        let axis = vec![attr_int("axis", 0)];
        let shape = e.op("Concat", &[&batch, &width], "lut.index_shape", axis);
        let index = e.op("Expand", &[&self.flat, &shape], "lut.index", vec![]);
        let axis = vec![attr_int("axis", 1)];
        let picked = e.op("GatherElements", &[&dots, &index], "lut.picked", axis);
        let by_channel = e.ints("lut.picked_shape", &[3], &[-1, m, s]);
        let picked = e.op("Reshape", &[&picked, &by_channel], "lut.by_channel", vec![]);
        let mut attributes = vec![attr_int("keepdims", 0)];
        let mut inputs = vec![picked];
        if self.opset >= 13 {
            inputs.push(e.ints("lut.sum_axes", &[1], &[2]));
        } else {
            attributes.push(attr_ints("axes", &[2]));
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        match output {
            Some(output) => {
                e.op_to("ReduceSum", &inputs, output, attributes);
                output.to_string()
            }
            None => e.op("ReduceSum", &inputs, "lut.sum", attributes),
        }
    }
}

/// `Y = alpha * LUT(transA ? A^T : A) + beta * C` into `output`.
fn gemm(e: &mut Emitter, lut: &Lut, node: &NodeProto, target: &Target, output: &str) {
    let attribute = |name: &str| node.attribute.iter().find(|a| a.name() == name);
    let alpha = attribute("alpha").map_or(1.0, |a| a.f());
    let beta = attribute("beta").map_or(1.0, |a| a.f());
    let mut a = node.input[0].clone();
    if attribute("transA").is_some_and(|t| t.i() != 0) {
        let perm = vec![attr_ints("perm", &[1, 0])];
        a = e.op("Transpose", &[&a], "lut.a", perm);
    }
    let bias = node.input.get(2).filter(|c| !c.is_empty());
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
        let mut c = c.clone();
        if beta != 1.0 {
            let beta = scalar(e, "lut.beta", beta);
            c = e.op("Mul", &[&c, &beta], "lut.bias", vec![]);
        }
        e.op_to("Add", &[&y, &c], output, vec![]);
    }
}
