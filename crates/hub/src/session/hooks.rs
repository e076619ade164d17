//! A session's side of the proxy hooks (`docs/hooks.md`): where a command
//! asks the application's backend, and what the session does with the
//! answer. The rules (bodies, verdicts, the failure policy) are
//! [`duplex_hub_proto::hooks`]; the requests go through [`crate::hooks`].
//!
//! Invariants:
//! - A hook is asked only after the hub's own rules allowed the command
//!   (phase, permissions, grants, limits): it can refuse, never allow
//!   more.
//! - A session asks one hook at a time, in command order, as it runs
//!   commands: a command after an `rpc` waits for its answer, which comes
//!   within the hooks' `queue_timeout + timeout`.
//! - A `disconnect` verdict of any hook ends the session with its code
//!   and reason; a `connect` that is refused closes with 4001, one that
//!   fails with 1013 (try again later).
//! - The `refresh` hook extends only sessions the `connect` hook opened:
//!   the session's timer fires before the expiry
//!   ([`duplex_hub_proto::hooks::refresh_at`]), the hook is asked, and the
//!   session goes on until the expiry it answers (a `refreshed` push tells
//!   the client); a refusal lets it end at its current expiry (4002), a
//!   failure is tried again until then.

use duplex::WebSocket;
use duplex_hub_proto::hooks::{
    self, Caller, Connected, Failure, Hook, OnFailure, Verdict, on_failure,
};
use duplex_hub_proto::{Data, ErrorCode, JsonText, ServerMessage};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{End, Session, error, sleep_until_unix};
use crate::auth::{Grants, Identity, MAX_NUMERIC_DATE};
use crate::control::{Control, Target};
use crate::hub::now_secs;

/// How a hook's verdict or failure ends up for a command.
enum Decided<T> {
    /// Go on, with what the backend said (`None`: as if there were no
    /// hook, for a fail-open failure).
    Go(Option<T>),
    /// Refuse the command with this reply.
    Refuse(ServerMessage),
}

fn disconnect(d: hooks::Disconnect) -> End {
    End::Disconnect(Box::new((d.code, d.reason)))
}

impl Session {
    fn caller(&self) -> (String, &str) {
        (self.me.client(), self.me.user())
    }

    /// The `connect` hook for a connection without a token: `None` when
    /// there is no hook (the connection is anonymous); else what the
    /// backend accepted, with the identity set for its user; a refusal or
    /// a failure ends the session.
    pub(super) async fn connect_hook(
        &mut self,
        name: Option<&str>,
    ) -> Result<Option<Connected>, End> {
        let Some(hooks) = self.hub.hooks.clone() else {
            return Ok(None);
        };
        let Some(url) = hooks.url_for(Hook::Connect, "") else {
            return Ok(None);
        };
        let remote = self.ticket.address().to_string();
        let body = hooks::connect_request(&self.me.client(), name, &remote);
        let now = now_secs();
        let asked = hooks
            .ask(Hook::Connect, url, self.me.id, body, |status, body| {
                hooks::parse_connect(status, body, now)
            })
            .await;
        let connected = match asked {
            Ok(Verdict::Accept(connected)) => connected,
            Ok(Verdict::Refuse(refused)) => return Err(disconnect(refused.connect_close())),
            Ok(Verdict::Disconnect(d)) => return Err(disconnect(d)),
            Err(failure) => {
                return Err(match on_failure(Hook::Connect, failure, false, None) {
                    OnFailure::Close(d) => disconnect(d),
                    _ => disconnect(hooks::Disconnect {
                        code: hooks::TRY_AGAIN_LATER,
                        reason: String::new(),
                    }),
                });
            }
        };
        if !connected.user.is_empty() {
            self.identity = Some(Box::new(Identity {
                user: connected.user.clone(),
                expires: connected.expires.unwrap_or(MAX_NUMERIC_DATE),
                grants: Grants::default(),
                // No token: nothing a revocation of a token names. A
                // `revoke_user` still closes the connection (the registry
                // checks users of sessions without a token as revoked).
                jti: None,
                issued: None,
                channel: None,
            }));
        }
        hooks.mark_connected_by_hook(self.me.id);
        Ok(Some(connected))
    }

    /// After a `connect` the hook accepted, once registered: the session's
    /// timer (the refresh hook's time, or the expiry), and the channels
    /// the backend named, joined as server-side subscriptions (applied
    /// after the `connected` reply, each announced by a `subscribed` push).
    pub(super) fn hook_connected(&mut self, expires: Option<u64>, channels: Vec<String>) {
        self.timer = expires.map(|expires| {
            let refreshes = self
                .hub
                .hooks
                .as_ref()
                .is_some_and(|hooks| hooks.has_refresh());
            let at = if refreshes {
                hooks::refresh_at(now_secs(), expires)
            } else {
                expires
            };
            Box::pin(sleep_until_unix(at))
        });
        let client = self.me.client();
        for channel in channels {
            self.hub.registry.apply(&Control::Subscribe {
                target: Target {
                    user: String::new(),
                    client: Some(client.clone()),
                },
                channel,
            });
        }
    }

    /// Asks `hook` for command `id` on `name` (a channel or a method), as
    /// the failure policy says; `Go(None)` when no hook is set.
    async fn decide<T>(
        &mut self,
        hook: Hook,
        id: Option<u64>,
        name: &str,
        body: impl FnOnce(Caller<'_>) -> Vec<u8>,
        parse: impl FnOnce(u16, &[u8]) -> Result<Verdict<T>, hooks::AnswerError>,
    ) -> Result<Decided<T>, End> {
        let Some(hooks) = &self.hub.hooks else {
            return Ok(Decided::Go(None));
        };
        let Some(url) = hooks.url_for(hook, name) else {
            return Ok(Decided::Go(None));
        };
        let (client, user) = self.caller();
        let body = body(Caller {
            client: &client,
            user,
        });
        match hooks.ask(hook, url, self.me.id, body, parse).await {
            Ok(Verdict::Accept(accepted)) => Ok(Decided::Go(Some(accepted))),
            Ok(Verdict::Refuse(refused)) => Ok(Decided::Refuse(refused.to_reply(hook, id))),
            Ok(Verdict::Disconnect(d)) => Err(disconnect(d)),
            Err(failure) => Ok(self.failed(hook, failure, name, id)),
        }
    }

    fn failed<T>(&self, hook: Hook, failure: Failure, name: &str, id: Option<u64>) -> Decided<T> {
        let fail_open = self
            .hub
            .hooks
            .as_ref()
            .is_some_and(|hooks| hooks.fail_open(name));
        match on_failure(hook, failure, fail_open, id) {
            OnFailure::Proceed => Decided::Go(None),
            OnFailure::Reply(reply) => Decided::Refuse(reply),
            // Not for these hooks; refuse rather than accept.
            OnFailure::Close(_) | OnFailure::Retry => Decided::Refuse(error(
                id,
                ErrorCode::BackendUnavailable,
                "the application's backend failed",
            )),
        }
    }

    /// The `subscribe` hook of `channel`'s namespace: `Some` refusal reply,
    /// or `None` to go on.
    pub(super) async fn ask_subscribe(
        &mut self,
        id: Option<u64>,
        channel: &str,
    ) -> Result<Option<ServerMessage>, End> {
        let decided = self
            .decide(
                Hook::Subscribe,
                id,
                channel,
                |caller| hooks::subscribe_request(caller, channel),
                hooks::parse_subscribe,
            )
            .await?;
        Ok(match decided {
            Decided::Go(_) => None,
            Decided::Refuse(reply) => Some(reply),
        })
    }

    /// The `publish` hook of `channel`'s namespace (for a `publish` or a
    /// `signal`): the data to send (the client's, or the backend's
    /// replacement), or the refusal reply.
    pub(super) async fn ask_publish(
        &mut self,
        id: Option<u64>,
        channel: &str,
        data: Data,
    ) -> Result<Result<Data, ServerMessage>, End> {
        let decided = self
            .decide(
                Hook::Publish,
                id,
                channel,
                |caller| hooks::publish_request(caller, channel, &data),
                hooks::parse_publish,
            )
            .await?;
        Ok(match decided {
            Decided::Go(published) => Ok(published.and_then(|p| p.data).unwrap_or(data)),
            Decided::Refuse(reply) => Err(reply),
        })
    }

    /// An `rpc` call: the backend's data, or an error reply
    /// (`bad_request` when no hook serves the method's namespace).
    pub(super) async fn rpc(
        &mut self,
        id: Option<u64>,
        method: &str,
        data: JsonText,
    ) -> Result<ServerMessage, End> {
        let served = self
            .hub
            .hooks
            .as_ref()
            .is_some_and(|hooks| hooks.url_for(Hook::Rpc, method).is_some());
        if !served {
            let namespace = duplex_hub_proto::namespace(method);
            return Ok(error(
                id,
                ErrorCode::BadRequest,
                &format!(
                    "no backend serves rpc method {method:?} (no rpc hook for namespace {namespace:?})"
                ),
            ));
        }
        let decided = self
            .decide(
                Hook::Rpc,
                id,
                method,
                |caller| hooks::rpc_request(caller, method, &data),
                hooks::parse_rpc,
            )
            .await?;
        Ok(match decided {
            Decided::Go(data) => ServerMessage::Rpc {
                id,
                data: data.unwrap_or_else(JsonText::null),
            },
            Decided::Refuse(reply) => reply,
        })
    }

    /// The session's timer fired: the `refresh` hook's time for a session
    /// the `connect` hook opened (see the module docs), else the phase's
    /// deadline, which ends it.
    pub(super) async fn deadline<S>(&mut self, ws: &mut WebSocket<S>) -> Option<End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let now = now_secs();
        let expires = self.identity.as_ref().map(|identity| identity.expires);
        let connected = self.state.phase() == duplex_hub_proto::session::Phase::Connected;
        let (Some(hooks), Some(expires), true) = (self.hub.hooks.clone(), expires, connected)
        else {
            return Some(End::Close(self.state.deadline()));
        };
        if now >= expires || !hooks.refreshes(self.me.id) {
            if now < expires {
                // The timer fired before the expiry with no refresh to ask.
                self.timer = Some(Box::pin(sleep_until_unix(expires)));
                return None;
            }
            return Some(End::Close(self.state.deadline()));
        }
        let Some(url) = hooks.url_for(Hook::Refresh, "") else {
            return Some(End::Close(self.state.deadline()));
        };
        let (client, user) = self.caller();
        let body = hooks::refresh_request(
            Caller {
                client: &client,
                user,
            },
            expires,
        );
        let asked = hooks
            .ask(Hook::Refresh, url, self.me.id, body, |status, body| {
                hooks::parse_refresh(status, body, now)
            })
            .await;
        let next = match asked {
            Ok(Verdict::Accept(new)) => {
                if let Some(identity) = &mut self.identity {
                    identity.expires = new;
                }
                let push = ServerMessage::Refreshed {
                    id: None,
                    expires: Some(new),
                };
                self.write_reply(ws, push).await;
                hooks::refresh_at(now_secs(), new)
            }
            Ok(Verdict::Refuse(refused)) => {
                tracing::debug!(client, message = refused.message, "refresh refused");
                hooks.refresh_refused(self.me.id);
                expires
            }
            Ok(Verdict::Disconnect(d)) => return Some(disconnect(d)),
            Err(_) => hooks::refresh_retry_at(now_secs(), expires).unwrap_or(expires),
        };
        self.timer = Some(Box::pin(sleep_until_unix(next)));
        None
    }
}
