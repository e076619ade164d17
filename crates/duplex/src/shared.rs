//! Settings that many connections hold alike, kept once.
//!
//! A server makes its connections from one configuration, so each would
//! carry its own copy of the same limits and timer settings (64 bytes, a
//! quarter of an idle `WebSocket`, and enough to put a connection's task in
//! tokio's next 128-byte size), and of the subprotocol's name. Each holds a
//! pointer to one shared copy instead, found by value when the connection
//! is made.
//!
//! Invariants:
//! - Equal values made into connections get the same `Arc`, for the first
//!   [`KEPT`] distinct values of a type; a value past those gets an `Arc` of
//!   its own (correct, only not shared), so what is kept here is bounded.
//! - Kept values stay for the process's life: a process uses a handful of
//!   configurations. (The `internment` crate drops a value with its last
//!   user, at a hash-map update per connection; this is one short lock and
//!   a comparison or two.)

use std::sync::{Arc, Mutex};

/// Distinct values kept per type.
const KEPT: usize = 16;

/// The values of type `T` connections share.
pub(crate) struct Shared<T>(Mutex<Vec<Arc<T>>>);

impl<T: PartialEq> Shared<T> {
    /// None kept yet.
    pub(crate) const fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// The kept copy equal to `value`, else `value` in a new `Arc` (kept
    /// while fewer than [`KEPT`] are).
    pub(crate) fn get(&self, value: T) -> Arc<T> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(same) = kept.iter().find(|kept| ***kept == value) {
            return same.clone();
        }
        let value = Arc::new(value);
        if kept.len() < KEPT {
            kept.push(value.clone());
        }
        value
    }
}

/// The protocol limits connections share.
pub(crate) static PROTOCOL: Shared<duplex_proto::connection::Config> = Shared::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy_and_the_kept_ones_are_bounded() {
        let shared = Shared::<u32>::new();
        let (a, b) = (shared.get(7), shared.get(7));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &shared.get(8)));
        for n in 0..100 {
            assert_eq!(*shared.get(n), n);
        }
        assert_eq!(shared.0.lock().unwrap().len(), KEPT);
        // Past the bound: a copy of its own, still the right value.
        let (c, d) = (shared.get(1_000), shared.get(1_000));
        assert_eq!((*c, *d), (1_000, 1_000));
        assert!(!Arc::ptr_eq(&c, &d));
    }
}
