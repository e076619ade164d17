//! `parse_extensions` on arbitrary header values never panics, and what it
//! accepts, written back with `format_extensions`, parses to the same offers.
//!
//! Input layout: the bytes split at `\n` are the header lines.
#![no_main]

use duplex_proto::extension::{format_extensions, parse_extensions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(offers) = parse_extensions(data.split(|&b| b == b'\n')) else {
        return;
    };
    let text = format_extensions(&offers);
    assert_eq!(
        parse_extensions([text.as_bytes()]).as_ref(),
        Ok(&offers),
        "formatted offers {text:?} do not parse back the same"
    );
});
