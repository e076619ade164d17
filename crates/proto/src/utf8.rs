//! Incremental UTF-8 validation for text messages (RFC 6455 §8.1).
//!
//! A text message arrives in frames, and frames arrive in chunks; a code point may
//! be split across any of them. [`Utf8Validator`] keeps at most three bytes of an
//! unfinished code point between calls and reports an error as soon as the bytes
//! seen so far cannot be the start of valid UTF-8 — not at the end of the message.
//!
//! Invariant: feeding a byte string in any split and then calling
//! [`Utf8Validator::finish`] succeeds exactly when the whole string is valid UTF-8.

/// The bytes of a text message are not valid UTF-8 (close code 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8 in text message")]
pub struct InvalidUtf8;

/// Validates UTF-8 across chunk boundaries, failing fast.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// Length of the sequence a lead byte starts, or 1 for bytes that cannot lead
/// (those then fail validation where they stand).
#[inline]
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 1,
    }
}

/// Index at which an unfinished multi-byte sequence at the end of `data` starts,
/// or `data.len()` when `data` ends on a sequence boundary (or on an error).
#[inline]
fn unfinished_tail_start(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=len.min(3) {
        let byte = data[len - back];
        if byte & 0xC0 != 0x80 {
            return if sequence_len(byte) > back {
                len - back
            } else {
                len
            };
        }
    }
    len
}

/// Checks that `bytes` (1 to 3 of them) may begin a valid sequence.
#[inline]
fn is_valid_prefix(bytes: &[u8]) -> bool {
    match simdutf8::compat::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// Validates a whole string at once (a message that arrived in one piece).
#[inline]
pub fn validate(data: &[u8]) -> Result<(), InvalidUtf8> {
    // Short ASCII (most chat and JSON messages): a word-wide check beats
    // the validator's set-up, which hands short inputs to `core::str`.
    if data.len() < 64 && data.is_ascii() {
        return Ok(());
    }
    simdutf8::basic::from_utf8(data).map_or(Err(InvalidUtf8), |_| Ok(()))
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 && data.len() < 64 && data.is_ascii() {
            // See `validate`.
            return Ok(());
        }
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]) - have;
            let take = need.min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            let now = have + take;
            data = &data[take..];
            if take < need {
                self.pending_len = now as u8;
                return if is_valid_prefix(&self.pending[..now]) {
                    Ok(())
                } else {
                    Err(InvalidUtf8)
                };
            }
            if simdutf8::basic::from_utf8(&self.pending[..now]).is_err() {
                return Err(InvalidUtf8);
            }
            self.pending_len = 0;
        }
        let split = unfinished_tail_start(data);
        let (head, tail) = data.split_at(split);
        if simdutf8::basic::from_utf8(head).is_err() {
            return Err(InvalidUtf8);
        }
        if !tail.is_empty() {
            if !is_valid_prefix(tail) {
                return Err(InvalidUtf8);
            }
            self.pending[..tail.len()].copy_from_slice(tail);
            self.pending_len = tail.len() as u8;
        }
        Ok(())
    }

    /// Ends the message: an unfinished code point is an error. Resets the validator.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.pending_len != 0;
        self.pending_len = 0;
        if unfinished { Err(InvalidUtf8) } else { Ok(()) }
    }

    /// Forgets any unfinished code point, ready for a new message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_split(data: &[u8], chunk: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for piece in data.chunks(chunk.max(1)) {
            v.feed(piece)?;
        }
        v.finish()
    }

    #[test]
    fn code_point_split_across_chunks_is_valid() {
        let text = "κόσμε€𝄞".as_bytes();
        for chunk in 1..text.len() {
            assert_eq!(validate_split(text, chunk), Ok(()), "chunk {chunk}");
        }
    }

    #[test]
    fn fails_fast_before_end_of_message() {
        // Autobahn 6.4.1: ce ba e1 bd b9 cf 83 ce bc ce b5 | f4 90 80 80 | ...
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83]), Ok(()));
        assert_eq!(v.feed(&[0xf4]), Ok(()), "f4 may begin a valid sequence");
        assert_eq!(
            v.feed(&[0x90]),
            Err(InvalidUtf8),
            "f4 90 is beyond U+10FFFF"
        );
    }

    #[test]
    fn invalid_prefix_in_same_chunk_fails() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xed\xa0"), Err(InvalidUtf8), "surrogate prefix");
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xc0"), Err(InvalidUtf8), "overlong lead");
    }

    #[test]
    fn unfinished_at_end_fails() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xe2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert_eq!(v.feed(b"fresh"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn stray_continuation_fails() {
        assert_eq!(validate_split(b"a\x80b", 1), Err(InvalidUtf8));
        assert_eq!(validate_split(b"\x80\x80\x80", 3), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn whole_validation_agrees_with_std(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(validate(&data).is_ok(), std::str::from_utf8(&data).is_ok());
        }

        #[test]
        fn agrees_with_std_for_any_split(data in proptest::collection::vec(any::<u8>(), 0..64),
                                         chunk in 1usize..10) {
            let expected = std::str::from_utf8(&data).is_ok();
            prop_assert_eq!(validate_split(&data, chunk).is_ok(), expected);
        }

        #[test]
        fn valid_strings_pass_any_split(s in "\\PC{0,40}", chunk in 1usize..10) {
            prop_assert_eq!(validate_split(s.as_bytes(), chunk), Ok(()));
        }

        #[test]
        fn error_is_reported_no_later_than_the_chunk_holding_it(
            data in proptest::collection::vec(any::<u8>(), 1..64), chunk in 1usize..10) {
            // The first failing prefix of `data`, byte-wise, must fail when fed.
            if let Err(e) = std::str::from_utf8(&data)
                && let Some(bad_len) = e.error_len()
            {
                    let bad_end = e.valid_up_to() + bad_len;
                    let mut v = Utf8Validator::new();
                    let mut fed = 0;
                    let mut failed_at = None;
                    for piece in data.chunks(chunk) {
                        fed += piece.len();
                        if v.feed(piece).is_err() { failed_at = Some(fed); break; }
                    }
                    let failed_at = failed_at.expect("must fail while feeding");
                    // The byte that proves the error is at index `bad_end` (the one after
                    // the bad subsequence) or the last byte; the validator must fail in
                    // the chunk holding it.
                    let proof = (bad_end + 1).min(data.len());
                    let limit = (proof.div_ceil(chunk) * chunk).min(data.len());
                    prop_assert!(failed_at <= limit, "failed at {failed_at}, proof at {proof}");
            }
        }
    }
}
