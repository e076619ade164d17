//! The queue of encoded bytes waiting to be written to the transport.
//!
//! Small frames are appended to one contiguous tail buffer, so many frames go out
//! in one write. A large payload that is already `Bytes` (a server's unmasked
//! frame, or a prepared broadcast frame) is queued as its own chunk without
//! copying; a vectored write sends everything in order.
//!
//! Invariants:
//! - The bytes in `chunks` (front to back) followed by `tail` are the exact
//!   byte stream to write, and `len` is their total length.
//! - `pong_len`, when not 0, is the length of the automatic pong that ends the
//!   queue: its bytes are the last `pong_len` bytes of `tail`, none of them
//!   written yet. Queuing anything else, or writing any of its bytes, clears it.
//! - `pongs` counts the automatic pongs queued since the queue was last empty
//!   (see [`PONG_BURST`]).
//! - A connection holds a queue only while bytes wait in it: a drained one
//!   becomes its thread's spare ([`OutBuf::recycle`]), which the next
//!   connection that queues bytes on the thread takes ([`OutBuf::take`]).
//!   A spare is empty, with at most [`KEEP_CAPACITY`] bytes of tail and
//!   [`KEEP_CHUNKS`] chunk slots: a thread keeps at most one, ~17 KiB.

use bytes::{Buf, Bytes, BytesMut};
use std::cell::Cell;
use std::collections::VecDeque;
use std::io::IoSlice;

/// Payloads at least this long are queued by reference instead of copied.
pub(crate) const SHARE_THRESHOLD: usize = 4096;

/// A tail buffer larger than this is given back when the queue drains.
const KEEP_CAPACITY: usize = 16 * 1024;

/// A list of chunks with room for more than this many is given back when
/// the queue drains.
const KEEP_CHUNKS: usize = 64;

thread_local! {
    /// This thread's drained write queue, for the next connection that
    /// queues bytes here.
    static SPARE: Cell<Option<Box<OutBuf>>> = const { Cell::new(None) };
}

/// Automatic pongs that may queue up, each for its own ping, while the queue
/// is not written out; past them, one more is queued, and then each new
/// automatic pong replaces the last one if that one is still wholly unwritten
/// and last in the queue (RFC 6455 §5.5.3 lets an endpoint answer only the
/// most recent of the pings it has not answered yet). A peer
/// that reads what we write gets a pong for every ping of a burst of up to
/// this many (the Autobahn|Testsuite sends 10 at once); a peer that sends
/// pings and does not read makes us queue at most this many pongs plus one.
pub const PONG_BURST: usize = 16;

/// Bytes waiting to be written, in order. Implements [`Buf`].
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
    /// Length of the unwritten automatic pong that ends the queue (0: none).
    pong_len: usize,
    /// Automatic pongs queued since the queue was last empty.
    pongs: usize,
}

impl OutBuf {
    /// An empty queue for a connection that has bytes to queue: this
    /// thread's spare (with the room it grew before), else a new one.
    pub(crate) fn take() -> Box<Self> {
        SPARE
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Gives back a drained queue (`out` must be empty): it becomes this
    /// thread's spare, in place of the one there (dropped).
    pub(crate) fn recycle(out: Box<Self>) {
        // An empty queue counts no pongs (see the module's invariants).
        debug_assert!(out.is_empty() && out.pongs == 0 && out.pong_len == 0);
        // `Err` while the thread's locals are torn down: `out` is dropped.
        let _ = SPARE.try_with(|spare| spare.replace(Some(out)));
    }

    /// The tail buffer, to append small frames to. Call [`OutBuf::commit_tail`]
    /// after writing with the number of bytes appended.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Accounts for `n` bytes appended to the tail.
    pub(crate) fn commit_tail(&mut self, n: usize) {
        self.len += n;
        self.pong_len = 0;
    }

    /// Makes room for a new automatic pong: once more than [`PONG_BURST`] of
    /// them were queued since the queue was last empty, takes back the last one if it
    /// ends the queue and none of it was written. Returns whether it did.
    pub(crate) fn replace_pong(&mut self) -> bool {
        if self.pong_len == 0 || self.pongs <= PONG_BURST {
            return false;
        }
        debug_assert!(self.tail.len() >= self.pong_len && self.len >= self.pong_len);
        self.tail.truncate(self.tail.len() - self.pong_len);
        self.len -= self.pong_len;
        self.pong_len = 0;
        true
    }

    /// Marks the last `n` bytes queued (all in the tail) as an automatic
    /// pong; `replaced` tells whether it took the place of an earlier one
    /// ([`OutBuf::replace_pong`]) rather than adding to the count.
    pub(crate) fn mark_pong(&mut self, n: usize, replaced: bool) {
        debug_assert!(self.tail.len() >= n && self.len >= n);
        self.pong_len = n;
        if !replaced {
            self.pongs += 1;
        }
    }

    /// Queues `bytes` after everything already queued, without copying.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.pong_len = 0;
        self.len += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Total bytes queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the tail's and the chunk list's room when it is large and
    /// nothing is queued, so a drained queue (a thread's spare) stays small.
    fn give_back_memory(&mut self) {
        if self.len == 0 {
            if self.tail.capacity() > KEEP_CAPACITY {
                self.tail = BytesMut::new();
            }
            if self.chunks.capacity() > KEEP_CHUNKS {
                self.chunks = VecDeque::new();
            }
        }
    }
}

impl Buf for OutBuf {
    fn remaining(&self) -> usize {
        self.len
    }

    fn chunk(&self) -> &[u8] {
        match self.chunks.front() {
            Some(front) => front,
            None => &self.tail,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        assert!(cnt <= self.len, "advance past the end of the queue");
        self.len -= cnt;
        if self.len < self.pong_len {
            // Part of the pong is written: it can no longer be replaced.
            self.pong_len = 0;
        }
        if self.len == 0 {
            self.pongs = 0;
        }
        while cnt > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= cnt => {
                    cnt -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(cnt);
                    cnt = 0;
                }
                None => {
                    self.tail.advance(cnt);
                    cnt = 0;
                }
            }
        }
        self.give_back_memory();
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for chunk in self.chunks.iter().map(|c| &c[..]).chain([&self.tail[..]]) {
            if n == dst.len() {
                break;
            }
            if !chunk.is_empty() {
                dst[n] = IoSlice::new(chunk);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(buf: &mut OutBuf, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while buf.has_remaining() {
            let n = buf.chunk().len().min(step);
            out.extend_from_slice(&buf.chunk()[..n]);
            buf.advance(n);
        }
        out
    }

    #[test]
    fn keeps_order_across_tail_and_shared_chunks() {
        let mut buf = OutBuf::default();
        buf.tail().extend_from_slice(b"ab");
        buf.commit_tail(2);
        buf.push_shared(Bytes::from_static(b"cde"));
        buf.tail().extend_from_slice(b"f");
        buf.commit_tail(1);
        assert_eq!(buf.len(), 6);
        let mut slices = [IoSlice::new(&[]); 4];
        let n = buf.chunks_vectored(&mut slices);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(joined, b"abcdef");
        assert_eq!(drain(&mut buf, 2), b"abcdef");
        assert!(buf.is_empty());
    }

    #[test]
    fn large_tail_is_given_back_when_drained() {
        let mut buf = OutBuf::default();
        buf.tail().extend_from_slice(&vec![7u8; 100_000]);
        buf.commit_tail(100_000);
        buf.advance(100_000);
        assert_eq!(buf.tail.capacity(), 0);
    }
}
