//! What the benchmarks measure: this thread's CPU time, as a criterion
//! [`Measurement`].
//!
//! Wall-clock time counts the time a thread waits for a core; on a 2-core
//! machine shared with other busy processes that wait varies by tens of
//! percent from one run to the next. `CLOCK_THREAD_CPUTIME_ID` counts only
//! the time the thread ran, so it is much steadier. It is still slowed by
//! what shares the core's caches (the two cores here may be hyperthreads of
//! one), so it is no substitute for a quiet machine, only better than the
//! wall clock on a busy one. Values are nanoseconds and print like
//! criterion's wall-clock times.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};

/// CPU time consumed by the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that outlives the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock every Linux kernel provides.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Whether `DUPLEX_BENCH_CLOCK=wall` asks for criterion's wall clock instead
/// of [`ThreadCpuTime`].
pub fn wall_clock_requested() -> bool {
    std::env::var("DUPLEX_BENCH_CLOCK").is_ok_and(|v| v == "wall")
}

/// The criterion measurement: the benchmark thread's CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadCpuTime;

/// Criterion's wall-clock measurement, whose formatter prints nanoseconds as
/// durations and scales throughput; CPU nanoseconds print the same way.
static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work() {
        let start = ThreadCpuTime.start();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(ThreadCpuTime.end(start) > 0, "{x}");
    }
}
