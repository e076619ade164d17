//! Frame headers (RFC 6455 §5.2): parsing from bytes and encoding into bytes.
//!
//! The parser is incremental: given fewer bytes than a whole header it asks for
//! more and consumes nothing. It checks what a header alone can show — reserved
//! opcodes, control frame rules, length encoding. Rules that depend on the
//! connection (role, negotiated extensions, size limits) are checked by
//! [`crate::connection`].
//!
//! Invariant: the encoder always writes the minimal length encoding, and
//! `parse_header(encode_header(h)) == h` for every header it accepts.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::mask::apply_mask;

/// The largest header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Parses the 4-bit opcode; reserved values are an error.
    pub fn from_u8(value: u8) -> Result<Self, ProtocolError> {
        Ok(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// The largest payload a header's 7-bit length holds: a frame up to this
/// size has a 2-byte header (6 when masked).
pub const MAX_SHORT_PAYLOAD: usize = 125;

/// The first header byte of a final, uncompressed text frame.
pub const FINAL_TEXT: u8 = 0x80 | 0x1;

/// The first header byte of a final, uncompressed binary frame.
pub const FINAL_BINARY: u8 = 0x80 | 0x2;

/// The two header bytes [`encode_header`] writes for a final, uncompressed,
/// unmasked data frame of `len` ≤ [`MAX_SHORT_PAYLOAD`] bytes.
#[inline]
pub fn short_data_header(opcode: OpCode, len: u8) -> [u8; 2] {
    debug_assert!(usize::from(len) <= MAX_SHORT_PAYLOAD && !opcode.is_control());
    [0x80 | opcode.as_u8(), len]
}

/// Bit value of RSV1 in [`FrameHeader::rsv`].
pub const RSV1: u8 = 0b100;
/// Bit value of RSV2 in [`FrameHeader::rsv`].
pub const RSV2: u8 = 0b010;
/// Bit value of RSV3 in [`FrameHeader::rsv`].
pub const RSV3: u8 = 0b001;

/// A parsed or to-be-encoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The FIN bit: this is the last frame of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the three low bits (RSV1 = `0b100`).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The encoded size of this header.
    pub fn encoded_len(&self) -> usize {
        header_len(self.payload_len, self.mask.is_some())
    }
}

/// The encoded size of a header for `payload_len` bytes, masked or not.
#[inline]
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let len = match payload_len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    if masked { len + 4 } else { len }
}

/// Parses a header from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a header, or the header and
/// its encoded length. Never reads past the header.
#[inline]
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x07;
    let opcode = OpCode::from_u8(b0 & 0x0F)?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if len7 > 125 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes([bytes[0], bytes[1]]);
            if len < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (u64::from(len), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
            if len & (1 << 63) != 0 {
                return Err(ProtocolError::LengthTopBitSet);
            }
            if len <= 0xFFFF {
                return Err(ProtocolError::NonMinimalLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(bytes) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// Appends the encoded `header` to `dst`, with the minimal length encoding.
#[inline]
pub fn encode_header(header: &FrameHeader, dst: &mut impl BufMut) {
    let b0 = (u8::from(header.fin) << 7) | ((header.rsv & 0x07) << 4) | header.opcode.as_u8();
    let mask_bit = if header.mask.is_some() { 0x80 } else { 0 };
    dst.put_u8(b0);
    match header.payload_len {
        len @ 0..=125 => dst.put_u8(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            dst.put_u8(mask_bit | 126);
            dst.put_u16(len as u16);
        }
        len => {
            dst.put_u8(mask_bit | 127);
            dst.put_u64(len);
        }
    }
    if let Some(key) = header.mask {
        dst.put_slice(&key);
    }
}

/// Encodes a whole frame: header, then `payload` masked with `mask` if given.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    dst.reserve(header.encoded_len() + payload.len());
    encode_header(&header, dst);
    let start = dst.len();
    dst.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut dst[start..], key, 0);
    }
}

/// Encodes an unmasked single-frame message once, for a server to send the same
/// bytes to many connections (see [`crate::connection::Connection::send_prepared`]).
pub fn encode_unmasked(opcode: OpCode, rsv: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(true, rsv, opcode, None, payload, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        parse_header(bytes)
    }

    #[test]
    fn short_data_headers_are_what_the_encoder_writes() {
        for (opcode, first) in [(OpCode::Text, FINAL_TEXT), (OpCode::Binary, FINAL_BINARY)] {
            for len in 0..=MAX_SHORT_PAYLOAD as u8 {
                let header = FrameHeader {
                    fin: true,
                    rsv: 0,
                    opcode,
                    mask: None,
                    payload_len: u64::from(len),
                };
                let mut encoded = BytesMut::new();
                encode_header(&header, &mut encoded);
                assert_eq!(
                    short_data_header(opcode, len),
                    encoded[..],
                    "{opcode:?} {len}"
                );
                assert_eq!(encoded[0], first);
            }
        }
    }

    #[test]
    fn rfc_examples() {
        // A single-frame unmasked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask, n),
            (true, OpCode::Text, 5, None, 2)
        );
        // A masked "Hello".
        let (h, n) = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        // 256 bytes binary in a single unmasked frame.
        let (h, n) = parse_all(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
        // 64 KiB binary.
        let (h, n) = parse_all(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for n in 0..full.len() {
            assert_eq!(parse_all(&full[..n]), Ok(None), "prefix {n}");
        }
        assert!(parse_all(&full).unwrap().is_some());
    }

    #[test]
    fn reserved_opcodes_are_errors() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                parse_all(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(
            parse_all(&[0x09, 0]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_all(&[0x89, 126]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert!(parse_all(&[0x89, 125]).unwrap().is_some());
    }

    #[test]
    fn length_encoding_rules() {
        assert_eq!(
            parse_all(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_all(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_all(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthTopBitSet)
        );
    }

    #[test]
    fn encoder_is_minimal() {
        for (len, expect) in [(0u64, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = BytesMut::new();
            let h = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: len,
            };
            encode_header(&h, &mut out);
            assert_eq!(out.len(), expect, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(fin in any::<bool>(), rsv in 0u8..8, op in 0usize..6,
                                   mask in proptest::option::of(any::<[u8; 4]>()),
                                   len in prop_oneof![0u64..200, 60000u64..70000, 0u64..(1 << 63)]) {
            let opcode = [OpCode::Continuation, OpCode::Text, OpCode::Binary,
                          OpCode::Close, OpCode::Ping, OpCode::Pong][op];
            let (fin, len) = if opcode.is_control() { (true, len % 126) } else { (fin, len) };
            let h = FrameHeader { fin, rsv, opcode, mask, payload_len: len };
            let mut out = BytesMut::new();
            encode_header(&h, &mut out);
            prop_assert_eq!(out.len(), h.encoded_len());
            prop_assert_eq!(parse_header(&out), Ok(Some((h, out.len()))));
        }

        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_header(&bytes);
        }
    }
}
