//! Payload masking (RFC 6455 §5.3).
//!
//! Masking XORs each payload byte `i` with `key[i % 4]`. A payload may arrive in
//! chunks of any size, so [`apply_mask`] takes the position in the key cycle at
//! which the chunk starts and masks correctly from there.
//!
//! Invariant: `apply_mask(buf, key, off)` followed by the same call again restores
//! `buf`, and masking a buffer in two pieces `[..n]` at `off` and `[n..]` at
//! `off + n` equals masking it whole at `off`.

/// XORs `data` in place with the masking `key`, where `data[0]` sits at position
/// `offset` of the payload (only `offset % 4` matters).
///
/// Short data (most messages) is masked inline a word at a time; the bulk of
/// longer data runs eight bytes at a time on aligned-size chunks, which the
/// compiler turns into SIMD instructions.
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    // Start the key cycle at `offset`: byte `offset % 4` first (inline, unlike
    // the slice rotation).
    let key = u32::from_le_bytes(key)
        .rotate_right(8 * (offset & 3) as u32)
        .to_le_bytes();
    if data.len() < SHORT {
        mask_short(data, key);
    } else {
        mask_long(data, key);
    }
}

/// Below this many bytes, data is masked inline by [`mask_short`].
const SHORT: usize = 32;

/// Masks fewer than [`SHORT`] bytes: at most three 8-byte words, a 4-byte
/// one, then up to three single bytes.
#[inline(always)]
fn mask_short(data: &mut [u8], key: [u8; 4]) {
    let narrow = u32::from_ne_bytes(key);
    let wide = twice(narrow);
    let (words, rest) = data.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
    }
    // Whole words keep the key cycle at index 0.
    let (quads, tail) = rest.as_chunks_mut::<4>();
    for q in quads {
        *q = (u32::from_ne_bytes(*q) ^ narrow).to_ne_bytes();
    }
    for (byte, k) in tail.iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// The 4-byte key twice in an 8-byte word, in memory order on any
/// endianness (built from bytes, the compiler spends ~25 instructions).
#[inline(always)]
fn twice(narrow: u32) -> u64 {
    u64::from(narrow) * 0x1_0000_0001
}

/// Masks [`SHORT`] bytes or more, the key cycle starting at `key[0]`.
#[inline(never)]
fn mask_long(data: &mut [u8], key: [u8; 4]) {
    let wide = twice(u32::from_ne_bytes(key));
    let (blocks, rest) = data.as_chunks_mut::<32>();
    for block in blocks {
        let (words, _) = block.as_chunks_mut::<8>();
        for w in words {
            *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
        }
    }
    // `blocks` covered a multiple of 32 bytes, so `rest` starts at key index 0.
    let (words, tail) = rest.as_chunks_mut::<8>();
    for w in words {
        *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
    }
    for (i, byte) in tail.iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_vector_hello() {
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn empty_is_noop() {
        let mut data: [u8; 0] = [];
        apply_mask(&mut data, [1, 2, 3, 4], 3);
    }

    proptest! {
        #[test]
        fn matches_bytewise_reference(data in prop_oneof![
                                          proptest::collection::vec(any::<u8>(), 0..40),
                                          proptest::collection::vec(any::<u8>(), 0..300)],
                                      key in any::<[u8; 4]>(), offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key, offset);
            reference(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn chunked_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..300),
                                key in any::<[u8; 4]>(), split in 0usize..300) {
            let split = split.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(split);
            apply_mask(a, key, 0);
            apply_mask(b, key, split);
            prop_assert_eq!(whole, parts);
        }
    }
}
