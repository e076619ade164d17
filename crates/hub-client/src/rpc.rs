//! `rpc`: calls of the application's backend through the hub (its `rpc`
//! hook, `docs/hooks.md`), answered on the same connection.
//!
//! Invariants:
//! - A call waiting for a connection is sent once one is ready (after
//!   `connected`); at most [`crate::Options::max_pending`] wait at once
//!   (beyond, [`RpcError::QueueFull`] at once).
//! - A call is sent once: when its connection drops before the answer, it
//!   fails with [`RpcError::Disconnected`] (the backend may have run it;
//!   whether to call again is the application's choice).
//! - Every call resolves: with the backend's data, the hub's error, or
//!   [`RpcError::Closed`] when the client closes for good.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use duplex_hub_proto::{ErrorCode, JsonText, NameError, ServerMessage};
use tokio::sync::oneshot;

/// Why an `rpc` did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The method name is not valid (the rules of a channel name apply).
    #[error("invalid method: {0}")]
    InvalidMethod(#[from] NameError),
    /// [`crate::Options::max_pending`] calls already wait for a connection.
    #[error("{0} rpc calls are already waiting for a connection")]
    QueueFull(usize),
    /// The hub answered with an error: `rpc_error` (the backend's refusal,
    /// its message), `backend_unavailable` (no answer in time: try again
    /// later), `bad_request` (no backend serves the method) …
    #[error("the hub refused: {code}: {message}")]
    Refused {
        /// Why, for programs.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The connection dropped before the answer; the call is not sent
    /// again (the backend may have run it).
    #[error("the connection dropped before the answer")]
    Disconnected,
    /// The client closed for good.
    #[error("the client is closed")]
    Closed,
}

type Answer = Result<JsonText, RpcError>;

/// The future of an `rpc`: resolves with the backend's data. Dropping it
/// does not cancel the call, only the wait for its answer.
pub struct Rpc {
    state: State,
}

enum State {
    Failed(Option<RpcError>),
    Waiting(oneshot::Receiver<Answer>),
}

impl Rpc {
    pub(crate) fn failed(error: RpcError) -> Self {
        Self {
            state: State::Failed(Some(error)),
        }
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Answer>) -> Self {
        Self {
            state: State::Waiting(rx),
        }
    }
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rpc").finish_non_exhaustive()
    }
}

impl Future for Rpc {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        match &mut self.get_mut().state {
            State::Failed(error) => Poll::Ready(Err(error.take().unwrap_or(RpcError::Closed))),
            State::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|answer| answer.unwrap_or(Err(RpcError::Closed))),
        }
    }
}

/// A call on its way to the task.
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) data: JsonText,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// The task's calls: waiting for a connection, or sent and unanswered.
#[derive(Default)]
pub(crate) struct Calls {
    waiting: VecDeque<Call>,
    sent: HashMap<u64, oneshot::Sender<Answer>>,
}

impl Calls {
    /// Queues `call` until a connection is ready, unless `max` wait already.
    pub(crate) fn push(&mut self, call: Call, max: usize) {
        if self.waiting.len() >= max {
            let _ = call
                .reply
                .send(Err(RpcError::QueueFull(self.waiting.len())));
        } else {
            self.waiting.push_back(call);
        }
    }

    /// The calls to send now, in call order.
    pub(crate) fn take_waiting(&mut self) -> VecDeque<Call> {
        std::mem::take(&mut self.waiting)
    }

    /// `reply` waits for the answer to request `id`.
    pub(crate) fn sent(&mut self, id: u64, reply: oneshot::Sender<Answer>) {
        self.sent.insert(id, reply);
    }

    /// Answers a call if `message` is its reply; whether it was.
    pub(crate) fn answer(&mut self, message: &ServerMessage) -> bool {
        let answer = match message {
            ServerMessage::Rpc { id: Some(id), data } => (id, Ok(data.clone())),
            ServerMessage::Error {
                id: Some(id),
                code,
                message,
            } => (
                id,
                Err(RpcError::Refused {
                    code: *code,
                    message: message.clone(),
                }),
            ),
            _ => return false,
        };
        match self.sent.remove(answer.0) {
            Some(reply) => {
                let _ = reply.send(answer.1);
                true
            }
            None => false,
        }
    }

    /// The connection dropped: the calls sent on it fail.
    pub(crate) fn disconnected(&mut self) {
        for (_, reply) in self.sent.drain() {
            let _ = reply.send(Err(RpcError::Disconnected));
        }
    }

    /// The client closed: every call fails.
    pub(crate) fn close(&mut self) {
        self.disconnected();
        for call in self.waiting.drain(..) {
            let _ = call.reply.send(Err(RpcError::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(calls: &mut Calls, max: usize) -> oneshot::Receiver<Answer> {
        let (reply, rx) = oneshot::channel();
        let call = Call {
            method: "m".into(),
            data: JsonText::null(),
            reply,
        };
        calls.push(call, max);
        rx
    }

    #[test]
    fn calls_are_bounded_answered_once_and_fail_on_a_drop() {
        let mut calls = Calls::default();
        let mut first = call(&mut calls, 2);
        let mut second = call(&mut calls, 2);
        let mut third = call(&mut calls, 2);
        assert_eq!(third.try_recv().unwrap(), Err(RpcError::QueueFull(2)));
        let mut waiting = calls.take_waiting();
        calls.sent(1, waiting.pop_front().unwrap().reply);
        calls.sent(2, waiting.pop_front().unwrap().reply);
        let data = JsonText::parse("[1]").unwrap();
        assert!(calls.answer(&ServerMessage::Rpc {
            id: Some(1),
            data: data.clone()
        }));
        assert!(
            !calls.answer(&ServerMessage::Rpc {
                id: Some(1),
                data: data.clone()
            }),
            "answered once"
        );
        assert!(!calls.answer(&ServerMessage::Pong { id: Some(2) }));
        assert_eq!(first.try_recv().unwrap(), Ok(data));
        calls.disconnected();
        assert_eq!(second.try_recv().unwrap(), Err(RpcError::Disconnected));
    }
}
