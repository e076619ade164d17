//! Protocol errors and the close code each one maps to.
//!
//! Invariant: every way a peer can break RFC 6455 or RFC 7692 is one variant of
//! [`ProtocolError`], and [`ProtocolError::close_code`] names the code with which
//! the connection is failed.

use crate::close::CloseCode;

/// A peer broke the protocol; the connection is failed with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1-3 set where no negotiated extension defines them.
    #[error("reserved bits set without an extension that defines them")]
    ReservedBits,
    /// RSV1 (compressed) on a continuation or control frame.
    #[error("RSV1 set on a continuation or control frame")]
    CompressedNonStartFrame,
    /// Opcodes 0x3-0x7 and 0xB-0xF.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame without FIN.
    #[error("control frame is fragmented")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A continuation frame with no fragmented message in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A frame from a client without a mask (server role).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A frame from a server with a mask (client role).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// A payload length in 16 or 64 bits where fewer bits would do.
    #[error("payload length is not minimally encoded")]
    NonMinimalLength,
    /// A 64-bit payload length with its most significant bit set.
    #[error("64-bit payload length has its top bit set")]
    LengthTopBitSet,
    /// A close frame with a 1-byte payload.
    #[error("close frame payload of 1 byte")]
    ClosePayloadTooShort,
    /// A close code that may not appear on the wire.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A text message that is not UTF-8.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The frame's payload length.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message (after decompression) larger than the configured limit.
    #[error("message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A message split into more fragments than the configured limit.
    #[error("message exceeds the limit of {limit} fragments")]
    TooManyFragments {
        /// The configured limit.
        limit: usize,
    },
    /// A compressed message whose deflate data is invalid.
    #[error("invalid compressed data: {0}")]
    InvalidCompressedData(String),
}

impl ProtocolError {
    /// The close code with which the connection is failed.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidCloseReason | Self::InvalidUtf8 | Self::InvalidCompressedData(_) => {
                CloseCode::INVALID_PAYLOAD
            }
            Self::FrameTooLarge { .. }
            | Self::MessageTooLarge { .. }
            | Self::TooManyFragments { .. } => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
