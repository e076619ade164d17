//! `Utf8Validator` fed arbitrary bytes in arbitrary chunks agrees with
//! `std::str::from_utf8`, both at the end of the message and after each chunk
//! (it fails exactly when the bytes so far cannot begin valid UTF-8).
//!
//! Input layout: byte 0 = number of chunk lengths `k` (mod 8); the next `k`
//! bytes are chunk lengths (0 feeds an empty chunk); the rest is the message,
//! fed in those chunks, then whatever remains as one last chunk.
#![no_main]

use duplex_proto::utf8::Utf8Validator;
use libfuzzer_sys::fuzz_target;

/// Whether `prefix` can still be the start of valid UTF-8.
fn can_begin_valid(prefix: &[u8]) -> bool {
    match std::str::from_utf8(prefix) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).min(rest.len());
    let (lengths, text) = rest.split_at(count);
    let expected = std::str::from_utf8(text).is_ok();

    let mut validator = Utf8Validator::new();
    let mut fed = 0;
    let mut ok = true;
    let chunks = lengths.iter().map(|&n| usize::from(n)).chain([usize::MAX]);
    for want in chunks {
        let end = fed + want.min(text.len() - fed);
        let verdict = validator.feed(&text[fed..end]);
        fed = end;
        assert_eq!(
            verdict.is_ok(),
            can_begin_valid(&text[..fed]),
            "feed verdict after {fed} bytes disagrees with std"
        );
        if verdict.is_err() {
            ok = false;
            break;
        }
        if fed == text.len() {
            break;
        }
    }
    if ok {
        ok = validator.finish().is_ok();
    }
    assert_eq!(ok, expected, "message verdict disagrees with std");

    // After reset the validator is as new: one feed of the whole message.
    validator.reset();
    let whole = validator.feed(text).is_ok() && validator.finish().is_ok();
    assert_eq!(whole, expected, "verdict after reset disagrees with std");
});
