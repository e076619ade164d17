//! Revocation: which tokens the application's backend has withdrawn before
//! their expiry, and the rule that decides whether a token is one of them.
//!
//! The backend revokes either one token, by its `jti` claim
//! ([`Revocation::Token`]), or every token of a user issued at or before a
//! moment ([`Revocation::User`]: "log this user out everywhere"). A
//! revocation is kept until its `expire_at`: past that, the tokens it was
//! about have expired anyway, so it is forgotten. The hub keeps the
//! revocations in force in a bounded [`Revocations`] set on every node, and
//! asks [`Revocations::check`] at `connect`, at each `refresh`, and for the
//! connections already open when a revocation arrives.
//!
//! # Invariants
//!
//! - **The rule.** A token of `user` with `jti` and `iat` is revoked at
//!   `now` when a revocation in force (`now < expire_at`) names its `jti`,
//!   or names its user with `issued_before >= iat`. A token without `iat`
//!   cannot show it was issued after a user's revocation, so it is revoked
//!   by it; a token without `jti` is never revoked by a token revocation.
//!   Times are whole seconds: a token issued in the same second as a
//!   user's revocation is revoked by it ("at or before").
//! - **Merging.** Revoking again what is revoked keeps the stronger of the
//!   two: the later `issued_before` and the later `expire_at`. So the order
//!   in which nodes hear of two revocations does not matter.
//! - **Bounded.** At most the set's capacity of revocations are in force
//!   ([`MAX_REVOCATIONS`] by default); expired ones are dropped first, and
//!   an insertion that still finds it full is refused ([`Full`]), never a
//!   revocation in force silently forgotten.
//! - No clock inside: `now` is passed in (seconds since the Unix epoch).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How many revocations a set holds in force by default (about 100 bytes
/// each: some 10 MB when full).
pub const MAX_REVOCATIONS: usize = 100_000;

/// How long a user's revocation stays in force when the backend gives no
/// `expire_at`: one day. A backend whose tokens live longer names the
/// expiry of the longest.
pub const DEFAULT_USER_REVOCATION_SECS: u64 = 24 * 3600;

/// One revocation, as the server API takes it and nodes pass it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// The token whose `jti` claim is `jti`.
    Token {
        /// The token's id.
        jti: String,
        /// Until when (seconds since the Unix epoch): the token's `exp`.
        expire_at: u64,
    },
    /// Every token of `user` whose `iat` is at or before `issued_before`.
    User {
        /// The user (`sub`).
        user: String,
        /// Tokens issued at or before this time (seconds since the Unix
        /// epoch) are revoked; later ones are not.
        issued_before: u64,
        /// Until when (seconds since the Unix epoch).
        expire_at: u64,
    },
}

impl Revocation {
    /// Until when it is in force.
    pub fn expire_at(&self) -> u64 {
        match self {
            Self::Token { expire_at, .. } | Self::User { expire_at, .. } => *expire_at,
        }
    }
}

/// What the rule looks at in a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    /// Its `sub`.
    pub user: &'a str,
    /// Its `jti`, if any.
    pub jti: Option<&'a str>,
    /// Its `iat`, if any (whole seconds).
    pub issued: Option<u64>,
}

/// Why a token is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revoked {
    /// Its `jti` was revoked.
    Token,
    /// Its user's tokens issued until then were revoked.
    User,
}

impl Revoked {
    /// The reason of a close or refusal for it (short, for people).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Token => "token revoked",
            Self::User => "the user's tokens were revoked",
        }
    }

    /// The reason of the 4001 close for a revoked token presented in
    /// `connect` or `refresh` (what the handshake's 401 says).
    pub fn refusal(self) -> &'static str {
        match self {
            Self::Token => "token refused: token revoked",
            Self::User => "token refused: the user's tokens were revoked",
        }
    }
}

/// The set is full of revocations in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{capacity} revocations are in force already, the most a node keeps")]
pub struct Full {
    /// The set's capacity.
    pub capacity: usize,
}

/// The revocations in force, bounded (see the module docs).
#[derive(Debug, Clone)]
pub struct Revocations {
    /// `jti` → `expire_at`.
    tokens: HashMap<String, u64>,
    /// user → (`issued_before`, `expire_at`).
    users: HashMap<String, (u64, u64)>,
    capacity: usize,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::with_capacity(MAX_REVOCATIONS)
    }
}

impl Revocations {
    /// An empty set holding at most `capacity` revocations.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            tokens: HashMap::new(),
            users: HashMap::new(),
            capacity,
        }
    }

    /// How many it holds (some may have expired since the last
    /// [`Revocations::purge`]).
    pub fn len(&self) -> usize {
        self.tokens.len() + self.users.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `revocation` at `now`, merged with one for the same token or
    /// user. An expired one changes nothing (`Ok(false)`); `Err` when the
    /// set is full of revocations in force.
    pub fn insert(&mut self, revocation: Revocation, now: u64) -> Result<bool, Full> {
        if revocation.expire_at() <= now {
            return Ok(false);
        }
        let known = match &revocation {
            Revocation::Token { jti, .. } => self.tokens.contains_key(jti),
            Revocation::User { user, .. } => self.users.contains_key(user),
        };
        if !known && self.len() >= self.capacity {
            self.purge(now);
            if self.len() >= self.capacity {
                return Err(Full {
                    capacity: self.capacity,
                });
            }
        }
        match revocation {
            Revocation::Token { jti, expire_at } => {
                let at = self.tokens.entry(jti).or_insert(expire_at);
                *at = (*at).max(expire_at);
            }
            Revocation::User {
                user,
                issued_before,
                expire_at,
            } => {
                let entry = self.users.entry(user).or_insert((issued_before, expire_at));
                entry.0 = entry.0.max(issued_before);
                entry.1 = entry.1.max(expire_at);
            }
        }
        Ok(true)
    }

    /// Withdraws the revocation of token `jti`; whether there was one.
    pub fn remove_token(&mut self, jti: &str) -> bool {
        self.tokens.remove(jti).is_some()
    }

    /// Withdraws the revocation of `user`'s tokens; whether there was one.
    pub fn remove_user(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Drops the revocations no longer in force at `now`.
    pub fn purge(&mut self, now: u64) {
        self.tokens.retain(|_, expire_at| *expire_at > now);
        self.users.retain(|_, (_, expire_at)| *expire_at > now);
    }

    /// Whether `token` is revoked at `now` (the rule of the module docs).
    pub fn check(&self, token: TokenFacts<'_>, now: u64) -> Result<(), Revoked> {
        if let Some(jti) = token.jti
            && self.tokens.get(jti).is_some_and(|at| now < *at)
        {
            return Err(Revoked::Token);
        }
        if let Some((issued_before, expire_at)) = self.users.get(token.user)
            && now < *expire_at
            && token.issued.is_none_or(|iat| iat <= *issued_before)
        {
            return Err(Revoked::User);
        }
        Ok(())
    }

    /// Every revocation in force at `now`, for a node that loads them.
    pub fn entries(&self, now: u64) -> Vec<Revocation> {
        let tokens = self
            .tokens
            .iter()
            .filter(|(_, at)| now < **at)
            .map(|(jti, at)| Revocation::Token {
                jti: jti.clone(),
                expire_at: *at,
            });
        let users =
            self.users
                .iter()
                .filter(|(_, (_, at))| now < *at)
                .map(|(user, (before, at))| Revocation::User {
                    user: user.clone(),
                    issued_before: *before,
                    expire_at: *at,
                });
        tokens.chain(users).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000;

    fn token<'a>(user: &'a str, jti: Option<&'a str>, issued: Option<u64>) -> TokenFacts<'a> {
        TokenFacts { user, jti, issued }
    }

    fn user(user: &str, issued_before: u64, expire_at: u64) -> Revocation {
        Revocation::User {
            user: user.into(),
            issued_before,
            expire_at,
        }
    }

    fn jti(jti: &str, expire_at: u64) -> Revocation {
        Revocation::Token {
            jti: jti.into(),
            expire_at,
        }
    }

    #[test]
    fn a_revoked_jti_is_refused_until_its_expiry() {
        let mut set = Revocations::default();
        assert_eq!(set.insert(jti("t1", NOW + 60), NOW), Ok(true));
        let t1 = token("ada", Some("t1"), Some(NOW - 5));
        assert_eq!(set.check(t1, NOW), Err(Revoked::Token));
        assert_eq!(set.check(t1, NOW + 59), Err(Revoked::Token));
        assert_eq!(set.check(t1, NOW + 60), Ok(()), "expired: forgotten");
        assert_eq!(set.check(token("ada", Some("t2"), None), NOW), Ok(()));
        assert_eq!(set.check(token("ada", None, None), NOW), Ok(()), "no jti");
        assert!(set.remove_token("t1"));
        assert_eq!(set.check(t1, NOW), Ok(()), "withdrawn");
        assert!(!set.remove_token("t1"));
    }

    #[test]
    fn a_users_revocation_is_for_tokens_issued_at_or_before_it() {
        let mut set = Revocations::default();
        set.insert(user("ada", NOW, NOW + 3600), NOW).unwrap();
        assert_eq!(
            set.check(token("ada", None, Some(NOW - 1)), NOW),
            Err(Revoked::User)
        );
        assert_eq!(
            set.check(token("ada", None, Some(NOW)), NOW),
            Err(Revoked::User),
            "same second: at or before"
        );
        assert_eq!(
            set.check(token("ada", None, Some(NOW + 1)), NOW + 1),
            Ok(())
        );
        assert_eq!(
            set.check(token("ada", Some("x"), None), NOW),
            Err(Revoked::User),
            "no iat: cannot show it is newer"
        );
        assert_eq!(set.check(token("bob", None, Some(NOW - 1)), NOW), Ok(()));
        assert_eq!(
            set.check(token("ada", None, Some(NOW - 1)), NOW + 3600),
            Ok(()),
            "past expire_at"
        );
        assert!(set.remove_user("ada"));
        assert_eq!(set.check(token("ada", None, Some(NOW - 1)), NOW), Ok(()));
    }

    #[test]
    fn merging_keeps_the_stronger_in_any_order() {
        let a = user("ada", NOW, NOW + 100);
        let b = user("ada", NOW + 50, NOW + 60);
        for order in [[a.clone(), b.clone()], [b, a]] {
            let mut set = Revocations::default();
            for r in order {
                set.insert(r, NOW).unwrap();
            }
            assert_eq!(set.entries(NOW), [user("ada", NOW + 50, NOW + 100)]);
        }
        let mut set = Revocations::default();
        set.insert(jti("t", NOW + 100), NOW).unwrap();
        set.insert(jti("t", NOW + 10), NOW).unwrap();
        assert_eq!(set.entries(NOW), [jti("t", NOW + 100)]);
        assert_eq!(set.insert(jti("old", NOW), NOW), Ok(false), "expired");
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn the_set_is_bounded_and_never_forgets_one_in_force() {
        let mut set = Revocations::with_capacity(2);
        set.insert(jti("a", NOW + 10), NOW).unwrap();
        set.insert(user("u", NOW, NOW + 100), NOW).unwrap();
        assert_eq!(
            set.insert(jti("b", NOW + 10), NOW),
            Err(Full { capacity: 2 })
        );
        assert_eq!(
            set.check(token("x", Some("a"), None), NOW),
            Err(Revoked::Token)
        );
        // Merging into one held needs no room.
        assert_eq!(set.insert(jti("a", NOW + 20), NOW), Ok(true));
        // Once one expired, there is room again.
        assert_eq!(set.insert(jti("b", NOW + 30), NOW + 25), Ok(true));
        assert_eq!(set.len(), 2);
        set.purge(NOW + 100);
        assert!(set.is_empty());
    }

    #[test]
    fn revocations_travel_as_json() {
        let r = user("ada", NOW, NOW + 1);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"user","user":"ada","issued_before":1795000000,"expire_at":1795000001}"#
        );
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        assert_eq!(Revoked::Token.reason(), "token revoked");
        assert!(Revoked::User.refusal().starts_with("token refused: "));
    }
}
