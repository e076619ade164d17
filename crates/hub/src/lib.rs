//! # duplex-hub: the real-time hub
//!
//! Not built yet: the hub lands with the hub issue; `duplex serve` runs an echo
//! server until then.
