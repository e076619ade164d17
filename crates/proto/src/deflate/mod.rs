//! permessage-deflate (RFC 7692).
//!
//! Two halves:
//! - [`negotiate`](mod@negotiate): the handshake. A client sends [`client_offer`] and checks
//!   the answer with [`client_accept`]; a server picks the first acceptable
//!   offer with [`negotiate()`](fn@negotiate) and answers [`DeflateParams::response_header`].
//!   Both get [`DeflateParams`], the agreement.
//! - [`codec`]: per-connection [`Compressor`] and [`Decompressor`], built for a
//!   role from the agreement by [`PerMessageDeflate::new`].
//!
//! A message is compressed whole ([`Compressor::compress`]) and sent with
//! RSV1 set on its first frame; a received message with RSV1 is decompressed
//! chunk by chunk as frames arrive ([`Decompressor::decompress`]) and ended
//! with [`Decompressor::finish_message`]. Control frames are never compressed.
//!
//! Invariants of this module:
//! - Both ends derive their compressor and decompressor from the same
//!   [`DeflateParams`], so what one compresses the other can decompress; a
//!   compressor never uses a larger window than the agreement allows.
//! - Decompressed size is bounded by the caller's limit while inflating, not
//!   after: a small bomb cannot allocate more than the limit plus one step.
//! - No `unsafe` here, no I/O, no clock; no panic on any input.
//!
//! ## Memory
//!
//! Measured with a counting global allocator (zlib-rs 0.6.8, 64-bit Linux),
//! in bytes. zlib-rs sizes its deflate hash table at 64 Ki entries (128 KiB)
//! whatever the window or `memLevel`, and its inflate window at 32 KiB
//! whatever the window, so window bits matter much less than zlib's formula
//! (deflate `2^(w+2) + 2^(m+9)`, inflate `2^w` + ~7 KiB) suggests, and
//! `memLevel` (`m`) matters more.
//!
//! | w | deflate state, m = default | m = 1 | m = 8 | inflate state | kept window, each way | held between messages, context takeover | after `release` |
//! |---|---|---|---|---|---|---|---|
//! | 8 (built as 9, RLE) | 137,216 (m=1) | 137,216 | 251,008 | 47,552 | 256 | 185,280 | 512 |
//! | 9  | 138,112 (m=2) | 137,216 | 251,008 | 47,552 | 512 | 186,688 | 1,024 |
//! | 10 | 141,952 (m=3) | 139,264 | 253,056 | 47,552 | 1,024 | 191,552 | 2,048 |
//! | 11 | 149,632 (m=4) | 143,360 | 257,152 | 47,552 | 2,048 | 201,280 | 4,096 |
//! | 12 | 164,992 (m=5) | 151,552 | 265,344 | 47,552 | 4,096 | 220,736 | 8,192 |
//! | 13 | 195,712 (m=6) | 167,936 | 281,728 | 47,552 | 8,192 | 259,648 | 16,384 |
//! | 14 | 257,152 (m=7) | 200,704 | 314,496 | 47,552 | 16,384 | 337,472 | 32,768 |
//! | 15 | 380,032 (m=8) | 266,240 | 380,032 | 47,552 | 32,768 | 493,120 | 65,536 |
//!
//! "Held between messages" is one compressor and one decompressor with
//! context takeover both ways and the default `memLevel`: both states plus
//! both kept windows. With no context takeover in a direction, that
//! direction holds nothing between messages (its state is built for each
//! message and dropped after it). After [`PerMessageDeflate::release`] only
//! the kept windows remain, and the states are rebuilt on the next message.
//!
//! For comparison, zlib's defaults (w = 15, m = 8) cost about 256 KiB for
//! deflate and 44 KiB for inflate per connection by its formula. A server
//! capping windows at 10 holds 191,552 bytes per busy connection here, about
//! 62% of that, not the 25% zlib's formula promises, because of zlib-rs's
//! fixed tables; it holds 2,048 bytes per released (idle) connection and
//! nothing per connection without context takeover. A server with many idle
//! connections should therefore release them when idle, or negotiate no
//! context takeover.
//!
//! CPU cost of that laziness (same machine, a 140-byte JSON message, w = 12,
//! level 6): compressing with context takeover about 3.7 µs; without it
//! about 15 µs, of which about 9.5 µs is zlib-rs resetting its tables and
//! the rest building the state afresh; decompressing 0.8 µs and 3.5 µs.

pub mod codec;
pub mod negotiate;

pub use codec::{
    CompressError, Compressor, DecompressError, Decompressor, TAIL, default_mem_level,
};
pub use negotiate::{
    DeflateConfig, DeflateParams, EXTENSION_NAME, MAX_WINDOW_BITS, MIN_WINDOW_BITS,
    NegotiationError, accept_response, client_accept, client_offer, negotiate, negotiate_offer,
};

use crate::Role;

/// One connection's permessage-deflate state: its compressor, decompressor
/// and sending threshold, set up for `role` from the agreement.
#[derive(Debug)]
pub struct PerMessageDeflate {
    compressor: Compressor,
    decompressor: Decompressor,
    threshold: usize,
}

impl PerMessageDeflate {
    /// The compressor and decompressor `role` needs under `params`, with the
    /// level, `memLevel` and threshold of `config`. Allocates nothing yet.
    pub fn new(role: Role, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let window_bits = params.compress_window_bits(role);
        let mem_level = config
            .mem_level
            .unwrap_or_else(|| default_mem_level(window_bits));
        Self {
            compressor: Compressor::with_mem_level(
                window_bits,
                params.compress_no_context_takeover(role),
                config.level,
                mem_level,
            ),
            decompressor: Decompressor::new(
                params.decompress_window_bits(role),
                params.decompress_no_context_takeover(role),
            ),
            threshold: config.threshold,
        }
    }

    /// Whether to compress an outgoing message of `len` bytes.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// The compressor for outgoing messages.
    pub fn compressor(&mut self) -> &mut Compressor {
        &mut self.compressor
    }

    /// The decompressor for incoming messages.
    pub fn decompressor(&mut self) -> &mut Decompressor {
        &mut self.decompressor
    }

    /// Drops both backend states, keeping only the windows needed to carry
    /// on (see [`Compressor::release`], [`Decompressor::release`]).
    pub fn release(&mut self) {
        self.compressor.release();
        self.decompressor.release();
    }
}

#[cfg(test)]
mod tests;
