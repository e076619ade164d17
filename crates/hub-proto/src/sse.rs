//! The hub's HTTP transports, sans I/O: Server-Sent Events framing, the
//! bounded replay window a session's stream resumes from, and the resume
//! token of the read-only `/sse` endpoint.
//!
//! A hub session can run over two plain HTTP requests instead of a
//! WebSocket: its pushes and replies stream down as `text/event-stream`
//! events (one protocol message per event, its JSON as the event's `data`),
//! and its commands go up as `POST`s. The same messages, rules, limits and
//! close reasons apply; this module holds what is particular to the
//! transport.
//!
//! Invariants:
//! - [`write_event`] writes one event whose `data` lines, joined with `\n`,
//!   give back exactly the text passed in (a `\r`, `\n` or `\r\n` in it
//!   splits lines, as the SSE parser joins them with `\n`); an `id` or
//!   `event` never holds a line break or NUL (refused with `None`).
//! - A [`Replay`] window numbers events 1, 2, 3 … (the SSE `id`), keeps
//!   every event not yet written to a stream, and keeps written ones only
//!   while the window holds at most its limit in bytes: its size is bounded
//!   by the limit plus the events not written yet, which the driver bounds
//!   by reading no more from the session while [`Replay::has_room`] is
//!   false (the session's own outbox limit then applies: 4008).
//! - [`Replay::resume`] from the id a client last saw succeeds only when
//!   every later event is still kept; otherwise the client is told why and
//!   recovers as after any reconnect (channels' offsets and epochs).
//! - A [`Positions`] token (the read-only endpoint's `Last-Event-ID`) names
//!   one `(epoch, offset)` per channel, in the order of the request's
//!   channels; a token that does not parse, or names another number of
//!   channels, is ignored as a whole (the stream starts live).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::Since;

/// The event a session's stream starts with: its `data` is
/// `{"session":ID,"resume":MS,"ping":MS}`.
pub const EVENT_OPEN: &str = "open";
/// The last event of a stream whose session ended: its `data` is
/// `{"code":N,"reason":TEXT}`, the WebSocket close the session would have
/// sent.
pub const EVENT_CLOSE: &str = "close";
/// A binary frame of the session (a `message` or `signal` push whose data
/// are bytes), its bytes in standard base64 as the event's `data`.
pub const EVENT_BINARY: &str = "binary";

/// The close code of a stream that cannot be resumed: the session is gone,
/// lives on another node, or the events after the client's `Last-Event-ID`
/// are no longer kept. The client reconnects (a new session) and recovers
/// its channels from their offsets, as after any drop.
pub const RESUME_FAILED: u16 = 4009;

/// Appends one SSE event to `out`: `id:` and `event:` lines when given,
/// one `data:` line per line of `data`, and the blank line that ends it.
/// `None` (nothing written) when `id` or `event` holds a line break or NUL.
pub fn write_event(
    out: &mut Vec<u8>,
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
) -> Option<()> {
    let bad = |field: &str| field.contains(['\r', '\n', '\0']);
    if id.is_some_and(bad) || event.is_some_and(bad) {
        return None;
    }
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest.as_bytes()[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
    Some(())
}

/// Appends an SSE comment (a keep-alive the client's parser ignores).
pub fn write_comment(out: &mut Vec<u8>, text: &str) {
    out.push(b':');
    for line in text.split(['\r', '\n']) {
        out.push(b' ');
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"\n\n");
}

/// The `data` of a [`EVENT_CLOSE`] event.
pub fn close_data(code: u16, reason: &str) -> String {
    serde_json::json!({ "code": code, "reason": reason }).to_string()
}

/// Why a stream cannot resume from a client's last event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The id is not a number this window gave out.
    #[error("unknown event id")]
    Unknown,
    /// Events after it are no longer kept (the window is bounded).
    #[error("events after {0} are no longer kept")]
    Evicted(u64),
}

impl ResumeError {
    /// The close reason a client is told.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "resume: unknown event id",
            Self::Evicted(_) => "resume: the events after Last-Event-ID are no longer kept",
        }
    }
}

/// A session's recent events, by number, bounded in bytes (see the module
/// docs).
#[derive(Debug)]
pub struct Replay {
    events: VecDeque<(u64, Bytes)>,
    /// Bytes of `events`.
    bytes: usize,
    /// Bytes of the events after `written`.
    unwritten: usize,
    limit: usize,
    /// The number of the newest event (0: none yet).
    last: u64,
    /// Every event up to this one was written to a stream.
    written: u64,
}

impl Replay {
    /// An empty window keeping up to `limit` bytes of written events.
    pub fn new(limit: usize) -> Self {
        Self {
            events: VecDeque::new(),
            bytes: 0,
            unwritten: 0,
            limit,
            last: 0,
            written: 0,
        }
    }

    /// The number the next event gets (its SSE `id`).
    pub fn next_id(&self) -> u64 {
        self.last + 1
    }

    /// The newest event's number (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Keeps `event`, numbered [`Replay::next_id`], as not written yet.
    pub fn push(&mut self, event: Bytes) -> u64 {
        self.last += 1;
        self.bytes += event.len();
        self.unwritten += event.len();
        self.events.push_back((self.last, event));
        self.evict();
        self.last
    }

    /// Whether the driver may take more events from the session: the events
    /// not written yet stay under the limit.
    pub fn has_room(&self) -> bool {
        self.unwritten < self.limit
    }

    /// The events not written yet, oldest first.
    pub fn unwritten(&self) -> impl Iterator<Item = &Bytes> {
        let written = self.written;
        self.events
            .iter()
            .filter(move |(id, _)| *id > written)
            .map(|(_, event)| event)
    }

    /// Every event up to `id` was written to a stream: they may now go
    /// when the window is over its limit.
    pub fn written(&mut self, id: u64) {
        let id = id.min(self.last);
        if id <= self.written {
            return;
        }
        let newly: usize = self
            .events
            .iter()
            .filter(|(n, _)| *n > self.written && *n <= id)
            .map(|(_, event)| event.len())
            .sum();
        self.unwritten -= newly;
        self.written = id;
        self.evict();
    }

    /// A new stream resumes after event `seen` (0: the client saw none): the
    /// events after it are to be written again. An error when some of them
    /// are gone, or `seen` was never given out.
    pub fn resume(&mut self, seen: u64) -> Result<(), ResumeError> {
        if seen > self.last {
            return Err(ResumeError::Unknown);
        }
        let first_kept = self.events.front().map_or(self.last + 1, |(id, _)| *id);
        if seen + 1 < first_kept {
            return Err(ResumeError::Evicted(seen));
        }
        self.written = seen;
        self.unwritten = self
            .events
            .iter()
            .filter(|(id, _)| *id > seen)
            .map(|(_, event)| event.len())
            .sum();
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops written events, oldest first, while over the limit.
    fn evict(&mut self) {
        while self.bytes > self.limit {
            match self.events.front() {
                Some((id, event)) if *id <= self.written => {
                    self.bytes -= event.len();
                    self.events.pop_front();
                }
                _ => break,
            }
        }
    }
}

/// Parses a session stream's `Last-Event-ID` (a decimal event number).
pub fn parse_event_id(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The read-only endpoint's resume token: where each of the request's
/// channels stands, in the request's order (`EPOCH:OFFSET,EPOCH:OFFSET…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions(Vec<Option<Since>>);

/// The longest epoch a token carries (the hub's are 8 characters).
const MAX_EPOCH: usize = 32;

impl Positions {
    /// No position yet for any of `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self(vec![None; channels])
    }

    /// Parses a `Last-Event-ID` for `channels` channels; `None` when it
    /// does not parse or names another number of channels.
    pub fn parse(text: &str, channels: usize) -> Option<Self> {
        let parts: Vec<&str> = text.trim().split(',').collect();
        if parts.len() != channels {
            return None;
        }
        let mut positions = Vec::with_capacity(channels);
        for part in parts {
            if part.is_empty() {
                positions.push(None);
                continue;
            }
            let (epoch, offset) = part.split_once(':')?;
            let valid_epoch = !epoch.is_empty()
                && epoch.len() <= MAX_EPOCH
                && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
            if !valid_epoch {
                return None;
            }
            positions.push(Some(Since {
                epoch: epoch.to_owned(),
                offset: parse_event_id(offset)?,
            }));
        }
        Some(Self(positions))
    }

    /// Where channel `index` stands (the `since` to resubscribe with).
    pub fn get(&self, index: usize) -> Option<&Since> {
        self.0.get(index).and_then(Option::as_ref)
    }

    /// Channel `index` now stands at `offset` of `epoch`.
    pub fn set(&mut self, index: usize, epoch: &str, offset: u64) {
        if let Some(slot) = self.0.get_mut(index) {
            match slot {
                Some(since) if since.epoch == epoch => since.offset = offset,
                _ => {
                    *slot = Some(Since {
                        epoch: epoch.to_owned(),
                        offset,
                    })
                }
            }
        }
    }

    /// Moves channel `index` to `offset` in its current epoch (a message
    /// delivered); nothing before its epoch is known.
    pub fn advance(&mut self, index: usize, offset: u64) {
        if let Some(Some(since)) = self.0.get_mut(index) {
            since.offset = offset;
        }
    }

    /// The token, as the event's `id`.
    pub fn token(&self) -> String {
        let mut out = String::new();
        for (i, position) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            if let Some(since) = position {
                out.push_str(&since.epoch);
                out.push(':');
                out.push_str(&since.offset.to_string());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: Option<&str>, name: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        write_event(&mut out, id, name, data).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn events_carry_data_line_by_line() {
        assert_eq!(
            event(Some("7"), None, r#"{"op":"pong"}"#),
            "id: 7\ndata: {\"op\":\"pong\"}\n\n"
        );
        assert_eq!(
            event(None, Some("close"), "a\nb\r\nc\rd"),
            "event: close\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(None, None, ""), "data: \n\n");
        assert!(write_event(&mut Vec::new(), Some("1\n2"), None, "x").is_none());
        assert!(write_event(&mut Vec::new(), None, Some("a\rb"), "x").is_none());
        let mut out = Vec::new();
        write_comment(&mut out, "ping\nnow");
        assert_eq!(out, b": ping now\n\n");
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn the_window_keeps_what_was_not_written_and_bounds_the_rest() {
        let mut replay = Replay::new(100);
        assert_eq!(replay.next_id(), 1);
        for _ in 0..3 {
            replay.push(bytes(40));
        }
        // Nothing written yet: all kept, over the limit, and no room.
        assert_eq!(replay.bytes(), 120);
        assert!(!replay.has_room());
        assert_eq!(replay.unwritten().count(), 3);
        replay.written(3);
        // Written: the oldest goes until under the limit.
        assert_eq!(replay.bytes(), 80);
        assert!(replay.has_room());
        assert_eq!(replay.unwritten().count(), 0);
        // Resume from 1 (events 2 and 3 kept): both again.
        replay.resume(1).unwrap();
        assert_eq!(replay.unwritten().count(), 2);
        assert!(replay.has_room());
        // From 0: event 1 is gone.
        assert_eq!(replay.resume(0), Err(ResumeError::Evicted(0)));
        assert_eq!(replay.resume(4), Err(ResumeError::Unknown));
        replay.resume(3).unwrap();
        assert_eq!(replay.unwritten().count(), 0);
        assert_eq!(replay.last(), 3);
    }

    #[test]
    fn an_empty_window_resumes_from_zero() {
        let mut replay = Replay::new(10);
        replay.resume(0).unwrap();
        assert_eq!(replay.resume(1), Err(ResumeError::Unknown));
        // One event over the limit is still kept until written.
        replay.push(bytes(50));
        assert_eq!(replay.bytes(), 50);
        replay.written(1);
        assert_eq!(replay.bytes(), 0);
        replay.resume(1).unwrap();
        assert_eq!(replay.resume(0), Err(ResumeError::Evicted(0)));
    }

    #[test]
    fn event_ids_parse_strictly() {
        assert_eq!(parse_event_id(" 42 "), Some(42));
        for bad in ["", "-1", "1.5", "x", "12345678901234567"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn positions_round_trip_in_channel_order() {
        let mut positions = Positions::new(3);
        assert_eq!(positions.token(), ",,");
        positions.set(0, "ab12cd34", 5);
        positions.set(2, "zz", 0);
        positions.advance(2, 9);
        positions.advance(1, 3); // no epoch known: nothing
        let token = positions.token();
        assert_eq!(token, "ab12cd34:5,,zz:9");
        let parsed = Positions::parse(&token, 3).unwrap();
        assert_eq!(parsed, positions);
        assert_eq!(parsed.get(0).unwrap().offset, 5);
        assert!(parsed.get(1).is_none());
        // A new epoch replaces the old position.
        positions.set(0, "new", 1);
        assert_eq!(positions.get(0).unwrap().epoch, "new");
        for bad in ["ab:5,,zz:9,", "ab:5", "a-b:5,,", ":5,,", "ab:x,,", "ab,,"] {
            assert_eq!(Positions::parse(bad, 3), None, "{bad}");
        }
    }

    #[test]
    fn close_data_is_json() {
        assert_eq!(
            close_data(4001, "bad \"token\""),
            r#"{"code":4001,"reason":"bad \"token\""}"#
        );
    }
}
