//! What `/proc` tells about a process: CPU time and resident memory.
//!
//! Invariant: CPU time is utime + stime of the whole process (all its
//! threads) from `/proc/PID/stat`, converted from clock ticks to seconds with
//! `sysconf(_SC_CLK_TCK)`; memory is `VmRSS` of `/proc/PID/status`, in bytes.

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

    /// Resident memory (`VmRSS`), in bytes.
    pub(super) fn rss_bytes(self) -> anyhow::Result<u64> {
        let path = self.path("status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .with_context(|| format!("{path} has no VmRSS"))?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    }
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
