//! Server-side measurements from /proc: resident memory and CPU time of a process.
//!
//! CPU time is the sum of every thread's `se.sum_exec_runtime` from
//! `/proc/PID/task/*/schedstat` (nanoseconds), which is far finer than the 10 ms ticks of
//! `/proc/PID/stat`; the user/system split still comes from `stat`, for the profile notes.

use std::fs;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Resident set size of `pid` in KiB (`VmRSS` in /proc/PID/status).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read status of {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// A CPU-time sample of one process.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CpuSample {
    /// On-CPU time of all live threads, nanoseconds.
    pub run_ns: u64,
    /// User and system time from /proc/PID/stat, in clock ticks (1/100 s here).
    pub utime_ticks: u64,
    pub stime_ticks: u64,
}

impl CpuSample {
    /// CPU seconds between `self` and a later sample.
    pub fn secs_until(&self, later: &CpuSample) -> f64 {
        later.run_ns.saturating_sub(self.run_ns) as f64 / 1e9
    }

    /// Fraction of the CPU time that was system time, between `self` and a later sample.
    pub fn sys_fraction_until(&self, later: &CpuSample) -> f64 {
        let u = later.utime_ticks.saturating_sub(self.utime_ticks) as f64;
        let s = later.stime_ticks.saturating_sub(self.stime_ticks) as f64;
        if u + s == 0.0 { 0.0 } else { s / (u + s) }
    }
}

/// Sample the CPU time of `pid`.
pub fn cpu(pid: u32) -> Result<CpuSample> {
    let mut run_ns = 0;
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("list threads of {pid}"))?;
    for t in tasks.flatten() {
        // A thread may exit between listing and reading; skip it.
        if let Ok(s) = fs::read_to_string(t.path().join("schedstat")) {
            run_ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let (utime_ticks, stime_ticks) = stat_times(&format!("/proc/{pid}/stat"))?;
    Ok(CpuSample {
        run_ns,
        utime_ticks,
        stime_ticks,
    })
}

/// `utime` and `stime` (fields 14 and 15) of a /proc stat file.
pub fn stat_times(path: &str) -> Result<(u64, u64)> {
    let stat = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may contain spaces; fields are counted after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is field 3 (state), so field N is at index N - 3.
    let get = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .context("short stat")
    };
    Ok((get(14)?, get(15)?))
}

/// The 1-minute load average: other work on this 2-core machine (compiles) disturbs latency.
pub fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Busy time of one core in seconds (everything but idle and iowait in /proc/stat), at tick
/// resolution. Unlike a process's own counters it includes softirq work the kernel charged to
/// no process; it also includes anything else that ran on that core, so it is a second view,
/// not the primary measure.
pub fn core_busy_s(core: usize) -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let prefix = format!("cpu{core} ");
    let line = stat.lines().find(|l| l.starts_with(&prefix))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| *x)
        .sum();
    Some(busy as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_memory_and_cpu() {
        let pid = std::process::id();
        assert!(rss_kib(pid).expect("rss") > 0);
        let a = cpu(pid).expect("cpu");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let b = cpu(pid).expect("cpu");
        assert!(a.secs_until(&b) > 0.0);
    }
}
