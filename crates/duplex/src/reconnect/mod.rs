//! A WebSocket client that reconnects by itself, with the events and ready
//! states a browser's `WebSocket` has.
//!
//! [`ReconnectingWebSocket::connect`] starts a task that owns the connection.
//! The application sends with [`Handle::send`] (the client dereferences to
//! its [`Handle`], which clones) and reads [`Event`]s: `Open`, `Message`,
//! `Close`, `Error`.
//! When a connection ends for a reason worth retrying, the task waits and
//! connects again; [`Handle::close`] ends it for good.
//!
//! ## The schedule
//!
//! Waits follow [`Backoff`]: exponential (1 s, 2 s, 4 s … capped at 30 s by
//! default) with *full jitter*: each wait is drawn uniformly between zero and
//! the current ceiling, so that many clients dropped at the same moment do
//! not come back at the same moment. [`Backoff::delay`] is a pure function of
//! the attempt number and a random number in `[0, 1]`, which the caller
//! supplies ([`Options::random`] replaces the default thread RNG).
//!
//! ## Invariants
//!
//! - Events come in order: each connection that opens gives one
//!   [`Event::Open`], its messages, then one [`Event::Close`]. An attempt
//!   that fails before opening gives [`Event::Error`] then [`Event::Close`]
//!   (code 1006, not clean), as a browser reports a failed connection.
//! - Every [`Event::Close`] says whether another attempt follows
//!   ([`Closed::reconnect_in`]); after the one that says `None` (the final
//!   close), the event stream ends and the ready state is
//!   [`ReadyState::Closed`].
//! - After a connection that stayed open for at least
//!   [`Options::stable_after`] (5 s by default), the next wait starts again
//!   from the first step of the schedule. A connection that ends sooner does
//!   not reset it: the schedule goes on growing as after a failed attempt, so
//!   a server that accepts and closes at once (flapping) is retried ever more
//!   slowly, up to [`Backoff::max`], not every half second forever.
//!   `stable_after` of zero resets after every open. The wait before the
//!   first reconnection is jittered too (never an immediate stampede).
//! - No reconnection after the server closed with a code of
//!   [`Options::no_reconnect`] (1000 and 1008 by default), after a handshake
//!   refused with a 4xx status other than 408 and 429 (unless
//!   [`Options::retry_client_errors`]), after an invalid URL, after
//!   [`Options::max_attempts`] attempts in a row failed, or after
//!   [`Handle::close`]. A
//!   `Retry-After` in seconds on a refused handshake lengthens the wait to
//!   at least that.
//! - A server that drains (closes with 1001 and a reason `… reconnect in N
//!   ms`, see [`crate::shutdown`]) is taken at its word: after a stable
//!   connection the next attempt comes exactly N ms later (at most
//!   [`Backoff::max`]) instead of a backoff draw, since the server already
//!   spread its clients' delays; after an unstable one, the wait is the
//!   larger of N ms and the backoff draw.
//! - A message is sent only on the connection that was open when
//!   [`Handle::send`] accepted it: messages are never carried
//!   over to the next connection (they are dropped, as a browser drops what a
//!   closed socket had not sent). Protocols that must resend after a
//!   reconnection (such as the hub's) do it on the new `Open`.
//! - Memory is bounded: bytes accepted by `send` and not yet written are at
//!   most [`Options::max_buffered`] (beyond it `send` fails), and at most
//!   [`Options::event_capacity`] events wait for the application; while that
//!   queue is full the task stops reading the socket, so the server sees
//!   backpressure. Keep reading events.
//! - Dropping every handle (the [`ReconnectingWebSocket`] and all
//!   [`Handle`]s) or the event stream closes the connection with 1001 and
//!   stops the task.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::client::ClientRequest;
use crate::config::Config;
use crate::{CloseCode, Error, Message};

mod task;

use task::Task;

/// An exponential backoff schedule with full jitter.
///
/// The ceiling of retry `n` (0 for the first wait) is
/// `min(max, initial * factor^n)`; the wait is that ceiling times a random
/// number in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first wait (default 1 s).
    pub initial: Duration,
    /// The largest ceiling (default 30 s).
    pub max: Duration,
    /// How much the ceiling grows per retry (default 2); values below 1 (or
    /// not a number) count as 1.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The ceiling of retry `retry` (0-based): `min(max, initial * factor^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = if self.factor >= 1.0 { self.factor } else { 1.0 };
        let max = self.max.as_secs_f64();
        // Beyond 2^64 times the initial ceiling everything is capped anyway.
        let exponent = i32::try_from(retry.min(64)).unwrap_or(64);
        let secs = self.initial.as_secs_f64() * factor.powi(exponent);
        if secs.is_finite() && secs < max {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The wait before retry `retry` with full jitter, for a random `unit`
    /// drawn uniformly from `[0, 1]` (clamped into it; NaN counts as 0): the
    /// ceiling times `unit`. A pure function: the same inputs give the same
    /// wait.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.ceiling(retry).mul_f64(unit)
    }

    /// The waits of retries 0, 1, 2 … with `random` as the source of units.
    pub fn schedule<R: FnMut() -> f64>(self, mut random: R) -> impl Iterator<Item = Duration> {
        (0u32..).map(move |retry| self.delay(retry, random()))
    }
}

/// A source of random numbers in `[0, 1]` for the jitter.
pub type RandomSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// How a [`ReconnectingWebSocket`] reconnects.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// The schedule of waits between attempts.
    pub backoff: Backoff,
    /// How many connection attempts in a row may fail (not open) before the
    /// client gives up; `None` (the default) for no limit. The count starts
    /// again after every successful open (however short the connection; see
    /// [`Options::stable_after`] for the schedule of waits).
    pub max_attempts: Option<u32>,
    /// How long a connection must stay open for the backoff schedule to
    /// start again from its first step (default 5 s). A connection that ends
    /// sooner counts as one more step, as a failed attempt does, so a server
    /// that accepts and closes at once sees the waits grow instead of a
    /// retry at the first step every time. [`Duration::ZERO`] resets the
    /// schedule after every open.
    pub stable_after: Duration,
    /// Close codes from the server after which the client does not
    /// reconnect. Default: 1000 (normal) and 1008 (policy). Add the
    /// application's own, for example the hub's 4001 and 4002.
    pub no_reconnect: Vec<u16>,
    /// Keep trying after a handshake refused with a 4xx status other than
    /// 408 and 429 (default `false`: such a refusal is final, since trying
    /// again does not change the answer).
    pub retry_client_errors: bool,
    /// Most bytes accepted by `send` and not yet written to the socket
    /// (default 16 MiB); `send` fails beyond it.
    pub max_buffered: usize,
    /// Most events waiting for the application (default 1024); while full,
    /// the socket is not read.
    pub event_capacity: usize,
    /// The jitter's random numbers, uniform in `[0, 1]`; `None` (the
    /// default) for the thread RNG. Inject one to make waits deterministic in
    /// tests.
    pub random: Option<RandomSource>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_attempts: None,
            stable_after: Duration::from_secs(5),
            no_reconnect: vec![CloseCode::NORMAL.0, CloseCode::POLICY_VIOLATION.0],
            retry_client_errors: false,
            max_buffered: 16 << 20,
            event_capacity: 1024,
            random: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("stable_after", &self.stable_after)
            .field("no_reconnect", &self.no_reconnect)
            .field("retry_client_errors", &self.retry_client_errors)
            .field("max_buffered", &self.max_buffered)
            .field("event_capacity", &self.event_capacity)
            .field("random", &self.random.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Options {
    /// Sets the backoff schedule.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Gives up after `attempts` failed attempts in a row.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Resets the backoff schedule only after a connection stayed open for
    /// `duration` (see [`Options::stable_after`]); [`Duration::ZERO`] resets
    /// after every open.
    pub fn stable_after(mut self, duration: Duration) -> Self {
        self.stable_after = duration;
        self
    }

    /// Adds close codes after which the client does not reconnect.
    pub fn no_reconnect_on(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.no_reconnect.extend(codes);
        self
    }

    /// Draws the jitter from `random` (numbers in `[0, 1]`).
    pub fn random(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Some(Arc::new(random));
        self
    }
}

/// The state of a [`ReconnectingWebSocket`], as a browser's `readyState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReadyState {
    /// Opening a connection, or waiting to (between connections).
    Connecting = 0,
    /// A connection is open: `send` works.
    Open = 1,
    /// [`Handle::close`] was called; the close handshake is
    /// under way.
    Closing = 2,
    /// Closed for good: no more connections, the event stream has ended or
    /// is about to.
    Closed = 3,
}

impl ReadyState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Connecting,
            1 => Self::Open,
            2 => Self::Closing,
            _ => Self::Closed,
        }
    }
}

/// A connection opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Which connection: 1 for the first that opened, then 2, 3 … Pass it
    /// to [`Handle::send_on`] to be sure a message goes on this one.
    pub connection: u64,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

/// A connection (or an attempt at one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// The close code, as [`crate::CloseInfo`] gives it (1006 when there was
    /// no close handshake, 1005 when the close frame had no code).
    pub code: CloseCode,
    /// The reason the peer gave, if any.
    pub reason: String,
    /// Whether both close frames were exchanged.
    pub was_clean: bool,
    /// How long until the next attempt; `None` when this close is final.
    pub reconnect_in: Option<Duration>,
}

/// What a [`ReconnectingWebSocket`] tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A connection opened; the ready state is [`ReadyState::Open`].
    Open(Opened),
    /// A message arrived.
    Message(Message),
    /// A connection ended, or an attempt failed.
    Close(Closed),
    /// Something failed: an attempt to connect, or the connection (a
    /// [`Event::Close`] follows).
    Error(Error),
}

/// Why [`Handle::send`] refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No connection is open.
    #[error("not open (ready state {0:?})")]
    NotOpen(ReadyState),
    /// The connection named in [`Handle::send_on`] is no longer the open one.
    #[error("connection {0} is gone")]
    Gone(u64),
    /// Sending would buffer more than [`Options::max_buffered`] bytes.
    #[error("{buffered} bytes buffered; the limit is {limit}")]
    Full {
        /// Bytes buffered now.
        buffered: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why [`Handle::close`] refused its arguments (as a browser's `close()`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// Only 1000 and 3000–4999 may be sent by an application.
    #[error("close code {0} may not be sent; use 1000 or 3000-4999")]
    InvalidCode(u16),
    /// The reason is longer than 123 bytes.
    #[error("close reason is {0} bytes; at most 123 fit in a close frame")]
    ReasonTooLong(usize),
}

/// State shared by the task and the handles.
#[derive(Debug, Default)]
struct Shared {
    state: AtomicU8,
    /// The open connection's number (0: none yet).
    connection: AtomicU64,
    /// Bytes of messages accepted by `send` and not yet taken by the task.
    queued: AtomicUsize,
    /// Bytes the socket had not written at its last poll.
    socket_buffered: AtomicUsize,
}

impl Shared {
    fn state(&self) -> ReadyState {
        ReadyState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: ReadyState) {
        self.state.store(state as u8, Ordering::Release);
    }
}

enum Command {
    Send {
        connection: u64,
        message: Message,
        len: usize,
    },
    Close {
        code: CloseCode,
        reason: String,
    },
}

/// A cloneable sending side of a [`ReconnectingWebSocket`]: send, close,
/// ready state, buffered amount.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    max_buffered: usize,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("ready_state", &self.ready_state())
            .field("connection", &self.connection())
            .field("buffered_amount", &self.buffered_amount())
            .finish()
    }
}

impl Handle {
    /// The ready state.
    pub fn ready_state(&self) -> ReadyState {
        self.shared.state()
    }

    /// The number of the open connection ([`Opened::connection`]), or of the
    /// last one that was open; 0 before the first opened.
    pub fn connection(&self) -> u64 {
        self.shared.connection.load(Ordering::Acquire)
    }

    /// Bytes accepted by `send` and not yet written to the socket, as a
    /// browser's `bufferedAmount` (including frame headers and compression
    /// once the socket has taken them).
    pub fn buffered_amount(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
            + self.shared.socket_buffered.load(Ordering::Acquire)
    }

    /// Sends `message` on the open connection. Fails when none is open or
    /// the buffer is full. A message accepted here and not yet written when
    /// the connection ends is dropped, never sent on the next connection.
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        let state = self.ready_state();
        if state != ReadyState::Open {
            return Err(SendError::NotOpen(state));
        }
        self.send_on(self.connection(), message)
    }

    /// Sends `message` only if connection `connection` (from
    /// [`Opened::connection`]) is still the open one: a protocol that must
    /// send a greeting first on each connection uses this so that nothing
    /// meant for an old connection reaches a new one.
    pub fn send_on(&self, connection: u64, message: Message) -> Result<(), SendError> {
        let state = self.ready_state();
        if state != ReadyState::Open {
            return Err(SendError::NotOpen(state));
        }
        if self.connection() != connection {
            return Err(SendError::Gone(connection));
        }
        let len = message.payload().len();
        let buffered = self.buffered_amount();
        if buffered.saturating_add(len) > self.max_buffered {
            return Err(SendError::Full {
                buffered,
                limit: self.max_buffered,
            });
        }
        self.shared.queued.fetch_add(len, Ordering::AcqRel);
        let command = Command::Send {
            connection,
            message,
            len,
        };
        if self.commands.send(command).is_err() {
            self.shared.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(SendError::NotOpen(ReadyState::Closed));
        }
        Ok(())
    }

    /// Closes for good: sends a close frame with `code` (1000 or 3000–4999)
    /// and `reason` (at most 123 bytes) on the open connection, or stops
    /// connecting. The final [`Event::Close`] follows (not clean when no
    /// connection was open). Does nothing once closing or closed.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), CloseError> {
        if !(code == 1000 || (3000..=4999).contains(&code)) {
            return Err(CloseError::InvalidCode(code));
        }
        if reason.len() > duplex_proto::close::MAX_REASON_LEN {
            return Err(CloseError::ReasonTooLong(reason.len()));
        }
        if matches!(self.ready_state(), ReadyState::Closing | ReadyState::Closed) {
            return Ok(());
        }
        let _ = self.commands.send(Command::Close {
            code: CloseCode(code),
            reason: reason.to_owned(),
        });
        Ok(())
    }
}

/// A WebSocket client that reconnects by itself. See the [module docs](self).
///
/// It is a [`Stream`] of [`Event`]s (also [`ReconnectingWebSocket::next_event`]);
/// sending goes through the [`Handle`] it dereferences to.
pub struct ReconnectingWebSocket {
    handle: Handle,
    events: mpsc::Receiver<Event>,
}

impl fmt::Debug for ReconnectingWebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingWebSocket")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for ReconnectingWebSocket {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl ReconnectingWebSocket {
    /// Starts connecting to `request` with `config`, reconnecting as
    /// `options` say. Returns at once (ready state
    /// [`ReadyState::Connecting`]); the first attempt starts immediately.
    /// Must be called within a tokio runtime.
    pub fn connect(request: ClientRequest, config: Config, options: Options) -> Self {
        let shared = Arc::new(Shared::default());
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(options.event_capacity.max(1));
        let handle = Handle {
            shared: shared.clone(),
            commands,
            max_buffered: options.max_buffered,
        };
        let task = Task {
            request,
            config,
            options,
            shared,
            commands: command_rx,
            events: event_tx,
            connection: 0,
        };
        tokio::spawn(task.run());
        Self { handle, events }
    }

    /// A cloneable handle for sending from elsewhere.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The next event; `None` after the final [`Event::Close`].
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

impl Stream for ReconnectingWebSocket {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().events.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_one_second_up_to_thirty() {
        let backoff = Backoff::default();
        let secs: Vec<f64> = (0..8).map(|n| backoff.ceiling(n).as_secs_f64()).collect();
        assert_eq!(secs, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(2, 0.5), Duration::from_secs(2));
        assert_eq!(backoff.delay(10, 0.25), Duration::from_millis(7500));
        // Out-of-range units are clamped.
        assert_eq!(backoff.delay(1, 7.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(1, -1.0), Duration::ZERO);
        assert_eq!(backoff.delay(1, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn odd_settings_stay_bounded() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 0.5,
        };
        assert_eq!(backoff.ceiling(9), Duration::from_millis(100));
        let huge = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 1e300,
        };
        assert_eq!(huge.ceiling(5), Duration::from_secs(60));
        let inverted = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(1),
            factor: 2.0,
        };
        assert_eq!(inverted.ceiling(0), Duration::from_secs(1));
    }

    #[test]
    fn schedule_draws_one_unit_per_wait() {
        let units = [0.5, 1.0, 0.25, 0.0, 1.0, 1.0];
        let mut next = units.iter().copied();
        let waits: Vec<Duration> = Backoff::default()
            .schedule(move || next.next().unwrap())
            .take(units.len())
            .collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 2000, 1000, 0, 16000, 30000]);
    }

    #[test]
    fn the_schedule_resets_after_five_stable_seconds_by_default() {
        let options = Options::default();
        assert_eq!(options.stable_after, Duration::from_secs(5));
        assert!(format!("{options:?}").contains("stable_after: 5s"));
        let options = options.stable_after(Duration::ZERO);
        assert_eq!(options.stable_after, Duration::ZERO);
    }

    #[test]
    fn close_arguments_are_checked_like_a_browser() {
        let (commands, _rx) = mpsc::unbounded_channel();
        let handle = Handle {
            shared: Arc::new(Shared::default()),
            commands,
            max_buffered: 10,
        };
        assert_eq!(handle.close(1001, ""), Err(CloseError::InvalidCode(1001)));
        assert_eq!(handle.close(2999, ""), Err(CloseError::InvalidCode(2999)));
        assert_eq!(
            handle.close(1000, &"x".repeat(124)),
            Err(CloseError::ReasonTooLong(124))
        );
        assert_eq!(handle.close(4000, "bye"), Ok(()));
        assert_eq!(
            handle.send(Message::text("x")),
            Err(SendError::NotOpen(ReadyState::Connecting))
        );
    }
}
