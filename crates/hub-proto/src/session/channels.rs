//! The channels one connection is subscribed to (see [`Channels`]).
//!
//! Invariants: a name is in the list at most once (the session's rules add
//! one only after checking it is not there); an empty list is an empty
//! `Many`, which allocates nothing.

use thin_vec::{ThinVec, thin_vec};

/// The channels one connection is subscribed to, in no particular order;
/// `N` is the driver's name type (the hub shares the broker's `Arc<str>`).
/// The first one costs no allocation of the list's own: most clients keep
/// one channel, and the list lives in every connection. None is an empty
/// `Many` (a `ThinVec` allocates nothing while empty): two variants, so
/// the tag hides in the name's pointer and the list takes 16 bytes.
#[derive(Debug)]
pub(super) enum Channels<N> {
    One(N),
    Many(ThinVec<N>),
}

impl<N> Default for Channels<N> {
    fn default() -> Self {
        Self::Many(ThinVec::new())
    }
}

impl<N: AsRef<str>> Channels<N> {
    pub(super) fn names(&self) -> &[N] {
        match self {
            Self::One(first) => std::slice::from_ref(first),
            Self::Many(names) => names,
        }
    }

    pub(super) fn add(&mut self, name: N) {
        *self = match std::mem::take(self) {
            Self::Many(names) if names.is_empty() => Self::One(name),
            Self::One(first) => Self::Many(thin_vec![first, name]),
            Self::Many(mut names) => {
                names.push(name);
                Self::Many(names)
            }
        };
    }

    pub(super) fn remove(&mut self, name: &str) -> Option<N> {
        match self {
            Self::One(first) if first.as_ref() == name => match std::mem::take(self) {
                Self::One(first) => Some(first),
                Self::Many(_) => unreachable!("matched above"),
            },
            Self::One(_) => None,
            Self::Many(names) => {
                let at = names.iter().position(|n| n.as_ref() == name)?;
                let name = names.swap_remove(at);
                if names.is_empty() {
                    *self = Self::default();
                }
                Some(name)
            }
        }
    }

    pub(super) fn take_all(&mut self) -> Vec<N> {
        match std::mem::take(self) {
            Self::One(first) => vec![first],
            Self::Many(names) => names.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_list_keeps_each_name_once_through_one_and_many() {
        let mut channels = Channels::<String>::default();
        assert!(channels.names().is_empty());
        assert_eq!(channels.remove("a"), None);
        channels.add("a".into());
        assert!(matches!(channels, Channels::One(_)));
        channels.add("b".into());
        channels.add("c".into());
        assert_eq!(channels.remove("b").as_deref(), Some("b"));
        assert_eq!(channels.names(), ["a", "c"]);
        assert_eq!(channels.remove("a").as_deref(), Some("a"));
        assert_eq!(channels.remove("c").as_deref(), Some("c"));
        assert!(channels.names().is_empty());
        channels.add("d".into());
        assert_eq!(channels.take_all(), ["d"]);
        assert!(channels.names().is_empty());
    }
}
