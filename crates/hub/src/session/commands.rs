//! The commands a session carries out (`docs/protocol.md`): `connect`,
//! `refresh`, `subscribe`, `unsubscribe`, `publish`, `presence`, `signal`,
//! `ping` and `rpc`, each answered with its reply or an `error`.
//!
//! Invariants:
//! - A command runs only if the core's rules allow it in the session's
//!   phase and state (`SessionState::gate`, `check_subscribe`,
//!   `check_refresh`, `duplex_hub_proto::session::may` for permissions),
//!   then the hooks may refuse it (`hooks`), then the broker carries it out.
//! - A refusal is a reply (`error`) and the connection stays open; only
//!   these end it ([`End`]): a bad token on `connect` or `refresh` (4001),
//!   the node's or the cluster's registry refusing the client (the
//!   per-user limit), and a hook's verdict (`disconnect`, or a `connect`
//!   hook that refuses or fails; see `hooks`).
//! - A publish is handed to the broker as it is read, so the broker sees a
//!   session's publishes in the order sent (see [`Session::start_publish`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use duplex_hub_proto::session::{
    Action, Close, Refusal, check_refresh, may, refreshed_expiry, scoped_key,
};
use duplex_hub_proto::{Command, ErrorCode, Request, ServerMessage, Since};

use super::{End, PendingPublish, Session, error, sleep_until_unix};
use crate::auth::{Identity, subscription};
use crate::broker::{BrokerError, Publish, Subscribe, Subscriber};
use crate::frame::prepare;
use crate::hub::{Hub, now_ms, now_secs};

impl Session {
    /// Carries out a command; returns the reply, if any.
    pub(super) async fn execute(&mut self, request: Request) -> Result<Option<ServerMessage>, End> {
        let id = request.id;
        if let Err(refusal) = self.state.gate(&request.command) {
            return Ok(Some(refusal.to_reply(id)));
        }
        let reply = match request.command {
            Command::Connect { token, name } => {
                let reply = self.connect(id, token, name).await?;
                // The cluster's registry (lifecycle events, the per-user limit).
                self.hub
                    .events
                    .connect(&self.me)
                    .await
                    .map_err(End::Close)?;
                return Ok(reply);
            }
            Command::Refresh { token } => self.refresh(id, &token).await?,
            Command::Subscribe {
                channel,
                since,
                recent,
                token,
            } => self.subscribe(id, channel, since, recent, token).await?,
            Command::Unsubscribe { channel } => self.unsubscribe(id, &channel).await,
            Command::Publish { channel, data, key } => {
                if let Some(refused) = self.refuse(id, Action::Publish, &channel) {
                    return Ok(Some(refused));
                }
                let data = match self.ask_publish(id, &channel, data).await? {
                    Ok(data) => data,
                    Err(refused) => return Ok(Some(refused)),
                };
                let publish = Publish {
                    channel: channel.as_str().into(),
                    data,
                    from: self.me.info(),
                    key: key.map(|key| scoped_key(self.me.user(), &key)),
                    time: now_ms(),
                };
                return Ok(self.start_publish(id, channel, publish).await);
            }
            Command::Presence { channel } => {
                if let Some(refused) = self.refuse(id, Action::Presence, &channel) {
                    return Ok(Some(refused));
                }
                match self.hub.broker.presence(&channel).await {
                    Ok(clients) => ServerMessage::Presence {
                        id,
                        channel,
                        clients,
                    },
                    Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
                }
            }
            Command::Signal { channel, data } => {
                if let Some(refused) = self.refuse(id, Action::Publish, &channel) {
                    return Ok(Some(refused));
                }
                let data = match self.ask_publish(id, &channel, data).await? {
                    Ok(data) => data,
                    Err(refused) => return Ok(Some(refused)),
                };
                match self.hub.broker.signal(&channel, &self.me, data).await {
                    Ok(()) if id.is_some() => ServerMessage::Ok { id },
                    Ok(()) => return Ok(None),
                    Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
                }
            }
            Command::Ping => ServerMessage::Pong { id },
            Command::Rpc { method, data } => self.rpc(id, &method, data).await?,
        };
        Ok(Some(reply))
    }

    /// Hands a publish to the broker now and returns its reply if the broker
    /// answered at once with nothing older in flight (the in-memory broker
    /// always does); otherwise the reply joins the publishes in flight.
    async fn start_publish(
        &mut self,
        id: Option<u64>,
        channel: String,
        publish: Publish,
    ) -> Option<ServerMessage> {
        let hub = Arc::clone(&self.hub);
        // Unconstrained: tokio's cooperative budget would otherwise let the
        // first poll below return `Pending` without handing the publish to
        // the broker, and a later publish could then overtake it.
        let mut pending: PendingPublish = Box::pin(tokio::task::unconstrained(async move {
            match hub.broker.publish(publish).await {
                Ok(published) => ServerMessage::Published {
                    id,
                    channel,
                    offset: published.offset,
                    duplicate: published.duplicate,
                },
                Err(e) => error(id, ErrorCode::Unavailable, &e.to_string()),
            }
        }));
        // Polled once here, so the broker sees publishes in the order sent.
        let first = poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await;
        match (first, &mut self.in_flight) {
            (Poll::Ready(reply), None) => Some(reply),
            (Poll::Ready(reply), Some(in_flight)) => {
                in_flight.push_back(Box::pin(std::future::ready(reply)));
                None
            }
            (Poll::Pending, in_flight) => {
                in_flight
                    .get_or_insert_with(Default::default)
                    .push_back(pending);
                None
            }
        }
    }

    /// `connect`: with a token (here or in the handshake) as it says;
    /// without one, as the `connect` hook decides when there is one (see
    /// `hooks`); else anonymous.
    async fn connect(
        &mut self,
        id: Option<u64>,
        token: Option<String>,
        name: Option<String>,
    ) -> Result<Option<ServerMessage>, End> {
        let mut hooked = None;
        if let Some(token) = token {
            self.identity = Some(Box::new(verify(&self.hub, &self.me, &token).await?));
        } else if self.identity.is_none() {
            hooked = self.connect_hook(name.as_deref()).await?;
        }
        let user = self
            .identity
            .as_ref()
            .map(|identity| identity.user.clone())
            .unwrap_or_default();
        // Nothing holds the subscriber before `connect`: commands before it
        // are refused.
        let set = self.me.set_user(user);
        debug_assert!(set, "the subscriber is shared before connect");
        self.hub
            .registry
            .register(&self.me, self.identity.as_deref(), now_secs())
            .map_err(|why| End::Close(Close::bad_token(why.refusal())))?;
        let mut expires = self.identity.as_ref().map(|identity| identity.expires);
        self.state.connected();
        self.timer = expires.map(|at| Box::pin(sleep_until_unix(at)));
        let mut data = None;
        if let Some(hooked) = hooked {
            expires = hooked.expires;
            data = hooked.data;
            self.hook_connected(hooked.expires, hooked.channels);
        }
        Ok(Some(ServerMessage::Connected {
            id,
            client: self.me.client(),
            user: self.me.user().to_owned(),
            version: duplex_hub_proto::VERSION,
            expires,
            ping: self.hub.config.heartbeat.ping_interval.as_secs(),
            data,
        }))
    }

    /// Takes a new token for the same user; the subscriptions it no longer
    /// allows end, each with an `unsubscribed` push and the reason (after
    /// the messages already queued for it).
    async fn refresh(&mut self, id: Option<u64>, token: &str) -> Result<ServerMessage, End> {
        let identity = verify(&self.hub, &self.me, token).await?;
        if let Err(refusal) = check_refresh(self.me.user(), &identity.user) {
            return Ok(refusal.to_reply(id));
        }
        self.hub
            .registry
            .refreshed(self.me.id, &identity, now_secs())
            .map_err(|why| End::Close(Close::bad_token(why.refusal())))?;
        let current = self.identity.as_ref().map(|identity| identity.expires);
        let expires = refreshed_expiry(current, identity.expires);
        self.timer = Some(Box::pin(sleep_until_unix(expires)));
        self.identity = Some(Box::new(Identity {
            expires,
            ..identity
        }));
        let (hub, identity) = (&self.hub, self.identity.as_deref());
        let revoked = self
            .state
            .revoke(|channel| subscription::keeps(hub, identity, channel));
        for (name, refusal) in revoked {
            self.hub.broker.unsubscribe(&name, &self.me).await;
            self.hub.metrics.unsubscribed(1);
            let reason = refusal.to_string();
            self.hub
                .events
                .unsubscribed(&self.me, &name, Some(&reason))
                .await;
            let push = prepare(ServerMessage::Unsubscribed {
                id: None,
                channel: name.to_string(),
                reason: Some(refusal.to_string()),
            });
            self.me
                .outbox
                .push(&push, crate::outbox::PublishTime::now());
        }
        Ok(ServerMessage::Refreshed {
            id,
            expires: Some(expires),
        })
    }

    async fn subscribe(
        &mut self,
        id: Option<u64>,
        channel: String,
        since: Option<Since>,
        recent: u32,
        token: Option<String>,
    ) -> Result<ServerMessage, End> {
        let limit = self.hub.config.limits.max_subscriptions;
        if let Err(refusal) = self.state.check_subscribe(&channel, limit) {
            return Ok(refusal.to_reply(id));
        }
        let (hub, identity) = (&self.hub, self.identity.as_deref());
        let may = subscription::may_subscribe(hub, &self.me, identity, &channel, token.as_deref());
        if let Err(refusal) = may.await {
            return Ok(refusal.to_reply(id));
        }
        if let Some(refused) = self.ask_subscribe(id, &channel).await? {
            return Ok(refused);
        }
        Ok(self
            .join(id, &channel, since, recent)
            .await
            .unwrap_or_else(|e| error(id, ErrorCode::Unavailable, &e.to_string())))
    }

    /// Subscribes at the broker once the checks passed (a client's
    /// `subscribe` or a server-side one) and counts it: the `subscribed`
    /// reply (a push when `id` is none), or the broker's error.
    pub(super) async fn join(
        &mut self,
        id: Option<u64>,
        channel: &str,
        since: Option<Since>,
        recent: u32,
    ) -> Result<ServerMessage, BrokerError> {
        let subscribe = Subscribe {
            channel: channel.into(),
            subscriber: self.me.clone(),
            since,
            recent,
        };
        let subscribed = self.hub.broker.subscribe(subscribe).await?;
        // The name is the broker's, shared.
        self.state.subscribed(subscribed.name);
        self.hub.metrics.subscribed();
        self.hub.events.subscribed(&self.me, channel).await;
        Ok(ServerMessage::Subscribed {
            id,
            channel: channel.to_owned(),
            epoch: subscribed.epoch,
            offset: subscribed.offset,
            recovered: subscribed.recovered,
            gap: subscribed.gap,
        })
    }

    async fn unsubscribe(&mut self, id: Option<u64>, channel: &str) -> ServerMessage {
        let name = match self.state.unsubscribe(channel) {
            Ok(name) => name,
            Err(refusal) => return refusal.to_reply(id),
        };
        self.hub.broker.unsubscribe(&name, &self.me).await;
        self.hub.metrics.unsubscribed(1);
        self.hub.events.unsubscribed(&self.me, &name, None).await;
        ServerMessage::Unsubscribed {
            id,
            channel: channel.to_owned(),
            reason: None,
        }
    }

    /// An error reply if this client may not do `action` on `channel` now.
    fn refuse(&self, id: Option<u64>, action: Action, channel: &str) -> Option<ServerMessage> {
        may_for(&self.hub, self.identity.as_deref(), action, channel)
            .err()
            .map(|refusal| refusal.to_reply(id))
    }
}

/// Verifies a token for session `me` (fetching the JWKS first if it names
/// a key not held); a bad one ends the connection with 4001. (Not a method:
/// its future must not hold a `&Session`, which is not `Sync`.)
async fn verify(hub: &Hub, me: &Subscriber, token: &str) -> Result<Identity, End> {
    let Some(verifier) = &hub.verifier else {
        return Err(End::Close(Close::NO_AUTH));
    };
    verifier.prepare(token).await;
    verifier.verify(token, now_secs()).map_err(|e| {
        hub.metrics.error(ErrorCode::Unauthorized.as_str());
        tracing::debug!(error = %e, client = %me.client(), "token refused");
        // The reason names the token's fault, as the HTTP 401 does.
        End::Close(Close::bad_token(e.close_reason()))
    })
}

/// Whether a client with `identity` (none: anonymous) may do `action` on
/// `channel` on `hub` (the rule is `duplex_hub_proto::session::may`).
fn may_for(
    hub: &Hub,
    identity: Option<&Identity>,
    action: Action,
    channel: &str,
) -> Result<(), Refusal> {
    let granted = identity.is_some_and(|identity| identity.grants.allows(action, channel));
    let access = hub.config.access(channel);
    may(action, channel, &access, identity.is_none(), granted)
}
