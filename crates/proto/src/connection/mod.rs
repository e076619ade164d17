//! The connection state machine (RFC 6455 §5-§7), after the opening handshake.
//!
//! A [`Connection`] turns received bytes into [`Event`]s and the caller's
//! messages into bytes to write. It does no I/O: see the crate docs for the call
//! discipline.
//!
//! Invariants:
//! - Every received frame is checked against the role, the negotiated
//!   extensions and the [`Config`] limits before its payload is buffered; a
//!   violation fails the connection with the RFC's close code, queued as the
//!   last bytes to transmit, and no further input is processed.
//! - Memory is bounded by the limits: a message (after decompression) never
//!   grows past `max_message_size`, a frame buffered whole (uncompressed)
//!   never past `max_frame_size`, and reassembly keeps no per-fragment state.
//!   A frame of a compressed message may carry up to
//!   [`Config::compressed_frame_limit`] bytes (deflate's overhead on top of
//!   `max_frame_size`); it is inflated as it arrives, never held whole.
//! - Text is validated as it arrives and fails on the first invalid byte.
//! - Nothing is queued after our close frame, and the state is
//!   [`State::Closed`] once a close frame was both sent and received.
//! - Input makes us queue only automatic pongs, our answer to the peer's
//!   close and the close frame of a failure. Automatic pongs are bounded
//!   whatever the peer sends and whether or not the transport writes: once
//!   [`PONG_BURST`] of them were queued since the write queue was last empty,
//!   a new one replaces the previous one while that is still wholly unwritten
//!   and last in the queue (RFC 6455 §5.5.3), so a peer that pings and never
//!   reads gets at most `PONG_BURST + 1` pongs queued, the last one answering
//!   its latest ping. None is queued after our close frame.
//! - An idle connection is small (88 bytes on 64-bit targets): the receive
//!   state (read buffer, frame and message under way, queued events, UTF-8
//!   state) and the write queue each live in a box made on first use and
//!   given back by [`Connection::shrink_buffers`] once empty, and the rare
//!   parts (compression, a client's mask source, the failure) are boxed too.

mod compression;
mod outbuf;
mod receive;
mod send;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub use compression::Compress;
use compression::Compression;
pub use outbuf::{OutBuf, PONG_BURST};
pub use send::PreparedMessage;

use crate::Role;
use crate::close::CloseFrame;
use crate::deflate::{DeflateConfig, DeflateParams};
use crate::error::ProtocolError;
use crate::message::{Message, MessageKind};
use crate::utf8::Utf8Validator;

/// How received data messages are handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveMode {
    /// Each message arrives whole, as [`Event::Message`].
    #[default]
    Whole,
    /// Each message arrives as [`Event::MessageStart`], any number of
    /// [`Event::MessageData`] chunks as bytes arrive, then [`Event::MessageEnd`].
    /// `max_message_size` still applies; nothing is buffered beyond a chunk.
    Streaming,
}

/// Limits and behaviour of a connection. The defaults are safe on the open
/// internet and let every legitimate message of up to 16 MiB through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest payload of one received uncompressed frame (close 1009
    /// beyond). A frame of a compressed message (permessage-deflate) may be
    /// larger by deflate's worst-case expansion, up to
    /// [`Config::compressed_frame_limit`], so that a message that fits the
    /// limits uncompressed also fits them compressed. Default 16 MiB.
    pub max_frame_size: usize,
    /// Largest received message, after decompression (close 1009 beyond):
    /// exact, whether the message came compressed or not, in one frame or
    /// many. Default 16 MiB.
    pub max_message_size: usize,
    /// Most frames in one received message (close 1009 beyond). Default
    /// 1,048,576: reassembly keeps no per-fragment state, so the limit only
    /// bounds work, and a 16 MiB message in 16-byte fragments still passes.
    pub max_fragments: usize,
    /// Largest payload of one sent frame; longer messages are fragmented.
    /// Default: no limit (one frame per message).
    pub max_send_frame_size: usize,
    /// Answer each ping with a pong automatically. Default on; when off, pings
    /// are still reported and the application answers with
    /// [`Connection::send_pong`]. Automatic pongs left unwritten are
    /// coalesced past a burst of [`PONG_BURST`] (see the module docs).
    pub auto_pong: bool,
    /// Whole messages or streamed chunks.
    pub receive_mode: ReceiveMode,
}

impl Config {
    /// Largest payload of one received frame of a compressed message:
    /// `max_frame_size` plus deflate's worst-case expansion of that many
    /// bytes, `n + ⌈n/8⌉ + ⌈n/64⌉ + 16` for `n = max_frame_size`. This is
    /// zlib's most conservative `deflateBound` (literals in fixed Huffman
    /// codes, 9 bits a byte at worst, plus block headers), which also covers
    /// stored blocks at any `memLevel` (5 bytes per block of at least 128
    /// bytes, under 4%), plus room for the end of a flush. 16 MiB gives
    /// 19,136,528 bytes. Such a frame is inflated as it arrives, never held
    /// whole, and what it inflates to is bounded by `max_message_size`.
    pub fn compressed_frame_limit(&self) -> u64 {
        let n = self.max_frame_size as u64;
        n.saturating_add(n.div_ceil(8))
            .saturating_add(n.div_ceil(64))
            .saturating_add(16)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 16 << 20,
            max_fragments: 1 << 20,
            max_send_frame_size: usize::MAX,
            auto_pong: true,
            receive_mode: ReceiveMode::Whole,
        }
    }
}

/// The state of the connection (RFC 6455 §4-§7). The opening handshake
/// (CONNECTING) happens before a [`Connection`] exists, in [`crate::handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Both close frames were exchanged, or the connection failed. Close the transport.
    Closed,
}

/// Something that happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole data message ([`ReceiveMode::Whole`]).
    Message(Message),
    /// A data message begins ([`ReceiveMode::Streaming`]).
    MessageStart(MessageKind),
    /// The next chunk of the current message ([`ReceiveMode::Streaming`]). For
    /// text, the chunks together are valid UTF-8; a code point may straddle two.
    MessageData(Bytes),
    /// The current message is complete and valid ([`ReceiveMode::Streaming`]).
    MessageEnd,
    /// A ping with its payload; a pong was queued if `auto_pong` is on (in
    /// place of an earlier unwritten one past a burst, see [`PONG_BURST`]).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// The peer's close frame (`None` for an empty one, status 1005). A reply
    /// was queued if we had not closed yet; the state is now [`State::Closed`].
    Close(Option<CloseFrame>),
}

/// A call that cannot be carried out in the connection's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// We already sent a close frame (or the connection failed): nothing more may be sent.
    #[error("the connection is closed for sending")]
    Closed,
    /// A control frame payload over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlPayloadTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, or outside the ranges).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A whole message while a fragmented one is being sent, or a new fragmented
    /// message before the previous one ended.
    #[error("a fragmented message is being sent")]
    MessageInProgress,
    /// A fragment with no fragmented message begun.
    #[error("no fragmented message is being sent")]
    NoMessageInProgress,
    /// Prepared frames are unmasked, so only a server may send them.
    #[error("prepared frames can only be sent by a server")]
    PreparedFromClient,
}

/// A source of masking keys for a client (RFC 6455 §5.3: unpredictable, from a
/// strong source of entropy). The caller owns the randomness.
pub type MaskSource = Box<dyn FnMut() -> [u8; 4] + Send>;

/// The frame being read.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: crate::frame::FrameHeader,
    /// Payload bytes not yet taken from the read buffer.
    remaining: u64,
    /// Payload bytes at the front of the read buffer already unmasked and
    /// validated (frames held whole until complete).
    held: usize,
    /// Payload bytes unmasked so far (position in the mask cycle).
    unmasked: u64,
    /// Hold the frame whole in the read buffer (control frames, and
    /// uncompressed single-frame messages in [`ReceiveMode::Whole`]).
    hold: bool,
    /// Bytes of the frame's header still at the front of the read buffer: a
    /// held frame keeps its header there until it is complete, and is then
    /// split off with it in one step (header and payload: one `split_to`
    /// instead of an `advance` and a `split_to` per message). 0 for a frame
    /// taken chunk by chunk.
    header_len: u8,
}

/// Everything a connection receiving data needs and an idle one does not:
/// boxed in [`Connection`] while in use.
#[derive(Debug, Default)]
struct Rx {
    read_buf: BytesMut,
    frame: Option<InFrame>,
    message: Option<InMessage>,
    events: std::collections::VecDeque<Event>,
    utf8: Utf8Validator,
}

impl Rx {
    /// Whether nothing is under way: no bytes, frame, message or event.
    fn is_idle(&self) -> bool {
        self.read_buf.is_empty()
            && self.frame.is_none()
            && self.message.is_none()
            && self.events.is_empty()
    }
}

/// The data message being received.
#[derive(Debug)]
struct InMessage {
    kind: MessageKind,
    compressed: bool,
    fragments: usize,
    /// Payload bytes so far, after decompression.
    size: usize,
    /// Reassembled payload ([`ReceiveMode::Whole`] only).
    buf: BytesMut,
}

/// A WebSocket connection after the opening handshake. See the module docs.
pub struct Connection {
    role: Role,
    state: State,
    /// Kind of the fragmented message being sent, if any.
    sending: Option<MessageKind>,
    sent_close: bool,
    received_close: bool,
    /// Shared: a server's connections hold the same limits.
    config: Arc<Config>,
    /// The receive state, while there is one (see [`Rx`]).
    rx: Option<Box<Rx>>,
    /// The write queue, while there is one.
    out: Option<Box<OutBuf>>,
    /// Boxed: most connections never negotiate it, and the state is large.
    compression: Option<Box<Compression>>,
    /// Boxed again (a thin pointer): only clients have one.
    mask_source: Option<Box<MaskSource>>,
    failure: Option<Box<ProtocolError>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field(
                "buffered_in",
                &self.rx.as_ref().map_or(0, |rx| rx.read_buf.len()),
            )
            .field("buffered_out", &self.buffered_amount())
            .field("compression", &self.compression.is_some())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server-side connection. Connections made from one
    /// `Arc<Config>` share it.
    pub fn server(config: impl Into<Arc<Config>>) -> Self {
        Self::new(Role::Server, config.into(), None)
    }

    /// A client-side connection; `mask_source` supplies a fresh unpredictable
    /// masking key for every frame sent.
    pub fn client(config: impl Into<Arc<Config>>, mask_source: MaskSource) -> Self {
        Self::new(Role::Client, config.into(), Some(mask_source))
    }

    fn new(role: Role, config: Arc<Config>, mask_source: Option<MaskSource>) -> Self {
        Self {
            role,
            state: State::Open,
            sending: None,
            sent_close: false,
            received_close: false,
            config,
            rx: None,
            out: None,
            compression: None,
            mask_source: mask_source.map(Box::new),
            failure: None,
        }
    }

    /// Turns on permessage-deflate with the parameters the handshake negotiated
    /// and the local policy `config` (threshold, level, memory). Call before any
    /// frame is exchanged.
    pub fn with_deflate(mut self, params: DeflateParams, config: &DeflateConfig) -> Self {
        self.compression = Some(Box::new(Compression::new(self.role, params, config)));
        self
    }

    /// The negotiated permessage-deflate parameters, if any.
    pub fn deflate_params(&self) -> Option<&DeflateParams> {
        self.compression.as_deref().map(Compression::params)
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The error that failed the connection, if one did.
    pub fn failure(&self) -> Option<&ProtocolError> {
        self.failure.as_deref()
    }

    /// Whether the peer's close frame has been received.
    pub fn received_close(&self) -> bool {
        self.received_close
    }

    /// Whether our close frame has been queued.
    pub fn sent_close(&self) -> bool {
        self.sent_close
    }

    /// Bytes queued for the transport and not yet written: the backpressure a
    /// slow peer exerts (the browser's `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        self.out.as_ref().map_or(0, |out| out.len())
    }

    /// Whether input should still be read: false once the peer's close frame
    /// arrived or the connection failed.
    pub fn wants_read(&self) -> bool {
        !self.received_close && self.failure.is_none()
    }

    /// How many more bytes the frame being read needs before it is complete
    /// (0 between frames). A transport may use it to read a large frame
    /// straight into [`Connection::read_buf`] instead of through a small buffer.
    pub fn pending_frame_bytes(&self) -> usize {
        let Some(rx) = &self.rx else {
            return 0;
        };
        match &rx.frame {
            Some(frame) if frame.hold => usize::try_from(frame.remaining)
                .unwrap_or(usize::MAX)
                .saturating_add(usize::from(frame.header_len))
                .saturating_sub(rx.read_buf.len()),
            Some(frame) => usize::try_from(frame.remaining).unwrap_or(usize::MAX),
            None => 0,
        }
    }

    /// The capacity of the read buffer (0 when there is none), to decide
    /// whether [`Connection::shrink_buffers`] is worth calling.
    pub fn read_capacity(&self) -> usize {
        self.rx.as_ref().map_or(0, |rx| rx.read_buf.capacity())
    }

    /// Gives back buffer memory held by an idle connection: call when the
    /// transport has nothing to read and nothing is queued, after a quiet
    /// spell (calling it on every wakeup makes each read allocate anew).
    /// The receive state goes entirely when nothing is under way, the write
    /// queue when it is empty.
    pub fn shrink_buffers(&mut self) {
        if let Some(rx) = &mut self.rx {
            if rx.is_idle() {
                self.rx = None;
            } else if rx.read_buf.is_empty() {
                rx.read_buf = BytesMut::new();
            }
        }
        self.release_written();
    }

    /// Gives the write queue back once it is written out (nothing is
    /// buffered): a connection holds one only while bytes wait in it, and
    /// the drained one becomes the thread's spare, for the next connection
    /// that queues bytes on the thread. Call after writing the queue out.
    pub fn release_written(&mut self) {
        if self.out.as_ref().is_some_and(|out| out.is_empty())
            && let Some(out) = self.out.take()
        {
            OutBuf::recycle(out);
        }
    }

    /// Drops the compression states of an idle connection, keeping only the
    /// windows that context takeover needs (a few KiB instead of ~200 KiB).
    /// The next message rebuilds them, so call it only after a quiet spell.
    pub fn release_compression(&mut self) {
        if let Some(compression) = &mut self.compression {
            compression.release_idle();
        }
    }
}

#[cfg(test)]
mod tests;
