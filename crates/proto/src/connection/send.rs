//! Sending: calls in, bytes out.
//!
//! Frames are encoded straight into the [`OutBuf`]. A client masks every frame
//! with a fresh key from its mask source; a server writes payloads unmasked and
//! queues large `Bytes` payloads without copying them.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use super::compression::Compress;
use super::outbuf::SHARE_THRESHOLD;
use super::{Connection, OutBuf, SendError, State};
use crate::Role;
use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::frame::{
    FrameHeader, MAX_CONTROL_PAYLOAD, MAX_SHORT_PAYLOAD, OpCode, RSV1, encode_header,
    encode_unmasked, short_data_header,
};
use crate::mask::apply_mask;
use crate::message::{Message, MessageKind};

/// A payload to send: borrowed (copied into the queue) or shared.
#[derive(Clone)]
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Shared(Bytes),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Borrowed(slice) => slice,
            Self::Shared(bytes) => bytes,
        }
    }

    fn slice(&self, range: std::ops::Range<usize>) -> Payload<'_> {
        match self {
            Self::Borrowed(slice) => Payload::Borrowed(&slice[range]),
            Self::Shared(bytes) => Payload::Shared(bytes.slice(range)),
        }
    }
}

/// A single-frame, unmasked data message encoded once, for a server to send to
/// many connections: each send copies a small frame or shares a large one,
/// and never encodes again. A clone is a reference count.
///
/// **Compressed, shared.** A message compressed alone (a fresh compressor,
/// as `server_no_context_takeover` makes every message of a server) with a
/// window of W bits is valid on every connection that negotiated
/// permessage-deflate with `server_no_context_takeover` and a server window
/// of W bits. So [`Connection::send_prepared`] on such a connection sends
/// the message's compressed frame (RSV1 set), made by the first connection
/// of each window size that asks (with its [`crate::deflate::DeflateConfig`]'s
/// level, `memLevel` and threshold) and shared by every later one: at most
/// one compression per window size, however many connections. It is made
/// only when it pays as [`Compress::Auto`] decides (the payload is at least
/// the threshold and its compressed form is smaller); otherwise, and on
/// connections without permessage-deflate or with context takeover (whose
/// compressor must see every message it compresses), the plain frame goes.
#[derive(Clone)]
pub struct PreparedMessage(Arc<Prepared>);

struct Prepared {
    /// The plain frame.
    frame: Bytes,
    /// Where the payload starts in `frame`.
    payload_start: usize,
    opcode: OpCode,
    /// The compressed frame for each window size (index `bits - 8`), made
    /// on first use; `None` inside when compressing does not pay. The
    /// table itself is made by the first connection that compresses.
    deflated: OnceLock<Box<[OnceLock<Option<Bytes>>; WINDOW_SIZES]>>,
}

/// Window sizes RFC 7692 allows, 8..=15 bits.
const WINDOW_SIZES: usize = (MAX_WINDOW_BITS - MIN_WINDOW_BITS + 1) as usize;

impl std::fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("frame", &self.0.frame)
            .field("deflated", &self.0.deflated.get())
            .finish()
    }
}

/// Equal when the plain frames are (the compressed ones follow from them).
impl PartialEq for PreparedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.0.frame == other.0.frame
    }
}

impl Eq for PreparedMessage {}

impl PreparedMessage {
    /// Encodes `message` as one uncompressed frame.
    pub fn new(message: &Message) -> Self {
        let opcode = data_opcode(message.kind());
        let frame = encode_unmasked(opcode, 0, message.payload());
        Self(Arc::new(Prepared {
            payload_start: frame.len() - message.payload().len(),
            frame,
            opcode,
            deflated: OnceLock::new(),
        }))
    }

    /// The encoded frame, uncompressed.
    pub fn frame(&self) -> &Bytes {
        &self.0.frame
    }

    /// The compressed frame for connections whose server window is
    /// `window_bits`, if a connection made it and compressing paid.
    pub fn compressed_frame(&self, window_bits: u8) -> Option<&Bytes> {
        let slot = usize::from(window_bits.checked_sub(MIN_WINDOW_BITS)?);
        self.0.deflated.get()?.get(slot)?.get()?.as_ref()
    }

    /// The compressed frame for a window of `window_bits` (8..=15), made by
    /// `compress` (the payload in, the deflated payload out, or `None` when
    /// it does not pay) if no caller made it yet.
    pub(super) fn compressed_with(
        &self,
        window_bits: u8,
        compress: impl FnOnce(&[u8]) -> Option<BytesMut>,
    ) -> Option<&Bytes> {
        let slot = usize::from(window_bits.checked_sub(MIN_WINDOW_BITS)?);
        let table = self
            .0
            .deflated
            .get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
        table
            .get(slot)?
            .get_or_init(|| {
                let payload = &self.0.frame[self.0.payload_start..];
                compress(payload).map(|deflated| encode_unmasked(self.0.opcode, RSV1, &deflated))
            })
            .as_ref()
    }
}

fn data_opcode(kind: MessageKind) -> OpCode {
    match kind {
        MessageKind::Text => OpCode::Text,
        MessageKind::Binary => OpCode::Binary,
    }
}

impl Connection {
    /// The bytes to write to the transport. Write what it holds (a vectored
    /// write of [`bytes::Buf::chunks_vectored`] sends every queued frame at
    /// once) and [`bytes::Buf::advance`] it by the number of bytes written.
    pub fn transmit(&mut self) -> &mut OutBuf {
        self.out.get_or_insert_with(OutBuf::take)
    }

    /// Sends a data message, compressed as [`Compress::Auto`] decides.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, Compress::Auto)
    }

    /// Sends a data message with an explicit compression choice.
    pub fn send_with(&mut self, message: Message, compress: Compress) -> Result<(), SendError> {
        let kind = message.kind();
        let payload = match message {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(bytes) => bytes,
        };
        self.send_data(kind, Payload::Shared(payload), compress)
    }

    /// Sends a text message, copying `text`.
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(
            MessageKind::Text,
            Payload::Borrowed(text.as_bytes()),
            Compress::Auto,
        )
    }

    /// Sends a binary message, copying `data`.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(MessageKind::Binary, Payload::Borrowed(data), Compress::Auto)
    }

    /// Sends a prepared message (server role only), without encoding it
    /// again: compressed when this connection compresses every message
    /// alone and compressing it pays (see [`PreparedMessage`]), else plain.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), SendError> {
        if self.role != Role::Server {
            return Err(SendError::PreparedFromClient);
        }
        self.check_can_send_message()?;
        let frame = self
            .compression
            .as_deref_mut()
            .and_then(|compression| compression.prepared_frame(message))
            .unwrap_or_else(|| message.frame().clone());
        push_payload(
            self.out.get_or_insert_with(OutBuf::take),
            &Payload::Shared(frame),
        );
        Ok(())
    }

    /// Sends one fragment of a message streamed out piece by piece: the first
    /// call names the kind, later calls continue it, and `fin` ends it. Control
    /// frames and nothing else may go between fragments. Streamed messages are
    /// sent uncompressed. For text, the caller guarantees that the fragments
    /// together are UTF-8.
    pub fn send_fragment(
        &mut self,
        kind: MessageKind,
        data: &[u8],
        fin: bool,
    ) -> Result<(), SendError> {
        if self.sent_close {
            return Err(SendError::Closed);
        }
        let opcode = match self.sending {
            Some(current) if current == kind => OpCode::Continuation,
            Some(_) => return Err(SendError::MessageInProgress),
            None => data_opcode(kind),
        };
        self.sending = if fin { None } else { Some(kind) };
        self.write_frame(fin, 0, opcode, &Payload::Borrowed(data));
        Ok(())
    }

    /// Sends a ping (payload at most 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Sends a pong (payload at most 125 bytes); an unsolicited pong is a
    /// one-way heartbeat.
    pub fn send_pong(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Starts the closing handshake with `code` and `reason` (cut to 123 bytes).
    /// Nothing may be sent afterwards; received messages are still delivered
    /// until the peer's close frame.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if !code.is_allowed_on_wire() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        self.close_with(Some(&CloseFrame::new(code, reason)))
    }

    /// Starts the closing handshake with an empty close frame (status 1005 for the peer).
    pub fn close_without_status(&mut self) -> Result<(), SendError> {
        self.close_with(None)
    }

    fn close_with(&mut self, frame: Option<&CloseFrame>) -> Result<(), SendError> {
        if self.sent_close {
            return Err(SendError::Closed);
        }
        self.queue_close(frame);
        Ok(())
    }

    /// Queues our close frame and moves the state on.
    pub(super) fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        let payload = frame.map(CloseFrame::encode).unwrap_or_default();
        self.queue_control(OpCode::Close, &payload);
        self.sent_close = true;
        self.state = if self.received_close {
            State::Closed
        } else {
            State::Closing
        };
    }

    /// Queues a control frame whose payload is known to fit.
    pub(super) fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
        self.write_frame(true, 0, opcode, &Payload::Borrowed(payload));
    }

    /// Queues the automatic answer to a ping. Past a burst of them while
    /// the queue is not written out, it replaces the previous automatic pong
    /// if that one is still wholly unwritten and nothing was queued after it
    /// (RFC 6455 §5.5.3; see [`super::outbuf::PONG_BURST`]).
    pub(super) fn queue_auto_pong(&mut self, payload: &[u8]) {
        let out = self.out.get_or_insert_with(OutBuf::take);
        let replaced = out.replace_pong();
        let before = out.len();
        self.queue_control(OpCode::Pong, payload);
        let out = self.out.get_or_insert_with(OutBuf::take);
        let n = out.len() - before;
        out.mark_pong(n, replaced);
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if self.sent_close {
            return Err(SendError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.queue_control(opcode, payload);
        Ok(())
    }

    fn check_can_send_message(&self) -> Result<(), SendError> {
        if self.sent_close {
            Err(SendError::Closed)
        } else if self.sending.is_some() {
            Err(SendError::MessageInProgress)
        } else {
            Ok(())
        }
    }

    fn send_data(
        &mut self,
        kind: MessageKind,
        payload: Payload<'_>,
        compress: Compress,
    ) -> Result<(), SendError> {
        self.check_can_send_message()?;
        let max = self.config.max_send_frame_size.max(1);
        let len = payload.as_slice().len();
        if len <= MAX_SHORT_PAYLOAD
            && len <= max
            && self.compression.is_none()
            && self.mask_source.is_none()
        {
            // A server's small message without compression, the common
            // case: two header bytes and the payload, one capacity check.
            let out = self.out.get_or_insert_with(OutBuf::take);
            let tail = out.tail();
            tail.reserve(2 + len);
            tail.extend_from_slice(&short_data_header(data_opcode(kind), len as u8));
            tail.extend_from_slice(payload.as_slice());
            out.commit_tail(2 + len);
            return Ok(());
        }
        let compressed = match self.compression.as_mut() {
            Some(compression) => compression.compress(payload.as_slice(), compress),
            None => None,
        };
        let (rsv, body) = match compressed {
            Some(deflated) => (RSV1, Payload::Shared(deflated.freeze())),
            None => (0, payload),
        };
        let bytes = body.as_slice();
        if bytes.len() <= max {
            self.write_frame(true, rsv, data_opcode(kind), &body);
            return Ok(());
        }
        let mut start = 0;
        while start < bytes.len() {
            let end = (start + max).min(bytes.len());
            let (opcode, rsv) = if start == 0 {
                (data_opcode(kind), rsv)
            } else {
                (OpCode::Continuation, 0)
            };
            self.write_frame(end == bytes.len(), rsv, opcode, &body.slice(start..end));
            start = end;
        }
        Ok(())
    }

    /// Encodes one frame into the output queue, masking it for a client.
    fn write_frame(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: &Payload<'_>) {
        let bytes = payload.as_slice();
        let mask = self.mask_source.as_mut().map(|source| source());
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: bytes.len() as u64,
        };
        let out = self.out.get_or_insert_with(OutBuf::take);
        let tail = out.tail();
        let before = tail.len();
        match mask {
            Some(key) => {
                encode_header(&header, tail);
                let start = tail.len();
                tail.extend_from_slice(bytes);
                apply_mask(&mut tail[start..], key, 0);
                let written = tail.len() - before;
                out.commit_tail(written);
            }
            None => match payload {
                Payload::Shared(shared) if shared.len() >= SHARE_THRESHOLD => {
                    encode_header(&header, tail);
                    let written = tail.len() - before;
                    out.commit_tail(written);
                    out.push_shared(shared.clone());
                }
                _ => {
                    // A small frame, the common case: the header is encoded
                    // on the stack, and header and payload are appended
                    // after one capacity check (not one per header byte).
                    let mut head = [0u8; MAX_UNMASKED_HEADER];
                    let head_len = {
                        let mut dst = &mut head[..];
                        encode_header(&header, &mut dst);
                        MAX_UNMASKED_HEADER - dst.len()
                    };
                    tail.reserve(head_len + bytes.len());
                    tail.extend_from_slice(&head[..head_len]);
                    tail.extend_from_slice(bytes);
                    out.commit_tail(head_len + bytes.len());
                }
            },
        }
    }
}

/// Longest header of an unmasked frame: 2 bytes and a 64-bit length.
const MAX_UNMASKED_HEADER: usize = 10;

/// Queues an unmasked payload: shared when large and already `Bytes`, copied otherwise.
fn push_payload(out: &mut OutBuf, payload: &Payload<'_>) {
    match payload {
        Payload::Shared(bytes) if bytes.len() >= SHARE_THRESHOLD => out.push_shared(bytes.clone()),
        other => {
            let bytes = other.as_slice();
            out.tail().extend_from_slice(bytes);
            out.commit_tail(bytes.len());
        }
    }
}
