//! When a wait on Redis means the link is lost, and when it only means
//! Redis, or this node's own pipeline, is busy.
//!
//! A node's commands to Redis share one pipelined connection (and its
//! pushes one pub/sub connection), answered in order. Under a burst (a
//! hundred thousand clients subscribing, a reconnection storm) the queue in
//! front of a command can take longer than the command timeout to drain
//! while Redis answers all along. Taking that for a lost link is the worst
//! answer: the node drops its connections, is not ready, and on reconnecting
//! subscribes and enters presence for every channel again, which lengthens
//! the queue that caused it (a loop that held a 100,000-client run of
//! `benches/run-scale.sh` for minutes).
//!
//! The rule: a wait ends in failure only after `quiet` (the command timeout)
//! passed with no answer to anything (a script's reply or a pub/sub
//! message, counted in [`Progress`]), or after `limit` in all (the node
//! expiry: by then the other nodes take this node for dead anyway).
//!
//! Invariants: a future that completes is always returned; a wait never
//! lasts longer than `limit` (plus one timer tick); with no answer at all it
//! fails after `quiet`, as a plain timeout would.
//!
//! # A fresh link
//!
//! A link just connected has no answers yet to judge Redis by, and only its
//! own setup in flight, while the Redis it reaches may be busy with other
//! nodes' reconnection storms. Its setup (`INFO server` for the `run_id`, a
//! `SCRIPT LOAD` for every script) is therefore sent at once, pipelined (one
//! round trip, not one per command), and waited for up to `limit` (the node
//! expiry) in all, with no quiet period: [`on_fresh_link`]. That is sound
//! because nothing waits on it (the node is not ready before its link is
//! set up, so no client's request is held), and giving up sooner only
//! starts the setup again — a new connection whose commands queue behind
//! the same busy Redis — which lengthens the storm. What it costs: a Redis
//! that accepted the connection and answered its handshake (both within the
//! command timeout), and then says nothing, is given up on after the node
//! expiry instead of the command timeout; a connection that fails or closes
//! still ends the wait at once, with the command's error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Answers from Redis so far (replies and pushes): the link's proof of life.
#[derive(Debug, Default)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    /// Counts one answer.
    pub(crate) fn answered(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn seen(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The wait ended with Redis silent for the whole quiet period, or after
/// the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stalled;

/// Waits for `future` while Redis keeps answering (see the module doc).
pub(crate) async fn while_answering<F: Future>(
    progress: &Progress,
    quiet: Duration,
    limit: Duration,
    future: F,
) -> Result<F::Output, Stalled> {
    let deadline = tokio::time::Instant::now() + limit.max(quiet);
    let mut future = std::pin::pin!(future);
    let mut seen = progress.seen();
    loop {
        let until = (tokio::time::Instant::now() + quiet).min(deadline);
        match tokio::time::timeout_at(until, &mut future).await {
            Ok(output) => return Ok(output),
            Err(_) => {
                // A starved process (a busy machine) wakes with its timer
                // due and the answers still unread: let the tasks that read
                // them run first (a yield comes after the I/O driver's poll).
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                if let std::task::Poll::Ready(output) = futures_util::poll!(&mut future) {
                    return Ok(output);
                }
                let now = progress.seen();
                if now == seen || tokio::time::Instant::now() >= deadline {
                    return Err(Stalled);
                }
                seen = now;
            }
        }
    }
}

/// Waits for a fresh link's setup (see *A fresh link* in the module doc):
/// up to `limit` in all, however long Redis takes to answer it.
pub(crate) async fn on_fresh_link<F: Future>(
    limit: Duration,
    future: F,
) -> Result<F::Output, Stalled> {
    // No answers to count: the quiet period is the whole limit.
    while_answering(&Progress::default(), limit, limit, future).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const QUIET: Duration = Duration::from_secs(2);
    const LIMIT: Duration = Duration::from_secs(15);

    #[tokio::test(start_paused = true)]
    async fn silence_for_the_quiet_period_is_a_stall() {
        let progress = Progress::default();
        let started = tokio::time::Instant::now();
        let waited = while_answering(&progress, QUIET, LIMIT, std::future::pending::<()>()).await;
        assert_eq!(waited, Err(Stalled));
        assert_eq!(started.elapsed(), QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_while_others_arrive_is_waited_for() {
        let progress = Arc::new(Progress::default());
        // Other answers every second; ours after 9 s, far past the quiet
        // period (a plain 2 s timeout gives up on it).
        let ticker = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ticker.answered();
            }
        });
        let answer = tokio::time::sleep(Duration::from_secs(9));
        let waited = while_answering(&progress, QUIET, LIMIT, answer).await;
        assert_eq!(waited, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_stop_end_the_wait_one_quiet_period_later() {
        let progress = Arc::new(Progress::default());
        let ticker = progress.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ticker.answered();
            }
        });
        let started = tokio::time::Instant::now();
        let waited = while_answering(&progress, QUIET, LIMIT, std::future::pending::<()>()).await;
        assert_eq!(waited, Err(Stalled));
        // Answers at 1, 2, 3 s: the checks at 2 and 4 s see some, the one
        // at 6 s none.
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_link_waits_for_its_setup_up_to_the_limit() {
        // Answered after 9 s: far past the quiet period, within the limit.
        let answer = tokio::time::sleep(Duration::from_secs(9));
        assert_eq!(on_fresh_link(LIMIT, answer).await, Ok(()));
        let started = tokio::time::Instant::now();
        let waited = on_fresh_link(LIMIT, std::future::pending::<()>()).await;
        assert_eq!(waited, Err(Stalled));
        assert_eq!(started.elapsed(), LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_bounds_a_wait_however_busy_redis_is() {
        let progress = Arc::new(Progress::default());
        let ticker = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                ticker.answered();
            }
        });
        let started = tokio::time::Instant::now();
        let waited = while_answering(&progress, QUIET, LIMIT, std::future::pending::<()>()).await;
        assert_eq!(waited, Err(Stalled));
        assert_eq!(started.elapsed(), LIMIT);
    }
}
