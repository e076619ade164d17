//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).
//!
//! Invariant: a [`CloseFrame`] built by [`CloseFrame::parse`] always holds a code
//! that may be received on the wire and a reason that is valid UTF-8 of at most
//! 123 bytes.

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

use crate::error::ProtocolError;

/// A WebSocket close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection closed without a close frame (never sent on the wire).
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data inconsistent with the message type, such as invalid UTF-8 in text.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message is too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway received an invalid response upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: TLS handshake failure (never sent on the wire).
    pub const TLS_HANDSHAKE: Self = Self(1015);

    /// Whether this code may appear in a close frame received from a peer:
    /// 1000-1003, 1007-1014 and 3000-4999.
    pub fn is_allowed_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The largest reason that fits in a control frame beside the 2-byte code.
pub const MAX_REASON_LEN: usize = 123;

/// The payload of a close frame that carried a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, UTF-8, at most [`MAX_REASON_LEN`] bytes.
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`; the reason is cut at a character
    /// boundary to fit [`MAX_REASON_LEN`] bytes.
    pub fn new(code: CloseCode, reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// Parses a received close payload. `Ok(None)` means an empty payload
    /// (status 1005 for the application).
    pub fn parse(payload: &[u8]) -> Result<Option<Self>, ProtocolError> {
        match payload {
            [] => Ok(None),
            [_] => Err(ProtocolError::ClosePayloadTooShort),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_allowed_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason =
                    std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
                Ok(Some(Self {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// The wire payload: the code big-endian, then the reason.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + self.reason.len());
        out.put_u16(self.code.0);
        out.put_slice(self.reason.as_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_codes_follow_rfc_ranges() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(CloseCode(code).is_allowed_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_allowed_on_wire(), "{code}");
        }
    }

    #[test]
    fn parse_rules() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(
            CloseFrame::parse(&[3]),
            Err(ProtocolError::ClosePayloadTooShort)
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xEC]),
            Err(ProtocolError::InvalidCloseCode(1004))
        );
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xE8, 0xff]),
            Err(ProtocolError::InvalidCloseReason)
        );
        let frame = CloseFrame::parse(b"\x0f\xa0bye").unwrap().unwrap();
        assert_eq!(frame, CloseFrame::new(CloseCode(4000), "bye"));
        assert_eq!(&frame.encode()[..], b"\x0f\xa0bye");
    }

    #[test]
    fn long_reason_is_cut_on_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(CloseCode::NORMAL, &reason);
        assert!(frame.reason.len() <= MAX_REASON_LEN);
        assert_eq!(frame.reason.len(), 122);
    }
}
