//! WebSocket close codes the hub uses, as plain `u16`s.
//!
//! A client should reconnect (with backoff and jitter) after [`GOING_AWAY`],
//! 1006 (no close frame), [`INTERNAL`], [`TRY_AGAIN_LATER`] and
//! [`SLOW_CONSUMER`], and not after [`NORMAL`], [`POLICY`], [`TOO_BIG`],
//! [`UNAUTHORIZED`], [`TOKEN_EXPIRED`] or [`TOO_MANY_FOR_USER`] without
//! fixing the cause first; [`should_reconnect`] says which.

/// Normal close.
pub const NORMAL: u16 = 1000;
/// The hub is shutting down: reconnect elsewhere or later.
pub const GOING_AWAY: u16 = 1001;
/// Policy: the rate limit was exceeded again after `rate_limited` errors.
pub const POLICY: u16 = 1008;
/// A message over the hub's size limit.
pub const TOO_BIG: u16 = 1009;
/// Internal error.
pub const INTERNAL: u16 = 1011;
/// Try again later: the application's backend could not decide on the
/// connection (its `connect` hook failed: see [`crate::hooks`]).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Unauthorized: a bad token in `connect`, or no `connect` within 10 s.
pub const UNAUTHORIZED: u16 = 4001;
/// The token expired and was not refreshed.
pub const TOKEN_EXPIRED: u16 = 4002;
/// The application's backend revoked the connection's token (its `jti`)
/// or every token of its user (see [`crate::revocation`]).
pub const REVOKED: u16 = 4003;
/// Slow consumer: the client did not read fast enough and its queue filled.
pub const SLOW_CONSUMER: u16 = 4008;
/// The user already has as many connections in the cluster as
/// `limits.max_connections_per_user` allows: close one first.
pub const TOO_MANY_FOR_USER: u16 = 4029;

/// Whether a client should reconnect by itself after the hub closed with
/// `code` (`None`: the connection ended without a close frame, 1006).
pub fn should_reconnect(code: Option<u16>) -> bool {
    match code {
        None => true,
        Some(code) => matches!(
            code,
            GOING_AWAY | 1006 | INTERNAL | TRY_AGAIN_LATER | SLOW_CONSUMER
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_only_after_transient_closes() {
        for code in [GOING_AWAY, 1006, INTERNAL, TRY_AGAIN_LATER, SLOW_CONSUMER] {
            assert!(should_reconnect(Some(code)), "{code}");
        }
        assert!(should_reconnect(None));
        for code in [
            NORMAL,
            POLICY,
            TOO_BIG,
            UNAUTHORIZED,
            TOKEN_EXPIRED,
            TOO_MANY_FOR_USER,
            REVOKED,
        ] {
            assert!(!should_reconnect(Some(code)), "{code}");
        }
    }
}
