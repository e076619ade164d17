//! What parking needs of a [`WebSocket`] (see [`crate::park`]): the park
//! check on the shared timer wheel, whether the connection is due to park,
//! and its transport swapped out and back.
//!
//! Invariants:
//! - No clock read per message: a data message sets a flag; the check,
//!   armed once per quiet spell in the timer wheel, reads the clock when it
//!   fires and arms itself again while messages flow. A connection is due
//!   between `park_after` and twice that after its last message (exactly
//!   `park_after` with an idle timeout, which keeps `last_message` exact).
//! - A parked connection that comes back keeps its due park: it may park
//!   again as soon as it is at rest, after reading what woke it.

use std::io;
use std::sync::Arc;
use std::task::Waker;

use duplex_proto::connection::State;

use super::{ACTIVE, FINISHED, PARK_ARMED, PARK_DUE, SCRATCH, WebSocket, now, timer};
use crate::shutdown::Watch;

impl<S> WebSocket<S> {
    /// Whether the connection may be parked now ([`crate::park`]): it was
    /// quiet, no data message either way, for [`Config::park_after`], and is
    /// at rest: open, nothing queued to write, no close under way. Ask after
    /// the stream returned `Pending`, so that everything received was
    /// handled. Always false when `park_after` is `None`.
    pub fn park_due(&self) -> bool {
        self.has(PARK_DUE)
            && !self.has(FINISHED)
            && self.conn.state() == State::Open
            && !self.conn.sent_close()
            && self.conn.buffered_amount() == 0
    }

    /// The same connection over another transport (none while parked, see
    /// [`crate::park`]), and the old one.
    pub(crate) fn replace_io<T>(self, io: T) -> (S, WebSocket<T>) {
        let ws = WebSocket {
            io,
            conn: self.conn,
            timing: self.timing,
            signal: self.signal,
            deadline: self.deadline,
            due: self.due,
            last_heard: self.last_heard,
            last_message: self.last_message,
            ping_ahead: self.ping_ahead,
            protocol: self.protocol,
            close_info: self.close_info,
            unread_pings: self.unread_pings,
            flags: self.flags,
        };
        (self.io, ws)
    }

    /// Reads what `socket` has (a parked connection's bare socket, not yet
    /// back on tokio's poller) into the protocol layer, as a poll's read
    /// would: `Ok(0)` is end of stream.
    pub(crate) fn receive_from(&mut self, socket: &mut impl io::Read) -> io::Result<usize> {
        let n = SCRATCH.with_borrow_mut(|scratch| {
            let n = socket.read(scratch)?;
            self.conn.receive(&scratch[..n]);
            Ok::<_, io::Error>(n)
        })?;
        if n > 0 {
            self.last_heard = now();
        }
        Ok(n)
    }

    /// Forgets a due park and its check: the next poll arms a new one.
    pub(crate) fn restart_park_check(&mut self) {
        self.set(PARK_DUE | PARK_ARMED, false);
    }

    /// The wake-up node, if any (timers and shutdown).
    pub(crate) fn signal(&self) -> Option<&Arc<Watch>> {
        self.signal.as_ref()
    }

    /// A data message went either way: the connection is not quiet.
    pub(super) fn on_message(&mut self) {
        self.set(ACTIVE, true);
        self.set(PARK_DUE, false);
    }

    /// Arms the park check: a quiet spell starts now (or, with an idle
    /// timeout, which keeps `last_message` exact, at the last message).
    /// Makes the wake-up node (registered with `waker`) if there is none.
    pub(super) fn arm_park(&mut self, waker: &Waker) {
        if !self.timing.idle_timeout.is_some() {
            self.last_message = now();
        }
        self.set(ACTIVE, false);
        self.set(PARK_ARMED, true);
        self.schedule_park(waker);
    }

    /// Puts the park check in the timer wheel, `park_after` from
    /// `last_message`.
    fn schedule_park(&mut self, waker: &Waker) {
        let Some(after) = self.timing.park_after.get() else {
            return;
        };
        let at = self.last_message.saturating_add(after);
        let signal = self.signal.get_or_insert_with(|| {
            let signal = Arc::new(Watch::default());
            signal.register(waker);
            signal
        });
        timer::schedule(signal, at.into(), after);
    }

    /// A timer fired while a park check is armed: the connection is due to
    /// park when no data message went either way for `park_after`; else
    /// the check goes back in the wheel. Without an idle timeout
    /// `last_message` is only moved here, when a message came since the
    /// last look: the spell then starts again at most `park_after` late.
    pub(super) fn check_park(&mut self, waker: &Waker) {
        let Some(after) = self.timing.park_after.get() else {
            return;
        };
        let now = now();
        if self.take(ACTIVE) && !self.timing.idle_timeout.is_some() {
            self.last_message = now;
        }
        if now >= self.last_message.saturating_add(after) {
            self.set(PARK_ARMED, false);
            self.set(PARK_DUE, true);
        } else {
            self.schedule_park(waker);
        }
    }
}
