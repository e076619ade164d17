//! How deeply arrays and objects nest in JSON text.
//!
//! The decoders refuse `data` nested deeper than [`crate::MAX_DATA_DEPTH`]
//! ([`deeper_than`]); [`crate::JsonText::depth`] reports the depth
//! ([`depth`]). Both take text serde_json has already validated as one JSON
//! value and count `[`/`{` as one level in and `]`/`}` as one level out,
//! outside strings.
//!
//! # Invariants
//! - **No recursion, one pass.** Both are loops over the bytes, so no input,
//!   however deep, can overflow the stack here, and the time is linear in the
//!   length.
//! - **Strings do not count.** Brackets inside strings, escaped quotes
//!   (`\"`) and escaped backslashes (`\\`) included, are not levels.
//! - **Same answer.** [`deeper_than`]`(text, max)` is `depth(text) > max` for
//!   any valid JSON text (a property test checks it); on text that is not
//!   JSON both still return, without panicking, some answer.
//!
//! [`depth`] walks byte by byte: it is the simple reference. [`deeper_than`]
//! is on the hub's publish path. When the text has no more than `max` of `[`
//! and `{` at all (strings included), it cannot be too deep: a count in
//! byte-wide lanes says so, and most messages stop there. Otherwise it looks
//! at 64 bytes at a time: it builds
//! bit masks of the quotes, backslashes and brackets of a block (loops the
//! compiler turns into vector compares), works out which bytes are inside
//! strings with a prefix XOR of the unescaped quotes (as simdjson does), and
//! visits brackets one by one only in a block that could take the depth past
//! `max`. Data with more brackets than `max` costs about a quarter more
//! than validating it did; other data about nothing (`cargo run --release -p
//! duplex-hub-proto --example decode_cost` measures both).

/// The nesting depth of `text`: 0 for a scalar, 1 for `[]`, `{}` or
/// `[1, {}]`, 2 for `[[]]`. See the module docs.
pub(crate) fn depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // To the closing quote: the next `"` not escaped. An escape is
                // `\` and one more byte (`\uXXXX` goes on with hex digits,
                // neither quotes nor backslashes).
                i += 1;
                while let Some(&b) = bytes.get(i) {
                    match b {
                        b'"' => break,
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// Bytes per block of [`deeper_than`]: one bit of a `u64` each.
const BLOCK: usize = 64;

/// Whether `text` nests arrays and objects deeper than `max` (that is,
/// [`depth`]`(text) > max`), stopping at the first bracket past it. See the
/// module docs.
pub(crate) fn deeper_than(text: &str, max: usize) -> bool {
    let bytes = text.as_bytes();
    if openings_at_most(bytes, max) {
        return false;
    }
    let mut scan = Scan {
        max,
        depth: 0,
        in_string: 0,
        escaped: 0,
    };
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    for block in blocks {
        if scan.block(block) {
            return true;
        }
    }
    if rest.is_empty() {
        return false;
    }
    // The tail, padded with spaces (nothing to count).
    let mut last = [b' '; BLOCK];
    last[..rest.len()].copy_from_slice(rest);
    scan.block(&last)
}

/// Whether `bytes` holds at most `max` of `[` and `{`, strings included: then
/// no text can nest deeper than `max`, whatever its strings hold. Most data
/// passes here, without following strings: a count in byte-wide lanes (which
/// vectorises), 255 bytes at a time so that a lane cannot overflow.
fn openings_at_most(bytes: &[u8], max: usize) -> bool {
    let mut count = 0usize;
    for chunk in bytes.chunks(255) {
        let in_chunk = chunk
            .iter()
            .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'));
        count += usize::from(in_chunk);
        if count > max {
            return false;
        }
    }
    true
}

/// The state [`deeper_than`] carries from one block to the next.
struct Scan {
    max: usize,
    /// Levels open before the block.
    depth: usize,
    /// All ones when the block starts inside a string, else 0.
    in_string: u64,
    /// 1 when the block's first byte is escaped (the last one before was a
    /// backslash that escapes it), else 0.
    escaped: u64,
}

impl Scan {
    /// Takes one block; `true` once the depth passes `max`.
    fn block(&mut self, block: &[u8; BLOCK]) -> bool {
        let [quote, backslash, open, close] = masks(block);

        let escaped = self.escapes(backslash);
        // Bit i of the prefix XOR is the parity of the real quotes up to i:
        // set from an opening quote up to (not including) its closing one.
        let in_string = prefix_xor(quote & !escaped) ^ self.in_string;
        self.in_string = 0u64.wrapping_sub(in_string >> (BLOCK - 1));

        let open = open & !in_string;
        let close = close & !in_string;
        let opened = open.count_ones() as usize;
        if self.depth + opened <= self.max {
            // Even if every `[` and `{` came first, the depth stays in bounds.
            self.depth = (self.depth + opened).saturating_sub(close.count_ones() as usize);
            return false;
        }
        let mut brackets = open | close;
        while brackets != 0 {
            let bit = brackets & brackets.wrapping_neg();
            if open & bit != 0 {
                self.depth += 1;
                if self.depth > self.max {
                    return true;
                }
            } else {
                self.depth = self.depth.saturating_sub(1);
            }
            brackets ^= bit;
        }
        false
    }

    /// The bytes of the block that a backslash escapes (those after a run of
    /// an odd number of backslashes), carrying a run that ends the block into
    /// the next one.
    fn escapes(&mut self, backslash: u64) -> u64 {
        let mut escaped = self.escaped;
        self.escaped = 0;
        // A backslash escaped from the block before is an ordinary byte.
        let mut escapes = backslash & !escaped;
        while escapes != 0 {
            let at = escapes.trailing_zeros();
            escapes &= escapes - 1;
            if at == (BLOCK - 1) as u32 {
                self.escaped = 1;
            } else {
                let next = 1 << (at + 1);
                escaped |= next;
                // The escaped byte, if a backslash, escapes nothing.
                escapes &= !next;
            }
        }
        escaped
    }
}

/// Bit masks of the block's quotes, backslashes, opening brackets and
/// closing brackets: bit i is set when byte i is one.
///
/// Each byte is first compared into a 0 or 1 byte (a loop the
/// compiler vectorises), then eight such bytes become eight bits with one
/// multiplication: `0x0102_0408_1020_4080` moves the low bit of byte k to bit
/// 56 + k, and no two partial products overlap, so nothing carries.
fn masks(block: &[u8; BLOCK]) -> [u64; 4] {
    // One byte of flags per byte of the block: bit 0 quote, 1 backslash,
    // 2 opening bracket, 3 closing bracket.
    let mut flags = [0u8; BLOCK];
    for (flag, &b) in flags.iter_mut().zip(block) {
        // `[` 0x5b and `{` 0x7b, and only they, are 0x7b with bit 0x20 set;
        // likewise `]` 0x5d and `}` 0x7d for 0x7d.
        *flag = u8::from(b == b'"')
            | u8::from(b == b'\\') << 1
            | u8::from(b | 0x20 == b'{') << 2
            | u8::from(b | 0x20 == b'}') << 3;
    }
    let mut masks = [0u64; 4];
    let (words, _) = flags.as_chunks::<8>();
    for (k, word) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*word);
        for (flag, mask) in masks.iter_mut().enumerate() {
            let bits = (word >> flag) & 0x0101_0101_0101_0101;
            *mask |= (bits.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * k);
        }
    }
    masks
}

/// Bit i of the result is the XOR of bits 0 ..= i of `x`.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` arrays, one inside the other, around `inner`.
    fn nested(n: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(n), "]".repeat(n))
    }

    /// Both scans agree on `text` for every `max` around its depth.
    #[track_caller]
    fn agree(text: &str) -> usize {
        let d = depth(text);
        for max in d.saturating_sub(3)..d + 3 {
            assert_eq!(deeper_than(text, max), d > max, "max {max}: {text:.200}");
        }
        d
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        for (text, expected) in [
            ("null", 0),
            ("\"[{\"", 0),
            ("[]", 1),
            ("{}", 1),
            ("[1, {}, [], \"x\"]", 2),
            ("{\"a\": {\"b\": [1]}}", 3),
            ("[[], [[]], []]", 3),
            ("{\"[[[\": \"{{{\", \"k\": [\"]]]\"]}", 2),
            ("[\"\\\"[[\", \"\\\\\", [\"\\u005b\"]]", 2),
        ] {
            serde_json::from_str::<serde_json::Value>(text).unwrap();
            assert_eq!(agree(text), expected, "{text}");
        }
    }

    #[test]
    fn deep_text_without_recursion() {
        // Far beyond any stack a recursive count could use.
        let deep = nested(1_000_000, "1");
        assert_eq!(depth(&deep), 1_000_000);
        assert!(deeper_than(&deep, 64));
        assert!(!deeper_than(&deep, 1_000_000));
        let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert_eq!(agree(&objects), 100_000);
    }

    #[test]
    fn strings_across_blocks_and_escapes_at_their_edges() {
        // Strings of every length up to three blocks, full of brackets,
        // quotes and backslashes, at every offset, so that each escape and
        // quote lands on each bit and across each block boundary.
        for len in 0..3 * BLOCK {
            for pad in 0..4 {
                let content: String = (0..len)
                    .map(|i| match i % 7 {
                        0 => "\\\"",
                        1 => "[",
                        2 => "\\\\",
                        3 => "}",
                        4 => "{",
                        5 => "]",
                        _ => "x",
                    })
                    .collect();
                let text = format!("{}[[\"{content}\", [\"{content}\"]]]", " ".repeat(pad));
                serde_json::from_str::<serde_json::Value>(&text).unwrap();
                assert_eq!(agree(&text), 3, "{text}");
            }
        }
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let noisy = format!(
            "[{{\"{}\": \"{}\\\"{}\"}}]",
            "[".repeat(200),
            "{".repeat(200),
            "]".repeat(10)
        );
        assert_eq!(agree(&noisy), 2);
        assert_eq!(agree(&nested(64, &noisy)), 66);
    }

    #[test]
    fn not_json_does_not_panic() {
        for junk in [
            "\"",
            "\"\\",
            "]]]",
            "[\"",
            "\\",
            "[[[",
            "",
            &"\\".repeat(200),
        ] {
            let _ = depth(junk);
            let _ = deeper_than(junk, 0);
        }
        assert_eq!(depth("]]]["), 1, "closers never go below 0");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            // Strings full of what the scan must skip.
            "[\\[\\]{}\"\\\\ a\u{1}é]{0,80}".prop_map(Value::String),
        ];
        leaf.prop_recursive(80, 400, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[\\[\\]{}\"\\\\a]{0,6}", inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn both_scans_agree_on_any_json(value in json_value(), pretty: bool, pad in 0usize..64) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            let text = format!("{}{text}", " ".repeat(pad));
            agree(&text);
        }
    }

    #[test]
    fn prefix_xor_is_the_running_parity() {
        for x in [
            0u64,
            1,
            0b1001,
            u64::MAX,
            0x8000_0000_0000_0001,
            0xdead_beef_f00d,
        ] {
            let mut parity = 0;
            for i in 0..64 {
                parity ^= (x >> i) & 1;
                assert_eq!((prefix_xor(x) >> i) & 1, parity, "{x:#x} bit {i}");
            }
        }
    }
}
