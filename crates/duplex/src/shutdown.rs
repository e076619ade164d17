//! Asking many connections at once to close (server shutdown).
//!
//! A [`Shutdown`] hands out one [`ShutdownWatch`] per connection. When
//! triggered, every watched [`crate::WebSocket`] sends close 1001 ("going
//! away") at its next poll and is woken to do so; the close handshake then runs
//! as usual.
//!
//! Invariants: a watch costs one small allocation (48 bytes) and no stored
//! future, and that allocation is also the connection's wake-up node for its
//! timers (see [`crate::websocket`]), so a watched connection allocates
//! nothing more for them; a connection that starts after the trigger sees it
//! at once; dropped connections are pruned so the registry does not grow
//! without bound.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;

use futures_util::task::AtomicWaker;

/// [`Watch::flags`]: the shutdown was triggered (sticky).
const TRIGGERED: u8 = 1;
/// [`Watch::flags`]: a timer of the connection fired and was not yet seen.
const TIMER: u8 = 2;

/// One connection's wake-up node: flags set by others (the shutdown trigger,
/// the timer wheel) and the task to wake when they change (the one that
/// waited last, as with a tokio `Sleep`).
#[derive(Debug, Default)]
pub(crate) struct Watch {
    flags: AtomicU8,
    waker: AtomicWaker,
}

impl Watch {
    /// Registers the task to wake. Call before checking the flags, so that a
    /// flag set in between still wakes the task.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Whether shutdown was triggered.
    pub(crate) fn triggered(&self) -> bool {
        self.flags.load(Ordering::Acquire) & TRIGGERED != 0
    }

    /// Whether a timer fired since the last call; clears the mark.
    pub(crate) fn take_timer(&self) -> bool {
        // A plain load first: the common answer is "no", without a write.
        self.flags.load(Ordering::Acquire) & TIMER != 0
            && self.flags.fetch_and(!TIMER, Ordering::AcqRel) & TIMER != 0
    }

    /// Marks a timer as fired and wakes the task.
    pub(crate) fn fire_timer(&self) {
        self.set(TIMER);
    }

    fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::Release);
        self.waker.wake();
    }
}

/// A connection's view of a [`Shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownWatch(pub(crate) Arc<Watch>);

#[derive(Debug, Default)]
struct Registry {
    triggered: AtomicBool,
    watches: Mutex<Vec<Weak<Watch>>>,
    /// Wakes [`Shutdown::triggered`] waiters (an HTTP/2 connection that
    /// sends GOAWAY); connections themselves are woken through their watch.
    notify: tokio::sync::Notify,
}

/// Triggers a graceful close of every connection it watches. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<Registry>);

impl Shutdown {
    /// A shutdown switch, not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// A watch for one more connection.
    pub fn watch(&self) -> ShutdownWatch {
        let watch = Arc::new(Watch::default());
        let mut watches = self.0.watches.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.triggered.load(Ordering::Acquire) {
            watch.flags.fetch_or(TRIGGERED, Ordering::Release);
        }
        if watches.len() == watches.capacity() {
            watches.retain(|w| w.strong_count() > 0);
        }
        watches.push(Arc::downgrade(&watch));
        ShutdownWatch(watch)
    }

    /// Asks every watched connection to close with 1001 and wakes it.
    pub fn trigger(&self) {
        self.0.triggered.store(true, Ordering::Release);
        let watches =
            std::mem::take(&mut *self.0.watches.lock().unwrap_or_else(|e| e.into_inner()));
        for watch in watches.iter().filter_map(Weak::upgrade) {
            watch.set(TRIGGERED);
        }
        self.0.notify.notify_waiters();
    }

    /// Completes once [`Shutdown::trigger`] is called (at once if it was):
    /// for whoever must act on shutdown besides the watched WebSockets, such
    /// as an HTTP/2 connection that sends GOAWAY.
    pub async fn triggered(&self) {
        let notified = self.0.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a trigger in between still wakes.
        notified.as_mut().enable();
        if self.is_triggered() {
            return;
        }
        notified.await;
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::Acquire)
    }
}
