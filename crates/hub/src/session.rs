//! One client connection to the hub, from `connect` to close.
//!
//! A session runs in a task of its own (see `server::serve_connection`) and
//! owns its WebSocket. It reads commands, answers them directly (each
//! command's work is in `commands`, the hooks' part in `hooks`), and drains
//! its [`Outbox`] (messages other connections published) into the same
//! socket.
//!
//! Invariants:
//! - Recoverable errors (a malformed command, a forbidden channel, a second
//!   subscribe …) get an `error` reply and the connection stays open. Only
//!   these end it: a bad token (4001), no `connect` in time (4001), an
//!   expired token (4002), a `connect` hook that refuses (4001) or fails
//!   (1013), a hook's `disconnect` answer (its 4000–4999 code; see
//!   `hooks`), a full outbox (4008, slow consumer), a rate limit
//!   broken again and again (1008), an oversized message (1009, by the
//!   WebSocket layer), shutdown (1001), and the server dropped or out of
//!   grace (no close frame: the peer sees 1006).
//! - The outbox is drained into the socket only while the socket's write
//!   buffer is under its high-water mark, so the memory a reader that does
//!   not read can pin is bounded by the outbox limit plus that mark.
//! - When the session ends (unless the server is gone), the publishes it
//!   read and handed to the broker finish first, within the close timeout:
//!   a client that closes right after its publish (`connect`, `publish`,
//!   close in one write) does not lose it. Their replies go out in front of
//!   our close frame when we close; after the peer's close nothing more may
//!   be sent, so a client that wants its replies waits for them before
//!   closing (as `duplex connect` does).
//! - When the session ends, it then closes its outbox, freeing what was
//!   queued; then it leaves every channel (presence and `leave` pushes
//!   follow) while it closes the connection, within the close timeout.
//! - Server API controls (see [`crate::control`]) are applied in the
//!   session's own task, between commands, after the publishes in flight
//!   are answered: a `disconnect` closes with its code and reason; a
//!   server-side `subscribe` follows the core's rule
//!   (`SessionState::server_subscribe`) and is announced with a
//!   `subscribed` push (no `id`) before its messages; an `unsubscribe` ends
//!   with an `unsubscribed` push after the channel's messages already
//!   queued; a `refresh` moves the expiry timer and is announced with a
//!   `refreshed` push. The session is in the node's registry from
//!   `connect` until it ends.
//! - A session on plain TCP quiet for `[heartbeat] park_after` (no message
//!   either way, nothing queued, no publish in flight) parks
//!   (`duplex::park`): its task ends and its WebSocket and [`Session`] wait
//!   in a slot until the client sends, its outbox gets a frame or a nudge,
//!   its phase timer or a keepalive fires, or the hub shuts down; then the
//!   same session goes on in a new task. It stays in every channel and in
//!   the node's registry meanwhile. TLS, HTTP/2 and SSE sessions keep their
//!   task.
//! - A session yields to others at least every 128 commands (tokio's
//!   cooperative budget, charged per command): a client allowed a high
//!   command rate cannot keep a worker from the other connections.
//! - Publishes are pipelined as the core's rule says
//!   (`duplex_hub_proto::session::overlaps_publishes`): up to
//!   [`MAX_PUBLISHES_IN_FLIGHT`] of them wait for the broker at once (with
//!   Redis, one round trip each, overlapped), each handed to the broker as it
//!   arrives, so a session's publishes reach the broker in the order sent.
//!   Replies still go out in command order: an ack waits for the acks before
//!   it, and any other command first waits for every publish in flight. With
//!   that many in flight the session stops reading until one is answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use duplex::{CloseCode, Message, WebSocket};
use duplex_hub_proto::session::{
    Close, MAX_PUBLISHES_IN_FLIGHT, Phase, SessionState, overlaps_publishes,
};
use duplex_hub_proto::{Encoding, ErrorCode, ServerMessage};
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::auth::Identity;
use crate::broker::{BoxFuture, Subscriber};
use crate::control::Control;
use crate::frame::{frame_of, prepare, to_message};
use crate::hub::{Hub, now_secs};
use crate::limits::{RateLimiter, Ticket, Verdict};
use crate::outbox::{Drained, Outbox};

mod commands;
mod hooks;
mod parked;

use parked::park;

/// What a connection brings from its handshake.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// A token from the handshake, already verified.
    pub(crate) identity: Option<Identity>,
    /// Its admission; released when the session ends.
    pub(crate) ticket: Ticket,
    /// Headers of its upgrade request that the proxy hooks forward.
    pub(crate) forwarded: http::HeaderMap,
}

/// A publish handed to the broker; resolves to its reply.
type PendingPublish = BoxFuture<'static, ServerMessage>;

/// How a session ends.
#[derive(Debug)]
enum End {
    /// We close the connection, with this code and reason.
    Close(Close),
    /// The server API closes the connection, with this code and reason.
    Disconnect(Box<(u16, String)>),
    /// The stream ended: the peer's close handshake, a protocol error (its
    /// close frame is queued) or a dead transport.
    Ended,
    /// The server is gone: no close frame (the peer sees 1006, and it is
    /// counted as such).
    Aborted,
}

/// What the session's wait returned.
enum Wake {
    Message(Message),
    /// The oldest publish in flight was answered (boxed: this enum is part
    /// of every session's future).
    Answered(Box<ServerMessage>),
    Ended,
    Overflowed,
    Deadline,
    /// The server API has controls for this session.
    Control,
    /// The server is gone: end now, without a close handshake.
    Aborted,
}

struct Session {
    hub: Arc<Hub>,
    /// The connection's admission, released when the session is dropped.
    ticket: Ticket,
    me: Subscriber,
    /// Boxed: most clients are anonymous, and this is in every session.
    identity: Option<Box<Identity>>,
    /// Its phase and channels, as the rules keep them.
    state: SessionState<Arc<str>>,
    rate: RateLimiter,
    /// The phase's timer: the connect timeout before `connect`, the token's
    /// expiry after it (none for anonymous clients).
    timer: Option<Pin<Box<Sleep>>>,
    /// Publishes waiting for the broker, oldest first; `None` when there
    /// are none (an idle session carries no queue).
    in_flight: Option<Box<FuturesOrdered<PendingPublish>>>,
}

/// Serves an upgraded hub connection until it ends: the future of the
/// connection's own task (see `server::serve_connection`).
pub(crate) fn run<S>(hub: Arc<Hub>, ws: WebSocket<S>, handshake: Handshake) -> SessionTask<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The envelope the handshake settled on (JSON without a subprotocol).
    let encoding = ws
        .protocol()
        .and_then(Encoding::from_subprotocol)
        .unwrap_or_default();
    SessionTask {
        state: TaskState::Waiting(ws, Session::new(hub, handshake, encoding)),
    }
}

/// The future of a hub connection's task, written by hand so that an idle
/// session costs its WebSocket and its [`Session`] and nothing more: the
/// task keeps this future's space for the connection's whole life. Acting
/// on a wake (a command, a broker's reply, the end) is boxed, and owns the
/// socket and the session until it is done.
pub(crate) struct SessionTask<S> {
    state: TaskState<S>,
}

/// What a [`SessionTask`] is doing. The variants differ in size on purpose:
/// the large one is where an idle session sits, and boxing it would cost an
/// allocation of its own.
#[allow(clippy::large_enum_variant)]
enum TaskState<S> {
    /// Waiting in [`Session::poll_wake`]: where an idle session sits.
    Waiting(WebSocket<S>, Session),
    /// Acting on a wake; gives the socket and the session back, with the
    /// end if the session ends.
    Acting(BoxFuture<'static, Acted<S>>),
    /// Closing the connection and leaving every channel.
    Finishing(BoxFuture<'static, ()>),
    Done,
}

/// What acting on a wake gives back: the socket, the session, and `Some`
/// when the session ends.
type Acted<S> = (WebSocket<S>, Session, Option<End>);

impl<S> Future for SessionTask<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                TaskState::Waiting(ws, session) => {
                    let Poll::Ready(wake) = session.poll_wake(cx, ws) else {
                        if ws.park_due() && session.in_flight.is_none() && park(&mut this.state) {
                            // Quiet: the task goes, the session waits parked.
                            return Poll::Ready(());
                        }
                        return Poll::Pending;
                    };
                    let TaskState::Waiting(mut ws, mut session) =
                        std::mem::replace(&mut this.state, TaskState::Done)
                    else {
                        unreachable!("matched above")
                    };
                    this.state = TaskState::Acting(Box::pin(async move {
                        // Each command costs the task one unit of tokio's
                        // cooperative budget: a connection whose socket
                        // holds thousands of commands yields between them
                        // rather than keep its worker from every other
                        // connection until it has handled them all.
                        tokio::task::consume_budget().await;
                        let end = session.on_wake(&mut ws, wake).await;
                        (ws, session, end)
                    }));
                }
                TaskState::Acting(acting) => {
                    let (ws, mut session, end) = std::task::ready!(acting.as_mut().poll(cx));
                    this.state = match end {
                        None => TaskState::Waiting(ws, session),
                        Some(end) => TaskState::Finishing(Box::pin(async move {
                            session.finish(ws, end).await;
                        })),
                    };
                }
                TaskState::Finishing(finishing) => {
                    std::task::ready!(finishing.as_mut().poll(cx));
                    this.state = TaskState::Done;
                }
                TaskState::Done => return Poll::Ready(()),
            }
        }
    }
}

impl Session {
    /// A session of `encoding` that has not sent `connect` yet.
    fn new(hub: Arc<Hub>, handshake: Handshake, encoding: Encoding) -> Self {
        let id = hub.next_client();
        let limits = &hub.config.limits;
        let rate = RateLimiter::new(crate::limits::now());
        let outbox = Outbox::with_encoding(limits.max_outbound_bytes, encoding);
        let timer = Some(Box::pin(tokio::time::sleep(limits.connect_timeout)));
        hub.metrics.connection_opened();
        if let Some(hooks) = &hub.hooks {
            hooks.remember(id, handshake.forwarded);
        }
        Self {
            me: Subscriber::new(id, outbox),
            identity: handshake.identity.map(Box::new),
            ticket: handshake.ticket,
            state: SessionState::new(),
            rate,
            timer,
            in_flight: None,
            hub,
        }
    }

    /// Closes the connection as `end` says, leaves every channel and counts
    /// the close.
    async fn finish<S>(&mut self, mut ws: WebSocket<S>, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Leaving runs beside the close, so neither waits for the other (a
        // broker round trip per channel with Redis; a close handshake that a
        // peer that does not read stretches to the close timeout). Its first
        // step closes the outbox: what it held (up to the limit, for a slow
        // consumer) is freed at once.
        let close_timeout = self.hub.ws_config.close_timeout;
        if !matches!(end, End::Aborted) {
            // The publishes already handed to the broker finish first (a
            // dropped Redis round trip may never reach Redis), their replies
            // written in front of our close frame when the socket still
            // takes them (not after the peer's close: RFC 6455 allows no
            // data after our answer to it).
            if tokio::time::timeout(close_timeout, self.settle(&mut ws))
                .await
                .is_err()
            {
                tracing::info!("publishes still in flight at the close timeout were abandoned");
            }
        }
        self.log_cut_off(&ws, &end);
        let closing = async {
            match end {
                End::Aborted => 1006,
                End::Close(Close { code, reason }) => {
                    let _ = ws.close(CloseCode::from(code), reason).await;
                    code
                }
                End::Disconnect(close) => {
                    let (code, reason) = *close;
                    let _ = ws.close(CloseCode::from(code), &reason).await;
                    code
                }
                End::Ended => {
                    // Write what is queued (our answer to a close, or the close
                    // frame of a protocol error), within the close timeout;
                    // nothing when the transport is dead or the peer gave up
                    // reading (1006: the stream already waited for it).
                    if ws
                        .close_info()
                        .is_none_or(|info| info.code != CloseCode::ABNORMAL)
                    {
                        let _ = tokio::time::timeout(close_timeout, ws.flush()).await;
                    }
                    ws.close_info().map_or(1006, |info| u16::from(info.code))
                }
            }
        };
        let ((), code) = tokio::join!(self.leave_all(), closing);
        self.hub.metrics.connection_closed(code);
        if self.state.phase() == Phase::Connected {
            self.hub.events.disconnected(&self.me, code).await;
        }
    }

    /// Logs at `info` (once per address per interval: see
    /// `crate::refusals`) a connection the hub cuts off: a close of ours
    /// other than shutdown (4001, 1008, 4008 …), or a protocol error's
    /// (1009 for an oversized message, 1002, 1007). A client's own close,
    /// shutdown and a dead transport are not logged.
    fn log_cut_off<S>(&self, ws: &WebSocket<S>, end: &End) {
        let (code, reason) = match end {
            End::Close(Close { code, reason }) if *code != 1001 => (*code, (*reason).to_owned()),
            End::Ended => match ws.close_info() {
                Some(info) if !info.was_clean && info.code != CloseCode::ABNORMAL => {
                    (u16::from(info.code), info.reason.clone())
                }
                _ => return,
            },
            _ => return,
        };
        let peer = self.ticket.address();
        if let Some(dropped) = self.hub.refusals.admit(peer) {
            tracing::info!(
                %peer,
                client = %self.me.client(),
                code,
                reason,
                dropped,
                "connection closed by the hub"
            );
        }
    }

    /// Acts on what woke the session; `Some` when the session ends.
    async fn on_wake<S>(&mut self, ws: &mut WebSocket<S>, wake: Wake) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match wake {
            Wake::Message(message) => {
                self.hub.metrics.message_in(message.payload().len());
                self.handle(ws, &message).await.err()
            }
            Wake::Answered(reply) => {
                self.write_reply(ws, *reply).await;
                None
            }
            Wake::Ended => Some(End::Ended),
            Wake::Aborted => Some(End::Aborted),
            Wake::Overflowed => {
                self.hub.metrics.slow_consumer();
                Some(End::Close(Close::SLOW_CONSUMER))
            }
            Wake::Deadline => self.deadline(ws).await,
            Wake::Control => self.apply_controls(ws).await,
        }
    }

    /// Applies the server API's controls waiting for this session, in
    /// order (see the module docs); `Some` when one ends it.
    async fn apply_controls<S>(&mut self, ws: &mut WebSocket<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let controls = self.hub.registry.take(self.me.id);
        if controls.is_empty() {
            return None;
        }
        self.settle(ws).await;
        for control in controls {
            match control {
                Control::Disconnect { code, reason, .. } => {
                    return Some(End::Disconnect(Box::new((code, reason))));
                }
                Control::Subscribe { channel, .. } => {
                    if let Some(push) = self.server_subscribe(channel).await {
                        self.write_reply(ws, push).await;
                    }
                }
                Control::Unsubscribe { channel, .. } => {
                    let Ok(name) = self.state.unsubscribe(&channel) else {
                        continue;
                    };
                    self.hub.broker.unsubscribe(&name, &self.me).await;
                    self.hub.metrics.unsubscribed(1);
                    let reason = "unsubscribed by the server";
                    self.hub
                        .events
                        .unsubscribed(&self.me, &name, Some(reason))
                        .await;
                    // After the channel's messages already queued.
                    let push = prepare(ServerMessage::Unsubscribed {
                        id: None,
                        channel,
                        reason: Some("unsubscribed by the server".to_owned()),
                    });
                    self.me
                        .outbox
                        .push(&push, crate::outbox::PublishTime::now());
                }
                // The registry keeps these; they reach no session.
                Control::Revoke { .. } | Control::Unrevoke { .. } => {}
                Control::Refresh { expires, .. } => {
                    self.timer = Some(Box::pin(sleep_until_unix(expires)));
                    if let Some(identity) = &mut self.identity {
                        identity.expires = expires;
                    }
                    let push = ServerMessage::Refreshed {
                        id: None,
                        expires: Some(expires),
                    };
                    self.write_reply(ws, push).await;
                }
            }
        }
        None
    }

    /// A server-side subscribe: the `subscribed` push (or an `error` push
    /// when the core refuses it), or nothing when there is nothing to do.
    async fn server_subscribe(&mut self, channel: String) -> Option<ServerMessage> {
        let limit = self.hub.config.limits.max_subscriptions;
        match self.state.server_subscribe(&channel, limit) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(refusal) => {
                let message = format!("server-side subscribe to {channel}: {refusal}");
                return Some(error(None, refusal.code(), &message));
            }
        }
        Some(
            self.join(None, &channel, None, 0)
                .await
                .unwrap_or_else(|e| {
                    let message = format!("server-side subscribe to {channel}: {e}");
                    error(None, ErrorCode::Unavailable, &message)
                }),
        )
    }

    /// Moves queued frames into the socket (while it has room), then waits
    /// for the next message, the end, an overflow, or the timer.
    fn poll_wake<S>(&mut self, cx: &mut Context<'_>, ws: &mut WebSocket<S>) -> Poll<Wake>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Before anything touches the socket (the shutdown trigger that
        // woke us would have it send 1001).
        if self.hub.sessions_aborted() {
            return Poll::Ready(Wake::Aborted);
        }
        if self.me.outbox.take_nudge() {
            return Poll::Ready(Wake::Control);
        }
        loop {
            let room = ws.high_water().saturating_sub(ws.buffered_amount());
            if room == 0 {
                if self.me.outbox.poll_overflowed(cx) {
                    return Poll::Ready(Wake::Overflowed);
                }
                break;
            }
            let mut oldest = None;
            let drained = self.me.outbox.poll_drain(cx, room, |queued| {
                oldest.get_or_insert(queued.published);
                // A failed send means our close was sent; the stream ends next.
                let _ = ws.send_prepared(&queued.frame);
            });
            match drained {
                Poll::Ready(Drained::Frames { count, bytes }) => {
                    if let Some(published) = oldest {
                        self.hub.metrics.delivery_latency(published.elapsed());
                    }
                    self.hub.metrics.messages_out(count, bytes);
                }
                Poll::Ready(Drained::Overflowed) => return Poll::Ready(Wake::Overflowed),
                Poll::Pending => break,
            }
        }
        if let Some(timer) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Deadline);
        }
        if let Some(in_flight) = &mut self.in_flight {
            if let Poll::Ready(reply) = in_flight.poll_next_unpin(cx) {
                if in_flight.is_empty() {
                    self.in_flight = None;
                }
                if let Some(reply) = reply {
                    return Poll::Ready(Wake::Answered(Box::new(reply)));
                }
            } else if in_flight.len() >= MAX_PUBLISHES_IN_FLIGHT {
                // Read no more until the broker answers one.
                return Poll::Pending;
            }
        }
        match ws.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(message))) => Poll::Ready(Wake::Message(message)),
            Poll::Ready(Some(Err(_)) | None) => Poll::Ready(Wake::Ended),
            Poll::Pending => {
                // Everything read is handled and everything queued written:
                // most hub clients now sit idle, so the buffers go back at
                // once (a busy one pays one allocation per batch).
                ws.shrink_buffers();
                Poll::Pending
            }
        }
    }

    /// Handles one message from the client.
    async fn handle<S>(&mut self, ws: &mut WebSocket<S>, message: &Message) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let encoding = self.me.outbox.encoding();
        let request = match message {
            Message::Binary(bytes) => encoding.decode_binary_command(bytes),
            Message::Text(_) => encoding.decode_command(frame_of(message)),
        };
        let id = match &request {
            Ok(request) => request.id,
            Err(error) => error.id,
        };
        if !request
            .as_ref()
            .is_ok_and(|request| overlaps_publishes(&request.command))
        {
            self.settle(ws).await;
        }
        let data = crate::limits::data_bytes(&request);
        let verdict = self
            .rate
            .check_data(&self.hub.rate_policy, crate::limits::now(), data);
        if verdict != Verdict::Allow {
            self.hub.metrics.rate_limited();
        }
        if let Some(close) = verdict.close() {
            return Err(End::Close(close));
        }
        if let Some(refusal) = verdict.refusal() {
            return self.reply(ws, refusal.to_reply(id)).await;
        }
        let request = match request {
            Ok(request) => request,
            Err(decode) => {
                let reply = error(decode.id, decode.code, &decode.message);
                return self.reply(ws, reply).await;
            }
        };
        let reply = self.execute(request).await?;
        match reply {
            Some(reply) => self.reply(ws, reply).await,
            None => Ok(()),
        }
    }

    /// Writes a reply after the replies to every publish in flight.
    async fn reply<S>(&mut self, ws: &mut WebSocket<S>, reply: ServerMessage) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.settle(ws).await;
        self.write_reply(ws, reply).await;
        Ok(())
    }

    /// Waits for every publish in flight and writes their replies, in order.
    async fn settle<S>(&mut self, ws: &mut WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(mut in_flight) = self.in_flight.take() {
            while let Some(reply) = in_flight.next().await {
                self.write_reply(ws, reply).await;
            }
        }
    }

    /// Writes a reply now; an error reply is counted.
    async fn write_reply<S>(&mut self, ws: &mut WebSocket<S>, reply: ServerMessage)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let ServerMessage::Error { code, .. } = &reply {
            self.hub.metrics.error(code.as_str());
        }
        let message = to_message(self.me.outbox.encoding().encode_server(&reply));
        self.hub.metrics.messages_out(1, message.payload().len());
        // A failed write ends the stream too; the next read reports it.
        let _ = ws.feed(message).await;
    }

    /// Leaves every channel (the session is ending).
    async fn leave_all(&mut self) {
        let channels = self.quit();
        leave_channels(&self.hub, &self.me, channels).await;
    }

    /// What leaving does at once: out of the node's registry and the
    /// hooks' memory, the outbox closed (what it held freed), the channels
    /// taken from the session and counted out. Returns the channels, for
    /// the broker.
    fn quit(&mut self) -> Vec<Arc<str>> {
        self.hub.registry.remove(&self.me);
        if let Some(hooks) = &self.hub.hooks {
            hooks.forget(self.me.id);
        }
        self.me.outbox.close();
        let channels = self.state.take_all();
        self.hub.metrics.unsubscribed(channels.len());
        channels
    }

    /// Ends a session whose connection went without its task (a parked
    /// one: see `duplex::park::Resume::abandon`) as [`Session::finish`]
    /// would after a close without a close frame (1006). The registry, the
    /// outbox and the gauges are settled at once; leaving the channels at
    /// the broker and the disconnect event run in a task when the runtime
    /// takes one (one shutting down takes none: its hub is going too).
    fn abandon(mut self) {
        let channels = self.quit();
        self.hub.metrics.connection_closed(1006);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let connected = self.state.phase() == Phase::Connected;
            let Self { hub, me, .. } = self;
            drop(runtime.spawn(async move {
                leave_channels(&hub, &me, channels).await;
                if connected {
                    hub.events.disconnected(&me, 1006).await;
                }
            }));
        }
    }
}

/// Takes session `me` out of `channels` at the broker. (Not a method: its
/// future must not hold a `&Session`, which is not `Sync`.)
async fn leave_channels(hub: &Hub, me: &Subscriber, channels: Vec<Arc<str>>) {
    for channel in channels {
        hub.broker.unsubscribe(&channel, me).await;
    }
}

fn error(id: Option<u64>, code: ErrorCode, message: &str) -> ServerMessage {
    ServerMessage::Error {
        id,
        code,
        message: message.to_owned(),
    }
}

/// A sleep that ends at `unix_secs` on the wall clock.
fn sleep_until_unix(unix_secs: u64) -> Sleep {
    let left = unix_secs.saturating_sub(now_secs());
    tokio::time::sleep(Duration::from_secs(left))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub session's task holds its future for the connection's whole
    /// life (boxed: see `server::serve_connection`): the WebSocket and the
    /// session, nothing more, within jemalloc's 256-byte class (the next is
    /// 320). The transport is a
    /// stand-in of the size of tokio's `TcpStream` in an optimized build
    /// (32 bytes; a debug build's has 8 more).
    #[tokio::test]
    async fn a_session_task_stays_small() {
        struct TcpSized(#[expect(dead_code, reason = "only its size matters")] [usize; 4]);
        impl AsyncRead for TcpSized {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Pending
            }
        }
        impl AsyncWrite for TcpSized {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Poll::Pending
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                Poll::Pending
            }
            fn poll_shutdown(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Pending
            }
        }
        let hub = Hub::new(crate::HubConfig::default()).unwrap();
        let ws = WebSocket::from_parts(
            TcpSized([0; 4]),
            duplex::proto::connection::Connection::server(hub.ws_config.protocol.clone()),
            &hub.ws_config,
            None,
        );
        let ticket = hub.admission.try_admit([127, 0, 0, 1].into()).unwrap();
        let handshake = Handshake {
            identity: None,
            ticket,
            forwarded: http::HeaderMap::new(),
        };
        let session = Session::new(hub.clone(), handshake, Encoding::Json);
        let session_size = std::mem::size_of_val(&session);
        let websocket = std::mem::size_of_val(&ws);
        let task = SessionTask {
            state: TaskState::Waiting(ws, session),
        };
        let size = std::mem::size_of_val(&task);
        eprintln!("session task: {size} bytes: WebSocket {websocket}, Session {session_size}");
        assert!(
            size <= websocket + session_size + 8 && size <= 256,
            "a session's future grew to {size} bytes"
        );
    }

    /// A parked session holds its slot (the WebSocket without its
    /// transport, the bare socket and the session) instead of its task and
    /// tokio's registration (a boxed 256-byte future, a 128-byte task cell
    /// and 256 bytes of registration): within jemalloc's 256-byte class.
    #[test]
    fn a_parked_session_stays_small() {
        let size = duplex::park::slot_size::<parked::Parked>();
        eprintln!("parked session: {size} bytes");
        assert!(size <= 256, "a parked session grew to {size} bytes");
    }
}
