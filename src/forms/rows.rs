//! The rows form: a Gather reading rows of a decomposed table (an embedding) becomes a
//! Gather of those rows' packed indices and the decoding of only those rows, so the
//! table stays compressed at run time. The decode form of a constant table is folded
//! to the dense table at load (onnxruntime does), which then sits in memory at full
//! size; here the decoding reads the looked-up ids, so nothing folds.
//!
//! ```text
//! before:  Y = Gather(T[V, D], I; axis=0)                                 T: constant
//! after:   ids    = Cast(Reshape(I, [-1]), int32)                                   [n]
//!          digits = unpack(Cast(Gather(index uint8 [V, D*b/8], ids), int32))        [n, D]
//!          blocks of G rows:  block = Where(ids < 0, ids + V, ids) / G              [n]
//!   codebooks per tensor:    L = Gather(particles[K], digits)
//!   per column (and block):  L = Gather(particles[D*B*K], digits + (c*B + block)*K)
//!   grids (--form qdq):      L = Cast(digits - unpack(Gather(zero_point[B, D*b/8], block)))
//!                                * Gather(scale[B, D], block)
//!          Y = Reshape(L, Concat(Shape(I), [D]))
//! ```
//!
//! Each row of the index is packed on its own, so the form applies when rows pack into
//! whole bytes without sharing a group of indices (8 bits, or D a multiple of 8), the
//! table is the weight's own matrix with columns as channels, no outlier is kept exact,
//! and every reader is a Gather along axis 0. Every op is in the default domain; blocks
//! of rows need Where and integer Less (opset 9).

use super::index::unpacked_rows;
use super::{Emitter, Subgraph, Target, cast_table};
use crate::builder::attr_int;
use crate::graph::{Names, NodeId};
use crate::onnx::proto::NodeProto;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::{float_tensor, u8_tensor};
use crate::particles::grid::GridDecomposition;
use crate::particles::pack::pack;
use crate::particles::{Decomposition, Granularity, Matrix};

/// First opset whose Less takes integers, and with Where.
const WHERE_OPSET: i64 = 9;

/// What the looked-up digits select.
#[derive(Clone, Copy, Debug)]
pub enum Levels<'a> {
    /// Scalar codebooks, one table of particles each.
    Codebooks(&'a Decomposition),
    /// Uniform grids: a scale and a zero point each.
    Grids(&'a GridDecomposition),
}

impl Levels<'_> {
    fn index(&self) -> &[u8] {
        match self {
            Levels::Codebooks(d) => &d.index,
            Levels::Grids(g) => &g.index,
        }
    }

    fn has_outliers(&self) -> bool {
        matches!(self, Levels::Codebooks(d) if !d.outliers.is_empty())
    }
}

/// Whether the weight `target`, decomposed into `levels` at `granularity` and read by
/// the nodes `readers`, can take the rows form (see the module doc).
pub fn applies(
    target: &Target,
    levels: Levels,
    granularity: Granularity,
    readers: &[&NodeProto],
) -> bool {
    let [_, cols] = target.shape;
    let row_lookup = |n: &&NodeProto| {
        n.op_type() == "Gather"
            && n.input.len() == 2
            && n.attribute
                .iter()
                .find(|a| a.name() == "axis")
                .is_none_or(|a| a.i() == 0)
    };
    target.channel_axis == 1
        && target.is_matrix()
        && !levels.has_outliers()
        && (target.bits >= 8 || cols % 8 == 0)
        && (!matches!(granularity, Granularity::Block(_)) || target.opset >= WHERE_OPSET)
        && !readers.is_empty()
        && readers.iter().all(row_lookup)
}

/// Writes the tables of `target` (decomposed into `levels` at `granularity`) and, for
/// every Gather in `readers`, the nodes that replace it (see [`applies`]).
pub fn emit(
    target: &Target,
    levels: Levels,
    granularity: Granularity,
    readers: &[(NodeId, &NodeProto)],
    names: &mut Names,
) -> Subgraph {
    let [rows, cols] = target.shape;
    let matrix = Matrix {
        values: &[],
        rows,
        cols,
        channel_axis: 1,
    };
    let blocks = matrix.blocks(granularity);
    let block_size = match granularity {
        Granularity::Block(g) => g.max(1),
        _ => rows,
    };
    let book = |c: usize, b: usize| match granularity {
        Granularity::Tensor => 0,
        _ => c * blocks + b,
    };
    let bits = target.bits.min(8);
    let per_row = (cols * bits as usize).div_ceil(8);
    let mut e = Emitter::with_role(target.weight, "rows", names);
    let index = e.constant("index", |n| {
        u8_tensor(n, &[rows, per_row], pack(levels.index(), bits))
    });
    let tables = Tables::new(&mut e, target, levels, granularity, (blocks, per_row), book);
    let int32 = || vec![attr_int("to", DataType::Int32 as i64)];
    let axis0 = || vec![attr_int("axis", 0)];
    let flat = e.ints("ids.flat_shape", &[1], &[-1]);
    let width = e.ints("width", &[1], &[cols as i64]);
    for &(id, node) in readers {
        let since = e.emitted();
        let ids = e.op("Reshape", &[&node.input[1], &flat], "ids.flat", vec![]);
        let ids = e.op("Cast", &[&ids], "ids", int32());
        let bytes = e.op("Gather", &[&index, &ids], "index.rows", axis0());
        let bytes = e.op("Cast", &[&bytes], "index.rows_i32", int32());
        let digits = unpacked_rows(&mut e, "index.rows", &bytes, bits, cols, target.opset);
        let block = (blocks > 1).then(|| {
            let zero = e.int32s("ids.zero", &[], &[0]);
            let negative = e.op("Less", &[&ids, &zero], "ids.negative", vec![]);
            let count = e.int32s("ids.count", &[], &[rows as i32]);
            let wrapped = e.op("Add", &[&ids, &count], "ids.wrapped", vec![]);
            let row = e.op("Where", &[&negative, &wrapped, &ids], "ids.row", vec![]);
            let size = e.int32s("ids.block_size", &[], &[block_size as i32]);
            e.op("Div", &[&row, &size], "ids.block", vec![])
        });
        let looked_up = tables.look_up(&mut e, &digits, block.as_deref(), target);
        let shape = e.op("Shape", &[&node.input[1]], "ids.shape", vec![]);
        let shape = e.op("Concat", &[&shape, &width], "shape", axis0());
        e.op_to("Reshape", &[&looked_up, &shape], &node.output[0], vec![]);
        e.replace(id, since);
    }
    e.finish(String::new())
}

/// The stored tables the digits select from.
enum Tables {
    /// Particles in the weight's type, `[K]` (per tensor) or `[D*B*K]`, with the
    /// int32 `[1, D]` offsets `c*B*K` of each column (none per tensor) and `K`.
    Codebooks {
        particles: String,
        columns: Option<String>,
        k: usize,
    },
    /// Scales `[B, D]` in the weight's type and zero points packed like the index,
    /// `[B, D*b/8]`.
    Grids { scale: String, zero_point: String },
}

impl Tables {
    fn new(
        e: &mut Emitter,
        target: &Target,
        levels: Levels,
        granularity: Granularity,
        (blocks, per_row): (usize, usize),
        book: impl Fn(usize, usize) -> usize,
    ) -> Tables {
        let [_, cols] = target.shape;
        match levels {
            Levels::Codebooks(d) => {
                let k = d.particles_per_codebook();
                let values: Vec<f64> = match granularity {
                    Granularity::Tensor => d.codebooks[0].clone(),
                    _ => d.codebooks.iter().flatten().copied().collect(),
                };
                let ty = target.stored_type;
                let stored = e.constant("particles", |n| {
                    float_tensor(n, &[values.len()], ty, &values)
                });
                let particles = cast_table(e, &stored, "particles", ty, target.float_type);
                let columns = (granularity != Granularity::Tensor).then(|| {
                    let offsets: Vec<i32> = (0..cols).map(|c| (c * blocks * k) as i32).collect();
                    e.int32s("particles.column_offsets", &[1, cols], &offsets)
                });
                Tables::Codebooks {
                    particles,
                    columns,
                    k,
                }
            }
            Levels::Grids(g) => {
                let at = |i: usize| &g.grids[book(i % cols, i / cols)];
                let scales: Vec<f64> = (0..blocks * cols).map(|i| at(i).scale).collect();
                let zero_points: Vec<u8> = (0..blocks * cols).map(|i| at(i).zero_point).collect();
                let ty = target.float_type;
                let scale = e.constant("scale", |n| float_tensor(n, &[blocks, cols], ty, &scales));
                let bits = target.bits.min(8);
                let zero_point = e.constant("zero_point", |n| {
                    u8_tensor(n, &[blocks, per_row], pack(&zero_points, bits))
                });
                Tables::Grids { scale, zero_point }
            }
        }
    }

    /// The values `digits` (int32 `[n, D]`) select, rows in `block` (int32 `[n]`,
    /// `None` when there is one block).
    fn look_up(
        &self,
        e: &mut Emitter,
        digits: &str,
        block: Option<&str>,
        target: &Target,
    ) -> String {
        let axis0 = || vec![attr_int("axis", 0)];
        match self {
            Tables::Codebooks {
                particles,
                columns,
                k,
            } => {
                let mut at = digits.to_string();
                if let Some(columns) = columns {
                    at = e.op("Add", &[&at, columns], "particles.at_column", vec![]);
                }
                if let Some(block) = block {
                    let stride = e.int32s("particles.block_stride", &[], &[*k as i32]);
                    let offset = e.op("Mul", &[block, &stride], "particles.block_offset", vec![]);
                    let column = e.ints("particles.block_shape", &[2], &[-1, 1]);
                    let offset = e.op(
                        "Reshape",
                        &[&offset, &column],
                        "particles.block_rows",
                        vec![],
                    );
                    at = e.op("Add", &[&at, &offset], "particles.at", vec![]);
                }
                e.op("Gather", &[particles, &at], "looked_up", axis0())
            }
            Tables::Grids { scale, zero_point } => {
                let int32 = || vec![attr_int("to", DataType::Int32 as i64)];
                let [_, cols] = target.shape;
                let bits = target.bits.min(8);
                let (scale, zero_point) = match block {
                    Some(block) => (
                        e.op("Gather", &[scale, block], "scale.rows", axis0()),
                        e.op("Gather", &[zero_point, block], "zero_point.rows", axis0()),
                    ),
                    None => (scale.clone(), zero_point.clone()),
                };
                let zero_point = e.op("Cast", &[&zero_point], "zero_point.i32", int32());
                let zero_point =
                    unpacked_rows(e, "zero_point", &zero_point, bits, cols, target.opset);
                let level = e.op("Sub", &[digits, &zero_point], "level", vec![]);
                let to = vec![attr_int("to", target.float_type.data_type() as i64)];
                let level = e.op("Cast", &[&level], "level.float", to);
                e.op("Mul", &[&level, &scale], "looked_up", vec![])
            }
        }
    }
}
