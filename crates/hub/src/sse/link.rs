//! The link of one HTTP session: between the session's in-memory WebSocket
//! and the client's current stream, in a task of its own.
//!
//! Invariants:
//! - Posted commands are handed to the session in the order they arrived,
//!   as WebSocket messages, while its end takes them; what waits is bounded
//!   by the limit the link was made with (beyond it: a final `close` event
//!   with 1008, and the session ends).
//! - Every message from the session becomes one event numbered by the
//!   [`Replay`] window, kept until written and then while the window has
//!   room; the link reads no more from the session while the unwritten
//!   events fill the window (the session's outbox bound then applies).
//! - The session's close (code and reason) is the last numbered event; the
//!   stream then ends. A session whose stream is gone waits for a resume
//!   for `[http] resume_timeout`, then ends (the session sees its peer
//!   gone, 1006); a resume from an event that is no longer kept gets a
//!   `close` event with 4009 instead.
//! - The link is in the node's [`Links`] from its start until it ends.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use duplex::{Message, WebSocket};
use duplex_hub_proto::sse::{
    EVENT_BINARY, EVENT_CLOSE, RESUME_FAILED, Replay, close_data, write_comment, write_event,
};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};

use super::wire::Out;
use super::{PostError, messages_of};
use crate::control::Post;
use crate::hub::Hub;

/// How long writing one batch of events to a stream may take before the
/// stream counts as cut.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's HTTP sessions, by id (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Links {
    inner: Mutex<HashMap<Arc<str>, Arc<LinkShared>>>,
}

impl Links {
    pub(super) fn insert(&self, id: &Arc<str>, shared: Arc<LinkShared>) {
        self.lock().insert(id.clone(), shared);
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<LinkShared>> {
        self.lock().get(id).cloned()
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Hands posted commands to their session, if this node holds it.
    pub(crate) fn deliver(&self, post: Post) -> Result<(), PostError> {
        let shared = self.get(&post.session).ok_or(PostError::NotFound)?;
        shared.push(messages_of(post)?);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<LinkShared>>> {
        // Every update is one step: a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the request handlers share with a link's task.
#[derive(Debug)]
pub(crate) struct LinkShared {
    inbox: Mutex<Inbox>,
    /// The most bytes of commands that may wait.
    limit: usize,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct Inbox {
    commands: VecDeque<Message>,
    bytes: usize,
    overflowed: bool,
    /// The client ended the session (`DELETE`).
    ended: bool,
    /// A resumed stream, and the last event its client saw.
    attach: Option<(Out, u64)>,
}

impl LinkShared {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            inbox: Mutex::default(),
            limit,
            waker: AtomicWaker::new(),
        }
    }

    fn push(&self, messages: Vec<Message>) {
        let mut inbox = self.lock();
        for message in messages {
            inbox.bytes += message.payload().len();
            inbox.commands.push_back(message);
        }
        if inbox.bytes > self.limit {
            inbox.overflowed = true;
            inbox.commands.clear();
            inbox.bytes = 0;
        }
        drop(inbox);
        self.waker.wake();
    }

    /// The client is done with the session.
    pub(super) fn end(&self) {
        self.lock().ended = true;
        self.waker.wake();
    }

    /// A new stream for the session, after event `seen`.
    pub(super) fn attach(&self, out: Out, seen: u64) {
        self.lock().attach = Some((out, seen));
        self.waker.wake();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What woke the link.
enum Wake {
    /// Messages from the session, now in the window.
    Messages,
    /// The session's end closed (or the pipe broke).
    Ended,
    /// Commands were posted faster than the session takes them.
    Overflowed,
    /// A client resumes with a new stream.
    Attach(Out, u64),
    /// Time for a keep-alive comment.
    Ping,
    /// The client closed the stream.
    Cut,
    /// No stream came back in time.
    Expired,
    /// The client ended the session.
    Deleted,
}

/// Runs the link of session `id` until the session ends and its close is
/// written, or its stream stays gone past the resume timeout.
pub(super) async fn run(
    hub: Arc<Hub>,
    id: Arc<str>,
    shared: Arc<LinkShared>,
    ws: WebSocket<DuplexStream>,
    out: Option<Out>,
) {
    let mut link = Link {
        replay: Replay::new(hub.config.http.replay_bytes),
        out,
        ws,
        closed: false,
    };
    link.serve(&hub, &shared).await;
    hub.registry.links.remove(&id);
}

struct Link {
    replay: Replay,
    out: Option<Out>,
    ws: WebSocket<DuplexStream>,
    /// The session's close is in the window: nothing more comes.
    closed: bool,
}

impl Link {
    async fn serve(&mut self, hub: &Hub, shared: &LinkShared) {
        let http = &hub.config.http;
        let far = Duration::from_secs(86_400 * 365);
        let mut ping = Box::pin(tokio::time::sleep(http.ping_interval));
        let mut expiry = Box::pin(tokio::time::sleep(if self.out.is_some() {
            far
        } else {
            http.resume_timeout
        }));
        loop {
            if !self.write_unwritten().await {
                expiry
                    .as_mut()
                    .reset(tokio::time::Instant::now() + http.resume_timeout);
            }
            if self.closed && self.out.is_some() {
                if let Some(out) = self.out.take() {
                    out.finish().await;
                }
                return;
            }
            let wake = self.wait(shared, ping.as_mut(), expiry.as_mut()).await;
            match wake {
                Wake::Messages => {}
                Wake::Ended => {
                    // Our answer to the session's close goes out.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.flush()).await;
                    let (code, reason) =
                        self.ws.close_info().map_or((1006, String::new()), |info| {
                            (u16::from(info.code), info.reason.clone())
                        });
                    self.push_close(code, &reason);
                }
                Wake::Overflowed => {
                    self.push_close(
                        duplex_hub_proto::close::POLICY,
                        "commands posted faster than the session takes them",
                    );
                }
                Wake::Attach(mut out, seen) => match self.replay.resume(seen) {
                    Ok(()) => {
                        self.out = Some(out);
                        expiry.as_mut().reset(tokio::time::Instant::now() + far);
                    }
                    Err(error) => {
                        let mut event = Vec::new();
                        let data = close_data(RESUME_FAILED, error.reason());
                        let _ = write_event(&mut event, None, Some(EVENT_CLOSE), &data);
                        if out.write(&event).await.is_ok() {
                            out.finish().await;
                        }
                        if self.out.is_none() {
                            // The client starts afresh: this session is done.
                            return;
                        }
                    }
                },
                Wake::Ping => {
                    ping.as_mut()
                        .reset(tokio::time::Instant::now() + http.ping_interval);
                    if let Some(out) = &mut self.out {
                        let mut comment = Vec::new();
                        write_comment(&mut comment, "ping");
                        if tokio::time::timeout(WRITE_TIMEOUT, out.write(&comment))
                            .await
                            .map_or(true, |written| written.is_err())
                        {
                            self.out = None;
                            expiry
                                .as_mut()
                                .reset(tokio::time::Instant::now() + http.resume_timeout);
                        }
                    }
                }
                Wake::Cut => {
                    self.out = None;
                    expiry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + http.resume_timeout);
                }
                Wake::Expired => return,
                Wake::Deleted => {
                    // A clean close, as a WebSocket client's.
                    let close = self
                        .ws
                        .close(duplex::CloseCode::NORMAL, "the client ended the session");
                    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
                    if let Some(out) = self.out.take() {
                        out.finish().await;
                    }
                    return;
                }
            }
        }
    }

    /// Writes the events not written yet to the stream, if there is one;
    /// false when that failed (the stream is dropped).
    async fn write_unwritten(&mut self) -> bool {
        let Some(out) = &mut self.out else {
            return true;
        };
        let mut batch = Vec::new();
        for event in self.replay.unwritten() {
            batch.extend_from_slice(event);
        }
        if batch.is_empty() {
            return true;
        }
        match tokio::time::timeout(WRITE_TIMEOUT, out.write(&batch)).await {
            Ok(Ok(())) => {
                self.replay.written(self.replay.last());
                true
            }
            _ => {
                self.out = None;
                false
            }
        }
    }

    fn push_message(replay: &mut Replay, message: &Message) {
        let id = replay.next_id().to_string();
        let mut event = Vec::with_capacity(message.payload().len() + 32);
        let _ = match message {
            Message::Text(text) => write_event(&mut event, Some(&id), None, text.as_str()),
            Message::Binary(bytes) => {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                write_event(&mut event, Some(&id), Some(EVENT_BINARY), &data)
            }
        };
        replay.push(Bytes::from(event));
    }

    fn push_close(&mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        let id = self.replay.next_id().to_string();
        let mut event = Vec::new();
        let _ = write_event(
            &mut event,
            Some(&id),
            Some(EVENT_CLOSE),
            &close_data(code, reason),
        );
        self.replay.push(Bytes::from(event));
        self.closed = true;
    }

    /// Moves posted commands into the session while it takes them, and
    /// waits for the next thing to do.
    async fn wait(
        &mut self,
        shared: &LinkShared,
        mut ping: Pin<&mut tokio::time::Sleep>,
        mut expiry: Pin<&mut tokio::time::Sleep>,
    ) -> Wake {
        poll_fn(|cx| {
            shared.waker.register(cx.waker());
            let mut ws = Pin::new(&mut self.ws);
            {
                let mut inbox = shared.lock();
                if let Some((out, seen)) = inbox.attach.take() {
                    return Poll::Ready(Wake::Attach(out, seen));
                }
                if inbox.ended {
                    return Poll::Ready(Wake::Deleted);
                }
                if inbox.overflowed && !self.closed {
                    inbox.overflowed = false;
                    return Poll::Ready(Wake::Overflowed);
                }
                while !self.closed && !inbox.commands.is_empty() {
                    match ws.as_mut().poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            if let Some(message) = inbox.commands.pop_front() {
                                inbox.bytes -= message.payload().len();
                                // A failed send: the session closed; the
                                // read below reports it.
                                let _ = ws.as_mut().start_send(message);
                            }
                        }
                        Poll::Ready(Err(_)) => {
                            inbox.commands.clear();
                            inbox.bytes = 0;
                        }
                        Poll::Pending => break,
                    }
                }
            }
            let _ = ws.as_mut().poll_flush(cx);
            // Every message ready now goes into the window: written in one
            // batch after.
            let mut taken = false;
            while !self.closed && self.replay.has_room() {
                match ws.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(message))) => {
                        Self::push_message(&mut self.replay, &message);
                        taken = true;
                    }
                    Poll::Ready(Some(Err(_)) | None) if taken => {
                        // Reported at the next wait, after these are written.
                        return Poll::Ready(Wake::Messages);
                    }
                    Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(Wake::Ended),
                    Poll::Pending => break,
                }
            }
            if taken {
                return Poll::Ready(Wake::Messages);
            }
            if let Some(out) = &mut self.out {
                // A client sends nothing on its stream: a read that ends is
                // the stream cut (what it might send is ignored).
                let mut scratch = [0u8; 64];
                loop {
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut out.io).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                            return Poll::Ready(Wake::Cut);
                        }
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => return Poll::Ready(Wake::Cut),
                        Poll::Pending => break,
                    }
                }
                if ping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Ping);
                }
            } else if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Expired);
            }
            Poll::Pending
        })
        .await
    }
}
