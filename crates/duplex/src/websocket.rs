//! A WebSocket over any `AsyncRead + AsyncWrite` transport: a
//! [`Stream`](futures_core::Stream) of received messages and a
//! [`Sink`](futures_sink::Sink) of messages to send.
//!
//! Invariants:
//! - Writes are batched: everything queued (replies, pongs, messages fed to the
//!   sink) goes out in one write per wakeup: a plain `write` when the queue is
//!   one chunk (small frames share one buffer), a vectored one otherwise. Reading flushes what is
//!   queued before it waits, so an echo loop that `feed`s each reply without
//!   flushing sends all replies to one read in a single write.
//! - The write buffer is bounded: `poll_ready` waits while
//!   [`crate::Config::write_buffer_high_water`] bytes or more are queued.
//! - What the peer sends cannot grow our write queue without bound: the only
//!   bytes input makes us queue are automatic pongs, which the protocol layer
//!   coalesces past a burst of [`duplex_proto::connection::PONG_BURST`]
//!   unwritten ones, our answer to its close, and a failure's close frame.
//!   So the stream keeps reading while the peer does not read what we write
//!   (and sees its close frame at once); the application's own sends are
//!   what the high-water mark bounds.
//! - A ping flood ends the connection: a peer that sends more than
//!   [`MAX_PINGS_UNREAD`] pings while the transport takes none of our bytes
//!   (it reads nothing, our pongs included) gets close 1008 queued and the
//!   stream ends at once with [`Error::PingFlood`], as on a keepalive
//!   timeout. Any write progress starts the count again, so a peer that
//!   reads, however slowly, is never cut off by this rule.
//! - An idle connection holds no read or write buffer (reads go through a
//!   per-thread scratch buffer), and after a quiet `ping_interval` no
//!   compression state beyond the negotiated windows.
//! - Once the stream has ended, [`WebSocket::close_info`] tells how: code,
//!   reason, and whether the close handshake completed (`was_clean`), as a
//!   browser's `CloseEvent` does.
//! - Timers (keepalive, pong deadline, idle, close) advance only while the
//!   stream is polled: keep reading, as every WebSocket application must.
//! - Closing never waits on the peer without a bound: from our close frame
//!   (or our answer to the peer's) to the end, whether writing what is queued
//!   or reading the answer, the close timeout applies, renewed only while the
//!   peer keeps reading what is queued in front of the frame.
//! - Timers are coarse and shared: a connection has one deadline at a time,
//!   kept in a per-thread timer wheel (`timer`) that fires it at or after the
//!   deadline and at most 1/16 of its span later (never more than ~1 s), by
//!   waking the connection's wake-up node. That node is the
//!   [`crate::ShutdownWatch`] when one is set (else a 48-byte node made on the
//!   first timer), so a connection owns no `Sleep` (112 bytes, boxed) and no
//!   second allocation for timers. A wake is only a hint: deadlines are checked against the
//!   clock, so a stale wake costs one poll.
//! - The node holds one waker: with the socket split in two halves, the half
//!   that waited last is the one woken, as with a single `Sleep`, and it acts
//!   on what fired (timers, shutdown) for both.
//! - Durations are kept in whole milliseconds (rounded up, at most ~49 days),
//!   instants as [`Stamp`]s (8 bytes), exact to the nanosecond.

mod parking;
mod timer;

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Buf;
use duplex_proto::close::{CloseCode, CloseFrame};
use duplex_proto::connection::{Event, PreparedMessage, State};
use duplex_proto::message::Message;

/// The protocol state machine under a [`WebSocket`]
/// ([`WebSocket::connection`], [`WebSocket::from_parts`]); the rest of its
/// module is [`crate::proto::connection`].
pub use duplex_proto::connection::Connection;
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::Error;
use crate::config::Config;
use crate::shared::Shared;
use crate::shutdown::{ShutdownWatch, Watch};
use crate::stamp::Stamp;

/// Size of the per-thread buffer reads land in before being handed to the
/// protocol layer.
const SCRATCH_SIZE: usize = 64 * 1024;

/// A frame still missing at least this many bytes is read straight into the
/// connection's buffer rather than through the scratch buffer.
const DIRECT_READ: usize = SCRATCH_SIZE;

/// Most reserved at once for a direct read; a larger frame grows the buffer
/// as it arrives (a compressed frame is consumed as it arrives anyway).
const MAX_DIRECT_RESERVE: usize = 1 << 20;

/// A read buffer at least this large is given back as soon as it is empty.
const LARGE_BUFFER: usize = 64 * 1024;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Pings a peer may send while the transport takes none of our bytes
/// (the peer reads nothing, not even our pongs) before the connection is
/// closed with 1008 (see the module docs). A burst of pings from a peer
/// that reads never reaches it: the count starts again with every write
/// that makes progress.
pub const MAX_PINGS_UNREAD: u8 = 128;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// How a connection ended, as a browser's `CloseEvent` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code: the peer's (1005 when its close frame had none), or
    /// 1006 when the transport ended without a close handshake.
    pub code: CloseCode,
    /// The reason the peer gave, if any.
    pub reason: String,
    /// Whether both close frames were exchanged.
    pub was_clean: bool,
}

/// A duration in whole milliseconds (rounded up), or none: 4 bytes where an
/// `Option<Duration>` takes 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Millis(u32);

impl Millis {
    const NONE: Self = Self(u32::MAX);

    fn new(duration: Duration) -> Self {
        let ms = duration.as_nanos().div_ceil(1_000_000);
        Self(u32::try_from(ms).unwrap_or(u32::MAX - 1).min(u32::MAX - 1))
    }

    fn from_option(duration: Option<Duration>) -> Self {
        duration.map_or(Self::NONE, Self::new)
    }

    fn get(self) -> Option<Duration> {
        (self != Self::NONE).then(|| Duration::from_millis(u64::from(self.0)))
    }

    fn is_some(self) -> bool {
        self != Self::NONE
    }
}

/// Timer settings taken from [`Config`], shared by the connections made
/// with the same ones (see `crate::shared`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timing {
    ping_interval: Millis,
    pong_timeout: Millis,
    idle_timeout: Millis,
    close_timeout: Millis,
    /// [`Config::park_after`].
    park_after: Millis,
    /// Saturated to `u32::MAX` (4 GiB); at least 1.
    high_water: u32,
}

impl Timing {
    fn timeout(ms: Millis) -> Duration {
        ms.get().unwrap_or_default()
    }
}

/// The timer settings connections share.
static TIMINGS: Shared<Timing> = Shared::new();

/// The subprotocol names connections share.
static PROTOCOLS: Shared<Box<str>> = Shared::new();

/// What the one timer of a connection is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Send a keepalive ping, or close when idle.
    Keepalive,
    /// A ping was sent; the peer must answer by then.
    Pong,
    /// Our close frame was sent; the peer must answer by then.
    Close,
}

/// A WebSocket connection over the transport `S`. See the module docs.
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    timing: Arc<Timing>,
    /// The wake-up node the timer wheel and the shutdown trigger mark: the
    /// shutdown watch, or our own, made when the first timer is armed.
    signal: Option<Arc<Watch>>,
    /// What the armed timer waits for.
    deadline: Deadline,
    /// When the armed timer is due; [`Stamp::NEVER`] when none is armed.
    /// (Stamps: 8 bytes where an `Instant` takes 16.)
    due: Stamp,
    /// When bytes last arrived from the peer.
    last_heard: Stamp,
    /// When a data message last went either way (for `idle_timeout`).
    last_message: Stamp,
    /// Bytes still to write before the keepalive ping has left our buffer
    /// (saturating: 4 GiB means "at least").
    ping_ahead: u32,
    /// Shared by the connections that speak it (see `crate::shared`), and
    /// a thin pointer: 8 bytes where an `Arc<str>` takes 16 and a `String`
    /// 24 and an allocation per connection.
    protocol: Option<Arc<Box<str>>>,
    /// Boxed: set once, when the connection ends.
    close_info: Option<Box<CloseInfo>>,
    /// 0 when the last flush wrote everything; otherwise the last write
    /// would block, and this is 1 + the pings received since the transport
    /// last took any of our bytes (see [`MAX_PINGS_UNREAD`]; saturating).
    unread_pings: u8,
    /// [`WROTE`], [`FINISHED`], [`ACTIVE`], [`PARK_ARMED`], [`PARK_DUE`]:
    /// one byte where five `bool`s would take five.
    flags: u8,
}

/// [`WebSocket::flags`]: bytes were written since the timer last looked (the
/// pong and close deadlines give a peer that keeps reading more time).
const WROTE: u8 = 1;
/// [`WebSocket::flags`]: the stream has returned `None` (or its final error).
const FINISHED: u8 = 2;
/// [`WebSocket::flags`]: a data message went either way since the park
/// check last looked.
const ACTIVE: u8 = 4;
/// [`WebSocket::flags`]: a park check is in the timer wheel, due at
/// `last_message + park_after`.
const PARK_ARMED: u8 = 8;
/// [`WebSocket::flags`]: a park check found the connection quiet for
/// `park_after`; cleared by the next data message.
const PARK_DUE: u8 = 16;

/// The current time of tokio's clock (paused in tests), as a stamp.
fn now() -> Stamp {
    Stamp::from(Instant::now())
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field("protocol", &self.protocol)
            .field("close_info", &self.close_info)
            .finish_non_exhaustive()
    }
}

impl<S> WebSocket<S> {
    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref().map(|name| &**name)
    }

    /// The protocol state (negotiated compression, state, limits).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The transport.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes queued and not yet written (the browser's `bufferedAmount`).
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.close_info.as_deref()
    }
}

/// The flags byte.
impl<S> WebSocket<S> {
    /// Whether any of `flags` is set.
    fn has(&self, flags: u8) -> bool {
        self.flags & flags != 0
    }

    /// Sets or clears `flags`.
    fn set(&mut self, flags: u8, on: bool) {
        if on {
            self.flags |= flags;
        } else {
            self.flags &= !flags;
        }
    }

    /// Whether `flag` was set; clears it.
    fn take(&mut self, flag: u8) -> bool {
        let was = self.has(flag);
        self.set(flag, false);
        was
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a transport whose opening handshake is done, with the protocol
    /// state `conn` (which may already hold bytes read past the handshake).
    pub fn from_parts(
        io: S,
        conn: Connection,
        config: &Config,
        protocol: Option<Arc<str>>,
    ) -> Self {
        let now = now();
        Self {
            io,
            conn,
            timing: TIMINGS.get(Timing {
                ping_interval: Millis::from_option(config.ping_interval),
                pong_timeout: Millis::new(config.pong_timeout),
                idle_timeout: Millis::from_option(config.idle_timeout),
                close_timeout: Millis::new(config.close_timeout),
                park_after: Millis::from_option(config.park_after),
                high_water: u32::try_from(config.write_buffer_high_water)
                    .unwrap_or(u32::MAX)
                    .max(1),
            }),
            signal: None,
            deadline: Deadline::Keepalive,
            due: Stamp::NEVER,
            last_heard: now,
            last_message: now,
            ping_ahead: 0,
            protocol: protocol.map(|name| PROTOCOLS.get(Box::from(&*name))),
            close_info: None,
            unread_pings: 0,
            flags: 0,
        }
    }

    /// Closes with 1001 ("going away") when `watch`'s [`crate::Shutdown`] is
    /// triggered. The watch also serves as the connection's timer node, so a
    /// watched connection allocates nothing more for its timers.
    pub fn set_shutdown(&mut self, watch: ShutdownWatch) {
        self.signal = Some(watch.0);
        // The armed timers (if any) were put in the wheel with the old node:
        // arm them again with this one at the next poll.
        self.due = Stamp::NEVER;
        self.set(PARK_ARMED, false);
    }

    /// Queues a ping; it is written with the next flush or read.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        Ok(self.conn.send_ping(payload)?)
    }

    /// Closes the connection: sends a close frame with `code` and `reason`,
    /// then reads (discarding messages) until the peer's close frame arrives,
    /// and shuts the transport down. A peer that neither reads what is queued
    /// for it nor answers within `close_timeout` is dropped then
    /// ([`Error::AbnormalClosure`], close code 1006); one still reading the
    /// backlog in front of our close frame gets another `close_timeout`
    /// each time.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if !self.conn.sent_close() {
            self.conn.close(code, reason)?;
        }
        // The stream writes what is queued as it reads, under the close timer.
        while let Some(item) = futures_util::StreamExt::next(self).await {
            match item {
                Ok(_) => {}
                Err(Error::Protocol(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Queues a message encoded once for many connections (see
    /// [`PreparedMessage`]); like `Sink::start_send`, it is written with the
    /// next flush or read. Only a server may send prepared messages.
    pub fn send_prepared(&mut self, message: &PreparedMessage) -> Result<(), Error> {
        if self.timing.idle_timeout.is_some() {
            self.last_message = now();
        }
        self.on_message();
        Ok(self.conn.send_prepared(message)?)
    }

    /// Gives back the receive and write buffers now if they hold nothing
    /// (they are rebuilt on the next message). The connection does this by
    /// itself after a quiet ping interval; an application that knows a
    /// connection is going quiet (a server that has just answered a
    /// client's setup commands) can do it at once.
    pub fn shrink_buffers(&mut self) {
        if self.conn.buffered_amount() == 0 {
            self.conn.shrink_buffers();
        }
    }

    /// The write buffer's high-water mark from the config: above it
    /// `poll_ready` waits.
    pub fn high_water(&self) -> usize {
        self.timing.high_water as usize
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    /// Writes queued bytes until none remain or the transport is not ready.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while self.conn.buffered_amount() > 0 {
            let out = self.conn.transmit();
            let poll = if self.io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                match out.chunks_vectored(&mut slices) {
                    // One chunk (most batches of a fan-out, every echo
                    // reply): a plain write is cheaper in the kernel.
                    1 => Pin::new(&mut self.io).poll_write(cx, &slices[0]),
                    n => Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]),
                }
            } else {
                Pin::new(&mut self.io).poll_write(cx, out.chunk())
            };
            let Poll::Ready(written) = poll else {
                self.unread_pings = self.unread_pings.max(1);
                return Poll::Pending;
            };
            let written = written?;
            if written == 0 {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
            }
            self.conn.transmit().advance(written);
            self.ping_ahead = self
                .ping_ahead
                .saturating_sub(u32::try_from(written).unwrap_or(u32::MAX));
            self.set(WROTE, true);
            self.unread_pings = self.unread_pings.min(1);
        }
        // Written out: the queue goes back to the thread's spare.
        self.conn.release_written();
        self.unread_pings = 0;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// Reads what the transport has into the protocol layer.
    /// `Ready(Ok(0))` is end of stream.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let pending = self.conn.pending_frame_bytes();
        let read = if pending >= DIRECT_READ {
            // A large frame is under way: read straight into the connection's
            // buffer, reserved for (up to a MiB of) the rest of the frame,
            // whose size already passed the frame limit; saves a copy per byte.
            let buf = self.conn.read_buf();
            buf.reserve(pending.min(MAX_DIRECT_RESERVE));
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, buf)
        } else {
            let Self { io, conn, .. } = self;
            SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(scratch);
                ready!(Pin::new(io).poll_read(cx, &mut buf))?;
                let filled = buf.filled();
                conn.receive(filled);
                Poll::Ready(Ok(filled.len()))
            })
        };
        if let Poll::Ready(Ok(n)) = read
            && n > 0
        {
            // Any bytes are a sign of life, even part of a large frame.
            self.last_heard = now();
        }
        read
    }

    /// Registers the task with the wake-up node, if there is one yet, and
    /// closes with 1001 if shutdown was triggered (with the delay a drain
    /// advised in the reason, see [`crate::shutdown`]). Call before
    /// [`WebSocket::poll_timers`] in every poll that may wait.
    fn poll_signal(&mut self, cx: &mut Context<'_>) {
        if let Some(signal) = &self.signal {
            signal.register(cx.waker());
            if signal.triggered() && !self.conn.sent_close() {
                let _ = match signal.reconnect_after() {
                    Some(delay) => self.conn.close(
                        CloseCode::GOING_AWAY,
                        &crate::shutdown::reconnect_reason(delay),
                    ),
                    None => self
                        .conn
                        .close(CloseCode::GOING_AWAY, "server shutting down"),
                };
                // From here the close timeout runs, not the keepalive.
                self.set_deadline(Deadline::Close, cx.waker());
            }
        }
    }

    /// Arms the timer for the next deadline, if any, and returns when it is
    /// due. Makes the wake-up node (registered with `waker`) if there is none.
    fn arm(&mut self, waker: &Waker) -> Option<Stamp> {
        let deadline = match self.deadline {
            Deadline::Keepalive => {
                let ping = self
                    .timing
                    .ping_interval
                    .get()
                    .map(|d| (self.last_heard.saturating_add(d), d));
                let idle = self
                    .timing
                    .idle_timeout
                    .get()
                    .map(|d| (self.last_message.saturating_add(d), d));
                match (ping, idle) {
                    (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
                    (a, b) => a.or(b),
                }
            }
            Deadline::Pong => {
                let d = Timing::timeout(self.timing.pong_timeout);
                Some((now().saturating_add(d), d))
            }
            Deadline::Close => {
                let d = Timing::timeout(self.timing.close_timeout);
                Some((now().saturating_add(d), d))
            }
        };
        let Some((at, span)) = deadline else {
            self.due = Stamp::NEVER;
            return None;
        };
        let signal = self.signal.get_or_insert_with(|| {
            let signal = Arc::new(Watch::default());
            signal.register(waker);
            signal
        });
        timer::schedule(signal, at.into(), span);
        self.due = at;
        Some(at)
    }

    /// Moves the timer to a new kind of deadline.
    fn set_deadline(&mut self, deadline: Deadline, waker: &Waker) {
        if deadline == Deadline::Close {
            self.set(WROTE, false);
        }
        self.deadline = deadline;
        self.arm(waker);
    }

    /// Writes what the peer has made room for (the kernel wakes a writer only
    /// once much of its buffer is free, so progress may not have been seen
    /// yet), and tells whether anything was written since the last look.
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        if let Poll::Ready(Err(error)) = self.poll_flush_out(cx) {
            return Err(error);
        }
        Ok(self.take(WROTE))
    }

    /// Runs due timers. `Ready(Some(error))` ends the connection. Call after
    /// [`WebSocket::poll_signal`].
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Error>> {
        if !self.has(PARK_ARMED | PARK_DUE) && self.timing.park_after.is_some() {
            // A quiet spell starts: one clock read per spell, none per message.
            self.arm_park(cx.waker());
        }
        // The common case, on every poll: one atomic load.
        let fired = self.signal.as_ref().is_some_and(|s| s.take_timer());
        if fired && self.has(PARK_ARMED) {
            self.check_park(cx.waker());
        }
        let mut due = if self.due != Stamp::NEVER {
            if !fired {
                return Poll::Pending;
            }
            self.due
        } else {
            match self.arm(cx.waker()) {
                Some(due) => due,
                None => return Poll::Pending,
            }
        };
        loop {
            let now = now();
            if now < due {
                // Not yet (a stale entry, or just armed): the wheel holds one
                // for `due`.
                return Poll::Pending;
            }
            match self.deadline {
                Deadline::Keepalive if self.conn.sent_close() => {
                    // A close frame went out without moving the deadline:
                    // the close timeout governs now. (Staying on the
                    // keepalive would re-arm a deadline already past, and
                    // this loop would never return.)
                    self.set(WROTE, false);
                    self.deadline = Deadline::Close;
                }
                Deadline::Keepalive => {
                    if let Some(idle) = self.timing.idle_timeout.get()
                        && now >= self.last_message.saturating_add(idle)
                        && !self.conn.sent_close()
                    {
                        let _ = self.conn.close(CloseCode::GOING_AWAY, "idle timeout");
                        self.set(WROTE, false);
                        self.deadline = Deadline::Close;
                    } else if let Some(interval) = self.timing.ping_interval.get()
                        && now >= self.last_heard.saturating_add(interval)
                        && !self.conn.sent_close()
                    {
                        // Quiet for a whole interval: give back the buffers and
                        // the compression states (~200 KiB), keeping only the
                        // windows; then ping.
                        self.conn.release_compression();
                        self.conn.shrink_buffers();
                        let _ = self.conn.send_ping(b"");
                        self.ping_ahead =
                            u32::try_from(self.conn.buffered_amount()).unwrap_or(u32::MAX);
                        self.set(WROTE, false);
                        self.deadline = Deadline::Pong;
                    }
                }
                Deadline::Pong => {
                    // Nothing heard since the ping went into the queue (the
                    // deadline is a pong timeout after that). Not "nothing
                    // in the last pong timeout": the timer fires up to 1/16
                    // of its span late, and a pong that came at once would
                    // then look stale.
                    let silent = self
                        .last_heard
                        .saturating_add(Timing::timeout(self.timing.pong_timeout))
                        < due;
                    // The ping may still sit behind our own backlog: while the
                    // peer keeps draining it, the peer is alive and reading.
                    let draining = match self.poll_progress(cx) {
                        Ok(wrote) => wrote && self.ping_ahead > 0,
                        Err(error) => return Poll::Ready(Some(error)),
                    };
                    if silent && !draining {
                        return Poll::Ready(Some(Error::KeepaliveTimeout));
                    }
                    if !silent {
                        // Heard from the peer since the ping: back to keepalive.
                        self.deadline = Deadline::Keepalive;
                    }
                }
                Deadline::Close => {
                    // Our close frame may sit behind a backlog the peer is
                    // still reading (nothing is queued after it): another
                    // close timeout while it reads, so the last one runs from
                    // when the close frame was written; none once it stops.
                    match self.poll_progress(cx) {
                        Ok(true) => {}
                        Ok(false) => return Poll::Ready(Some(Error::AbnormalClosure)),
                        Err(error) => return Poll::Ready(Some(error)),
                    }
                }
            }
            match self.arm(cx.waker()) {
                Some(next) => due = next,
                None => return Poll::Pending,
            }
        }
    }

    /// Counts a ping received while the transport takes none of our bytes;
    /// past [`MAX_PINGS_UNREAD`], queues close 1008 and ends the stream.
    fn on_ping(&mut self) -> Option<Error> {
        if self.unread_pings == 0 {
            return None;
        }
        self.unread_pings = self.unread_pings.saturating_add(1);
        if self.unread_pings - 1 <= MAX_PINGS_UNREAD {
            return None;
        }
        let reason = "too many pings without reading";
        if !self.conn.sent_close() {
            let _ = self.conn.close(CloseCode::POLICY_VIOLATION, reason);
        }
        self.set(FINISHED, true);
        self.close_info = Some(Box::new(CloseInfo {
            code: CloseCode::POLICY_VIOLATION,
            reason: reason.to_owned(),
            was_clean: false,
        }));
        Some(Error::PingFlood {
            limit: u32::from(MAX_PINGS_UNREAD),
        })
    }

    /// Ends the stream abnormally: records 1006 and drops the transport's write side.
    fn end_abnormally(&mut self) {
        self.set(FINISHED, true);
        if self.close_info.is_none() {
            self.close_info = Some(Box::new(CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: String::new(),
                was_clean: false,
            }));
        }
    }

    /// A writer waits for a peer that does not read. The timers still run
    /// (the keepalive ping sits unread behind the backlog), so a peer that
    /// never reads is dropped within `ping_interval + pong_timeout`.
    fn poll_blocked_writer(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // This task may be the one the node wakes now (a split socket's
        // writer): it acts on shutdown as the reader would.
        self.poll_signal(cx);
        match self.poll_timers(cx) {
            Poll::Ready(Some(error)) => {
                self.end_abnormally();
                Poll::Ready(Err(error))
            }
            _ => Poll::Pending,
        }
    }

    /// After the close handshake or a failure: write what is left (the close
    /// frame), then shut the transport down. A client first waits (up to the
    /// close timeout) for the server to close the TCP connection. Call after
    /// [`WebSocket::poll_signal`].
    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        match self.poll_flush_out(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => {
                self.end_abnormally();
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Pending => {
                // A peer that does not read our last frames gets the close
                // timeout (renewed while it keeps reading), no more.
                if self.deadline != Deadline::Close {
                    self.set_deadline(Deadline::Close, cx.waker());
                }
                if let Poll::Ready(Some(error)) = self.poll_timers(cx) {
                    self.end_abnormally();
                    return Poll::Ready(Some(Err(error)));
                }
                return Poll::Pending;
            }
        }
        if self.conn.role() == duplex_proto::Role::Client && self.conn.failure().is_none() {
            // RFC 6455 §7.1.1: the server closes the TCP connection first.
            loop {
                match self.poll_read_some(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => {
                        self.poll_signal(cx);
                        if self.deadline != Deadline::Close {
                            self.set_deadline(Deadline::Close, cx.waker());
                        }
                        match self.poll_timers(cx) {
                            Poll::Ready(_) => break,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                }
            }
        }
        let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
        self.set(FINISHED, true);
        Poll::Ready(None)
    }

    fn poll_next_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        if self.has(FINISHED) {
            return Poll::Ready(None);
        }
        loop {
            match self.conn.poll_event() {
                Ok(Some(event)) => {
                    match event {
                        Event::Message(message) => {
                            if self.timing.idle_timeout.is_some() {
                                self.last_message = now();
                            }
                            self.on_message();
                            return Poll::Ready(Some(Ok(message)));
                        }
                        Event::Close(frame) => {
                            let (code, reason) = match frame {
                                Some(CloseFrame { code, reason }) => (code, reason),
                                None => (CloseCode::NO_STATUS, String::new()),
                            };
                            self.close_info = Some(Box::new(CloseInfo {
                                code,
                                reason,
                                was_clean: true,
                            }));
                        }
                        Event::Ping(_) => {
                            if let Some(error) = self.on_ping() {
                                return Poll::Ready(Some(Err(error)));
                            }
                        }
                        Event::Pong(_) if self.deadline == Deadline::Pong => {
                            // The answer to our keepalive ping after a quiet
                            // interval: give back what receiving it took.
                            self.conn.shrink_buffers();
                        }
                        _ => {}
                    }
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    self.close_info = Some(Box::new(CloseInfo {
                        code: error.close_code(),
                        reason: error.to_string(),
                        was_clean: false,
                    }));
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            self.poll_signal(cx);
            if self.conn.state() == State::Closed || !self.conn.wants_read() {
                return self.poll_finish(cx);
            }
            if let Poll::Ready(Err(error)) = self.poll_flush_out(cx) {
                self.end_abnormally();
                return Poll::Ready(Some(Err(error)));
            }
            if let Poll::Ready(Some(error)) = self.poll_timers(cx) {
                self.end_abnormally();
                return Poll::Ready(Some(Err(error)));
            }
            if self.conn.sent_close() && self.deadline != Deadline::Close {
                self.set_deadline(Deadline::Close, cx.waker());
                continue;
            }
            // What the timers queued (the keepalive ping) goes out before
            // the read waits, like everything else.
            if self.conn.buffered_amount() > 0
                && let Poll::Ready(Err(error)) = self.poll_flush_out(cx)
            {
                self.end_abnormally();
                return Poll::Ready(Some(Err(error)));
            }
            match self.poll_read_some(cx) {
                Poll::Pending => {
                    // Large buffers (after a big message) go back at once;
                    // small ones after a quiet ping interval (see the timers),
                    // so a busy connection does not allocate on every read.
                    if self.conn.buffered_amount() == 0 && self.conn.read_capacity() > LARGE_BUFFER
                    {
                        self.conn.shrink_buffers();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    self.end_abnormally();
                    return Poll::Ready(Some(Err(Error::AbnormalClosure)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    self.end_abnormally();
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_message(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.conn.sent_close() {
            return Poll::Ready(Err(duplex_proto::connection::SendError::Closed.into()));
        }
        if this.conn.buffered_amount() >= this.high_water() {
            // Write what we can; wait while the buffer stays above the mark.
            if let Poll::Ready(Err(error)) = this.poll_flush_out(cx) {
                return Poll::Ready(Err(error));
            }
            if this.conn.buffered_amount() >= this.high_water() {
                return this.poll_blocked_writer(cx);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        let this = self.get_mut();
        if this.timing.idle_timeout.is_some() {
            this.last_message = now();
        }
        this.on_message();
        Ok(this.conn.send(message)?)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        match this.poll_flush_out(cx) {
            Poll::Pending => this.poll_blocked_writer(cx),
            ready => ready,
        }
    }

    /// Sends a normal close (1000) if none was sent and writes it out. The
    /// peer's answer is read by the stream side. A peer that does not read
    /// is waited for at most the close timeout (longer only while it keeps
    /// reading), then the connection ends with 1006.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.conn.sent_close() {
            this.conn.close(CloseCode::NORMAL, "")?;
        }
        match this.poll_flush_out(cx) {
            Poll::Pending => {
                if this.deadline != Deadline::Close {
                    this.set_deadline(Deadline::Close, cx.waker());
                }
                this.poll_blocked_writer(cx)
            }
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests;
