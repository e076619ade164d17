//! Subscription tokens: who may subscribe to a channel of a namespace with
//! `subscribe = "token"` (`duplex_hub_proto::session::Permission::Token`).
//!
//! The `subscribe` command carries a JWT for the channel, signed with the
//! same keys as connection tokens (static key or JWKS), whose `sub` is the
//! connection's user and whose `channel` claim is the channel, unexpired
//! and not revoked; the rule on `sub` and `channel` is the core's
//! (`check_subscription_token`). A grant of the channel in the connection's
//! token is enough as well. A refused subscription token is an
//! `unauthorized` error reply: the connection stays. The token is checked
//! when subscribing; a refresh of the connection's token does not take the
//! subscription back (`keeps_subscription`).

use duplex_hub_proto::session::{Access, Action, Permission, Refusal, may};
use duplex_hub_proto::subscription_token::{check_subscription_token, keeps_subscription};

use super::Identity;
use crate::broker::Subscriber;
use crate::hub::{Hub, now_secs};

/// Whether the connection `me`, with `identity` (none: anonymous), may
/// subscribe to `channel` with the subscription `token` it sent, if any.
pub(crate) async fn may_subscribe(
    hub: &Hub,
    me: &Subscriber,
    identity: Option<&Identity>,
    channel: &str,
    token: Option<&str>,
) -> Result<(), Refusal> {
    let access = hub.config.access(channel);
    let granted = identity.is_some_and(|i| i.grants.allows(Action::Subscribe, channel));
    let (Permission::Token, Some(token), false) = (access.subscribe, token, granted) else {
        return may(
            Action::Subscribe,
            channel,
            &access,
            identity.is_none(),
            granted,
        );
    };
    let refused = |why| Refusal::BadSubscriptionToken {
        channel: channel.to_owned(),
        why,
    };
    let Some(verifier) = &hub.verifier else {
        return Err(refused("this hub does not take tokens"));
    };
    verifier.prepare(token).await;
    let now = now_secs();
    let claims = verifier
        .verify(token, now)
        .map_err(|error| refused(error.close_reason()))?;
    check_subscription_token(me.user(), channel, &claims.user, claims.channel.as_deref())?;
    hub.registry
        .check(&claims, now)
        .map_err(|why| refused(why.reason()))
}

/// Whether a subscription to `channel` stays after a refresh gave the
/// connection `identity` (see the module docs).
pub(crate) fn keeps(hub: &Hub, identity: Option<&Identity>, channel: &str) -> Result<(), Refusal> {
    let access: Access = hub.config.access(channel);
    let granted = identity.is_some_and(|i| i.grants.allows(Action::Subscribe, channel));
    keeps_subscription(channel, &access, identity.is_none(), granted)
}
