//! The `Sec-WebSocket-Accept` computation (RFC 6455 §4.2.2 step 5.4).
//!
//! Invariant: [`accept_key`] is a pure function of the key's bytes, exactly as
//! they appear in the header value; it does not decode or validate the key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

/// The GUID RFC 6455 appends to the client's key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `base64(SHA-1(key + GUID))`: the `Sec-WebSocket-Accept` value for the
/// `Sec-WebSocket-Key` value `key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_sample() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn empty_key_hashes_the_guid_alone() {
        // base64(SHA-1("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
        assert_eq!(accept_key(b""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
    }
}
