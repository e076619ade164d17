//! Settings of glibc's allocator for servers that hold many connections
//! (`duplex serve`, `duplex echo`).
//!
//! Most of what an idle connection costs is small blocks that live as long
//! as it does, interleaved with short-lived ones (the handshake, the first
//! commands). glibc's defaults favour throughput over resident memory in two
//! ways that matter here, and both are turned off; measured in
//! `docs/benchmarks.md` ("Memory per hub connection", "Idle memory").
//!
//! Invariant: called before the runtime starts any thread, so every thread
//! allocates from the one arena. A no-op where the allocator is not glibc's.

/// Applies both settings; `true` if glibc took them.
///
/// - **One arena** (`M_ARENA_MAX` = 1). By default each thread that meets a
///   busy arena gets another; a connection's blocks are then spread over
///   the arena of the thread that accepted it and that of the thread that
///   serves it, and the free space of one cannot serve the other. With one
///   arena a subscribed hub client costs 1.8 KiB instead of 2.6 KiB
///   resident at 10,000 clients. The per-thread caches in front of the
///   arena still serve most small allocations without its lock.
/// - **No fast bins** (`M_MXFAST` = 0). tokio allocates each task and each
///   socket registration 128-byte aligned, and `memalign` cuts such a block
///   out of a larger one, freeing the spare bytes before and after it. Fast
///   bins keep small freed chunks apart, never merged with their free
///   neighbours; without them the fragments merge back (~60 bytes less per
///   idle connection, 1.03 → 0.97 KiB, `duplex bench idle`).
pub(crate) fn tune_for_many_connections() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` sets a parameter of glibc's allocator under the
        // allocator's own lock; it takes no pointer and has no precondition.
        // 0 is a documented value of `M_MXFAST` (no fast bins): chunks already
        // in fast bins stay valid and are merged on the next consolidation.
        // 1 is a documented value of `M_ARENA_MAX`: arenas that exist stay
        // valid, and no thread is given a new one.
        unsafe { libc::mallopt(libc::M_MXFAST, 0) == 1 && libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_settings_and_keeps_working() {
        assert!(tune_for_many_connections());
        // The allocator keeps working: small blocks of every fast-bin size,
        // from several threads sharing the one arena.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let blocks: Vec<Vec<u8>> = (1..=128).map(|n| vec![(n + t) as u8; n]).collect();
                    assert!(
                        blocks
                            .iter()
                            .enumerate()
                            .all(|(i, b)| b[0] == (i + 1 + t) as u8)
                    );
                    let again: Vec<Box<[u8; 48]>> = (0..1000).map(|_| Box::new([7; 48])).collect();
                    assert!(again.iter().all(|b| b[47] == 7));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
