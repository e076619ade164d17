//! Receiving: bytes in, events out.
//!
//! Each frame header is checked in full before any of its payload is taken.
//! Control frames and uncompressed single-frame messages (in whole mode) stay in
//! the read buffer, header included, until complete and are then split off
//! without copying; their bytes are unmasked and validated as they arrive, so
//! invalid text fails on the first bad byte. Fragments and compressed frames
//! are taken chunk by chunk as they arrive.
//!
//! The per-message path of small messages is kept short: a single-frame
//! message is handed back straight from the step that completes it (the event
//! queue is only for steps that make more than one event, or none the caller
//! asked for), and its header and payload leave the read buffer in one split.
//!
//! A message that is already whole in the read buffer (one uncompressed
//! final frame of under 64 KiB, between messages, in whole mode) is taken in
//! one pass instead: header checked from its first bytes, payload unmasked
//! and text validated at once, then split off like the others (a copy into
//! its own allocation measured more instructions than the split). A frame
//! that would break any rule or limit is left to the general path, which
//! reports it: both paths make the same events and errors (tested by feeding
//! the same bytes whole and a byte at a time).

use bytes::{Buf, Bytes, BytesMut};

use super::{Connection, Event, InFrame, InMessage, ReceiveMode, Rx, State};
use crate::Role;
use crate::close::CloseFrame;
use crate::error::ProtocolError;
use crate::frame::{
    FINAL_BINARY, FINAL_TEXT, FrameHeader, MAX_SHORT_PAYLOAD, OpCode, RSV1, parse_header,
};
use crate::mask::apply_mask;
use crate::message::{Message, MessageKind, Utf8Bytes};
use crate::utf8;

impl Connection {
    /// The buffer received bytes go into: a transport may read straight into
    /// it instead of calling [`Connection::receive`].
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.rx.get_or_insert_with(Box::default).read_buf
    }

    /// Appends received bytes. Ignored once the connection stopped reading
    /// (see [`Connection::wants_read`]).
    pub fn receive(&mut self, data: &[u8]) {
        if self.wants_read() && !data.is_empty() {
            self.rx
                .get_or_insert_with(Box::default)
                .read_buf
                .extend_from_slice(data);
        }
    }

    /// The next event from the bytes received so far, `Ok(None)` when more
    /// bytes are needed (or nothing more will come).
    ///
    /// An error fails the connection: a close frame with the error's code is
    /// queued as the last bytes to transmit, and the state becomes
    /// [`State::Closed`]. The error is returned once.
    #[inline]
    pub fn poll_event(&mut self) -> Result<Option<Event>, ProtocolError> {
        // The receive state is taken out while in use, so that the steps can
        // borrow it beside the rest of the connection; it always goes back.
        let Some(mut rx) = self.rx.take() else {
            return Ok(None);
        };
        let result = self.poll_event_in(&mut rx);
        if self.failure.is_some() {
            // Failed (now or before): nothing more will be read.
            rx.read_buf = BytesMut::new();
            rx.frame = None;
            rx.message = None;
        }
        // The steps never set `self.rx`, so the slot is empty: putting the
        // state back needs no drop (a plain assignment would check and drop
        // the old value on every call, about 10 instructions per message).
        let previous = self.rx.replace(rx);
        debug_assert!(previous.is_none());
        std::mem::forget(previous);
        result
    }

    #[inline(never)]
    fn poll_event_in(&mut self, rx: &mut Rx) -> Result<Option<Event>, ProtocolError> {
        loop {
            if let Some(event) = rx.events.pop_front() {
                return Ok(Some(event));
            }
            if !self.wants_read() {
                return Ok(None);
            }
            match self.step(rx) {
                Ok(Step::Progress) => {}
                Ok(Step::Message(message)) => return Ok(Some(Event::Message(message))),
                Ok(Step::NeedMore) => return Ok(None),
                Err(error) => {
                    rx.events.clear();
                    self.fail(error.clone());
                    return Err(error);
                }
            }
        }
    }

    /// Fails the connection with `error` (the caller drops the receive state).
    fn fail(&mut self, error: ProtocolError) {
        if !self.sent_close {
            let frame = CloseFrame::new(error.close_code(), &error.to_string());
            self.queue_close(Some(&frame));
        }
        self.failure = Some(Box::new(error));
        self.state = State::Closed;
    }

    /// Makes progress on the read buffer: see [`Step`].
    fn step(&mut self, rx: &mut Rx) -> Result<Step, ProtocolError> {
        let mut frame = match rx.frame {
            Some(frame) => frame,
            None => {
                if rx.message.is_none()
                    && let Some(message) = self.whole_message(rx)
                {
                    return message.map(Step::Message);
                }
                let Some((header, header_len)) = parse_header(&rx.read_buf)? else {
                    return Ok(Step::NeedMore);
                };
                self.begin_frame(rx, &header)?;
                let single_plain_message = header.fin
                    && header.rsv & RSV1 == 0
                    && matches!(header.opcode, OpCode::Text | OpCode::Binary)
                    && self.config.receive_mode == ReceiveMode::Whole;
                let hold = header.opcode.is_control() || single_plain_message;
                let header_len = if hold {
                    // Split off with the payload once the frame is complete.
                    u8::try_from(header_len).expect("a frame header is at most 14 bytes")
                } else {
                    rx.read_buf.advance(header_len);
                    0
                };
                InFrame {
                    header,
                    remaining: header.payload_len,
                    held: 0,
                    unmasked: 0,
                    hold,
                    header_len,
                }
            }
        };
        let offset = usize::from(frame.header_len);
        let available = (rx.read_buf.len() - offset)
            .min(usize::try_from(frame.remaining).unwrap_or(usize::MAX));
        if frame.hold {
            if available > frame.held {
                let fresh = &mut rx.read_buf[offset + frame.held..offset + available];
                if let Some(key) = frame.header.mask {
                    apply_mask(fresh, key, frame.held);
                }
                if frame.header.opcode == OpCode::Text {
                    rx.utf8
                        .feed(fresh)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                }
                frame.held = available;
            }
            if (available as u64) < frame.remaining {
                rx.frame = Some(frame);
                return Ok(Step::NeedMore);
            }
            rx.frame = None;
            let mut payload = rx.read_buf.split_to(offset + available).freeze();
            payload.advance(offset);
            if frame.header.opcode.is_control() {
                self.on_control(rx, frame.header.opcode, payload)?;
                return Ok(Step::Progress);
            }
            return Ok(match on_single_frame_message(rx, payload)? {
                Some(message) => Step::Message(message),
                None => Step::Progress,
            });
        }
        if available == 0 && frame.remaining > 0 {
            rx.frame = Some(frame);
            return Ok(Step::NeedMore);
        }
        if available > 0 {
            let mut chunk = rx.read_buf.split_to(available);
            if let Some(key) = frame.header.mask {
                apply_mask(&mut chunk, key, (frame.unmasked & 3) as usize);
            }
            frame.unmasked += available as u64;
            frame.remaining -= available as u64;
            self.on_data_chunk(rx, chunk)?;
        }
        if frame.remaining == 0 {
            rx.frame = None;
            if frame.header.fin {
                self.finish_message(rx)?;
            }
        } else {
            rx.frame = Some(frame);
        }
        Ok(Step::Progress)
    }

    /// Takes a message of one frame that is whole at the front of the read
    /// buffer, between messages, in one pass (see the module docs). `None`
    /// for anything else, or a frame that breaks a rule or limit: the
    /// general path takes those, with every check and its error.
    #[inline]
    fn whole_message(&self, rx: &mut Rx) -> Option<Result<Message, ProtocolError>> {
        let [first, second, ..] = *rx.read_buf else {
            return None;
        };
        // A client masks every frame; a server none (RFC 6455 §5.1).
        let masked = self.role == Role::Server;
        if !matches!(first, FINAL_TEXT | FINAL_BINARY)
            || (second & 0x80 != 0) != masked
            || self.config.receive_mode != ReceiveMode::Whole
        {
            return None;
        }
        let (len, key_at) = match second & 0x7F {
            126 => {
                let [_, _, high, low, ..] = *rx.read_buf else {
                    return None;
                };
                match usize::from(u16::from_be_bytes([high, low])) {
                    // Not the minimal encoding: the general path fails it.
                    ..=MAX_SHORT_PAYLOAD => return None,
                    len => (len, 4),
                }
            }
            127 => return None,
            len => (usize::from(len), 2),
        };
        if len > self.config.max_frame_size || len > self.config.max_message_size {
            return None;
        }
        let header_len = if masked { key_at + 4 } else { key_at };
        let frame = rx.read_buf.get_mut(..header_len + len)?;
        let (header, payload) = frame.split_at_mut(header_len);
        if masked {
            let key = &header[key_at..];
            apply_mask(payload, [key[0], key[1], key[2], key[3]], 0);
        }
        if first == FINAL_TEXT && utf8::validate(payload).is_err() {
            return Some(Err(ProtocolError::InvalidUtf8));
        }
        let mut payload = rx.read_buf.split_to(header_len + len).freeze();
        payload.advance(header_len);
        Some(Ok(if first == FINAL_TEXT {
            Message::Text(Utf8Bytes::from_validated(payload))
        } else {
            Message::Binary(payload)
        }))
    }

    /// Checks a header against the role, extensions, limits and message
    /// sequence, and starts a data message when the frame begins one.
    fn begin_frame(&mut self, rx: &mut Rx, header: &FrameHeader) -> Result<(), ProtocolError> {
        let allowed_rsv = if self.compression.is_some() { RSV1 } else { 0 };
        if header.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let compressed = header.rsv & RSV1 != 0;
        // A frame of a compressed message carries deflate's output, which is
        // inflated as it arrives and bounded by the message limit after
        // decompression; its own bound allows deflate's worst-case expansion.
        let limit = if compressed
            || (header.opcode == OpCode::Continuation
                && rx.message.as_ref().is_some_and(|m| m.compressed))
        {
            self.config.compressed_frame_limit()
        } else {
            self.config.max_frame_size as u64
        };
        if header.payload_len > limit {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                limit: usize::try_from(limit).unwrap_or(usize::MAX),
            });
        }
        let kind = match header.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong | OpCode::Continuation if compressed => {
                return Err(ProtocolError::CompressedNonStartFrame);
            }
            OpCode::Close | OpCode::Ping | OpCode::Pong => return Ok(()),
            OpCode::Continuation => {
                let message = rx
                    .message
                    .as_mut()
                    .ok_or(ProtocolError::UnexpectedContinuation)?;
                message.fragments += 1;
                if message.fragments > self.config.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        limit: self.config.max_fragments,
                    });
                }
                if !message.compressed {
                    check_size(
                        message.size as u64 + header.payload_len,
                        self.config.max_message_size,
                    )?;
                }
                return Ok(());
            }
            OpCode::Text => MessageKind::Text,
            OpCode::Binary => MessageKind::Binary,
        };
        if rx.message.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        }
        if !compressed {
            check_size(header.payload_len, self.config.max_message_size)?;
        }
        rx.utf8.reset();
        rx.message = Some(InMessage {
            kind,
            compressed,
            fragments: 1,
            size: 0,
            buf: BytesMut::new(),
        });
        if self.config.receive_mode == ReceiveMode::Streaming {
            rx.events.push_back(Event::MessageStart(kind));
        }
        Ok(())
    }

    /// Handles a complete control frame.
    fn on_control(
        &mut self,
        rx: &mut Rx,
        opcode: OpCode,
        payload: Bytes,
    ) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping => {
                if self.config.auto_pong && !self.sent_close {
                    self.queue_auto_pong(&payload);
                }
                rx.events.push_back(Event::Ping(payload));
            }
            OpCode::Pong => rx.events.push_back(Event::Pong(payload)),
            _ => {
                let frame = CloseFrame::parse(&payload)?;
                self.received_close = true;
                if !self.sent_close {
                    // Echo the status code (RFC 6455 §5.5.1), without a reason.
                    let reply = frame.as_ref().map(|f| CloseFrame::new(f.code, ""));
                    self.queue_close(reply.as_ref());
                }
                self.state = State::Closed;
                rx.read_buf = BytesMut::new();
                rx.message = None;
                rx.events.push_back(Event::Close(frame));
            }
        }
        Ok(())
    }

    /// Takes the next chunk of a fragmented or compressed message's payload.
    fn on_data_chunk(&mut self, rx: &mut Rx, chunk: BytesMut) -> Result<(), ProtocolError> {
        let limit = self.config.max_message_size;
        let streaming = self.config.receive_mode == ReceiveMode::Streaming;
        let Some(message) = rx.message.as_mut() else {
            return Ok(());
        };
        let is_text = message.kind == MessageKind::Text;
        if message.compressed {
            let Some(compression) = self.compression.as_mut() else {
                return Err(ProtocolError::ReservedBits);
            };
            let mut scratch = BytesMut::new();
            let out = if streaming {
                &mut scratch
            } else {
                &mut message.buf
            };
            let before = out.len();
            compression.decompress(&chunk, out, limit)?;
            let inflated = &out[before..];
            if is_text {
                rx.utf8
                    .feed(inflated)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            message.size += inflated.len();
            if streaming && !scratch.is_empty() {
                rx.events.push_back(Event::MessageData(scratch.freeze()));
            }
        } else {
            if is_text {
                rx.utf8
                    .feed(&chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            message.size += chunk.len();
            if streaming {
                rx.events.push_back(Event::MessageData(chunk.freeze()));
            } else {
                message.buf.unsplit(chunk);
            }
        }
        Ok(())
    }

    /// Completes the current data message after its final frame.
    fn finish_message(&mut self, rx: &mut Rx) -> Result<(), ProtocolError> {
        let Some(mut message) = rx.message.take() else {
            return Ok(());
        };
        let streaming = self.config.receive_mode == ReceiveMode::Streaming;
        if message.compressed {
            let Some(compression) = self.compression.as_mut() else {
                return Err(ProtocolError::ReservedBits);
            };
            let mut scratch = BytesMut::new();
            let out = if streaming {
                &mut scratch
            } else {
                &mut message.buf
            };
            let before = out.len();
            compression.finish(out, self.config.max_message_size)?;
            if message.kind == MessageKind::Text {
                rx.utf8
                    .feed(&out[before..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            if streaming && !scratch.is_empty() {
                rx.events.push_back(Event::MessageData(scratch.freeze()));
            }
        }
        if message.kind == MessageKind::Text {
            rx.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let event = if streaming {
            Event::MessageEnd
        } else {
            let payload = message.buf.freeze();
            Event::Message(match message.kind {
                MessageKind::Text => Message::Text(Utf8Bytes::from_validated(payload)),
                MessageKind::Binary => Message::Binary(payload),
            })
        };
        rx.events.push_back(event);
        Ok(())
    }
}

/// What one [`Connection::step`] did.
enum Step {
    /// More bytes are needed.
    NeedMore,
    /// Progress was made; any events it made are in the queue.
    Progress,
    /// A whole single-frame message arrived (the queue was empty before the
    /// step and still is): handed back without going through the queue.
    Message(Message),
}

/// The uncompressed message that came in one frame, without copying.
#[inline]
fn on_single_frame_message(rx: &mut Rx, payload: Bytes) -> Result<Option<Message>, ProtocolError> {
    let Some(message) = rx.message.take() else {
        return Ok(None);
    };
    Ok(Some(match message.kind {
        MessageKind::Text => {
            rx.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            Message::Text(Utf8Bytes::from_validated(payload))
        }
        MessageKind::Binary => Message::Binary(payload),
    }))
}

/// Fails with 1009 when an uncompressed message would exceed `limit` bytes.
fn check_size(size: u64, limit: usize) -> Result<(), ProtocolError> {
    if size > limit as u64 {
        Err(ProtocolError::MessageTooLarge { limit })
    } else {
        Ok(())
    }
}
