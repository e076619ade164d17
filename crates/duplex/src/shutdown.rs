//! Asking many connections at once to close (server shutdown).
//!
//! A [`Shutdown`] hands out one [`ShutdownWatch`] per connection. When
//! triggered, every watched [`crate::WebSocket`] sends close 1001 ("going
//! away") at its next poll and is woken to do so; the close handshake then runs
//! as usual.
//!
//! Invariants: a watch costs one small allocation and no stored future; a
//! connection that starts after the trigger sees it at once; dropped
//! connections are pruned so the registry does not grow without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;

use futures_util::task::AtomicWaker;

/// The per-connection half: a flag and the task to wake.
#[derive(Debug, Default)]
struct Watch {
    triggered: AtomicBool,
    waker: AtomicWaker,
}

/// A connection's view of a [`Shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownWatch(Arc<Watch>);

impl ShutdownWatch {
    /// Registers the current task and tells whether shutdown was triggered.
    pub(crate) fn poll_triggered(&self, cx: &mut Context<'_>) -> bool {
        if self.0.triggered.load(Ordering::Acquire) {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.0.triggered.load(Ordering::Acquire)
    }
}

#[derive(Debug, Default)]
struct Registry {
    triggered: AtomicBool,
    watches: Mutex<Vec<Weak<Watch>>>,
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
            watch.triggered.store(true, Ordering::Release);
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
            watch.triggered.store(true, Ordering::Release);
            watch.waker.wake();
        }
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::Acquire)
    }
}
