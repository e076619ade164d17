//! The per-message compressor and decompressor (RFC 7692 §7.2), on zlib-rs.
//!
//! This is the only module that touches the deflate backend. zlib-rs is used
//! directly rather than through flate2 because flate2 fixes zlib's `memLevel`
//! at 8, which costs 112 KiB per compressor.
//!
//! Invariants:
//! - [`Compressor::compress`] appends one message's raw deflate data, ended
//!   with a sync flush and with the flush's trailing `00 00 ff ff` removed;
//!   its back-references never reach further than `2^window_bits` bytes.
//! - [`Decompressor`] never holds more than `max_total + 1` decompressed bytes
//!   of one message in `out` and never asks the backend for more output than
//!   that, however the input inflates.
//! - Backend state exists only while it is needed: it is built on first use,
//!   dropped after every message when context takeover is off, and dropped
//!   by `release` otherwise. What must survive for context takeover is the
//!   last `2^window_bits` bytes of uncompressed data, kept here and loaded
//!   back as a preset dictionary, which makes a rebuilt state equivalent to
//!   the dropped one for every stream that respects the window.
//! - Nothing here panics on any input; backend failures are errors.

use std::collections::VecDeque;
use std::fmt;

use bytes::BytesMut;
use zlib_rs::{DeflateFlush, InflateFlush, Status, Strategy};

use super::negotiate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The four bytes a sync flush ends with, removed by the sender and put back
/// by the receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The most output asked of the backend in one call while decompressing.
const MAX_OUTPUT_STEP: usize = 64 * 1024;
/// The least output asked of the backend in one call while decompressing.
const MIN_OUTPUT_STEP: usize = 1024;

/// zlib's `memLevel` picked from the window: `window_bits - 7`, at least 1
/// (8 for 15, 5 for 12, 3 for 10, 1 for 8 and 9).
pub fn default_mem_level(window_bits: u8) -> u8 {
    window_bits.saturating_sub(7).clamp(1, 8)
}

fn clamp_window_bits(window_bits: u8) -> u8 {
    window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

/// The last `capacity` bytes of uncompressed data: the LZ77 window a peer may
/// refer back into. Its buffer is allocated on first use.
struct History {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl History {
    fn new(window_bits: u8) -> Self {
        Self {
            bytes: VecDeque::new(),
            capacity: 1 << window_bits,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.bytes.capacity() < self.capacity {
            self.bytes.reserve_exact(self.capacity - self.bytes.len());
        }
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let excess = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..excess);
        self.bytes.extend(data);
    }

    fn contiguous(&mut self) -> &[u8] {
        self.bytes.make_contiguous()
    }

    fn free(&mut self) {
        self.bytes = VecDeque::new();
    }

    fn allocated(&self) -> usize {
        self.bytes.capacity()
    }
}

/// Compressing failed inside the backend. Not expected with any parameters
/// this module accepts; a connection should treat it as an internal error
/// (close code 1011).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deflate failed: {0}")]
pub struct CompressError(pub String);

/// Why a compressed message could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The message inflates to more than the allowed size (close with 1009).
    #[error("decompressed message exceeds the size limit")]
    TooLarge,
    /// The data is not valid deflate data (close with 1007).
    #[error("invalid deflate data: {0}")]
    Invalid(String),
}

/// Compresses this end's messages for one connection.
///
/// With window bits 9..=15 this is zlib's deflate at the given level. zlib
/// cannot build a raw deflate compressor with an 8-bit window, so for 8 it
/// builds a 9-bit one restricted to run-length matches (zlib's `Z_RLE`:
/// every back-reference has distance 1), which a peer's 256-byte window
/// always covers. Such messages are valid and smaller for repetitive data,
/// though less so than with full matching.
///
/// Memory: the zlib-rs state (table in [`crate::deflate`]) is built by the
/// first [`Compressor::compress`] and lives until [`Compressor::release`],
/// or only during each call with no context takeover. With context
/// takeover the compressor also keeps the last `2^window_bits` input bytes,
/// so that `release` can drop the state without losing the window.
pub struct Compressor {
    window_bits: u8,
    no_context_takeover: bool,
    level: u8,
    mem_level: u8,
    state: Option<zlib_rs::Deflate>,
    history: History,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor")
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .field("level", &self.level)
            .field("mem_level", &self.mem_level)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

impl Compressor {
    /// A compressor for a negotiated window (clamped to `8..=15`), context
    /// takeover setting and level (clamped to `0..=9`), with
    /// [`default_mem_level`]. Allocates nothing yet.
    pub fn new(window_bits: u8, no_context_takeover: bool, level: u32) -> Self {
        let window_bits = clamp_window_bits(window_bits);
        Self::with_mem_level(
            window_bits,
            no_context_takeover,
            level,
            default_mem_level(window_bits),
        )
    }

    /// As [`Compressor::new`] with an explicit zlib `memLevel` (clamped to
    /// `1..=9`).
    pub fn with_mem_level(
        window_bits: u8,
        no_context_takeover: bool,
        level: u32,
        mem_level: u8,
    ) -> Self {
        let window_bits = clamp_window_bits(window_bits);
        Self {
            window_bits,
            no_context_takeover,
            level: level.min(9) as u8,
            mem_level: mem_level.clamp(1, 9),
            state: None,
            history: History::new(window_bits),
        }
    }

    /// The negotiated window this compressor stays within.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Whether the context is reset after every message.
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Whether the backend state is allocated now.
    pub fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    /// Bytes this compressor holds outside the backend state (the kept window).
    pub fn history_bytes(&self) -> usize {
        self.history.allocated()
    }

    /// Drops the backend state; the next message rebuilds it from the kept
    /// window, so compression carries on as if nothing happened. Call it when
    /// the connection goes idle. Costs a rebuild (an allocation, zeroing and
    /// hashing the window) on the next message.
    pub fn release(&mut self) {
        self.state = None;
    }

    fn build(&mut self) -> Result<zlib_rs::Deflate, CompressError> {
        // zlib refuses raw deflate with an 8-bit window; a 9-bit one whose
        // matches all have distance 1 stays inside 8 bits.
        let (zlib_bits, strategy) = if self.window_bits == MIN_WINDOW_BITS {
            (MIN_WINDOW_BITS + 1, Strategy::Rle)
        } else {
            (self.window_bits, Strategy::Default)
        };
        let mut deflate = zlib_rs::Deflate::new_with_config(zlib_rs::DeflateConfig {
            level: i32::from(self.level),
            window_bits: -i32::from(zlib_bits),
            mem_level: i32::from(self.mem_level),
            strategy,
            ..zlib_rs::DeflateConfig::default()
        });
        if !self.no_context_takeover && !self.history.bytes.is_empty() {
            deflate
                .set_dictionary(self.history.contiguous())
                .map_err(|e| CompressError(e.as_str().to_owned()))?;
        }
        Ok(deflate)
    }

    /// Appends `input`, compressed as one whole message, to `out`: raw
    /// deflate, sync-flushed, without the trailing `00 00 ff ff`. An empty
    /// input gives the single byte `00` (RFC 7692 §7.2.3.6).
    pub fn compress(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), CompressError> {
        if input.is_empty() {
            // An empty stored block, less the tail. zlib would emit nothing
            // for a second flush without input; the stream is byte-aligned
            // after every message, so the block fits in anywhere.
            out.extend_from_slice(&[0x00]);
            return Ok(());
        }
        let mut deflate = match self.state.take() {
            Some(deflate) => deflate,
            None => self.build()?,
        };
        let start = out.len();
        let result = deflate_sync(&mut deflate, input, out);
        if let Err(error) = result {
            out.truncate(start);
            // The state may be mid-stream; a later call starts afresh.
            return Err(error);
        }
        if !out[start..].ends_with(&TAIL) {
            out.truncate(start);
            return Err(CompressError(
                "sync flush did not end in 00 00 ff ff".into(),
            ));
        }
        out.truncate(out.len() - TAIL.len());
        if self.no_context_takeover {
            // Dropping frees the state; the next message builds a fresh one.
        } else {
            self.history.push(input);
            self.state = Some(deflate);
        }
        Ok(())
    }
}

/// Compresses all of `input` with a sync flush, growing `out` as needed.
fn deflate_sync(
    deflate: &mut zlib_rs::Deflate,
    input: &[u8],
    out: &mut BytesMut,
) -> Result<(), CompressError> {
    let mut consumed = 0;
    loop {
        let rest = &input[consumed..];
        let space = zlib_rs::compress_bound(rest.len()) + 16;
        let old_len = out.len();
        out.resize(old_len + space, 0);
        let (in_before, out_before) = (deflate.total_in(), deflate.total_out());
        let result = deflate.compress(rest, &mut out[old_len..], DeflateFlush::SyncFlush);
        let read = (deflate.total_in() - in_before) as usize;
        let written = (deflate.total_out() - out_before) as usize;
        out.truncate(old_len + written);
        result.map_err(|e| CompressError(e.as_str().to_owned()))?;
        consumed += read;
        if written < space {
            // The output had room to spare: the flush is complete.
            return if consumed == input.len() {
                Ok(())
            } else {
                Err(CompressError(
                    "deflate stopped before the end of input".into(),
                ))
            };
        }
    }
}

/// Decompresses the peer's messages for one connection.
///
/// Feed each compressed chunk of a message to [`Decompressor::decompress`]
/// as it arrives, then call [`Decompressor::finish_message`] once. `max_total`
/// bounds the decompressed size of the whole message; past it the call
/// fails with [`DecompressError::TooLarge`] having appended at most
/// `max_total + 1` bytes of the message to `out`. After an error the
/// connection must fail; later calls return [`DecompressError::Invalid`].
///
/// A message whose compressed payload is empty decompresses to an empty
/// message (the tail is not fed, as it would start a stored block that never
/// ends). A message may end its deflate stream with a final block (BFINAL,
/// RFC 7692 §7.2.3.3); data after it starts a new stream over the same
/// window.
///
/// Memory: the zlib-rs state (table in [`crate::deflate`]) is built by the
/// first chunk and lives until [`Decompressor::release`], or only until
/// `finish_message` with no context takeover. The decompressor also keeps
/// the last `2^window_bits` decompressed bytes, across messages with context
/// takeover and within the message without.
///
/// Strictness: zlib-rs's inflater always has a 32 KiB window, so a peer that
/// refers further back than the negotiated window is not caught while the
/// state lives; after a `release`, such a reference fails as invalid data.
pub struct Decompressor {
    window_bits: u8,
    no_context_takeover: bool,
    state: Option<zlib_rs::Inflate>,
    history: History,
    /// Compressed bytes of the current message so far.
    message_in: usize,
    /// Decompressed bytes of the current message so far.
    message_out: usize,
    /// The current deflate stream has ended with a final block.
    stream_ended: bool,
    failed: bool,
}

impl fmt::Debug for Decompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decompressor")
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .field("allocated", &self.state.is_some())
            .field("message_in", &self.message_in)
            .field("message_out", &self.message_out)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Decompressor {
    /// A decompressor for a negotiated window (clamped to `8..=15`) and
    /// context takeover setting. Allocates nothing yet.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        let window_bits = clamp_window_bits(window_bits);
        Self {
            window_bits,
            no_context_takeover,
            state: None,
            history: History::new(window_bits),
            message_in: 0,
            message_out: 0,
            stream_ended: false,
            failed: false,
        }
    }

    /// The negotiated window the peer compresses with.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Whether the context is reset after every message.
    pub fn no_context_takeover(&self) -> bool {
        self.no_context_takeover
    }

    /// Whether the backend state is allocated now.
    pub fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    /// Bytes this decompressor holds outside the backend state (the kept window).
    pub fn history_bytes(&self) -> usize {
        self.history.allocated()
    }

    /// Drops the backend state; the next message rebuilds it from the kept
    /// window. Call it when the connection goes idle. It does nothing in the
    /// middle of a message (after a `decompress` and before its
    /// `finish_message`), where the state holds a half-read block.
    pub fn release(&mut self) {
        if self.message_in == 0 {
            self.state = None;
        }
    }

    fn build(&mut self) -> Result<zlib_rs::Inflate, DecompressError> {
        let mut inflate = zlib_rs::Inflate::new(false, self.window_bits);
        if !self.history.bytes.is_empty() {
            inflate
                .set_dictionary(self.history.contiguous())
                .map_err(|e| DecompressError::Invalid(e.as_str().to_owned()))?;
        }
        Ok(inflate)
    }

    /// Decompresses one chunk of the current message's compressed payload,
    /// appending the output to `out`. `max_total` bounds the decompressed
    /// size of the whole message.
    pub fn decompress(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_total: usize,
    ) -> Result<(), DecompressError> {
        self.check_usable()?;
        self.message_in += input.len();
        let result = self.inflate(input, out, max_total);
        self.fail_on_error(result)
    }

    /// Ends the current message: feeds the `00 00 ff ff` tail, appending any
    /// last output to `out`, and resets the context if there is no context
    /// takeover.
    pub fn finish_message(
        &mut self,
        out: &mut BytesMut,
        max_total: usize,
    ) -> Result<(), DecompressError> {
        self.check_usable()?;
        if self.message_in > 0 && !self.stream_ended {
            let result = self.inflate(&TAIL, out, max_total);
            self.fail_on_error(result)?;
        }
        self.message_in = 0;
        self.message_out = 0;
        if self.no_context_takeover {
            self.state = None;
            self.history.free();
            self.stream_ended = false;
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), DecompressError> {
        if self.failed {
            Err(DecompressError::Invalid(
                "decompressor used after an error".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn fail_on_error(
        &mut self,
        result: Result<(), DecompressError>,
    ) -> Result<(), DecompressError> {
        if result.is_err() {
            self.failed = true;
            self.state = None;
            self.history.free();
        }
        result
    }

    fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_total: usize,
    ) -> Result<(), DecompressError> {
        let mut consumed = 0;
        loop {
            if self.stream_ended {
                if consumed == input.len() {
                    return Ok(());
                }
                // Data after a final block starts a new stream over the same
                // window (RFC 7692 §7.2.3.3).
                self.state = None;
                self.stream_ended = false;
            }
            let mut inflate = match self.state.take() {
                Some(inflate) => inflate,
                None => self.build()?,
            };
            let rest = &input[consumed..];
            let allowed = max_total.saturating_sub(self.message_out);
            let space = rest
                .len()
                .saturating_mul(4)
                .clamp(MIN_OUTPUT_STEP, MAX_OUTPUT_STEP)
                .min(allowed.saturating_add(1));
            let old_len = out.len();
            out.resize(old_len + space, 0);
            let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
            let result = inflate.decompress(rest, &mut out[old_len..], InflateFlush::NoFlush);
            let read = (inflate.total_in() - in_before) as usize;
            let written = (inflate.total_out() - out_before) as usize;
            out.truncate(old_len + written);
            self.state = Some(inflate);
            let status = result.map_err(|e| {
                DecompressError::Invalid(match e {
                    zlib_rs::InflateError::NeedDict { .. } => "needs a dictionary".to_owned(),
                    other => other.as_str().to_owned(),
                })
            })?;
            consumed += read;
            self.message_out += written;
            if self.message_out > max_total {
                return Err(DecompressError::TooLarge);
            }
            self.history.push(&out[old_len..]);
            match status {
                Status::StreamEnd => self.stream_ended = true,
                Status::Ok | Status::BufError => {
                    if consumed == input.len() && written < space {
                        // All input read and the output not full: nothing is
                        // pending inside the inflater.
                        return Ok(());
                    }
                    if read == 0 && written == 0 {
                        return Err(DecompressError::Invalid("inflate made no progress".into()));
                    }
                }
            }
        }
    }
}
