//! permessage-deflate on the connection's data path (RFC 7692 §6).
//!
//! Invariants: RSV1 is set only on the first frame of a message this module
//! compressed; a message whose compressed form would not be smaller is sent
//! uncompressed only when our direction has no context takeover (with
//! takeover, the peer's window must see every byte we compressed, so the
//! compressed form is always sent once made); the decompressed size of a
//! received message never exceeds the connection's `max_message_size`; a
//! prepared message goes compressed only on a connection whose compressor
//! resets after every message, and only in a frame compressed with that
//! connection's window ([`Compression::prepared_frame`]).

use bytes::{Bytes, BytesMut};

use super::send::PreparedMessage;

use crate::Role;
use crate::deflate::{DecompressError, DeflateConfig, DeflateParams, PerMessageDeflate};
use crate::error::ProtocolError;

/// Whether to compress one outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// Compress when compression is negotiated and the message is at least the
    /// configured threshold; send uncompressed if that would not shrink it and
    /// our direction has no context takeover.
    #[default]
    Auto,
    /// Compress whenever compression is negotiated.
    Always,
    /// Send uncompressed.
    Never,
}

/// The compression state of one connection.
#[derive(Debug)]
pub(crate) struct Compression {
    params: DeflateParams,
    codec: PerMessageDeflate,
}

fn protocol_error(error: DecompressError, limit: usize) -> ProtocolError {
    match error {
        DecompressError::TooLarge => ProtocolError::MessageTooLarge { limit },
        DecompressError::Invalid(reason) => ProtocolError::InvalidCompressedData(reason),
    }
}

impl Compression {
    pub(crate) fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        Self {
            codec: PerMessageDeflate::new(role, &params, config),
            params,
        }
    }

    pub(crate) fn params(&self) -> &DeflateParams {
        &self.params
    }

    /// Drops the zlib states, keeping only the windows (see
    /// [`PerMessageDeflate::release`]).
    pub(crate) fn release_idle(&mut self) {
        self.codec.release();
    }

    /// Compresses an outgoing message, or returns `None` to send it as it is.
    pub(crate) fn compress(&mut self, payload: &[u8], mode: Compress) -> Option<BytesMut> {
        let wanted = match mode {
            Compress::Auto => self.codec.should_compress(payload.len()),
            Compress::Always => true,
            Compress::Never => false,
        };
        if !wanted {
            return None;
        }
        let compressor = self.codec.compressor();
        let mut out = BytesMut::with_capacity(payload.len() / 2 + 16);
        // A backend failure leaves nothing sent; the compressor starts afresh,
        // which the peer's decompressor tolerates (it only keeps more history).
        compressor.compress(payload, &mut out).ok()?;
        let no_gain = out.len() >= payload.len();
        if no_gain && mode == Compress::Auto && compressor.no_context_takeover() {
            return None;
        }
        Some(out)
    }

    /// The shared compressed frame of `message` for this connection, made
    /// now if no connection of the same window made it yet; `None` to send
    /// the plain frame. Only a compressor that resets after every message
    /// (no context takeover) may share: its output depends on nothing but
    /// the message, its window and its level, so it is valid on every
    /// connection of the same window. A compressor with context takeover
    /// must see every message it compresses, so it sends the plain frame,
    /// which leaves its context as it was.
    pub(crate) fn prepared_frame(&mut self, message: &PreparedMessage) -> Option<Bytes> {
        let compressor = self.codec.compressor();
        if !compressor.no_context_takeover() {
            return None;
        }
        let window_bits = compressor.window_bits();
        message
            .compressed_with(window_bits, |payload| {
                self.compress(payload, Compress::Auto)
            })
            .cloned()
    }

    /// Inflates a chunk of a compressed message into `out`; `limit` bounds the
    /// whole message.
    pub(crate) fn decompress(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), ProtocolError> {
        self.codec
            .decompressor()
            .decompress(input, out, limit)
            .map_err(|e| protocol_error(e, limit))
    }

    /// Ends a compressed message: inflates the implied tail into `out`.
    pub(crate) fn finish(&mut self, out: &mut BytesMut, limit: usize) -> Result<(), ProtocolError> {
        self.codec
            .decompressor()
            .finish_message(out, limit)
            .map_err(|e| protocol_error(e, limit))
    }
}
