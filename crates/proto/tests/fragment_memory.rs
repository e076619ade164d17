//! Reassembly keeps no per-fragment state: a message in 262,144 one-byte
//! fragments costs about what the message itself costs.
//!
//! A counting global allocator records the peak of live heap bytes while the
//! frames are fed in 4 KiB reads, as a socket would deliver them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use duplex_proto::connection::{Config, Connection, Event};
use duplex_proto::frame::{OpCode, encode_frame};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = if new_size >= layout.size() {
            LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size()
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed) - (layout.size() - new_size)
        };
        PEAK.fetch_max(live + layout.size().min(new_size), Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, which `System` shares.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_storm_of_one_byte_fragments_costs_about_the_message() {
    const MESSAGE: usize = 256 * 1024;
    let mut wire = BytesMut::new();
    for i in 0..MESSAGE {
        let opcode = if i == 0 {
            OpCode::Binary
        } else {
            OpCode::Continuation
        };
        encode_frame(
            i == MESSAGE - 1,
            0,
            opcode,
            Some([1, 2, 3, 4]),
            &[i as u8],
            &mut wire,
        );
    }
    let wire = wire.freeze();
    let mut conn = Connection::server(Config::default());
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut delivered = None;
    for read in wire.chunks(4096) {
        conn.receive(read);
        while let Some(event) = conn.poll_event().expect("valid frames") {
            if let Event::Message(message) = event {
                delivered = Some(message);
            }
        }
    }
    let peak = PEAK.load(Ordering::Relaxed) - baseline;
    let message = delivered.expect("the message arrives");
    assert_eq!(message.payload().len(), MESSAGE);
    assert!(
        message
            .payload()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == i as u8)
    );
    // The reassembly buffer grows by doubling (at most 2x the message while a
    // reallocation copies), plus one read's worth of input.
    assert!(
        peak <= 2 * MESSAGE + 64 * 1024,
        "peak {peak} bytes for a {MESSAGE}-byte message in {MESSAGE} fragments"
    );
}
