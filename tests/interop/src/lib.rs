//! # duplex-interop: Duplex against real peers written by others
//!
//! This crate has no library code: its tests, in `tests/interop/tests/`, run
//! Duplex against the WebSocket implementations of other people, each in its
//! own process, on loopback:
//!
//! - `python.rs`: Python `websockets` (client → Duplex server, Duplex client →
//!   `websockets` server), driving `python/peer.py`;
//! - `node.rs`: Node `ws`, the same both ways, driving `node/peer.js`;
//! - `chromium.rs`: headless Chromium's own `WebSocket` → Duplex server, from the
//!   page `chromium/index.html`.
//!
//! They cover text and binary messages of 0 to 16 MiB, permessage-deflate off,
//! at its defaults, without context takeover and with every window size the peer
//! allows, fragmented messages both ways, pings both ways, and closes with 1000
//! and with 4000-range codes and reasons, each checked on both sides; Chromium's
//! run leaves a screenshot in `artifacts/interop/chromium.png`.
//!
//! The peers are installed by `cargo xtask setup` (Python `websockets` in
//! `.tools/py3`, `ws` in `tests/interop/node/node_modules`, Debian's chromium).
//! A test whose peer is missing fails and says so; none is skipped.
