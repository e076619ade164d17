//! # duplex-hub-client: a Rust client of the Duplex hub
//!
//! A client that survives reconnections: it resubscribes, recovers what it
//! missed, and publishes each message once. It needs neither Redis, nor JWT
//! verification, nor the hub's configuration: only `duplex` (the WebSocket)
//! and `duplex-hub-proto` (the protocol and its client state machine).
//!
//! [`Client::connect`] starts a task built on
//! [`duplex::ReconnectingWebSocket`] (backoff with full jitter) and
//! [`duplex_hub_proto::Subscriptions`] (the sans-I/O resubscribe/recover
//! state machine). On every connection it sends `connect` (with the token,
//! if any), and once the hub answers `connected` it resubscribes every
//! wanted channel from the position of the last message delivered, then
//! sends the publishes still waiting for their acknowledgement.
//!
//! ## Private channels
//!
//! A channel of a namespace with `subscribe = "token"` takes a subscription
//! token (a JWT for the connection's user and that channel) in each
//! `subscribe`. Give one with [`Handle::subscribe_with_token`]: it goes with
//! the next subscribe of the channel and is kept for it. Every other
//! subscribe of a wanted channel — after a reconnection in particular, or
//! to recover after a gap — asks [`Options::subscription_token`] for a fresh
//! one when it is set (a subscription token is short-lived), and sends the
//! kept one otherwise. A
//! token the hub refuses ends in [`Event::SubscribeFailed`]; calling
//! [`Handle::subscribe_with_token`] again with a new one retries at once,
//! as [`Handle::refresh`] replaces the connection's token.
//!
//! ## Guarantees
//!
//! - **Messages.** Per channel, [`Event::Message`] comes at most once per
//!   offset of an epoch and in offset order; whenever messages may have been
//!   missed (history too short, or lost when the hub restarted with the
//!   in-memory broker), an [`Event::Gap`] for that channel comes before the
//!   next message. Within the hub's history window a dropped connection
//!   loses nothing: each message exactly once, in order.
//! - **Publishes.** Each publish gets an idempotency key (random, or the
//!   caller's with [`Handle::publish_with_key`]) that stays the same across
//!   retries. Publishes are queued in call order and sent in that order when
//!   a connection is ready; one whose outcome was unclear (sent, then the
//!   connection dropped before the `published` reply) is sent again with the
//!   same key, so the hub delivers it once and answers with the first
//!   offset ([`Ack::duplicate`]). The future resolves with the hub's answer:
//!   [`Ack`] or the hub's refusal ([`PublishError::Refused`]: refusals are not
//!   retried). A hub that lost its history (restarted in memory) lost its
//!   keys too: a publish retried there is delivered again, in the new epoch,
//!   after the [`Event::Gap`] its subscribers receive.
//! - **Bounds.** Publishes not yet acknowledged are at most
//!   [`Options::max_pending`] (beyond it [`PublishError::QueueFull`] at
//!   once), at most [`Options::max_in_flight`] of them sent and unanswered;
//!   events waiting for the application are at most
//!   [`Options::event_capacity`]. While that event queue is full the client
//!   stops reading from the hub (backpressure), which also delays the replies
//!   that resolve publishes: keep reading events (for example in a task of
//!   their own) while awaiting publishes.
//! - **Endings.** No reconnection after the closes the protocol marks final
//!   (1000, 1008, 1009, 4001, 4002), after a handshake refused with a client
//!   error (401, 403, 400 …), or after [`Handle::close`]; then every publish
//!   still pending resolves with [`PublishError::Closed`], the last
//!   [`Event::Disconnected`] has `reconnect_in: None`, and the event stream
//!   ends.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use duplex::reconnect::{self, Closed, Opened, ReconnectingWebSocket};
use duplex::{ClientRequest, Config, Message};
use duplex_hub_proto::{
    Command, Data, DecodeError, Encoded, Encoding, ErrorCode, Frame, JsonText, NameError,
    Publication, Request, ServerMessage, SubscribeOptions, Subscriptions, close, validate_channel,
};
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};

mod rpc;
mod tokens;

pub use self::rpc::{Rpc, RpcError};
pub use self::tokens::SubscriptionTokens;

/// The close codes after which the protocol says not to reconnect without
/// fixing the cause (`docs/protocol.md`, "Close codes").
const FINAL_CLOSE_CODES: [u16; 5] = [
    close::NORMAL,
    close::POLICY,
    close::TOO_BIG,
    close::UNAUTHORIZED,
    close::TOKEN_EXPIRED,
];

/// How a [`Client`] connects and what it bounds.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The token (a JWT) sent in `connect`; `None` for anonymous.
    pub token: Option<String>,
    /// A name for this client, sent in `connect` (for the hub's logs).
    pub name: Option<String>,
    /// The envelope to speak (default [`Encoding::Json`], `duplex.v1`);
    /// [`Encoding::Binary`] offers `duplex.v1.bin`, whose frames are smaller
    /// (a hub that does not speak it refuses the handshake with 400).
    pub encoding: Encoding,
    /// WebSocket settings (compression, keepalive, limits).
    pub config: Config,
    /// Reconnection settings. The protocol's final close codes (1000, 1008,
    /// 1009, 4001, 4002) are always added to [`reconnect::Options::no_reconnect`].
    pub reconnect: reconnect::Options,
    /// Most publishes waiting for their acknowledgement, sent or not
    /// (default 1000); and, apart, most `rpc` calls waiting for a
    /// connection.
    pub max_pending: usize,
    /// Most publishes sent and not yet answered at once (default 100).
    pub max_in_flight: usize,
    /// Most events waiting for the application (default 1024).
    pub event_capacity: usize,
    /// Asked for a channel's subscription token before each subscribe not
    /// given one (see [Private channels](self#private-channels));
    /// `None` (the default): the token given to
    /// [`Handle::subscribe_with_token`] is sent again.
    pub subscription_token: Option<SubscriptionTokens>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: None,
            name: None,
            encoding: Encoding::Json,
            config: Config::client(),
            reconnect: reconnect::Options::default(),
            max_pending: 1000,
            max_in_flight: 100,
            event_capacity: 1024,
            subscription_token: None,
        }
    }
}

impl Options {
    /// Speaks `encoding` (see [`Options::encoding`]).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Sends `token` in `connect`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the reconnection settings.
    pub fn reconnect(mut self, reconnect: reconnect::Options) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Asks `get` (an async function of the channel) for a fresh
    /// subscription token before each subscribe not given one
    /// ([`Options::subscription_token`]).
    pub fn subscription_token<F, Fut>(mut self, get: F) -> Self
    where
        F: Fn(&str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.subscription_token = Some(SubscriptionTokens::new(get));
        self
    }
}

/// The hub's acknowledgement of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The channel.
    pub channel: String,
    /// The message's offset in the channel (the first delivery's, for a
    /// duplicate).
    pub offset: u64,
    /// The hub had already accepted a publish with this key: this one was a
    /// retry after an unclear outcome and was not delivered again.
    pub duplicate: bool,
}

/// Why a publish did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The channel name is not valid.
    #[error("invalid channel: {0}")]
    InvalidChannel(#[from] NameError),
    /// The idempotency key is empty or longer than 64 bytes.
    #[error("idempotency keys are 1 to 64 bytes")]
    InvalidKey,
    /// [`Options::max_pending`] publishes are already waiting.
    #[error("{0} publishes are already waiting for their acknowledgement")]
    QueueFull(usize),
    /// The hub refused the publish (not retried).
    #[error("the hub refused: {code}: {message}")]
    Refused {
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The client closed for good before the hub answered.
    #[error("the client is closed")]
    Closed,
}

/// Something went wrong that the client recovers from by itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The WebSocket failed (a connection attempt or an open connection).
    #[error(transparent)]
    Transport(#[from] duplex::Error),
    /// The hub sent a message this client cannot decode (it was skipped).
    #[error("undecodable message from the hub: {0}")]
    Decode(#[from] DecodeError),
}

/// What the [`Client`] tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The hub answered `connect`: subscriptions are being restored and
    /// queued publishes sent.
    Connected {
        /// The connection's number ([`Opened::connection`]).
        connection: u64,
        /// This connection's id on the hub.
        client: String,
        /// The token's `sub` (empty for anonymous).
        user: String,
        /// When the token runs out, in seconds since the Unix epoch.
        expires: Option<u64>,
        /// Data for this client from the application's backend (its
        /// `connect` hook, `docs/hooks.md`), if it gave any.
        data: Option<JsonText>,
    },
    /// A connection ended, or an attempt failed. `reconnect_in: None` means
    /// for good: the event stream ends after this.
    Disconnected(Closed),
    /// The hub confirmed a subscription on this connection.
    Subscribed {
        /// The channel.
        channel: String,
        /// Every message since the last one delivered follows (no gap).
        recovered: bool,
    },
    /// A message, in order, not seen before.
    Message(Publication),
    /// Messages of the channel were lost (history too short or lost):
    /// resync it from elsewhere. Later messages continue from the hub's
    /// current position.
    Gap {
        /// The channel.
        channel: String,
    },
    /// The hub refused a subscription; it is tried again on the next
    /// connection, or now with [`Handle::subscribe`].
    SubscribeFailed {
        /// The channel.
        channel: String,
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The hub ended a subscription itself (a refreshed token no longer
    /// grants the channel); it is tried again on the next connection, or now
    /// with [`Handle::subscribe`].
    Unsubscribed {
        /// The channel.
        channel: String,
        /// Why, for people.
        reason: String,
    },
    /// Anything else the hub sent: presence joins and leaves, signals,
    /// `refreshed`, errors not tied to a command of this client.
    Other(ServerMessage),
    /// A failure the client recovers from by itself (it reconnects).
    Error(ClientError),
}

/// A publish the hub has not acknowledged yet.
struct Pending {
    channel: String,
    data: Data,
    key: String,
    reply: Option<oneshot::Sender<Result<Ack, PublishError>>>,
    /// The request id it was sent with on the current connection.
    sent: Option<u64>,
}

enum Cmd {
    Subscribe(String, SubscribeOptions, Option<String>),
    Unsubscribe(String),
    Publish(Pending),
    Rpc(rpc::Call),
    Refresh(String),
    Close,
}

/// State shared by the task and the handles.
#[derive(Debug, Default)]
struct Shared {
    pending: AtomicUsize,
    connected: AtomicBool,
}

/// A cloneable handle on a [`Client`]: subscribe, publish, close.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    max_pending: usize,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("connected", &self.is_connected())
            .field("pending_publishes", &self.pending_publishes())
            .finish()
    }
}

/// The future of a publish: resolves with the hub's acknowledgement.
///
/// The publish is queued when [`Handle::publish`] returns; dropping this
/// future does not cancel it, only the wait for its answer.
pub struct Publish {
    state: PublishState,
}

enum PublishState {
    Failed(Option<PublishError>),
    Waiting(oneshot::Receiver<Result<Ack, PublishError>>),
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish").finish_non_exhaustive()
    }
}

impl Future for Publish {
    type Output = Result<Ack, PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            PublishState::Failed(error) => {
                Poll::Ready(Err(error.take().unwrap_or(PublishError::Closed)))
            }
            PublishState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(PublishError::Closed))),
        }
    }
}

impl Handle {
    /// Whether the hub has answered `connect` on the current connection.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Publishes not yet acknowledged (queued or sent).
    pub fn pending_publishes(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// Wants `channel`, with no recent messages on the first subscription;
    /// kept across reconnections until [`Handle::unsubscribe`].
    pub fn subscribe(&self, channel: &str) -> Result<(), NameError> {
        self.subscribe_with(channel, SubscribeOptions::default())
    }

    /// Wants `channel` with `options` (recent messages on the first
    /// subscription, or a position saved earlier to recover from).
    pub fn subscribe_with(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), NameError> {
        validate_channel(channel)?;
        let _ = self
            .commands
            .send(Cmd::Subscribe(channel.to_owned(), options, None));
        Ok(())
    }

    /// Wants the private `channel` with its subscription `token` (see
    /// [Private channels](self#private-channels)): sent with the first
    /// subscribe and kept for the channel. Called again for a channel
    /// already wanted, it replaces the token, and subscribes again at once
    /// if the hub had refused or ended the subscription.
    pub fn subscribe_with_token(
        &self,
        channel: &str,
        options: SubscribeOptions,
        token: impl Into<String>,
    ) -> Result<(), NameError> {
        validate_channel(channel)?;
        let _ = self.commands.send(Cmd::Subscribe(
            channel.to_owned(),
            options,
            Some(token.into()),
        ));
        Ok(())
    }

    /// No longer wants `channel`.
    pub fn unsubscribe(&self, channel: &str) {
        let _ = self.commands.send(Cmd::Unsubscribe(channel.to_owned()));
    }

    /// Publishes `data` to `channel` with a fresh random idempotency key.
    /// The returned future resolves with the hub's acknowledgement (see the
    /// [module docs](self) for retries and bounds).
    pub fn publish(&self, channel: &str, data: impl Into<Data>) -> Publish {
        let key = format!("{:032x}", rand::random::<u128>());
        self.publish_with_key(channel, data, key)
    }

    /// Publishes with the caller's idempotency `key` (1 to 64 bytes), for
    /// example one saved with the message so that a restarted program
    /// retrying it is not delivered twice either.
    pub fn publish_with_key(
        &self,
        channel: &str,
        data: impl Into<Data>,
        key: impl Into<String>,
    ) -> Publish {
        let failed = |error| Publish {
            state: PublishState::Failed(Some(error)),
        };
        if let Err(error) = validate_channel(channel) {
            return failed(error.into());
        }
        let key = key.into();
        if key.is_empty() || key.len() > duplex_hub_proto::MAX_KEY_LEN {
            return failed(PublishError::InvalidKey);
        }
        let before = self.shared.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_pending {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            return failed(PublishError::QueueFull(before));
        }
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            channel: channel.to_owned(),
            data: data.into(),
            key,
            reply: Some(reply),
            sent: None,
        };
        if self.commands.send(Cmd::Publish(pending)).is_err() {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            return failed(PublishError::Closed);
        }
        Publish {
            state: PublishState::Waiting(rx),
        }
    }

    /// Calls `method` of the application's backend through the hub (its
    /// `rpc` hook, `docs/hooks.md`) with JSON `data`; the future resolves
    /// with the backend's data. A call made while disconnected waits for
    /// the next connection (at most [`Options::max_pending`] of them); a
    /// call whose connection drops before the answer fails with
    /// [`RpcError::Disconnected`] and is not sent again.
    pub fn rpc(&self, method: &str, data: impl Into<JsonText>) -> Rpc {
        if let Err(error) = validate_channel(method) {
            return Rpc::failed(error.into());
        }
        let (reply, rx) = oneshot::channel();
        let call = rpc::Call {
            method: method.to_owned(),
            data: data.into(),
            reply,
        };
        if self.commands.send(Cmd::Rpc(call)).is_err() {
            return Rpc::failed(RpcError::Closed);
        }
        Rpc::waiting(rx)
    }

    /// Replaces the token: sent in `refresh` now if connected, and in
    /// `connect` on every later connection. Send it before the current one
    /// expires, or the hub closes with 4002 (final).
    pub fn refresh(&self, token: impl Into<String>) {
        let _ = self.commands.send(Cmd::Refresh(token.into()));
    }

    /// Closes for good (1000). Pending publishes resolve with
    /// [`PublishError::Closed`]; the final [`Event::Disconnected`] follows.
    pub fn close(&self) {
        let _ = self.commands.send(Cmd::Close);
    }
}

/// A hub client that reconnects, resubscribes and recovers by itself. See
/// the [module docs](self).
///
/// It is a [`Stream`] of [`Event`]s (also [`Client::next_event`]) and
/// dereferences to its cloneable [`Handle`].
pub struct Client {
    handle: Handle,
    events: mpsc::Receiver<Event>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for Client {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl Client {
    /// Starts connecting to the hub at `url` (its `/ws` endpoint, `ws://` or
    /// `wss://`), offering `duplex.v1` (or `duplex.v1.bin`, see
    /// [`Options::encoding`]). Returns at once; must be called
    /// within a tokio runtime.
    pub fn connect(url: &str, options: Options) -> Self {
        Self::connect_with(ClientRequest::new(url), options)
    }

    /// Like [`Client::connect`] with a request of the caller's (headers,
    /// origin, proxy, TLS roots); the envelope's subprotocol is offered in
    /// addition.
    pub fn connect_with(request: ClientRequest, mut options: Options) -> Self {
        let request = request.protocol(options.encoding.subprotocol());
        for code in FINAL_CLOSE_CODES {
            if !options.reconnect.no_reconnect.contains(&code) {
                options.reconnect.no_reconnect.push(code);
            }
        }
        let ws = ReconnectingWebSocket::connect(request, options.config, options.reconnect);
        let shared = Arc::new(Shared::default());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(options.event_capacity.max(1));
        let handle = Handle {
            commands,
            shared: shared.clone(),
            max_pending: options.max_pending,
        };
        let task = Task {
            ws,
            subs: Subscriptions::new(),
            tokens: tokens::Tokens::new(options.subscription_token),
            commands: command_rx,
            events: event_tx,
            shared,
            token: options.token,
            name: options.name,
            encoding: options.encoding,
            connection: None,
            connect_id: None,
            queue: VecDeque::new(),
            in_flight: HashSet::new(),
            max_in_flight: options.max_in_flight.max(1),
            calls: rpc::Calls::default(),
            max_calls: options.max_pending,
            stalled: false,
            stall_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        tokio::spawn(task.run());
        Self { handle, events }
    }

    /// A cloneable handle for subscribing and publishing from elsewhere.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The next event; `None` after the final [`Event::Disconnected`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Stream for Client {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().events.poll_recv(cx)
    }
}

/// The task behind a [`Client`].
struct Task {
    ws: ReconnectingWebSocket,
    subs: Subscriptions,
    /// The subscription tokens of private channels.
    tokens: tokens::Tokens,
    commands: mpsc::UnboundedReceiver<Cmd>,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
    token: Option<String>,
    name: Option<String>,
    /// The envelope spoken on every connection.
    encoding: Encoding,
    /// The open WebSocket connection, if any.
    connection: Option<u64>,
    /// The id of the `connect` in flight on it.
    connect_id: Option<u64>,
    /// Publishes not yet acknowledged, in call order.
    queue: VecDeque<Pending>,
    /// Request ids of the publishes sent on this connection.
    in_flight: HashSet<u64>,
    max_in_flight: usize,
    /// `rpc` calls waiting for a connection or for their answer.
    calls: rpc::Calls,
    /// At most this many calls wait for a connection.
    max_calls: usize,
    /// A publish could not be sent (the socket's buffer was full): try
    /// again when `stall_timer` fires.
    stalled: bool,
    stall_timer: Pin<Box<tokio::time::Sleep>>,
}

/// How long a publish that found the socket's buffer full waits to be
/// tried again.
const STALL_RETRY: Duration = Duration::from_millis(20);

/// The task should go on (`true`) or end.
type Go = bool;

impl Task {
    async fn run(mut self) {
        let mut commands_open = true;
        loop {
            tokio::select! {
                event = self.ws.next_event() => {
                    let Some(event) = event else { break };
                    if !self.on_socket_event(event).await {
                        break;
                    }
                }
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        // Every handle is gone: close, and end with the
                        // final close.
                        commands_open = false;
                        let _ = self.ws.close(1000, "");
                    }
                },
                () = self.events.closed() => {
                    let _ = self.ws.close(1000, "");
                    break;
                }
                Some((connection, request, token)) = self.tokens.fetched() => {
                    self.on_token(connection, request, token);
                }
                () = &mut self.stall_timer, if self.stalled => {
                    self.stalled = false;
                    self.send_publishes();
                }
            }
        }
        self.shared.connected.store(false, Ordering::Release);
        for mut pending in self.queue.drain(..) {
            if let Some(reply) = pending.reply.take() {
                let _ = reply.send(Err(PublishError::Closed));
            }
        }
        self.shared.pending.store(0, Ordering::Release);
        self.calls.close();
        // Later publishes and calls fail at once.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Cmd::Publish(mut pending) => {
                    if let Some(reply) = pending.reply.take() {
                        let _ = reply.send(Err(PublishError::Closed));
                    }
                }
                Cmd::Rpc(call) => {
                    let _ = call.reply.send(Err(RpcError::Closed));
                }
                _ => {}
            }
        }
    }

    async fn emit(&self, event: Event) -> Go {
        self.events.send(event).await.is_ok()
    }

    fn on_command(&mut self, command: Cmd) {
        match command {
            Cmd::Subscribe(channel, options, token) => {
                if let Some(token) = token {
                    self.tokens.give(&channel, token);
                }
                // Validated by the handle.
                let _ = self.subs.subscribe_with(&channel, options);
                self.transmit();
            }
            Cmd::Unsubscribe(channel) => {
                self.tokens.forget(&channel);
                self.subs.unsubscribe(&channel);
                self.transmit();
            }
            Cmd::Publish(pending) => {
                self.queue.push_back(pending);
                self.send_publishes();
            }
            Cmd::Rpc(call) => {
                self.calls.push(call, self.max_calls);
                self.send_calls();
            }
            Cmd::Refresh(token) => {
                self.token = Some(token.clone());
                if self.shared.connected.load(Ordering::Acquire) {
                    let id = self.subs.next_id();
                    self.send(Request::new(id, Command::Refresh { token }));
                }
            }
            Cmd::Close => {
                let _ = self.ws.close(1000, "");
            }
        }
    }

    async fn on_socket_event(&mut self, event: reconnect::Event) -> Go {
        match event {
            reconnect::Event::Open(Opened { connection, .. }) => {
                self.connection = Some(connection);
                let id = self.subs.next_id();
                self.connect_id = Some(id);
                self.send(Request::new(
                    id,
                    Command::Connect {
                        token: self.token.clone(),
                        name: self.name.clone(),
                    },
                ));
                true
            }
            reconnect::Event::Message(message) => {
                let decoded = match &message {
                    Message::Text(text) => self.encoding.decode_server(Frame::Text(text.as_str())),
                    Message::Binary(bytes) => self.encoding.decode_server(Frame::Binary(bytes)),
                };
                match decoded {
                    Ok(message) => self.on_hub_message(message).await,
                    Err(error) => self.emit(Event::Error(error.into())).await,
                }
            }
            reconnect::Event::Close(closed) => {
                self.on_disconnected();
                self.emit(Event::Disconnected(closed)).await
            }
            reconnect::Event::Error(error) => self.emit(Event::Error(error.into())).await,
            _ => true,
        }
    }

    /// The connection is gone: what was in flight is unclear and will be
    /// sent again.
    fn on_disconnected(&mut self) {
        self.connection = None;
        self.connect_id = None;
        self.shared.connected.store(false, Ordering::Release);
        self.subs.on_disconnected();
        self.calls.disconnected();
        self.in_flight.clear();
        for pending in &mut self.queue {
            pending.sent = None;
        }
    }

    async fn on_hub_message(&mut self, message: ServerMessage) -> Go {
        for event in self.subs.handle(message) {
            let event = match event {
                duplex_hub_proto::Event::Subscribed { channel, recovered } => {
                    Event::Subscribed { channel, recovered }
                }
                duplex_hub_proto::Event::Message(publication) => Event::Message(publication),
                duplex_hub_proto::Event::Gap { channel } => Event::Gap { channel },
                duplex_hub_proto::Event::SubscribeFailed {
                    channel,
                    code,
                    message,
                } => Event::SubscribeFailed {
                    channel,
                    code,
                    message,
                },
                duplex_hub_proto::Event::Unsubscribed { channel, reason } => {
                    Event::Unsubscribed { channel, reason }
                }
                duplex_hub_proto::Event::Other(other) => match self.on_reply(other) {
                    Some(event) => event,
                    None => continue,
                },
            };
            if !self.emit(event).await {
                return false;
            }
        }
        // A resubscription the state machine decided on (a gap, a jump).
        self.transmit();
        true
    }

    /// Handles replies to this client's own commands; what the application
    /// should see comes back.
    fn on_reply(&mut self, message: ServerMessage) -> Option<Event> {
        match message {
            ServerMessage::Connected {
                id: Some(id),
                client,
                user,
                expires,
                data,
                ..
            } if self.connect_id == Some(id) => {
                self.connect_id = None;
                let connection = self.connection?;
                self.shared.connected.store(true, Ordering::Release);
                for request in self.subs.on_connected() {
                    self.send_from_machine(request);
                }
                self.transmit();
                self.send_publishes();
                self.send_calls();
                Some(Event::Connected {
                    connection,
                    client,
                    user,
                    expires,
                    data,
                })
            }
            ServerMessage::Published {
                id: Some(id),
                channel,
                offset,
                duplicate,
            } if self.in_flight.contains(&id) => {
                self.resolve(
                    id,
                    Ok(Ack {
                        channel,
                        offset,
                        duplicate,
                    }),
                );
                None
            }
            ServerMessage::Error {
                id: Some(id),
                code,
                message,
            } if self.in_flight.contains(&id) => {
                self.resolve(id, Err(PublishError::Refused { code, message }));
                None
            }
            other if self.calls.answer(&other) => None,
            other => Some(Event::Other(other)),
        }
    }

    /// Answers the publish sent as request `id`, and sends more.
    fn resolve(&mut self, id: u64, answer: Result<Ack, PublishError>) {
        if !self.in_flight.remove(&id) {
            return;
        }
        if let Some(at) = self.queue.iter().position(|p| p.sent == Some(id))
            && let Some(mut pending) = self.queue.remove(at)
        {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            if let Some(reply) = pending.reply.take() {
                let _ = reply.send(answer);
            }
        }
        self.send_publishes();
    }

    /// Sends, in call order, the publishes not yet sent on this connection,
    /// while the window allows.
    fn send_publishes(&mut self) {
        if !self.shared.connected.load(Ordering::Acquire) {
            return;
        }
        let Some(connection) = self.connection else {
            return;
        };
        for index in 0..self.queue.len() {
            if self.in_flight.len() >= self.max_in_flight {
                return;
            }
            if self.queue[index].sent.is_some() {
                continue;
            }
            let id = self.subs.next_id();
            let pending = &self.queue[index];
            let request = Request::new(
                id,
                Command::Publish {
                    channel: pending.channel.clone(),
                    data: pending.data.clone(),
                    key: Some(pending.key.clone()),
                },
            );
            match self
                .ws
                .send_on(connection, to_message(self.encoding, &request))
            {
                Ok(()) => {}
                Err(reconnect::SendError::Full { .. }) => {
                    // Try again shortly (or with the next ack).
                    if !self.stalled {
                        self.stalled = true;
                        self.stall_timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + STALL_RETRY);
                    }
                    return;
                }
                // The connection is ending: the rest goes on the next one.
                Err(_) => return,
            }
            self.queue[index].sent = Some(id);
            self.in_flight.insert(id);
        }
    }

    /// Sends the `rpc` calls waiting for a connection, once one is ready.
    fn send_calls(&mut self) {
        if !self.shared.connected.load(Ordering::Acquire) {
            return;
        }
        for call in self.calls.take_waiting() {
            let id = self.subs.next_id();
            self.send(Request::new(
                id,
                Command::Rpc {
                    method: call.method,
                    data: call.data,
                },
            ));
            self.calls.sent(id, call.reply);
        }
    }

    /// Sends what the subscription state machine has queued.
    fn transmit(&mut self) {
        while let Some(request) = self.subs.poll_transmit() {
            self.send_from_machine(request);
        }
    }

    /// Sends a request of the subscription state machine; a `subscribe`
    /// goes with its channel's token ([`tokens`]), perhaps once a fresh one
    /// has come ([`Task::on_token`]).
    fn send_from_machine(&mut self, request: Request) {
        if let Some(request) = self.tokens.prepare(request, self.connection) {
            self.send(request);
        }
    }

    /// A fresh subscription token came for a subscribe held for it: sent on
    /// the connection it was fetched for, if that one is still open.
    fn on_token(&mut self, connection: u64, request: Request, fetched: Option<String>) {
        let subs = &self.subs;
        let request = self.tokens.complete(request, fetched, |channel| {
            subs.channels().any(|wanted| wanted == channel)
        });
        if let Some(request) = request
            && self.connection == Some(connection)
        {
            self.send(request);
        }
    }

    /// Sends one request on the open connection; a failure means the
    /// connection is ending, and the state machine resends on the next.
    fn send(&mut self, request: Request) {
        if let Some(connection) = self.connection {
            let _ = self
                .ws
                .send_on(connection, to_message(self.encoding, &request));
        }
    }
}

fn to_message(encoding: Encoding, request: &Request) -> Message {
    match encoding.encode_command(request) {
        Encoded::Text(text) => Message::text(text),
        Encoded::Binary(bytes) => Message::binary(bytes),
    }
}
