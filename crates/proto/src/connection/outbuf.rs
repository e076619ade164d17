//! The queue of encoded bytes waiting to be written to the transport.
//!
//! Small frames are appended to one contiguous tail buffer, so many frames go out
//! in one write. A large payload that is already `Bytes` (a server's unmasked
//! frame, or a prepared broadcast frame) is queued as its own chunk without
//! copying; a vectored write sends everything in order.
//!
//! Invariant: the bytes in `chunks` (front to back) followed by `tail` are the
//! exact byte stream to write, and `len` is their total length.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Payloads at least this long are queued by reference instead of copied.
pub(crate) const SHARE_THRESHOLD: usize = 4096;

/// A tail buffer larger than this is given back when the queue drains.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Bytes waiting to be written, in order. Implements [`Buf`].
#[derive(Debug, Default)]
pub struct OutBuf {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl OutBuf {
    /// The tail buffer, to append small frames to. Call [`OutBuf::commit_tail`]
    /// after writing with the number of bytes appended.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Accounts for `n` bytes appended to the tail.
    pub(crate) fn commit_tail(&mut self, n: usize) {
        self.len += n;
    }

    /// Queues `bytes` after everything already queued, without copying.
    pub(crate) fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
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

    /// Drops the tail's spare capacity when it is large and nothing is queued,
    /// so idle connections hold no write buffer.
    fn give_back_memory(&mut self) {
        if self.len == 0 && self.tail.capacity() > KEEP_CAPACITY {
            self.tail = BytesMut::new();
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
