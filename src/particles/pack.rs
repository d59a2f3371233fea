//! Bit-packing of particle indices into bytes.
//!
//! With `b < 8` bits per index, every group of 8 consecutive indices forms one
//! `8 * b`-bit little-endian word, `word = sum_s index[s] << (b * s)`, stored as `b`
//! bytes, low byte first. The last group is padded with zero indices. Index `s` starts
//! at bit `b*s`, so it is read from at most two adjacent bytes with integer multiply,
//! add, divide and subtract, which every ONNX runtime executes. With `b = 8` the
//! indices are stored as they are.

/// Indices per packed group.
pub const GROUP: usize = 8;

/// Number of bytes that hold `count` indices of `bits` bits.
pub fn packed_len(count: usize, bits: u32) -> usize {
    if bits >= 8 {
        count
    } else {
        count.div_ceil(GROUP) * bits as usize
    }
}

/// Packs indices (each below `2^bits`, `1 <= bits <= 8`) into bytes.
pub fn pack(indices: &[u8], bits: u32) -> Vec<u8> {
    assert!((1..=8).contains(&bits), "bits {bits} outside 1..=8");
    if bits == 8 {
        return indices.to_vec();
    }
    let mut out = Vec::with_capacity(packed_len(indices.len(), bits));
    for group in indices.chunks(GROUP) {
        let word = group.iter().enumerate().fold(0u64, |word, (s, &i)| {
            word | (u64::from(i) << (bits as usize * s))
        });
        out.extend_from_slice(&word.to_le_bytes()[..bits as usize]);
    }
    out
}

/// Unpacks `count` indices of `bits` bits; the inverse of [`pack`].
pub fn unpack(bytes: &[u8], bits: u32, count: usize) -> Vec<u8> {
    if bits >= 8 {
        return bytes[..count].to_vec();
    }
    let mask = (1u64 << bits) - 1;
    bytes
        .chunks(bits as usize)
        .flat_map(|chunk| {
            let mut word_bytes = [0u8; 8];
            word_bytes[..chunk.len()].copy_from_slice(chunk);
            let word = u64::from_le_bytes(word_bytes);
            (0..GROUP).map(move |s| ((word >> (bits as usize * s)) & mask) as u8)
        })
        .take(count)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_layout_is_low_nibble_first() {
        let indices = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(pack(&indices, 4), vec![0x21, 0x43, 0x65, 0x87]);
    }

    #[test]
    fn three_bit_layout_spans_bytes() {
        // word = 7 | 1 << 3 | 5 << 21 = 0xA0000F
        let indices = [7, 1, 0, 0, 0, 0, 0, 5];
        assert_eq!(pack(&indices, 3), vec![0x0F, 0x00, 0xA0]);
    }

    #[test]
    fn round_trips_every_width_with_padding() {
        for bits in 1..=8u32 {
            let count = 8 * 5 + 3;
            let indices: Vec<u8> = (0..count)
                .map(|i| ((i * 37 + 11) % (1usize << bits)) as u8)
                .collect();
            let packed = pack(&indices, bits);
            assert_eq!(packed.len(), packed_len(count, bits));
            assert_eq!(unpack(&packed, bits, count), indices, "bits {bits}");
        }
    }
}
