//! The channels one session is subscribed to.
//!
//! Invariants:
//! - A name is in the list at most once (the session checks before adding).
//! - The names are the broker's own (`Subscribed::name`), shared, and the
//!   first one costs no allocation of the list's own: most clients keep one
//!   channel, and the list lives in every session (24 bytes inline).

use std::sync::Arc;

/// The channels a session is subscribed to, in no particular order.
#[derive(Debug, Default)]
pub(crate) enum Subscriptions {
    #[default]
    None,
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Subscriptions {
    /// How many channels.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::One(_) => 1,
            Self::Many(names) => names.len(),
        }
    }

    /// Whether `name` is one of them.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names().iter().any(|n| **n == *name)
    }

    /// Adds `name` (not already in the list).
    pub(crate) fn add(&mut self, name: Arc<str>) {
        *self = match std::mem::take(self) {
            Self::None => Self::One(name),
            Self::One(first) => Self::Many(vec![first, name]),
            Self::Many(mut names) => {
                names.push(name);
                Self::Many(names)
            }
        };
    }

    /// Removes `name` and returns it, if it was in the list.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<str>> {
        match self {
            Self::None => None,
            Self::One(first) if **first == *name => match std::mem::take(self) {
                Self::One(first) => Some(first),
                _ => unreachable!("matched above"),
            },
            Self::One(_) => None,
            Self::Many(names) => {
                let at = names.iter().position(|n| **n == *name)?;
                Some(names.swap_remove(at))
            }
        }
    }

    /// Empties the list, returning what it held.
    pub(crate) fn take_all(&mut self) -> Vec<Arc<str>> {
        match std::mem::take(self) {
            Self::None => Vec::new(),
            Self::One(first) => vec![first],
            Self::Many(names) => names,
        }
    }

    /// The names, in no particular order.
    pub(crate) fn names(&self) -> &[Arc<str>] {
        match self {
            Self::None => &[],
            Self::One(first) => std::slice::from_ref(first),
            Self::Many(names) => names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_one_channel_without_an_allocation_of_its_own() {
        assert_eq!(std::mem::size_of::<Subscriptions>(), 24);
        let mut list = Subscriptions::default();
        assert_eq!(list.len(), 0);
        assert!(!list.contains("a:1"));
        list.add("a:1".into());
        assert!(matches!(list, Subscriptions::One(_)));
        assert!(list.contains("a:1"));
        assert!(!list.contains("a:2"));
        assert_eq!(list.remove("a:2"), None);
        assert_eq!(list.remove("a:1").as_deref(), Some("a:1"));
        assert_eq!(list.len(), 0);
        assert_eq!(list.remove("a:1"), None);
    }

    #[test]
    fn grows_removes_and_empties() {
        let mut list = Subscriptions::default();
        for n in 0..5 {
            list.add(format!("a:{n}").into());
        }
        assert_eq!(list.len(), 5);
        assert!((0..5).all(|n| list.contains(&format!("a:{n}"))));
        assert_eq!(list.remove("a:0").as_deref(), Some("a:0"));
        assert!(!list.contains("a:0"));
        assert_eq!(list.len(), 4);
        let mut all: Vec<String> = list.take_all().iter().map(|n| n.to_string()).collect();
        all.sort();
        assert_eq!(all, ["a:1", "a:2", "a:3", "a:4"]);
        assert_eq!(list.len(), 0);
        assert!(list.take_all().is_empty());
    }
}
