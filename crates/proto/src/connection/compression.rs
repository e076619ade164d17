//! permessage-deflate on the connection's data path (RFC 7692 §6).
//!
//! Wires the codec of [`crate::deflate`] into sending and receiving. Being
//! connected; until then no connection negotiates compression.

use bytes::BytesMut;

use crate::error::ProtocolError;

/// Whether to compress one outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// Compress when compression is negotiated and the message is at least the
    /// configured threshold.
    #[default]
    Auto,
    /// Compress whenever compression is negotiated.
    Always,
    /// Send uncompressed.
    Never,
}

/// The compression state of one connection.
#[derive(Debug)]
pub(crate) struct Compression {}

impl Compression {
    pub(crate) fn release_idle(&mut self) {}

    /// Compresses an outgoing message, or returns `None` to send it as it is.
    pub(crate) fn compress(&mut self, _payload: &[u8], _mode: Compress) -> Option<BytesMut> {
        None
    }

    /// Inflates a chunk of a compressed message into `out`, at most `limit`
    /// bytes in all for this call.
    pub(crate) fn decompress(
        &mut self,
        _input: &[u8],
        _out: &mut BytesMut,
        _limit: usize,
    ) -> Result<(), ProtocolError> {
        Ok(())
    }

    /// Ends a compressed message: inflates the implied tail into `out`.
    pub(crate) fn finish(
        &mut self,
        _out: &mut BytesMut,
        _limit: usize,
    ) -> Result<(), ProtocolError> {
        Ok(())
    }
}
