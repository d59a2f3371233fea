//! Index unpacking: the particle index of a weight is stored as uint8 bytes, bit-packed
//! below 8 bits, and turned back into an int32 matrix in the graph with small integer
//! ops every runtime executes (Cast, Gather, Div/Mul/Sub, Reshape, Slice). Below opset
//! 11 (no Range) the table of every byte's digits starts from 256 stored bytes instead,
//! and below opset 10 Slice takes its bounds as attributes.

use super::Emitter;
use crate::builder::{attr_int, attr_ints};
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::tensor::u8_tensor;
use crate::particles::pack::{GROUP, pack};

/// First opset with Range.
const RANGE_OPSET: i64 = 11;

/// First opset whose Slice takes its bounds as inputs.
const SLICE_INPUTS_OPSET: i64 = 10;

/// Stores a particle index (`prefix`, bit-packed) and emits the ops, valid at `opset`,
/// that turn it into an int32 `shape` tensor; every name derives from `prefix`.
pub(crate) fn unpacked_index(
    e: &mut Emitter,
    prefix: &str,
    index: &[u8],
    bits: u32,
    shape: [usize; 2],
    opset: i64,
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
    let mut digits = if 8 % b == 0 {
        byte_table_lookup(e, prefix, &bytes, b, opset)
    } else {
        straddling_digits(e, prefix, &bytes, groups as i64, b)
    };
    if count % GROUP != 0 {
        let flat_shape = e.ints(&format!("{prefix}.flat_shape"), &[1], &[-1]);
        let flat = e.op(
            "Reshape",
            &[&digits, &flat_shape],
            &format!("{prefix}.flat"),
            vec![],
        );
        let trimmed = format!("{prefix}.trimmed");
        digits = if opset < SLICE_INPUTS_OPSET {
            let bounds = vec![
                attr_ints("starts", &[0]),
                attr_ints("ends", &[count as i64]),
                attr_ints("axes", &[0]),
            ];
            e.op("Slice", &[&flat], &trimmed, bounds)
        } else {
            let starts = e.ints(&format!("{prefix}.slice_starts"), &[1], &[0]);
            let ends = e.ints(&format!("{prefix}.slice_ends"), &[1], &[count as i64]);
            e.op("Slice", &[&flat, &starts, &ends], &trimmed, vec![])
        };
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

/// Unpacks gathered rows of a packed index: `bytes` is int32 `[n, cols * bits / 8]`,
/// each row packed on its own (`cols` a multiple of 8 below 8 bits, so no group of
/// [`GROUP`] indices straddles two rows); the result is int32 `[n, cols]`, `n` known
/// only at run time. Names derive from `prefix`.
pub(crate) fn unpacked_rows(
    e: &mut Emitter,
    prefix: &str,
    bytes: &str,
    bits: u32,
    cols: usize,
    opset: i64,
) -> String {
    if bits >= 8 {
        return bytes.to_string();
    }
    let b = bits as usize;
    let digits = if 8 % b == 0 {
        byte_table_lookup(e, prefix, bytes, b, opset)
    } else {
        straddling_digits(e, prefix, bytes, -1, b)
    };
    let shape = e.ints(&format!("{prefix}.shape"), &[2], &[-1, cols as i64]);
    e.op(
        "Reshape",
        &[&digits, &shape],
        &format!("{prefix}.unpacked"),
        vec![],
    )
}

/// Unpacks widths that divide 8 (1, 2, 4 bits): every byte holds `8 / b` whole
/// indices, so one Gather from a [256, 8/b] table of every byte's digits does it. The
/// table is computed in the graph from Range(0, 256) (small integer ops; below opset 11
/// from the 256 byte values stored), so the only full-size ops are the Cast of the
/// bytes and this Gather: runtimes that fold the decoding at load time hold few
/// full-size intermediates.
fn byte_table_lookup(e: &mut Emitter, prefix: &str, bytes: &str, b: usize, opset: i64) -> String {
    let per_byte = 8 / b;
    let values = if opset < RANGE_OPSET {
        let all: Vec<u8> = (0..=255).collect();
        let stored = e.constant(&format!("{prefix}.table_bytes"), |n| {
            u8_tensor(n, &[256, 1], all)
        });
        let int32 = vec![attr_int("to", DataType::Int32 as i64)];
        e.op("Cast", &[&stored], &format!("{prefix}.table_rows"), int32)
    } else {
        let start = e.int32s(&format!("{prefix}.table_start"), &[], &[0]);
        let limit = e.int32s(&format!("{prefix}.table_limit"), &[], &[256]);
        let delta = e.int32s(&format!("{prefix}.table_delta"), &[], &[1]);
        let values = e.op(
            "Range",
            &[&start, &limit, &delta],
            &format!("{prefix}.table_bytes"),
            vec![],
        );
        let column = e.ints(&format!("{prefix}.table_column"), &[2], &[256, 1]);
        e.op(
            "Reshape",
            &[&values, &column],
            &format!("{prefix}.table_rows"),
            vec![],
        )
    };
    let table = digits_of(e, &format!("{prefix}.table"), &values, per_byte, b);
    e.op(
        "Gather",
        &[&table, bytes],
        &format!("{prefix}.digits"),
        vec![attr_int("axis", 0)],
    )
}

/// `(values / 2^(b*s)) mod 2^b` for s in 0..count, with `values` [..., 1] or [..., count].
fn digits_of(e: &mut Emitter, prefix: &str, values: &str, count: usize, b: usize) -> String {
    let shifts: Vec<i32> = (0..count).map(|s| 1i32 << (b * s % 8)).collect();
    let shifts = e.int32s(&format!("{prefix}.shifts"), &[count], &shifts);
    let shifted = e.op(
        "Div",
        &[values, &shifts],
        &format!("{prefix}.shifted"),
        vec![],
    );
    let modulus = e.int32s(&format!("{prefix}.modulus"), &[], &[1i32 << b]);
    let quotient = e.op(
        "Div",
        &[&shifted, &modulus],
        &format!("{prefix}.quotient"),
        vec![],
    );
    let scaled = e.op(
        "Mul",
        &[&quotient, &modulus],
        &format!("{prefix}.quotient_scaled"),
        vec![],
    );
    e.op(
        "Sub",
        &[&shifted, &scaled],
        &format!("{prefix}.digits"),
        vec![],
    )
}

/// Unpacks widths 3, 5, 6, 7: index `s` of a group of 8 starts at bit `b*s` of the
/// group's `b` bytes, in byte `b*s/8`, and may run into the next byte, which is then
/// added at 256 times its value (every intermediate stays below 2^16). `groups` is the
/// number of groups, -1 when only the run time knows it.
fn straddling_digits(e: &mut Emitter, prefix: &str, bytes: &str, groups: i64, b: usize) -> String {
    let grouped_shape = e.ints(
        &format!("{prefix}.grouped_shape"),
        &[2],
        &[groups, b as i64],
    );
    let grouped = e.op(
        "Reshape",
        &[bytes, &grouped_shape],
        &format!("{prefix}.grouped"),
        vec![],
    );
    let first: Vec<i32> = (0..GROUP).map(|s| (b * s / 8) as i32).collect();
    let next: Vec<i32> = (0..GROUP).map(|s| ((b * s + b - 1) / 8) as i32).collect();
    let first_byte = e.int32s(&format!("{prefix}.first_byte"), &[GROUP], &first);
    let low = e.op(
        "Gather",
        &[&grouped, &first_byte],
        &format!("{prefix}.low"),
        vec![attr_int("axis", 1)],
    );
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
    let pairs = e.op("Add", &[&low, &high], &format!("{prefix}.pairs"), vec![]);
    digits_of(e, prefix, &pairs, GROUP, b)
}
