//! Coarse timers shared by many connections: one wheel per thread, driven by
//! one task.
//!
//! A connection does not own a tokio `Sleep` (112 bytes, boxed, for every
//! idle connection). It puts a weak reference to its wake-up node (a
//! [`Watch`], shared with its shutdown watch) in the wheel of the thread it is
//! polled on, in the bucket of its deadline rounded up to a coarse resolution.
//! One driver task per wheel sleeps until the earliest bucket, then marks
//! every live node of the due buckets and wakes its task. Most connections'
//! deadlines are a keepalive interval away, so a few buckets hold thousands of
//! entries of 8 bytes each.
//!
//! Invariants:
//! - A bucket never fires before its instant, and its instant is at or after
//!   every deadline put in it, later by less than the resolution of the
//!   deadline's span: 1/16 of the span rounded down to a power of two
//!   milliseconds, between 1 and 1024 ms.
//! - Firing is only a hint: the connection checks its own deadline against
//!   the clock. Entries are never removed early; an entry whose connection is
//!   gone (its node can no longer be upgraded) is dropped when its bucket comes
//!   due, and a moved deadline leaves a stale entry that wakes its connection
//!   once for nothing.
//! - Time is tokio's ([`tokio::time::Instant`]), so paused time in tests
//!   advances to the driver's next bucket as it would to a `Sleep`.
//! - A wheel lives as long as its driver task, that is, its runtime: when the
//!   task is gone (the runtime shut down), the thread's next timer starts a
//!   new wheel and a new driver on the runtime of the caller.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::shutdown::Watch;

/// The coarsest resolution, for spans of 16 s and more.
const MAX_RESOLUTION_MS: u64 = 1024;

thread_local! {
    static WHEEL: RefCell<Option<Arc<Wheel>>> = const { RefCell::new(None) };
}

/// Wakes `watch` (marking its timer as fired) at `at` or at most the
/// resolution of `span` later. `span` is the length of the interval that
/// ends at `at` (a keepalive interval, a timeout). Must be called within a
/// tokio runtime with timers enabled (as `tokio::time::sleep`).
pub(crate) fn schedule(watch: &Arc<Watch>, at: Instant, span: Duration) {
    let wheel = WHEEL.with_borrow_mut(|slot| match slot {
        Some(wheel) if wheel.alive.load(Ordering::Acquire) => wheel.clone(),
        _ => {
            let wheel = Wheel::start();
            *slot = Some(wheel.clone());
            wheel
        }
    });
    wheel.insert(watch, at, span);
}

/// The resolution for deadlines `span` ahead: 1/16 of it, rounded down to a
/// power of two milliseconds, between 1 ms and [`MAX_RESOLUTION_MS`].
fn resolution_ms(span: Duration) -> u64 {
    let sixteenth = u64::try_from(span.as_millis() / 16).unwrap_or(u64::MAX);
    let clamped = sixteenth.clamp(1, MAX_RESOLUTION_MS);
    1 << (63 - clamped.leading_zeros())
}

/// Deadlines grouped in buckets by their (rounded up) millisecond since the
/// wheel's epoch.
#[derive(Debug)]
struct Wheel {
    epoch: Instant,
    /// The driver task still exists.
    alive: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    buckets: BTreeMap<u64, Vec<Weak<Watch>>>,
    /// The bucket the driver waits for, `None` when it waits for an insert.
    next: Option<u64>,
    /// The driver task, to wake when an earlier bucket appears.
    driver: Option<Waker>,
}

impl Wheel {
    /// A new wheel, with its driver spawned on the current runtime.
    fn start() -> Arc<Self> {
        let now = Instant::now();
        let wheel = Arc::new(Self {
            epoch: now,
            alive: AtomicBool::new(true),
            inner: Mutex::new(Inner::default()),
        });
        // Made here, in the caller's context: without a runtime with timers
        // this panics as `tokio::time::sleep` does, not inside the task.
        let sleep = Box::pin(tokio::time::sleep_until(now));
        drop(tokio::spawn(Driver {
            wheel: wheel.clone(),
            sleep,
        }));
        wheel
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bucket for a deadline at `at`: its millisecond rounded up to the
    /// resolution of `span`.
    fn key_for(&self, at: Instant, span: Duration) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let ms = u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX / 2);
        let resolution = resolution_ms(span);
        ms.div_ceil(resolution).saturating_mul(resolution)
    }

    /// The last bucket due at `now`.
    fn key_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// When bucket `key` is due.
    fn instant_of(&self, key: u64) -> Instant {
        self.epoch
            .checked_add(Duration::from_millis(key))
            .unwrap_or_else(|| self.epoch + Duration::from_secs(86_400 * 365))
    }

    fn insert(&self, watch: &Arc<Watch>, at: Instant, span: Duration) {
        let key = self.key_for(at, span);
        let wake = {
            let mut inner = self.lock();
            inner
                .buckets
                .entry(key)
                .or_default()
                .push(Arc::downgrade(watch));
            if inner.next.is_none_or(|next| key < next) {
                inner.next = Some(key);
                inner.driver.take()
            } else {
                None
            }
        };
        if let Some(driver) = wake {
            driver.wake();
        }
    }
}

/// The task that fires a wheel's buckets.
struct Driver {
    wheel: Arc<Wheel>,
    sleep: Pin<Box<Sleep>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.wheel.alive.store(false, Ordering::Release);
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = this.wheel.key_at(Instant::now());
            let (due, next) = {
                let mut inner = this.wheel.lock();
                let later = inner.buckets.split_off(&now.saturating_add(1));
                let due = std::mem::replace(&mut inner.buckets, later);
                inner.next = inner.buckets.keys().next().copied();
                if !inner
                    .driver
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.driver = Some(cx.waker().clone());
                }
                (due, inner.next)
            };
            for watch in due.into_values().flatten() {
                if let Some(watch) = watch.upgrade() {
                    watch.fire_timer();
                }
            }
            let Some(next) = next else {
                return Poll::Pending;
            };
            this.sleep.as_mut().reset(this.wheel.instant_of(next));
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_is_a_sixteenth_rounded_down_to_a_power_of_two() {
        assert_eq!(resolution_ms(Duration::ZERO), 1);
        assert_eq!(resolution_ms(Duration::from_millis(100)), 4);
        assert_eq!(resolution_ms(Duration::from_millis(200)), 8);
        assert_eq!(resolution_ms(Duration::from_secs(5)), 256);
        assert_eq!(resolution_ms(Duration::from_secs(30)), 1024);
        assert_eq!(resolution_ms(Duration::MAX), 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_or_after_the_deadline_within_the_resolution() {
        let watch = Arc::new(Watch::default());
        for span_ms in [0u64, 7, 200, 5_000, 30_000] {
            let span = Duration::from_millis(span_ms);
            let start = Instant::now();
            schedule(&watch, start + span, span);
            std::future::poll_fn(|cx| {
                watch.register(cx.waker());
                if watch.take_timer() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let late = Instant::now() - (start + span);
            assert!(
                late < Duration::from_millis(resolution_ms(span)) + Duration::from_millis(1),
                "{span:?}: {late:?} late"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_wakes_the_sleeping_driver() {
        let late = Arc::new(Watch::default());
        let early = Arc::new(Watch::default());
        let start = Instant::now();
        schedule(
            &late,
            start + Duration::from_secs(60),
            Duration::from_secs(60),
        );
        tokio::task::yield_now().await; // the driver now sleeps for a minute
        schedule(
            &early,
            start + Duration::from_millis(100),
            Duration::from_millis(100),
        );
        std::future::poll_fn(|cx| {
            early.register(cx.waker());
            if early.take_timer() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert!(Instant::now() - start < Duration::from_millis(110));
        assert!(!late.take_timer());
    }

    /// Entries in this thread's wheel.
    fn entries() -> usize {
        WHEEL.with_borrow(|slot| {
            slot.as_ref()
                .map_or(0, |wheel| wheel.lock().buckets.values().map(Vec::len).sum())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn entries_of_dropped_connections_are_let_go() {
        let start = Instant::now();
        let gone = Arc::new(Watch::default());
        schedule(
            &gone,
            start + Duration::from_millis(50),
            Duration::from_millis(50),
        );
        drop(gone);
        assert_eq!(entries(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(entries(), 0);
    }
}
