//! What `/proc` tells about a process: CPU time and resident memory.
//!
//! Invariant: CPU time is utime + stime of the whole process (all its
//! threads) from `/proc/PID/stat`, converted from clock ticks to seconds with
//! `sysconf(_SC_CLK_TCK)`; memory is read from `/proc/PID/status`, in bytes:
//! `VmRSS` (all resident pages) and `RssAnon` (the resident pages that
//! belong to this process alone: heap, stacks, JIT code). What grows with
//! connections is anonymous; the rest of `VmRSS` is file-backed (the
//! program's code and read-only data, paged in as code paths first run,
//! shared with every process running the same program), a fixed cost that
//! a per-connection figure must not divide.

use anyhow::{Context as _, bail};

/// A process to observe: another one by id, or this one.
#[derive(Debug, Clone, Copy)]
pub(super) enum Proc {
    /// The process with this id.
    Pid(u32),
    /// The generator itself.
    Current,
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Self::Pid(pid) => format!("/proc/{pid}/{file}"),
            Self::Current => format!("/proc/self/{file}"),
        }
    }

    /// CPU time used so far (user + system), in seconds.
    pub(super) fn cpu_seconds(self) -> anyhow::Result<f64> {
        let path = self.path("stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields that follow start after the last ')'. There, field 3 (state)
        // is index 0, so utime (14) and stime (15) are 11 and 12.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .with_context(|| format!("{path}: unexpected format"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
            bail!("{path}: unexpected format");
        };
        let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
        Ok(ticks as f64 / clock_ticks_per_second())
    }

    /// Resident memory, in bytes: all of it (`VmRSS`) and the anonymous
    /// part (`RssAnon`).
    pub(super) fn memory(self) -> anyhow::Result<Memory> {
        let path = self.path("status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .with_context(|| format!("{path} has no {name}"))?;
            let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
            Ok(kib * 1024)
        };
        Ok(Memory {
            resident: field("VmRSS:")?,
            anonymous: field("RssAnon:")?,
        })
    }

    /// Resident memory (`VmRSS`), in bytes.
    pub(super) fn rss_bytes(self) -> anyhow::Result<u64> {
        Ok(self.memory()?.resident)
    }
}

/// A process's resident memory at one moment (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory {
    /// All resident pages (`VmRSS`), in bytes.
    pub(super) resident: u64,
    /// The anonymous resident pages (`RssAnon`), in bytes: what connections
    /// grow.
    pub(super) anonymous: u64,
}

impl Memory {
    /// How much memory grew from this reading to `after`, divided by `n`
    /// (connections, say; at least 1).
    pub(super) fn growth_per(self, after: Memory, n: usize) -> Growth {
        let per = |before: u64, after: u64| (after as f64 - before as f64) / n.max(1) as f64;
        Growth {
            anonymous: per(self.anonymous, after.anonymous),
            resident: per(self.resident, after.resident),
        }
    }
}

/// The growth of a process's memory between two readings, per item, in
/// bytes (negative when it shrank).
#[derive(Debug, Clone, Copy)]
pub(super) struct Growth {
    /// Of the anonymous pages: what a per-connection figure reports.
    pub(super) anonymous: f64,
    /// Of all resident pages.
    pub(super) resident: f64,
}

/// The unit of the CPU times in `/proc/PID/stat`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a system constant; it has no preconditions and
    // touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds used by a process between two readings, or `None` when the
/// process was not observed.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuWindow {
    proc: Proc,
    start: f64,
}

impl CpuWindow {
    /// Starts observing `proc`.
    pub(super) fn start(proc: Proc) -> anyhow::Result<Self> {
        Ok(Self {
            proc,
            start: proc.cpu_seconds()?,
        })
    }

    /// CPU seconds since [`CpuWindow::start`].
    pub(super) fn elapsed(&self) -> anyhow::Result<f64> {
        Ok(self.proc.cpu_seconds()? - self.start)
    }
}

/// Slab caches that grow with each TCP socket: the socket (`TCP`, `TCPv6`),
/// its inode (`sock_inode_cache`), the open file and its dentry (`filp`,
/// `dentry`) and the epoll registration (`eventpoll_epi`).
const SOCKET_SLABS: [&str; 6] = [
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "eventpoll_epi",
];

/// What the kernel holds for sockets, machine-wide: the slab caches of
/// [`SOCKET_SLABS`] (from `/proc/slabinfo`, readable by root; objects in
/// use × object size) and the TCP buffer pages of `/proc/net/sockstat`
/// (`mem`, this network namespace). A reading between two others' of the
/// same machine includes whatever else ran meanwhile: compare over many
/// connections.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KernelMem {
    /// Bytes in the socket slab caches, or `None` when `/proc/slabinfo`
    /// cannot be read.
    pub(super) slab_bytes: Option<u64>,
    /// Bytes of TCP socket buffers (`mem` pages × the page size).
    pub(super) tcp_buffer_bytes: u64,
}

impl KernelMem {
    /// Reads the kernel's socket memory now.
    pub(super) fn read() -> anyhow::Result<Self> {
        let sockstat = std::fs::read_to_string("/proc/net/sockstat")
            .context("cannot read /proc/net/sockstat")?;
        let pages = sockstat
            .lines()
            .find_map(|line| line.strip_prefix("TCP:"))
            .and_then(|tcp| {
                let fields: Vec<&str> = tcp.split_whitespace().collect();
                fields
                    .windows(2)
                    .find(|pair| pair[0] == "mem")
                    .and_then(|pair| pair[1].parse::<u64>().ok())
            })
            .context("/proc/net/sockstat has no TCP mem")?;
        let slab_bytes = std::fs::read_to_string("/proc/slabinfo")
            .ok()
            .map(|slabinfo| slab_bytes(&slabinfo));
        Ok(Self {
            slab_bytes,
            tcp_buffer_bytes: pages * page_size(),
        })
    }
}

/// Bytes in use in the [`SOCKET_SLABS`] caches of a `/proc/slabinfo` text.
fn slab_bytes(slabinfo: &str) -> u64 {
    slabinfo
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            if !SOCKET_SLABS.contains(&name) {
                return None;
            }
            let active: u64 = fields.next()?.parse().ok()?;
            let _total = fields.next()?;
            let size: u64 = fields.next()?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

/// The page size, which `/proc/net/sockstat` counts TCP memory in.
fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_bytes_sums_the_socket_caches_only() {
        let slabinfo = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCP                  104    104   2368   13    8 : tunables 0 0 0 : slabdata 8 8 0\n\
            sock_inode_cache     159    228    832   19    4 : tunables 0 0 0 : slabdata 12 12 0\n\
            kmalloc-512       103087 141984    512   16    2 : tunables 0 0 0 : slabdata 1 1 0\n\
            filp                 945    945    192   21    1 : tunables 0 0 0 : slabdata 45 45 0\n";
        assert_eq!(slab_bytes(slabinfo), 104 * 2368 + 159 * 832 + 945 * 192);
    }

    #[test]
    fn growth_is_divided_by_the_count_and_may_be_negative() {
        let before = Memory {
            resident: 10_000,
            anonymous: 4_000,
        };
        let after = Memory {
            resident: 30_000,
            anonymous: 2_000,
        };
        let growth = before.growth_per(after, 10);
        assert_eq!((growth.resident, growth.anonymous), (2_000.0, -200.0));
        assert_eq!(before.growth_per(after, 0).resident, 20_000.0);
    }

    #[test]
    fn anonymous_memory_is_part_of_the_resident() {
        let before = Proc::Current
            .memory()
            .expect("/proc/self/status is readable");
        // 32 MiB written: anonymous pages, resident until dropped.
        let block = vec![1u8; 32 << 20];
        let after = Proc::Current
            .memory()
            .expect("/proc/self/status is readable");
        assert!(std::hint::black_box(&block).iter().all(|&b| b == 1));
        assert!(after.anonymous <= after.resident);
        assert!(
            after.anonymous >= before.anonymous + (30 << 20),
            "{before:?} → {after:?}"
        );
    }

    #[test]
    fn kernel_memory_reads_on_linux() {
        let mem = KernelMem::read().expect("/proc/net/sockstat is readable");
        // Root (as the benches run) reads slabinfo; the TCP caches exist.
        if let Some(bytes) = mem.slab_bytes {
            assert!(bytes > 0);
        }
    }
}
