//! Asking many connections at once to close (server shutdown).
//!
//! A [`Shutdown`] hands out one [`ShutdownWatch`] per connection. When
//! triggered, every watched [`crate::WebSocket`] sends close 1001 ("going
//! away") at its next poll and is woken to do so; the close handshake then runs
//! as usual.
//!
//! ## Drain: spreading the reconnections
//!
//! [`Shutdown::trigger_spread`] also tells each connection when to come
//! back, so that the clients of a node that goes away do not all land on the
//! others at the same moment: the close reason reads
//! `server shutting down; reconnect in 3217 ms` ([`reconnect_reason`]), and
//! [`parse_reconnect_reason`] reads it back ([`crate::ReconnectingWebSocket`]
//! waits that long instead of its own backoff). The delays are stratified
//! over the window: of N connections, the i-th draws uniformly from
//! `[i·W/N, (i+1)·W/N)`, so every slice of the window gets its share (no
//! clumps, as independent draws would give) and the order is random within
//! a slice.
//!
//! Invariants: a watch costs one small allocation (48 bytes, the delay
//! included) and no stored
//! future, and that allocation is also the connection's wake-up node for its
//! timers (see [`crate::websocket`]), so a watched connection allocates
//! nothing more for them; a connection that starts after the trigger sees it
//! at once; dropped connections are pruned so the registry does not grow
//! without bound.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::Duration;

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
    /// When to come back, in milliseconds plus one (0: no advice); set before
    /// [`TRIGGERED`]. Fits in the padding after `flags`.
    reconnect: AtomicU32,
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

    /// The delay the shutdown advised this connection to wait before it
    /// reconnects, if it was a spread one ([`Shutdown::trigger_spread`]).
    pub(crate) fn reconnect_after(&self) -> Option<Duration> {
        match self.reconnect.load(Ordering::Acquire) {
            0 => None,
            n => Some(Duration::from_millis(u64::from(n - 1))),
        }
    }

    /// Whether shutdown was triggered or a timer fired and was not yet seen
    /// (leaves the marks as they are).
    pub(crate) fn pending(&self) -> bool {
        self.flags.load(Ordering::Acquire) != 0
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
    /// The drain window in milliseconds plus one (0: none), for watches
    /// made after the trigger.
    spread: AtomicU32,
    watches: Mutex<Vec<Weak<Watch>>>,
    /// Wakes [`Shutdown::triggered`] waiters (an HTTP/2 connection that
    /// sends GOAWAY); connections themselves are woken through their watch.
    notify: tokio::sync::Notify,
}

/// The close reason that advises a client to reconnect after `delay`:
/// `server shutting down; reconnect in 3217 ms` (whole milliseconds).
pub fn reconnect_reason(delay: Duration) -> String {
    format!(
        "server shutting down; reconnect in {} ms",
        delay.as_millis()
    )
}

/// The delay a close reason advises (see [`reconnect_reason`]): the number
/// of milliseconds after `reconnect in `, wherever it is in the reason.
/// `None` when the reason has none.
pub fn parse_reconnect_reason(reason: &str) -> Option<Duration> {
    let (_, rest) = reason.split_once("reconnect in ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 || !rest[end..].starts_with(" ms") {
        return None;
    }
    rest[..end].parse::<u64>().ok().map(Duration::from_millis)
}

/// A window in milliseconds plus one, as the atomics keep it.
fn millis_plus_one(window: Duration) -> u32 {
    u32::try_from(window.as_millis())
        .unwrap_or(u32::MAX - 1)
        .min(u32::MAX - 1)
        + 1
}

/// A delay of `slot` among `slots` equal slices of `window` (plus one, in
/// milliseconds), at `unit` (in `[0, 1)`) into its slice.
fn stratified(window: u32, slot: usize, slots: usize, unit: f64) -> u32 {
    let width = f64::from(window - 1) / slots.max(1) as f64;
    let at = (slot as f64 + unit.clamp(0.0, 1.0)) * width;
    (at as u32).min(window - 1) + 1
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
            let window = self.0.spread.load(Ordering::Acquire);
            if window > 0 {
                let delay = stratified(window, 0, 1, rand::random::<f64>());
                watch.reconnect.store(delay, Ordering::Release);
            }
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

    /// Asks every watched connection to close with 1001, advising each to
    /// reconnect after a delay spread uniformly over `window` (see the
    /// module docs); returns the delays handed out, in the order of the
    /// watches. A zero window is [`Shutdown::trigger`].
    pub fn trigger_spread(&self, window: Duration) -> Vec<Duration> {
        self.trigger_spread_with(window, rand::random::<f64>)
    }

    /// [`Shutdown::trigger_spread`] with the random numbers (in `[0, 1)`)
    /// from `random`.
    pub fn trigger_spread_with(
        &self,
        window: Duration,
        mut random: impl FnMut() -> f64,
    ) -> Vec<Duration> {
        if window.is_zero() {
            self.trigger();
            return Vec::new();
        }
        let window = millis_plus_one(window);
        self.0.spread.store(window, Ordering::Release);
        self.0.triggered.store(true, Ordering::Release);
        let watches =
            std::mem::take(&mut *self.0.watches.lock().unwrap_or_else(|e| e.into_inner()));
        let live: Vec<Arc<Watch>> = watches.iter().filter_map(Weak::upgrade).collect();
        // A random order of the slots, so that the delay says nothing of
        // how long a connection has been open.
        let mut slots: Vec<usize> = (0..live.len()).collect();
        for i in (1..slots.len()).rev() {
            let j = ((random() * (i + 1) as f64) as usize).min(i);
            slots.swap(i, j);
        }
        let mut delays = Vec::with_capacity(live.len());
        for (watch, slot) in live.iter().zip(slots) {
            let delay = stratified(window, slot, live.len(), random());
            watch.reconnect.store(delay, Ordering::Release);
            delays.push(Duration::from_millis(u64::from(delay - 1)));
            watch.set(TRIGGERED);
        }
        // As `trigger` does: whoever waits in `triggered` (an HTTP/2
        // connection's GOAWAY) acts now too.
        self.0.notify.notify_waiters();
        delays
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.0.triggered.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_stays_48_bytes() {
        assert_eq!(std::mem::size_of::<Watch>(), 32);
        // Plus the two reference counts of its `Arc`.
        assert_eq!(std::mem::size_of::<Watch>() + 16, 48);
    }

    #[test]
    fn reconnect_reasons_round_trip() {
        let reason = reconnect_reason(Duration::from_millis(3217));
        assert_eq!(reason, "server shutting down; reconnect in 3217 ms");
        assert_eq!(
            parse_reconnect_reason(&reason),
            Some(Duration::from_millis(3217))
        );
        assert_eq!(
            parse_reconnect_reason("reconnect in 0 ms"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_reconnect_reason("server shutting down"), None);
        assert_eq!(parse_reconnect_reason("reconnect in soon"), None);
        assert_eq!(parse_reconnect_reason("reconnect in 5 s"), None);
    }

    /// Of N connections drained over a window, every tenth of the window
    /// gets a tenth of them (stratified), all within the window, and each
    /// connection sees its own delay.
    #[test]
    fn a_drain_spreads_the_delays_over_the_window() {
        let shutdown = Shutdown::new();
        let watches: Vec<ShutdownWatch> = (0..1000).map(|_| shutdown.watch()).collect();
        let window = Duration::from_secs(5);
        let delays = shutdown.trigger_spread(window);
        assert_eq!(delays.len(), 1000);
        let mut buckets = [0usize; 10];
        for delay in &delays {
            assert!(*delay < window, "{delay:?}");
            buckets[(delay.as_millis() / 500) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (99..=101).contains(&n)),
            "{buckets:?}"
        );
        let mut seen: Vec<Duration> = watches
            .iter()
            .map(|w| {
                assert!(w.0.triggered());
                w.0.reconnect_after().unwrap()
            })
            .collect();
        assert_eq!(seen, delays);
        // Not in the order the connections came.
        seen.sort();
        assert_ne!(seen, delays);
        // One that comes after the trigger is told too, within the window.
        let late = shutdown.watch();
        assert!(late.0.triggered());
        assert!(late.0.reconnect_after().unwrap() < window);
    }

    #[test]
    fn a_plain_trigger_advises_nothing() {
        let shutdown = Shutdown::new();
        let watch = shutdown.watch();
        shutdown.trigger();
        assert!(watch.0.triggered());
        assert_eq!(watch.0.reconnect_after(), None);
        assert_eq!(shutdown.trigger_spread(Duration::ZERO), Vec::new());
    }
}
