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
        self.spent_until(later).secs()
    }

    /// The CPU spent between `self` and a later sample of the same process, as a sample that
    /// counts from zero.
    pub fn spent_until(&self, later: &CpuSample) -> CpuSample {
        CpuSample {
            run_ns: later.run_ns.saturating_sub(self.run_ns),
            utime_ticks: later.utime_ticks.saturating_sub(self.utime_ticks),
            stime_ticks: later.stime_ticks.saturating_sub(self.stime_ticks),
        }
    }

    /// On-CPU seconds counted in this sample.
    pub fn secs(&self) -> f64 {
        self.run_ns as f64 / 1e9
    }

    /// Fraction of this sample's CPU time that was system time.
    pub fn sys_fraction(&self) -> f64 {
        let u = self.utime_ticks as f64;
        let s = self.stime_ticks as f64;
        if u + s == 0.0 { 0.0 } else { s / (u + s) }
    }

    /// The sum of two samples (of two processes, or two spans).
    pub fn plus(&self, other: &CpuSample) -> CpuSample {
        CpuSample {
            run_ns: self.run_ns + other.run_ns,
            utime_ticks: self.utime_ticks + other.utime_ticks,
            stime_ticks: self.stime_ticks + other.stime_ticks,
        }
    }
}

/// The processes one part of a deployment runs as (the hubbub nodes, Redis, PostgreSQL), for
/// CPU accounting.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part's name in results (`hubbub`, `redis`, `postgres`).
    pub name: &'static str,
    pub pids: Vec<u32>,
    /// Also count every child of these PIDs, found afresh at each sample: PostgreSQL runs a
    /// process per connection (and its helpers) under the postmaster.
    pub with_children: bool,
}

/// The CPU time of every process of some parts at one moment.
#[derive(Debug, Clone, Default)]
pub struct PartsSample {
    /// (part index, pid, sample).
    per_pid: Vec<(usize, u32, CpuSample)>,
}

impl PartsSample {
    /// Sample every process of `parts` (a process that has exited is skipped).
    pub fn take(parts: &[Part]) -> PartsSample {
        let mut per_pid = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let mut pids = part.pids.clone();
            if part.with_children {
                for &p in &part.pids {
                    pids.extend(children_of(p));
                }
            }
            for pid in pids {
                if let Ok(s) = cpu(pid) {
                    per_pid.push((i, pid, s));
                }
            }
        }
        PartsSample { per_pid }
    }

    /// The CPU each part spent between `self` and a later sample, by part index: a process
    /// seen only in the later sample (a new PostgreSQL backend) counts from zero.
    pub fn spent_by_part_until(&self, later: &PartsSample, parts: usize) -> Vec<CpuSample> {
        let mut out = vec![CpuSample::default(); parts];
        for &(i, pid, after) in &later.per_pid {
            let before = self
                .per_pid
                .iter()
                .find(|(j, p, _)| *j == i && *p == pid)
                .map(|(_, _, s)| *s)
                .unwrap_or_default();
            if let Some(slot) = out.get_mut(i) {
                *slot = slot.plus(&before.spent_until(&after));
            }
        }
        out
    }
}

/// The PIDs whose parent is `ppid`, from /proc/*/stat (field 4).
pub fn children_of(ppid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(ppid))
        .collect()
}

/// The parent PID of `pid` (field 4 of /proc/PID/stat), if it still runs.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(4 - 3)?.parse().ok()
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

    #[test]
    fn a_child_process_is_found_under_its_parent_and_counted_in_its_part() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        assert!(children_of(me).contains(&child.id()));
        let parts = [Part {
            name: "me",
            pids: vec![me],
            with_children: true,
        }];
        let before = PartsSample::take(&parts);
        assert!(before.per_pid.iter().any(|&(_, p, _)| p == child.id()));
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let spent = before.spent_by_part_until(&PartsSample::take(&parts), 1);
        assert!(spent[0].secs() > 0.0);
        child.kill().expect("kill sleep by its handle");
        child.wait().expect("reap sleep");
    }
}
