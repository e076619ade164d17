//! One client connection to the hub, from `connect` to close.
//!
//! A session runs in its connection's task and owns its WebSocket. It reads
//! commands, answers them directly, and drains its [`Outbox`] (messages other
//! connections published) into the same socket.
//!
//! Invariants:
//! - Recoverable errors (a malformed command, a forbidden channel, a second
//!   subscribe …) get an `error` reply and the connection stays open. Only
//!   these end it: a bad token (4001), no `connect` in time (4001), an
//!   expired token (4002), a full outbox (4008, slow consumer), a rate limit
//!   broken again and again (1008), an oversized message (1009, by the
//!   WebSocket layer), and shutdown (1001).
//! - The outbox is drained into the socket only while the socket's write
//!   buffer is under its high-water mark, so the memory a reader that does
//!   not read can pin is bounded by the outbox limit plus that mark.
//! - When the session ends, its outbox is closed and it leaves every channel
//!   (presence and `leave` pushes follow).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use duplex::{CloseCode, Message, WebSocket};
use duplex_hub_proto::{
    ClientInfo, Command, ErrorCode, Request, ServerMessage, Since, close, decode_binary_command,
    decode_command, encode_server,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::auth::{Action, Identity};
use crate::broker::{Publish, Subscribe, Subscriber};
use crate::config::{Permission, SYS_NAMESPACE};
use crate::frame::{frame_of, to_message};
use crate::hub::{Hub, now_ms, now_secs};
use crate::limits::{RateLimiter, Ticket, Verdict};
use crate::outbox::{Drained, Outbox};

/// What a connection brings from its handshake.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// A token from the handshake, already verified.
    pub(crate) identity: Option<Identity>,
    /// Its admission; released when the session ends.
    pub(crate) ticket: Ticket,
}

/// Why a session ends from our side: the close code and reason to send.
#[derive(Debug)]
struct End(u16, &'static str);

/// What the session's wait returned.
enum Wake {
    Message(Message),
    Ended,
    Overflowed,
    Deadline,
}

/// What the one timer of a session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    Connect,
    TokenExpiry,
}

struct Session {
    hub: Arc<Hub>,
    /// The connection's admission, released when the session is dropped.
    _ticket: Ticket,
    me: Subscriber,
    identity: Option<Identity>,
    connected: bool,
    channels: Vec<Arc<str>>,
    rate: RateLimiter,
    timer: Option<(Deadline, Pin<Box<Sleep>>)>,
}

/// Serves one hub connection until it ends.
pub(crate) async fn run<S>(hub: Arc<Hub>, upgraded: Box<(WebSocket<S>, Handshake)>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Everything here lives as long as the connection: keep the locals few
    // (each is a slot in this future for its whole life).
    let (mut ws, handshake) = *upgraded;
    let mut session = Session::new(hub, handshake);
    let end = session.serve(&mut ws).await;
    // The ending is boxed for the same reason as command handling.
    Box::pin(session.finish(ws, end)).await;
}
impl Session {
    /// A session that has not sent `connect` yet.
    fn new(hub: Arc<Hub>, handshake: Handshake) -> Self {
        let (id, client) = hub.next_client();
        let limits = &hub.config.limits;
        let rate = RateLimiter::new(
            limits.messages_per_second,
            limits.burst,
            limits.rate_strikes,
            StdInstant::now(),
        );
        let outbox = Arc::new(Outbox::new(limits.max_outbound_bytes));
        let timer = Some((
            Deadline::Connect,
            Box::pin(tokio::time::sleep(limits.connect_timeout)),
        ));
        hub.metrics.connection_opened();
        Self {
            me: Subscriber {
                id,
                info: ClientInfo {
                    client,
                    user: String::new(),
                },
                outbox,
            },
            identity: handshake.identity,
            _ticket: handshake.ticket,
            connected: false,
            channels: Vec::new(),
            rate,
            timer,
            hub,
        }
    }

    /// Closes the connection (with our code, if we end it), leaves every
    /// channel and counts the close.
    async fn finish<S>(&mut self, mut ws: WebSocket<S>, end: Option<End>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let code = match end {
            Some(End(code, reason)) => {
                let _ = ws.close(CloseCode::from(code), reason).await;
                code
            }
            None => {
                // The stream ended: a close handshake, a protocol error (its
                // close frame is queued) or a dead transport. Write what is
                // queued, within the close timeout.
                let _ = tokio::time::timeout(self.hub.ws_config.close_timeout, ws.flush()).await;
                ws.close_info().map_or(1006, |info| u16::from(info.code))
            }
        };
        self.leave_all().await;
        self.hub.metrics.connection_closed(code);
    }

    /// Runs until the connection ends; returns the close to send, if ours.
    async fn serve<S>(&mut self, ws: &mut WebSocket<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            match poll_fn(|cx| self.poll_wake(cx, ws)).await {
                Wake::Message(message) => {
                    self.hub.metrics.message_in(message.payload().len());
                    // Boxed: handling a command may await the broker and the
                    // socket; an idle session should not carry that space.
                    if let Err(end) = Box::pin(self.handle(ws, &message)).await {
                        return Some(end);
                    }
                }
                Wake::Ended => return None,
                Wake::Overflowed => {
                    self.hub.metrics.slow_consumer();
                    return Some(End(close::SLOW_CONSUMER, "slow consumer"));
                }
                Wake::Deadline => {
                    return Some(match self.timer.take() {
                        Some((Deadline::TokenExpiry, _)) => {
                            End(close::TOKEN_EXPIRED, "token expired")
                        }
                        _ => End(close::UNAUTHORIZED, "no connect in time"),
                    });
                }
            }
        }
    }

    /// Moves queued frames into the socket (while it has room), then waits
    /// for the next message, the end, an overflow, or the timer.
    fn poll_wake<S>(&mut self, cx: &mut Context<'_>, ws: &mut WebSocket<S>) -> Poll<Wake>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
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
        if let Some((_, timer)) = &mut self.timer
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Wake::Deadline);
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
        let request = match message {
            Message::Binary(bytes) => decode_binary_command(bytes),
            Message::Text(_) => decode_command(frame_of(message)),
        };
        let id = match &request {
            Ok(request) => request.id,
            Err(error) => error.id,
        };
        match self.rate.check(StdInstant::now()) {
            Verdict::Allow => {}
            Verdict::Reject => {
                self.hub.metrics.rate_limited();
                let error = error(id, ErrorCode::RateLimited, "too many messages; slow down");
                return self.reply(ws, error).await;
            }
            Verdict::Close => {
                self.hub.metrics.rate_limited();
                return Err(End(close::POLICY, "rate limit exceeded"));
            }
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

    /// Writes a reply; an error reply is counted.
    async fn reply<S>(&mut self, ws: &mut WebSocket<S>, reply: ServerMessage) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let ServerMessage::Error { code, .. } = &reply {
            self.hub.metrics.error(code.as_str());
        }
        let message = to_message(encode_server(&reply));
        self.hub.metrics.messages_out(1, message.payload().len());
        // A failed write ends the stream too; the next read reports it.
        let _ = ws.feed(message).await;
        Ok(())
    }

    /// Carries out a command; returns the reply, if any.
    async fn execute(&mut self, request: Request) -> Result<Option<ServerMessage>, End> {
        let id = request.id;
        if !self.connected && !matches!(request.command, Command::Connect { .. }) {
            return Ok(Some(error(
                id,
                ErrorCode::NotConnected,
                "send connect first",
            )));
        }
        let reply = match request.command {
            Command::Connect { token, .. } => return self.connect(id, token),
            Command::Refresh { token } => self.refresh(id, &token)?,
            Command::Subscribe {
                channel,
                since,
                recent,
            } => self.subscribe(id, channel, since, recent).await,
            Command::Unsubscribe { channel } => self.unsubscribe(id, &channel).await,
            Command::Publish { channel, data, key } => {
                if let Some(refused) = self.refuse(id, Action::Publish, &channel) {
                    return Ok(Some(refused));
                }
                let publish = Publish {
                    channel: channel.as_str().into(),
                    data,
                    from: self.me.info.clone(),
                    key,
                    time: now_ms(),
                };
                match self.hub.broker.publish(publish).await {
                    Ok(published) => ServerMessage::Published {
                        id,
                        channel,
                        offset: published.offset,
                        duplicate: published.duplicate,
                    },
                    Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
                }
            }
            Command::Presence { channel } => {
                if let Some(refused) = self.refuse(id, Action::Presence, &channel) {
                    return Ok(Some(refused));
                }
                if !self.hub.config.namespace(&channel).presence {
                    return Ok(Some(error(
                        id,
                        ErrorCode::Forbidden,
                        "presence is off in this namespace",
                    )));
                }
                match self.hub.broker.presence(&channel).await {
                    Ok(clients) => ServerMessage::Presence {
                        id,
                        channel,
                        clients,
                    },
                    Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
                }
            }
            Command::Signal { channel, data } => {
                if let Some(refused) = self.refuse(id, Action::Publish, &channel) {
                    return Ok(Some(refused));
                }
                match self.hub.broker.signal(&channel, &self.me, data).await {
                    Ok(()) if id.is_some() => ServerMessage::Ok { id },
                    Ok(()) => return Ok(None),
                    Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
                }
            }
            Command::Ping => ServerMessage::Pong { id },
        };
        Ok(Some(reply))
    }

    fn connect(
        &mut self,
        id: Option<u64>,
        token: Option<String>,
    ) -> Result<Option<ServerMessage>, End> {
        if self.connected {
            return Ok(Some(error(
                id,
                ErrorCode::AlreadyConnected,
                "already connected",
            )));
        }
        if let Some(token) = token {
            self.identity = Some(self.verify(&token)?);
        }
        self.connected = true;
        self.me.info.user = self
            .identity
            .as_ref()
            .map(|identity| identity.user.clone())
            .unwrap_or_default();
        let expires = self.identity.as_ref().map(|identity| identity.expires);
        self.timer = expires.map(|at| (Deadline::TokenExpiry, Box::pin(sleep_until_unix(at))));
        Ok(Some(ServerMessage::Connected {
            id,
            client: self.me.info.client.clone(),
            user: self.me.info.user.clone(),
            version: duplex_hub_proto::VERSION,
            expires,
            ping: self.hub.config.heartbeat.ping_interval.as_secs(),
        }))
    }

    fn refresh(&mut self, id: Option<u64>, token: &str) -> Result<ServerMessage, End> {
        let identity = self.verify(token)?;
        if identity.user != self.me.info.user {
            return Ok(error(
                id,
                ErrorCode::Unauthorized,
                "the new token is for another user",
            ));
        }
        let expires = identity.expires;
        self.timer = Some((Deadline::TokenExpiry, Box::pin(sleep_until_unix(expires))));
        self.identity = Some(identity);
        Ok(ServerMessage::Refreshed {
            id,
            expires: Some(expires),
        })
    }

    /// Verifies a token; a bad one ends the connection with 4001.
    fn verify(&self, token: &str) -> Result<Identity, End> {
        let Some(verifier) = &self.hub.verifier else {
            return Err(End(close::UNAUTHORIZED, "this hub does not take tokens"));
        };
        verifier.verify(token, now_secs()).map_err(|e| {
            self.hub.metrics.error(ErrorCode::Unauthorized.as_str());
            tracing::debug!(error = %e, "token refused");
            End(close::UNAUTHORIZED, "invalid or expired token")
        })
    }

    async fn subscribe(
        &mut self,
        id: Option<u64>,
        channel: String,
        since: Option<Since>,
        recent: u32,
    ) -> ServerMessage {
        if self.channels.iter().any(|c| **c == *channel) {
            return error(id, ErrorCode::AlreadySubscribed, "already subscribed");
        }
        if self.channels.len() >= self.hub.config.limits.max_subscriptions {
            return error(
                id,
                ErrorCode::TooManyChannels,
                "too many subscriptions on this connection",
            );
        }
        if let Some(refused) = self.refuse(id, Action::Subscribe, &channel) {
            return refused;
        }
        let name: Arc<str> = channel.as_str().into();
        let subscribe = Subscribe {
            channel: name.clone(),
            subscriber: self.me.clone(),
            since,
            recent,
        };
        match self.hub.broker.subscribe(subscribe).await {
            Ok(subscribed) => {
                self.channels.push(name);
                self.hub.metrics.subscribed();
                ServerMessage::Subscribed {
                    id,
                    channel,
                    epoch: subscribed.epoch,
                    offset: subscribed.offset,
                    recovered: subscribed.recovered,
                    gap: subscribed.gap,
                }
            }
            Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
        }
    }

    async fn unsubscribe(&mut self, id: Option<u64>, channel: &str) -> ServerMessage {
        let Some(at) = self.channels.iter().position(|c| **c == *channel) else {
            return error(id, ErrorCode::NotSubscribed, "not subscribed");
        };
        let name = self.channels.swap_remove(at);
        self.hub.broker.unsubscribe(&name, &self.me).await;
        self.hub.metrics.unsubscribed(1);
        ServerMessage::Unsubscribed {
            id,
            channel: channel.to_owned(),
        }
    }

    /// Leaves every channel (the session is ending).
    async fn leave_all(&mut self) {
        self.me.outbox.close();
        let channels = std::mem::take(&mut self.channels);
        self.hub.metrics.unsubscribed(channels.len());
        for channel in channels {
            self.hub.broker.unsubscribe(&channel, &self.me).await;
        }
    }

    /// An error reply if this client may not do `action` on `channel`.
    fn refuse(&self, id: Option<u64>, action: Action, channel: &str) -> Option<ServerMessage> {
        if allowed(&self.hub, self.identity.as_ref(), action, channel) {
            None
        } else {
            let verb = match action {
                Action::Subscribe => "subscribe to",
                Action::Publish => "publish to",
                Action::Presence => "see the presence of",
            };
            Some(error(
                id,
                ErrorCode::Forbidden,
                &format!("you may not {verb} {channel}"),
            ))
        }
    }
}

/// Whether a client with `identity` (or anonymous) may do `action` on
/// `channel`: a grant in the token always allows (except publishing in the
/// hub's own namespace); otherwise the namespace's permission decides.
fn allowed(hub: &Hub, identity: Option<&Identity>, action: Action, channel: &str) -> bool {
    let ns_name = channel.split_once(':').map_or("", |(ns, _)| ns);
    if ns_name == SYS_NAMESPACE && action == Action::Publish {
        return false;
    }
    if identity.is_some_and(|identity| identity.grants.allows(action, channel)) {
        return true;
    }
    let ns = hub.config.namespace(channel);
    if identity.is_none() && !hub.config.anonymous_allowed(ns) {
        return false;
    }
    let permission = match action {
        Action::Publish => ns.publish,
        Action::Subscribe | Action::Presence => ns.subscribe,
    };
    permission == Permission::Any
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
