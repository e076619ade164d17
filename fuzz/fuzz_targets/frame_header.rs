//! `parse_header` on arbitrary bytes: never panics; a header it returns
//! re-encodes to the bytes it was parsed from and parses back equal; every
//! shorter prefix of a header asks for more bytes.
#![no_main]

use duplex_proto::frame::{MAX_HEADER_LEN, encode_header, parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (header, len) = match parse_header(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(
                data.len() < MAX_HEADER_LEN,
                "asked for more with a whole header in hand"
            );
            return;
        }
        Err(_) => return,
    };
    assert!(
        len <= data.len() && len <= MAX_HEADER_LEN,
        "consumed {len} of {}",
        data.len()
    );
    assert_eq!(len, header.encoded_len());

    let mut encoded = Vec::new();
    encode_header(&header, &mut encoded);
    assert_eq!(
        parse_header(&encoded),
        Ok(Some((header, encoded.len()))),
        "re-encoded header does not parse back equal"
    );
    if encoded.len() == len {
        assert_eq!(
            encoded,
            data[..len],
            "same-length re-encoding differs from the input"
        );
    }

    // Incremental: the header alone parses the same; any shorter prefix asks for more.
    assert_eq!(parse_header(&data[..len]), Ok(Some((header, len))));
    for short in 0..len {
        assert_eq!(
            parse_header(&data[..short]),
            Ok(None),
            "prefix of {short} bytes"
        );
    }
});
