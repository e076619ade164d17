//! The channels a token grants, per action (see the parent module's docs
//! for the claims and the patterns).

use super::Action;

/// An action's bit in a grant's action set.
pub(super) const fn bit(action: Action) -> u8 {
    match action {
        Action::Subscribe => 1,
        Action::Publish => 2,
        Action::Presence => 4,
    }
}

/// A channel pattern of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    /// Exactly this channel.
    Exact(Box<str>),
    /// Every channel starting with this (the pattern without its final `*`).
    Prefix(Box<str>),
}

impl Pattern {
    fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.into()),
            None => Self::Exact(pattern.into()),
        }
    }

    fn matches(&self, channel: &str) -> bool {
        match self {
            Self::Exact(name) => **name == *channel,
            Self::Prefix(prefix) => channel.starts_with(&**prefix),
        }
    }
}

/// The channels a token grants, per [`Action`]. See the module docs for the
/// claims and patterns.
///
/// Invariant: each distinct pattern appears once, with the union of the
/// actions granted on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    pub(super) rules: Vec<(Pattern, u8)>,
}

impl Grants {
    /// Whether `action` is granted on `channel`.
    pub(crate) fn allows(&self, action: Action, channel: &str) -> bool {
        let bit = bit(action);
        self.rules
            .iter()
            .any(|(pattern, actions)| actions & bit != 0 && pattern.matches(channel))
    }

    #[cfg(test)]
    /// Whether nothing at all is granted.
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Grants `action` on the channels matching `pattern` (an exact name or a
    /// prefix ending in `*`). An empty pattern grants nothing.
    pub(crate) fn grant(&mut self, action: Action, pattern: &str) {
        self.grant_bits(bit(action), pattern);
    }

    pub(super) fn grant_bits(&mut self, bits: u8, pattern: &str) {
        if pattern.is_empty() {
            return;
        }
        let pattern = Pattern::parse(pattern);
        match self.rules.iter_mut().find(|(p, _)| *p == pattern) {
            Some((_, actions)) => *actions |= bits,
            None => self.rules.push((pattern, bits)),
        }
    }
}
