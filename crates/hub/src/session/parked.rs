//! A quiet session without its task (see `duplex::park`): what it keeps,
//! and how it comes back.
//!
//! Invariants:
//! - Only a session waiting on plain TCP with no publish in flight parks;
//!   its parked form is the [`Session`] without the (empty) in-flight queue,
//!   so a parked session fits jemalloc's 256-byte class with its WebSocket.
//! - Its outbox (frames, nudges), its phase timer and the hub's abort
//!   resume it, besides what `duplex::park` watches (the socket, the
//!   keepalive and shutdown).
//! - A parked session that cannot come back (its socket refused by the
//!   kernel, its runtime shutting down) still leaves the hub: out of the
//!   registry, its channels and the gauges, as a connection closed with
//!   1006 (`Session::abandon`).

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};

use duplex::WebSocket;
use duplex_hub_proto::session::SessionState;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::{Session, SessionTask, TaskState};
use crate::auth::Identity;
use crate::broker::Subscriber;
use crate::hub::Hub;
use crate::limits::{RateLimiter, Ticket};

/// Parks the session `state` waits in when its transport is plain TCP
/// (see `duplex::park`), leaving `Done`; true if it did. TLS, HTTP/2 and
/// SSE sessions keep their task.
pub(super) fn park<S: 'static>(state: &mut TaskState<S>) -> bool {
    let Some(tcp) = (state as &mut dyn Any).downcast_mut::<TaskState<TcpStream>>() else {
        return false;
    };
    let TaskState::Waiting(ws, session) = std::mem::replace(tcp, TaskState::Done) else {
        unreachable!("parked only while waiting")
    };
    session.hub.metrics.connection_parked();
    duplex::park::park(ws, Parked::from(session));
    true
}

/// A parked session: a [`Session`] without its publishes in flight (it
/// parks only when there are none), 8 bytes less in every parked slot.
pub(super) struct Parked {
    hub: Arc<Hub>,
    ticket: Ticket,
    me: Subscriber,
    identity: Option<Box<Identity>>,
    state: SessionState<Arc<str>>,
    rate: RateLimiter,
    timer: Option<Pin<Box<Sleep>>>,
}

impl From<Session> for Parked {
    fn from(session: Session) -> Self {
        let Session {
            hub,
            ticket,
            me,
            identity,
            state,
            rate,
            timer,
            in_flight,
        } = session;
        debug_assert!(in_flight.is_none(), "parked with publishes in flight");
        Self {
            hub,
            ticket,
            me,
            identity,
            state,
            rate,
            timer,
        }
    }
}

impl duplex::park::Resume for Parked {
    fn register(&mut self, waker: &Waker) -> bool {
        let mut ready = self.me.outbox.register(waker) || self.hub.sessions_aborted();
        if let Some(timer) = &mut self.timer {
            ready |= timer
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready();
        }
        ready
    }

    fn resume(self, ws: WebSocket<TcpStream>) -> impl Future<Output = ()> + Send + 'static {
        Box::pin(SessionTask {
            state: TaskState::Waiting(ws, self.unpark()),
        })
    }

    fn abandon(self) {
        self.unpark().abandon();
    }
}

impl Parked {
    /// The session again, counted out of the parked gauge.
    fn unpark(self) -> Session {
        self.hub.metrics.connection_resumed();
        let Self {
            hub,
            ticket,
            me,
            identity,
            state,
            rate,
            timer,
        } = self;
        Session {
            hub,
            ticket,
            me,
            identity,
            state,
            rate,
            timer,
            in_flight: None,
        }
    }
}
