//! Parked connections: an idle WebSocket without a task.
//!
//! A server holding many idle connections pays, per connection, for its
//! tokio task (the cell: tokio's header and the connection's future) and for
//! tokio's socket registration (`ScheduledIo`, 256 bytes). A connection at
//! rest ([`WebSocket::park_due`]: quiet for [`crate::Config::park_after`],
//! nothing queued) can give both back: [`park`] moves its socket out of
//! tokio's poller into this module's own epoll set (no allocation per socket:
//! the kernel's entry and a slot in a table), keeps the connection's state
//! and the application's, and the caller's task ends. The first of these
//! makes the task anew ([`Resume::resume`]) on the runtime it was parked on:
//! - the peer sends (or closes): the socket turns readable;
//! - a timer of the connection fires (the keepalive ping, the idle timeout)
//!   or its [`crate::Shutdown`] is triggered: its wake-up node;
//! - the application wakes it: whatever holds the waker [`Resume::register`]
//!   was given (a subscriber's queue, say).
//!
//! A resumed connection reads what woke it before it goes back to tokio's
//! poller, and may park again as soon as it is at rest, without another
//! quiet spell (until a data message goes either way): the keepalive ping
//! and its pong cost two short resumes.
//!
//! Parking and resuming cost a few system calls each (the socket leaves one
//! poller for the other and comes back) and a task spawn: meant for
//! connections quiet for seconds, not between two messages.
//!
//! Invariants:
//! - Nothing is lost between deciding to park and being parked: the wake-up
//!   node's flags are sticky and read after the park's waker is registered
//!   with it; epoll reports a socket that is already readable when it is
//!   added; the application's queues are asked after the waker is left with
//!   them; and a wake that comes while the state is being put away resumes
//!   it as soon as it is.
//! - A parked connection is resumed at most once per park: the first wake
//!   takes its state, later ones (a second source, a stale waker) find none.
//!   A stale readiness event can resume a connection for nothing; it parks
//!   again on its next quiet poll.
//! - One lot (the epoll set, the table and the task that waits on them) per
//!   thread that parks, on the runtime of its first park. When that runtime
//!   shuts down, the connections parked in it are dropped (sockets closed)
//!   as its tasks are, each application state handed to
//!   [`Resume::abandon`] first.
//! - A parked connection either resumes or is abandoned: its application
//!   state goes to exactly one of [`Resume::resume`] and
//!   [`Resume::abandon`], whatever fails on the way (a socket the kernel
//!   will not take back, the lot's poller failing, a runtime that will not
//!   take the resumed task).
//! - Only plain TCP parks: the socket is what leaves tokio's poller.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll as Epoll, Registry, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::WebSocket;

/// Readiness events taken from the lot's epoll set at once.
const EVENTS: usize = 1024;

/// [`Parked::key`] of a connection not in the lot's table.
const NO_KEY: u32 = u32::MAX;

thread_local! {
    static LOT: RefCell<Option<Arc<Lot>>> = const { RefCell::new(None) };
}

/// The application's side of a parked connection: what it keeps while the
/// connection has no task, and how it makes the task again.
pub trait Resume: Send + Sized + 'static {
    /// Leaves `waker` wherever the application's side of the connection is
    /// woken from (its queues), as the task left its own, and tells whether
    /// one of them has something for the connection already (it is then
    /// resumed at once). The socket, the timers and the shutdown are the
    /// module's. The default has no queue.
    fn register(&mut self, waker: &Waker) -> bool {
        let _ = waker;
        false
    }

    /// The connection's task again, with its WebSocket back on tokio's
    /// poller, as it was when it parked. It is spawned on the runtime the
    /// connection parked on. (When the connection cannot go on, the state
    /// goes to [`Resume::abandon`] instead.)
    fn resume(self, ws: WebSocket<TcpStream>) -> impl Future<Output = ()> + Send + 'static;

    /// The connection is gone without its task coming back: its socket is
    /// closed without a close frame (the peer sees 1006) because it could
    /// not go back to tokio's poller (a system out of resources), the lot's
    /// poller failed, or the runtime it parked on shut down. What a task
    /// would do when its connection ends (leave what it joined, count the
    /// close) belongs here; it may be called outside any runtime, or in one
    /// that is shutting down and takes no new task. The default drops the
    /// state.
    fn abandon(self) {}
}

/// Parks `ws` with the application's state `app` until the peer sends, a
/// timer or the shutdown fires, or `app`'s queues wake it (see the module
/// docs); the caller's task then has nothing left to do and should end.
/// Call when [`WebSocket::park_due`] says so (parking at another time is
/// correct, only wasteful). Must be called within a tokio runtime with I/O
/// enabled; where the lot cannot start (no epoll set to be had), the
/// connection goes on in a new task at once.
pub fn park<A: Resume>(ws: WebSocket<TcpStream>, mut app: A) {
    let lot = match Lot::current() {
        Ok(lot) => lot,
        Err(error) => {
            tracing::debug!(%error, "cannot park: going on in a task");
            drop(tokio::spawn(app.resume(ws)));
            return;
        }
    };
    let (tcp, ws) = ws.replace_io(());
    let fd = match tcp.into_std() {
        Ok(tcp) => OwnedFd::from(tcp),
        Err(error) => {
            tracing::debug!(%error, "cannot park: the socket left tokio's poller badly; dropped");
            app.abandon();
            return;
        }
    };
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Parking),
        lot: lot.clone(),
    });
    let key = lot.insert(slot.clone(), fd.as_raw_fd());
    let waker = Waker::from(slot.clone());
    // Anything already waiting resumes the connection once it is put away.
    let mut ready = key == NO_KEY;
    if let Some(signal) = ws.signal() {
        signal.register(&waker);
        ready |= signal.pending();
    }
    ready |= app.register(&waker);
    {
        let mut state = lock(&slot.state);
        if let State::Woken = *state {
            ready = true;
        }
        *state = State::Parked(Parked { ws, fd, key, app });
    }
    if ready {
        slot.revive();
    }
}

/// The bytes a connection parked with application state `A` holds in its
/// slot (one allocation, an `Arc`'s counts included); besides it, an entry
/// of 16 bytes in the lot's table and the connection's wake-up node.
pub const fn slot_size<A: Resume>() -> usize {
    2 * size_of::<usize>() + size_of::<Slot<A>>()
}

/// What a parked connection keeps: its WebSocket without its transport,
/// the bare socket, its key in the lot's table, and the application's state.
struct Parked<A> {
    ws: WebSocket<()>,
    fd: OwnedFd,
    /// [`NO_KEY`] when the socket could not join the lot's epoll set (it is
    /// resumed at once).
    key: u32,
    app: A,
}

/// Where a parked connection stays: the waker every wake source holds.
struct Slot<A> {
    state: Mutex<State<A>>,
    lot: Arc<Lot>,
}

enum State<A> {
    /// Being put away.
    Parking,
    /// Being put away, and a wake came meanwhile.
    Woken,
    Parked(Parked<A>),
    /// Resumed (or dropped): later wakes do nothing.
    Gone,
}

impl<A: Resume> Parked<A> {
    /// Closes the socket and hands the application's state to
    /// [`Resume::abandon`].
    fn abandon(self) {
        drop((self.ws, self.fd));
        self.app.abandon();
    }
}

/// A slot without its application type, as the lot's table holds it.
trait Revive: Send + Sync {
    /// Resumes the connection if it is parked (see [`Slot::revive`]).
    fn revive(&self);
    /// Drops the connection if it is parked: its lot is going away.
    fn abandon(&self);
}

impl<A: Resume> Slot<A> {
    /// Takes the parked state (if it is still there) and spawns its task.
    fn revive(&self) {
        let parked = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, State::Gone) {
                State::Parking | State::Woken => {
                    *state = State::Woken;
                    return;
                }
                State::Parked(parked) => parked,
                State::Gone => return,
            }
        };
        let lot = self.lot.clone();
        drop(self.lot.handle.spawn(resume(lot, Unresumed(Some(parked)))));
    }
}

/// A parked connection on its way to its new task: abandoned if the task
/// is dropped before it starts (a runtime shutting down drops what is
/// spawned on it).
struct Unresumed<A: Resume>(Option<Parked<A>>);

impl<A: Resume> Drop for Unresumed<A> {
    fn drop(&mut self) {
        if let Some(parked) = self.0.take() {
            parked.abandon();
        }
    }
}

impl<A: Resume> Revive for Slot<A> {
    fn revive(&self) {
        Slot::revive(self);
    }

    fn abandon(&self) {
        let state = std::mem::replace(&mut *lock(&self.state), State::Gone);
        if let State::Parked(parked) = state {
            parked.abandon();
        }
    }
}

impl<A: Resume> Wake for Slot<A> {
    fn wake(self: Arc<Self>) {
        self.revive();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.revive();
    }
}

/// The task of a resumed connection: the socket back on tokio's poller,
/// then the application's task.
async fn resume<A: Resume>(lot: Arc<Lot>, mut parked: Unresumed<A>) {
    let Some(Parked { ws, fd, key, app }) = parked.0.take() else {
        unreachable!("taken only here")
    };
    if key != NO_KEY {
        lot.remove(key, fd.as_raw_fd());
    }
    drop(lot);
    let (mut ws, mut tcp) = (ws, std::net::TcpStream::from(fd));
    // tokio learns the socket's readiness only on its poller's next turn:
    // what woke the connection is read now, so that one that may park again
    // at once (after a pong, say) does not park with it unread. At the end
    // of the stream (or on an error) it waits for tokio to see it instead.
    match ws.receive_from(&mut tcp) {
        Ok(n) if n > 0 => {}
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
        _ => ws.restart_park_check(),
    }
    match TcpStream::from_std(tcp) {
        Ok(tcp) => {
            let ((), ws) = ws.replace_io(tcp);
            app.resume(ws).await
        }
        Err(error) => {
            tracing::debug!(%error, "cannot resume a parked connection; dropped");
            app.abandon();
        }
    }
}

/// One thread's parked connections: an epoll set, the table of its slots,
/// and the runtime their tasks are spawned on.
struct Lot {
    registry: Registry,
    slots: Mutex<Slab<Arc<dyn Revive>>>,
    handle: Handle,
    /// The driver task still exists.
    alive: AtomicBool,
}

impl Lot {
    /// This thread's lot, started on the current runtime if it has none (or
    /// its runtime is gone).
    fn current() -> io::Result<Arc<Self>> {
        LOT.with_borrow_mut(|slot| match slot {
            Some(lot) if lot.alive.load(Ordering::Acquire) => Ok(lot.clone()),
            _ => {
                let lot = Self::start()?;
                *slot = Some(lot.clone());
                Ok(lot)
            }
        })
    }

    /// A new lot, its epoll set on tokio's poller and its driver spawned.
    fn start() -> io::Result<Arc<Self>> {
        let epoll = Epoll::new()?;
        let registry = epoll.registry().try_clone()?;
        // SAFETY: the epoll set's descriptor is owned by `epoll` (closed
        // only when it drops), which the `AsyncFd` owns for its whole life;
        // `as_raw_fd` returns that one descriptor every time.
        let readiness =
            unsafe { AsyncFd::register_with_interest(epoll, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        let lot = Arc::new(Self {
            registry,
            slots: Mutex::new(Slab::new()),
            handle: Handle::current(),
            alive: AtomicBool::new(true),
        });
        drop(tokio::spawn(drive(lot.clone(), readiness)));
        Ok(lot)
    }

    /// Puts `slot` in the table and its socket `fd` in the epoll set;
    /// [`NO_KEY`] when the kernel refuses the socket (or the table is full:
    /// 4 billion parked).
    fn insert(&self, slot: Arc<dyn Revive>, fd: RawFd) -> u32 {
        let mut slots = lock(&self.slots);
        let entry = slots.vacant_entry();
        let Ok(key) = u32::try_from(entry.key()) else {
            return NO_KEY;
        };
        if key == NO_KEY {
            return NO_KEY;
        }
        match self
            .registry
            .register(&mut SourceFd(&fd), Token(key as usize), Interest::READABLE)
        {
            Ok(()) => {
                entry.insert(slot);
                key
            }
            Err(error) => {
                tracing::debug!(%error, "cannot watch a parked socket: resumed at once");
                NO_KEY
            }
        }
    }

    /// Takes slot `key` and its socket `fd` out.
    fn remove(&self, key: u32, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        let mut slots = lock(&self.slots);
        if slots.contains(key as usize) {
            drop(slots.remove(key as usize));
        }
    }
}

/// The lot's driver: waits for its epoll set to turn readable on tokio's
/// poller, then resumes every connection whose socket has something.
async fn drive(lot: Arc<Lot>, mut readiness: AsyncFd<Epoll>) {
    let _abandon = Abandon(lot.clone());
    let mut events = Events::with_capacity(EVENTS);
    loop {
        let Ok(mut guard) = readiness.readable_mut().await else {
            return;
        };
        loop {
            match guard
                .get_inner_mut()
                .poll(&mut events, Some(Duration::ZERO))
            {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::warn!(%error, "parked connections: polling failed; dropping them");
                    return;
                }
            }
            if events.is_empty() {
                // Nothing left: wait for the next edge (tokio keeps one that
                // came after this guard was taken).
                guard.clear_ready();
                break;
            }
            for event in &events {
                let slot = lock(&lot.slots).get(event.token().0).cloned();
                if let Some(slot) = slot {
                    slot.revive();
                }
            }
        }
    }
}

/// Drops a lot's parked connections when its driver ends (its runtime shut
/// down), and tells the thread to start a new lot.
struct Abandon(Arc<Lot>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        let slots = std::mem::take(&mut *lock(&self.0.slots));
        for (_, slot) in slots {
            slot.abandon();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
