//! The allocator of the `duplex` binary: jemalloc, returning unused pages
//! within about a second.
//!
//! What a server holding many connections pays per connection is mostly
//! small blocks that live as long as the connection, interleaved with
//! short-lived ones (the handshake, the first commands). glibc's allocator
//! leaves the short-lived ones' space as holes between the long-lived
//! blocks, and carves tokio's 128-byte aligned blocks (each task, each
//! socket registration) out of larger ones; how much that wastes changes
//! from build to build with the sizes of unrelated blocks. jemalloc keeps
//! blocks of one size class together, so the waste is small and stable.
//! Measured in `docs/benchmarks.md` ("Memory per hub connection"): a
//! subscribed hub client costs ~1.2 KiB resident instead of 1.45–1.75 KiB,
//! at the same CPU per delivery.
//!
//! The settings changed from jemalloc's defaults (`CONFIG`): pages that no
//! block uses go back to the system after one second instead of ten (and at
//! once from the "muzzy" stage), so the handshakes of a burst of new
//! connections do not stay resident; and jemalloc's background thread does
//! that on time. Without it, pages are given back only when the program
//! allocates, and a server whose connections have all gone quiet (parked,
//! see `duplex::park`) allocates nothing: measured in `docs/benchmarks.md`
//! ("Parked connections"), 10,000 idle echo connections held 660 B each
//! without it and 483 B with it. The environment variable
//! `_RJEM_MALLOC_CONF` overrides them (jemalloc's option syntax).
//!
//! Invariant: only the binary sets the global allocator; the library crates
//! never choose one for their users.

/// Every allocation of the binary.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (a C string), where jemalloc
/// looks for options compiled into the program (`malloc_conf`, with the
/// prefix of the jemalloc this binary links).
// SAFETY: the symbol is a pointer to a NUL-terminated string that lives
// for the whole program, which is what jemalloc reads from it; nothing
// else in the program defines `_rjem_malloc_conf`.
#[unsafe(export_name = "_rjem_malloc_conf")]
#[used]
static CONFIG: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, c_void};

    /// Reads one of jemalloc's options of type `T` (`ssize_t` for the decay
    /// times, `bool` for the background thread).
    fn option<T: Default>(name: &CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `name` is NUL-terminated; `value` and `len` are valid for
        // writes and `len` holds the size of `value`, whose type is the one
        // jemalloc documents for the option asked; no new value is written.
        let status = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&raw mut value).cast::<c_void>(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(status, 0, "mallctl {name:?}");
        value
    }

    #[test]
    fn jemalloc_serves_the_binary_with_its_compiled_in_options() {
        // Allocations come from jemalloc: its counters move.
        let blocks: Vec<Vec<u8>> = (1..=256).map(|n| vec![n as u8; n * 16]).collect();
        assert_eq!(blocks[255].len(), 4096);
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert_eq!(option::<isize>(c"opt.dirty_decay_ms"), 1000);
            assert_eq!(option::<isize>(c"opt.muzzy_decay_ms"), 0);
            assert!(option::<bool>(c"opt.background_thread"));
        }
    }
}
