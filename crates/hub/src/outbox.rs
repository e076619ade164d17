//! The bounded queue of frames waiting for one connection.
//!
//! Publishers on any task push shared messages ([`SharedMessage`]) into a
//! subscriber's outbox, which queues the message's frame in the
//! connection's envelope (encoded by the first outbox of that envelope to
//! take it, then shared); the connection's own task drains it into its
//! WebSocket.
//!
//! Invariants:
//! - A push never blocks and never waits for the reader: a publisher is never
//!   slowed by a slow consumer.
//! - The queued bytes are bounded: a push that would exceed the limit marks
//!   the outbox overflowed and drops the frame; the connection's task then
//!   closes the connection as a slow consumer (4008). Nothing is queued after
//!   an overflow or a close.
//! - An outbox its reader found empty holds no heap memory of its own.
//! - A [`Outbox::nudge`] (a server API control for this connection waits in
//!   the node's [`crate::control::Registry`]) wakes the reader once, until it
//!   takes the nudge with [`Outbox::take_nudge`]; nudges carry nothing
//!   themselves, so they cost no memory however many arrive.

use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use duplex::PreparedMessage;
use duplex_hub_proto::Encoding;
use thin_vec::ThinVec;
use tokio::time::Instant;

use crate::frame::SharedMessage;

/// A frame queued for a connection, with the time it was published (for the
/// publish-to-delivery latency). 16 bytes (an [`Instant`] alone takes 16):
/// a queue's allocation is 16 bytes of header and 16 per frame.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    /// The encoded frame, shared with every other subscriber.
    pub frame: PreparedMessage,
    /// When the hub accepted the publish.
    pub published: PublishTime,
}

/// A time on tokio's clock in 8 bytes where an [`Instant`] takes 16:
/// nanoseconds since an origin an hour before the process first read this
/// clock (so a publish time a little older than that reading, another
/// node's, still counts from it), with 584 years of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PublishTime(u64);

impl PublishTime {
    /// The clock's origin, set once.
    fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
        })
    }

    /// `instant` as a stamp (an instant before the origin counts as it).
    pub(crate) fn at(instant: Instant) -> Self {
        let since = instant.saturating_duration_since(Self::origin());
        Self(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Now (a fan-out reads the clock once for all its pushes).
    pub(crate) fn now() -> Self {
        Self::at(Instant::now())
    }

    /// The time since this stamp.
    pub(crate) fn elapsed(self) -> Duration {
        Instant::now().saturating_duration_since(Self::origin() + Duration::from_nanos(self.0))
    }
}

/// The room a queue gets once its reader has more than one frame waiting.
const BEHIND_CAPACITY: usize = 16;

/// One connection's queue. See the module docs.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: Mutex<Inner>,
}

/// Byte counts are `u32` (a limit is capped at 4 GiB) and the queue a
/// thin vector (one pointer; its length and capacity live in its
/// allocation): an outbox lives in every subscriber, so its size counts.
#[derive(Debug)]
struct Inner {
    /// Oldest first. A drain takes from the front and moves what stays
    /// (only a reader that is behind leaves any).
    queue: ThinVec<Queued>,
    waker: Option<Waker>,
    /// Bytes queued, at most `limit`.
    bytes: u32,
    limit: u32,
    /// The connection's envelope (kept here, in what was padding).
    encoding: Encoding,
    state: State,
    /// Set by [`Outbox::nudge`], cleared by [`Outbox::take_nudge`].
    nudged: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Open,
    Overflowed,
    Closed,
}

/// What [`Outbox::poll_drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// It handed over `count` frames of `bytes` bytes in all.
    Frames {
        /// Frames handed over.
        count: usize,
        /// Their bytes.
        bytes: usize,
    },
    /// The outbox overflowed: the connection must be closed as a slow consumer.
    Overflowed,
}

impl Outbox {
    /// An empty outbox of a JSON connection holding at most `limit` bytes
    /// of frames (capped at `u32::MAX`).
    #[cfg(test)]
    pub(crate) fn new(limit: usize) -> Self {
        Self::with_encoding(limit, Encoding::Json)
    }

    /// An empty outbox of a connection of `encoding` holding at most
    /// `limit` bytes of frames (capped at `u32::MAX`).
    pub(crate) fn with_encoding(limit: usize, encoding: Encoding) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: ThinVec::new(),
                waker: None,
                bytes: 0,
                limit: u32::try_from(limit).unwrap_or(u32::MAX),
                encoding,
                state: State::Open,
                nudged: false,
            }),
        }
    }

    /// The connection's envelope.
    pub(crate) fn encoding(&self) -> Encoding {
        self.lock().encoding
    }

    /// Queues `message`'s frame in the connection's envelope (encoding it if
    /// no connection of that envelope took it yet); returns `false` when it
    /// was not queued (overflowed or closed). Wakes the connection's task.
    pub(crate) fn push(&self, message: &SharedMessage, published: PublishTime) -> bool {
        let (queued, waker) = {
            let mut inner = self.lock();
            if inner.state != State::Open {
                return false;
            }
            let frame = message.frame(inner.encoding).clone();
            let len = frame.frame().len();
            let total = inner.bytes as usize + len;
            let queued = total <= inner.limit as usize;
            if queued {
                // At most `limit`, so it fits.
                inner.bytes = total as u32;
                // An idle reader gets one message at a time: room for one
                // (a 32-byte allocation), not the default four (a fan-out to
                // many idle readers allocates this for each of them). A
                // reader that falls behind gets room for 16 at once (272
                // bytes), then doubles.
                let queue = &mut inner.queue;
                match queue.capacity() {
                    0 => queue.reserve_exact(1),
                    1 => queue.reserve_exact(BEHIND_CAPACITY - queue.len()),
                    _ => {}
                }
                queue.push(Queued { frame, published });
            } else {
                inner.state = State::Overflowed;
                inner.queue = ThinVec::new();
                inner.bytes = 0;
            }
            (queued, inner.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        queued
    }

    /// Hands up to `max_bytes` of frames (at least one when any is queued)
    /// to `sink`, in push order, and returns how many; or registers `cx` to
    /// be woken by the next push. `sink` runs under the outbox's lock: keep
    /// it short (queueing into a WebSocket's write buffer is).
    pub(crate) fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        max_bytes: usize,
        mut sink: impl FnMut(Queued),
    ) -> Poll<Drained> {
        let mut inner = self.lock();
        if inner.state == State::Overflowed {
            return Poll::Ready(Drained::Overflowed);
        }
        if inner.queue.is_empty() {
            if !inner
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                inner.waker = Some(cx.waker().clone());
            }
            // The reader is about to sleep: most subscribers are idle most
            // of the time, so the queue's memory goes back now (a busy one
            // pays one allocation per batch).
            if inner.queue.capacity() > 0 {
                inner.queue = ThinVec::new();
            }
            return Poll::Pending;
        }
        let (mut count, mut bytes) = (0, 0);
        for queued in &inner.queue {
            let len = queued.frame.frame().len();
            if count > 0 && bytes + len > max_bytes {
                break;
            }
            bytes += len;
            count += 1;
        }
        inner.queue.drain(..count).for_each(&mut sink);
        // What was handed over was counted in `bytes` when queued.
        inner.bytes -= bytes as u32;
        Poll::Ready(Drained::Frames { count, bytes })
    }

    /// Whether the outbox overflowed; if not, registers `cx` to be woken by
    /// the next push (for a reader that takes nothing while its socket is
    /// full but must still notice an overflow).
    pub(crate) fn poll_overflowed(&self, cx: &mut Context<'_>) -> bool {
        let mut inner = self.lock();
        if inner.state == State::Overflowed {
            return true;
        }
        if !inner
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            inner.waker = Some(cx.waker().clone());
        }
        false
    }

    /// Leaves `waker` to be woken by the next push, nudge or overflow (a
    /// parked session's, see `duplex::park`), and tells whether the reader
    /// has something already: frames queued, a nudge, an overflow or a close.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        let mut inner = self.lock();
        if !inner
            .waker
            .as_ref()
            .is_some_and(|held| held.will_wake(waker))
        {
            inner.waker = Some(waker.clone());
        }
        !inner.queue.is_empty() || inner.nudged || inner.state != State::Open
    }

    /// Wakes the reader to look at its pending controls (see the module
    /// docs); nothing after a close.
    pub(crate) fn nudge(&self) {
        let waker = {
            let mut inner = self.lock();
            if inner.state == State::Closed {
                return;
            }
            inner.nudged = true;
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the outbox was nudged since the last call (and clears it).
    pub(crate) fn take_nudge(&self) -> bool {
        std::mem::take(&mut self.lock().nudged)
    }

    /// Refuses every later push and drops what is queued.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.state = State::Closed;
        inner.queue = ThinVec::new();
        inner.bytes = 0;
        inner.waker = None;
    }

    #[cfg(test)]
    /// Bytes queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().bytes as usize
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the queue consistent (every
        // update is a single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;

    use duplex::Message;

    use super::*;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn frame(len: usize) -> SharedMessage {
        SharedMessage::of_frame(PreparedMessage::new(&Message::binary(vec![7u8; len])))
    }

    #[test]
    fn push_wakes_and_take_returns_in_order() {
        let outbox = Outbox::new(1 << 20);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(outbox.poll_drain(&mut cx, usize::MAX, |_| {}).is_pending());
        let now = PublishTime::now();
        assert!(outbox.push(&frame(1), now));
        assert!(outbox.push(&frame(2), now));
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        let mut lens = Vec::new();
        let drained = outbox.poll_drain(&mut cx, usize::MAX, |q| lens.push(q.frame.frame().len()));
        assert_eq!(drained, Poll::Ready(Drained::Frames { count: 2, bytes: 7 }));
        assert_eq!(lens, [3, 4]);
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn take_respects_max_bytes_but_returns_at_least_one() {
        let outbox = Outbox::new(1 << 20);
        let now = PublishTime::now();
        for _ in 0..3 {
            outbox.push(&frame(100), now);
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let one = outbox.poll_drain(&mut cx, 10, |_| {});
        assert!(matches!(one, Poll::Ready(Drained::Frames { count: 1, .. })));
        let two = outbox.poll_drain(&mut cx, 250, |_| {});
        assert!(matches!(two, Poll::Ready(Drained::Frames { count: 2, .. })));
    }

    #[test]
    fn overflow_drops_everything_and_refuses_more() {
        let outbox = Outbox::new(250);
        let now = PublishTime::now();
        assert!(outbox.push(&frame(100), now));
        assert!(outbox.push(&frame(100), now));
        assert!(!outbox.push(&frame(100), now), "third frame overflows");
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(!outbox.push(&frame(1), now));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(
            outbox.poll_drain(&mut cx, usize::MAX, |_| {}),
            Poll::Ready(Drained::Overflowed)
        );
    }

    #[test]
    fn a_nudge_wakes_the_reader_once() {
        let outbox = Outbox::new(1000);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(!outbox.take_nudge());
        assert!(outbox.poll_drain(&mut cx, usize::MAX, |_| {}).is_pending());
        outbox.nudge();
        outbox.nudge();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(outbox.take_nudge());
        assert!(!outbox.take_nudge(), "taken once");
        outbox.close();
        outbox.nudge();
        assert!(!outbox.take_nudge(), "nothing after a close");
    }

    #[test]
    fn a_message_is_encoded_once_per_envelope_and_shared_by_its_outboxes() {
        let message = crate::frame::prepare(duplex_hub_proto::ServerMessage::Gap {
            channel: "a".into(),
            epoch: "e".into(),
            offset: 3,
        });
        let now = PublishTime::now();
        let binary = Outbox::with_encoding(1 << 20, Encoding::Binary);
        assert!(binary.push(&message, now));
        assert!(message.is_encoded(Encoding::Binary));
        assert!(
            !message.is_encoded(Encoding::Json),
            "no JSON subscriber yet"
        );
        let others = [Encoding::Binary, Encoding::Json, Encoding::Json]
            .map(|encoding| Outbox::with_encoding(1 << 20, encoding));
        for outbox in &others {
            assert!(outbox.push(&message, now));
        }
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut frames = Vec::new();
        for outbox in std::iter::once(&binary).chain(&others) {
            let drained = outbox.poll_drain(&mut cx, usize::MAX, |q| frames.push(q.frame));
            assert!(drained.is_ready());
        }
        // Two encodings, each shared (the same bytes, not copies).
        let at = |i: usize| frames[i].frame().as_ptr();
        assert_eq!(at(0), at(1));
        assert_eq!(at(2), at(3));
        assert_ne!(at(0), at(2));
        assert_eq!(frames[0].frame()[0] & 0x0f, 2, "binary frame");
        assert_eq!(frames[2].frame()[0] & 0x0f, 1, "text frame");
    }

    /// Queues live in every busy subscriber: an entry of 16 bytes puts the
    /// header and one entry in a 32-byte allocation (48 with an `Instant`).
    #[test]
    fn a_queued_frame_takes_16_bytes() {
        assert_eq!(std::mem::size_of::<Queued>(), 16);
    }

    #[test]
    fn a_published_stamp_measures_the_time_since() {
        // Older than the clock's first reading: still measured from it.
        let stamp = PublishTime::at(Instant::now() - Duration::from_millis(30));
        let elapsed = stamp.elapsed();
        assert!(elapsed >= Duration::from_millis(30), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
        assert!(PublishTime::now() > stamp);
    }

    #[test]
    fn closed_outbox_refuses_pushes() {
        let outbox = Outbox::new(1000);
        outbox.close();
        assert!(!outbox.push(&frame(1), PublishTime::now()));
    }
}
