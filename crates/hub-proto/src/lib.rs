//! # duplex-hub-proto: the hub's protocol without I/O
//!
//! Not built yet: the hub protocol lands with the hub issue.
