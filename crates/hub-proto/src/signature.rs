//! Request signatures: how the hub signs what it sends to the application's
//! backend — webhooks ([`crate::events`]) and proxy hooks
//! ([`crate::hooks`]) alike — and how a receiver checks one, without I/O.
//!
//! # Rules
//!
//! - **Header.** `Duplex-Signature: t={t},v1={hex}` ([`SIGNATURE_HEADER`],
//!   [`signature_header`]): `t` is the Unix time in seconds the request was
//!   signed at, `v1` the lowercase hex (64 digits) of HMAC-SHA256 keyed with
//!   the shared secret over the bytes `"{t}." + body` — `t` in decimal, a
//!   dot, then the request body exactly as sent.
//! - **Signed anew.** Every attempt (a retry too) is signed at its own
//!   time, so `t` says when that request left, never when the first did.
//! - **Checking** ([`verify`]): recompute `v1` over the received body and
//!   compare in constant time; refuse a `t` further than a tolerance from
//!   now ([`DEFAULT_TOLERANCE_SECS`], 5 minutes): a replay, or a clock off.
//!   Several `v1` entries may be present (a secret being rotated); one
//!   match is enough. Unknown `key=value` entries are ignored (room for a
//!   later scheme).
//! - **Secrets.** The hub takes no secret shorter than [`MIN_SECRET_LEN`]
//!   bytes; the rule itself accepts a key of any length (HMAC does).
//!
//! The shared test vectors (`tests/vectors/signature.json`) hold fixed
//! secrets, times, bodies and their headers, for a backend in any language
//! to check its own verifier against the same bytes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Duplex-Signature";

/// The shortest secret the hub accepts (bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// The tolerance a receiver should allow between `t` and its clock
/// (seconds): 5 minutes.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// The `v1` signature of `body` signed at `t` (Unix seconds): lowercase hex
/// of HMAC-SHA256 over `"{t}." + body`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    hex(&mac(secret, t, body).finalize().into_bytes())
}

/// The [`SIGNATURE_HEADER`] value: `t={t},v1={hex}`.
pub fn signature_header(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", sign(secret, t, body))
}

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| {
        <Hmac<Sha256> as Mac>::new_from_slice(&[]).expect("an empty HMAC key is accepted")
    });
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("the signature header is not t=<unix>,v1=<hex>")]
    Malformed,
    /// `t` is further from now than the tolerance: a replay, or a clock off.
    #[error("the signature's time is {skew} s from now, beyond the tolerance")]
    Stale {
        /// How far, in seconds.
        skew: u64,
    },
    /// No `v1` matches: a forgery, another secret, or a changed body.
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks a [`SIGNATURE_HEADER`] value for `body` at `now` (Unix seconds),
/// accepting a `t` at most `tolerance` seconds away. Several `v1` entries
/// may be present (a secret being rotated); one match is enough. The
/// comparison is in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<(), SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(unhex(value).ok_or(SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let skew = now.abs_diff(t);
    if skew > tolerance {
        return Err(SignatureError::Stale { skew });
    }
    if signatures
        .iter()
        .any(|sig| mac(secret, t, body).verify_slice(sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_refuse_forgeries_and_replays() {
        let secret = b"a-webhook-secret-of-enough-bytes";
        let body = br#"{"events":[]}"#;
        let header = signature_header(secret, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(sign(b"key", 1, b"x").len(), 64);
        assert_eq!(verify(secret, &header, body, 1_700_000_100, 300), Ok(()));
        // Within the tolerance either way, and not one second beyond.
        assert_eq!(verify(secret, &header, body, 1_699_999_700, 300), Ok(()));
        assert_eq!(
            verify(secret, &header, body, 1_700_000_301, 300),
            Err(SignatureError::Stale { skew: 301 })
        );
        assert_eq!(
            verify(secret, &header, body, 1_700_000_400, 300),
            Err(SignatureError::Stale { skew: 400 })
        );
        assert_eq!(
            verify(b"another-secret", &header, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, b"{\"events\":[1]}", 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        // The time is signed: moving `t` breaks the match.
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert_eq!(
            verify(secret, &moved, body, 1_700_000_000, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "t=1,v1=0"] {
            assert!(verify(secret, bad, body, 1, 300).is_err(), "{bad}");
        }
        // Rotation: any v1 may match; unknown entries are ignored.
        let rotated = format!("{header},v1={},v2=abc", "00".repeat(32));
        assert_eq!(verify(secret, &rotated, body, 1_700_000_000, 300), Ok(()));
    }

    #[test]
    fn a_known_signature() {
        // Computed independently: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"secret", b"1700000000.{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
