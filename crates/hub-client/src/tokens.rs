//! `tokens`: the subscription tokens of private channels (namespaces with
//! `subscribe = "token"`), kept per wanted channel and fetched fresh from
//! the application's source.
//!
//! Invariants:
//! - A subscribe carries the token the application just gave for its
//!   channel, if it gave one since the last subscribe; else, when a source
//!   is set and a connection is open, a fresh token from the source (the
//!   subscribe waits for it and goes out on the same connection, or not at
//!   all: a new connection resubscribes anyway); else the token kept.
//! - The kept token is the last one given or fetched for the channel; it is
//!   forgotten when the channel is unsubscribed, or when the source answers
//!   `None` (the channel needs none).
//! - A token fetched for a channel unsubscribed meanwhile is neither kept
//!   nor sent.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use duplex_hub_proto::{Command, Request};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// The source of fresh subscription tokens
/// ([`crate::Options::subscription_token`]): called with the channel,
/// answers its token, or `None` for a channel that needs none (the
/// subscribe goes without).
#[derive(Clone)]
pub struct SubscriptionTokens(Arc<TokenFn>);

/// What [`SubscriptionTokens`] holds.
type TokenFn = dyn Fn(&str) -> BoxFuture<'static, Option<String>> + Send + Sync;

impl SubscriptionTokens {
    /// Tokens from `get`, an async function of the channel (it may fetch
    /// the token from the application's backend).
    pub fn new<F, Fut>(get: F) -> Self
    where
        F: Fn(&str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        Self(Arc::new(move |channel| Box::pin(get(channel))))
    }

    fn get(&self, channel: &str) -> BoxFuture<'static, Option<String>> {
        (self.0)(channel)
    }
}

impl fmt::Debug for SubscriptionTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionTokens").finish_non_exhaustive()
    }
}

/// A subscribe whose token was fetched: its connection, the request, the
/// token.
pub(crate) type Fetched = (u64, Request, Option<String>);

/// A client's subscription tokens (see the module docs).
pub(crate) struct Tokens {
    /// The token kept per wanted channel.
    kept: HashMap<String, String>,
    /// Channels whose kept token was given by the application and not sent
    /// yet: their next subscribe takes it without asking `source`.
    given: HashSet<String>,
    /// Where fresh tokens come from, if anywhere.
    source: Option<SubscriptionTokens>,
    /// Subscribes whose token was fetched.
    fetched_tx: mpsc::UnboundedSender<Fetched>,
    fetched_rx: mpsc::UnboundedReceiver<Fetched>,
}

impl Tokens {
    /// No tokens yet; fresh ones from `source`, if set.
    pub(crate) fn new(source: Option<SubscriptionTokens>) -> Self {
        let (fetched_tx, fetched_rx) = mpsc::unbounded_channel();
        Self {
            kept: HashMap::new(),
            given: HashSet::new(),
            source,
            fetched_tx,
            fetched_rx,
        }
    }

    /// The application gave `token` for `channel`: the next subscribe
    /// takes it.
    pub(crate) fn give(&mut self, channel: &str, token: String) {
        self.kept.insert(channel.to_owned(), token);
        self.given.insert(channel.to_owned());
    }

    /// `channel` is no longer wanted.
    pub(crate) fn forget(&mut self, channel: &str) {
        self.kept.remove(channel);
        self.given.remove(channel);
    }

    /// Gives `request` its token: returns it to send now, or `None` when it
    /// waits for a fresh token (it comes back from [`Tokens::fetched`]).
    /// Requests other than `subscribe` are returned as they are.
    pub(crate) fn prepare(
        &mut self,
        mut request: Request,
        connection: Option<u64>,
    ) -> Option<Request> {
        let Command::Subscribe { channel, token, .. } = &mut request.command else {
            return Some(request);
        };
        let given = self.given.remove(channel.as_str());
        match (&self.source, connection) {
            (Some(source), Some(connection)) if !given => {
                let fetch = source.get(channel);
                let done = self.fetched_tx.clone();
                tokio::spawn(async move {
                    let token = fetch.await;
                    let _ = done.send((connection, request, token));
                });
                None
            }
            _ => {
                *token = self.kept.get(channel.as_str()).cloned();
                Some(request)
            }
        }
    }

    /// The next subscribe whose fresh token came (never ends: the sender
    /// lives in `self`).
    pub(crate) async fn fetched(&mut self) -> Option<Fetched> {
        self.fetched_rx.recv().await
    }

    /// Keeps the token fetched for `request`'s channel (or forgets the kept
    /// one when the source answered `None`) and puts it in the request;
    /// `wanted` tells whether the channel is still subscribed: if not,
    /// nothing is kept and the request is dropped.
    pub(crate) fn complete(
        &mut self,
        mut request: Request,
        fetched: Option<String>,
        wanted: impl FnOnce(&str) -> bool,
    ) -> Option<Request> {
        let Command::Subscribe { channel, token, .. } = &mut request.command else {
            return None;
        };
        if !wanted(channel.as_str()) {
            return None;
        }
        match &fetched {
            Some(fresh) => {
                self.kept.insert(channel.clone(), fresh.clone());
            }
            None => {
                self.kept.remove(channel.as_str());
            }
        }
        *token = fetched;
        Some(request)
    }
}
