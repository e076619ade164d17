//! Private channels: the rules of subscription tokens, for namespaces whose
//! subscribe permission is [`Permission::Token`].
//!
//! # Invariants
//!
//! - A subscription token lets a connection subscribe to a channel only
//!   when its `sub` is the connection's user and its `channel` claim is the
//!   channel ([`check_subscription_token`]); an anonymous connection has no
//!   user, so no token matches it. Signature, expiry and revocation are the
//!   driver's checks, as for the connection's own token.
//! - Without one, [`crate::session::may`] decides (a grant of the channel
//!   in the connection's token is enough), and says a token is required.
//! - A subscription made with a token stays when a refresh changes the
//!   connection's grants ([`keeps_subscription`]): the token was checked
//!   when it subscribed.

use crate::session::{Access, Action, Permission, Refusal, may};

/// Whether a verified subscription token for `token_user` and
/// `token_channel` (its `sub` and `channel` claims) lets a connection of
/// `user` subscribe to `channel` in a namespace with [`Permission::Token`]:
/// both must match. (Its signature, expiry and revocation are the driver's
/// checks, as for the connection's token.)
pub fn check_subscription_token(
    user: &str,
    channel: &str,
    token_user: &str,
    token_channel: Option<&str>,
) -> Result<(), Refusal> {
    let why = if token_channel != Some(channel) {
        "the token is for another channel"
    } else if token_user != user {
        "the token is for another user"
    } else {
        return Ok(());
    };
    Err(Refusal::BadSubscriptionToken {
        channel: channel.to_owned(),
        why,
    })
}

/// Whether a subscription may stay after a refresh changed the
/// connection's grants: as [`may`] for subscribe, except in a namespace
/// with [`Permission::Token`], where its subscription token was checked
/// when it subscribed and a refresh does not take it back.
pub fn keeps_subscription(
    channel: &str,
    access: &Access,
    anonymous: bool,
    granted: bool,
) -> Result<(), Refusal> {
    if access.subscribe == Permission::Token {
        return Ok(());
    }
    may(Action::Subscribe, channel, access, anonymous, granted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ErrorCode;

    #[test]
    fn a_token_namespace_takes_a_subscription_token_or_a_grant() {
        let access = Access {
            subscribe: Permission::Token,
            publish: Permission::Any,
            presence: true,
            anonymous: true,
        };
        assert_eq!(
            may(Action::Subscribe, "vip:a", &access, false, false),
            Err(Refusal::TokenRequired {
                channel: "vip:a".into()
            })
        );
        assert_eq!(
            Refusal::TokenRequired {
                channel: "vip:a".into()
            }
            .code(),
            ErrorCode::Forbidden
        );
        assert_eq!(
            may(Action::Subscribe, "vip:a", &access, false, true),
            Ok(())
        );
        assert!(matches!(
            may(Action::Presence, "vip:a", &access, false, false),
            Err(Refusal::Forbidden { .. })
        ));
        assert_eq!(
            check_subscription_token("ada", "vip:a", "ada", Some("vip:a")),
            Ok(())
        );
        for (user, channel, why) in [
            ("bob", Some("vip:a"), "the token is for another user"),
            ("ada", Some("vip:b"), "the token is for another channel"),
            ("ada", None, "the token is for another channel"),
        ] {
            let refusal = check_subscription_token("ada", "vip:a", user, channel).unwrap_err();
            assert_eq!(refusal.code(), ErrorCode::Unauthorized);
            assert_eq!(
                refusal.to_string(),
                format!("subscription token for vip:a refused: {why}")
            );
        }
        // An anonymous connection (no user) matches no token's user.
        assert!(check_subscription_token("", "vip:a", "ada", Some("vip:a")).is_err());
        // A refresh keeps a token channel; elsewhere it asks `may`.
        assert_eq!(keeps_subscription("vip:a", &access, false, false), Ok(()));
        let granted_only = Access {
            subscribe: Permission::Granted,
            ..access
        };
        assert!(keeps_subscription("x", &granted_only, false, false).is_err());
    }
}
