//! The state of a benchmark run in progress, shared by the suite that drives it and the
//! scenarios that add to it: the plan, the results so far (saved after every record, so an
//! interrupted run keeps what it measured) and the kernel-floor measurements, taken in a child
//! process pinned like the servers.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::floor::{FloorGrowth, FloorReport, WokenFloor};
use crate::plan::{Plan, Size};
use crate::report::{self, Record, Results};
use crate::servers::ServerPaths;

/// The state of a run in progress.
pub struct Run {
    pub paths: ServerPaths,
    pub plan: Plan,
    pub results: Results,
    pub out_file: PathBuf,
}

impl Run {
    /// Kernel-floor cost per write in microseconds (0 when not measured).
    pub fn floor_us(&self) -> f64 {
        self.results
            .floor
            .as_ref()
            .map(|f| f.cpu_us_per_write)
            .unwrap_or(0.0)
    }

    /// Sockets the plain floor writes to: the fan-out scenario's reference room.
    pub fn floor_sockets(&self) -> usize {
        match self.plan.size {
            Size::Smoke => 50,
            Size::Quick => 1_000,
            Size::Full => 2_000,
        }
    }

    /// Append a record and save the results file.
    pub fn push(&mut self, rec: Record) -> Result<()> {
        eprintln!(
            "[bench] {} {} n={} {}: {}",
            rec.server,
            rec.scenario,
            rec.n,
            rec.label,
            report::one_line(&rec)
        );
        self.results.records.push(rec);
        self.save()
    }

    /// Write the results so far, so that an interrupted run keeps what it measured.
    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.out_file.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let json = serde_json::to_string_pretty(&self.results)?;
        std::fs::write(&self.out_file, json)
            .with_context(|| format!("write {}", self.out_file.display()))
    }

    /// Measure the kernel floor at the fan-out scenario's reference room, in a child process
    /// pinned like the servers (its woken-reader part bounded by the plan).
    pub fn measure_floor(&self) -> Result<FloorReport> {
        measure_floor(
            &self.paths,
            self.floor_sockets(),
            self.plan.floor_woken_rounds,
        )
    }

    /// The woken-reader floor at the fan-out scenario's smallest and largest room.
    pub fn measure_floor_growth(&self, small: usize, large: usize) -> Result<FloorGrowth> {
        measure_floor_growth(&self.paths, small, large, self.plan.floor_woken_rounds)
    }
}

/// Measure the kernel floor in a child process pinned like the servers; `woken_rounds` bounds
/// the woken-reader part (`None`: the floor's default).
fn measure_floor(
    paths: &ServerPaths,
    sockets: usize,
    woken_rounds: Option<usize>,
) -> Result<FloorReport> {
    let mut cmd = floor_command(paths, sockets, woken_rounds);
    let out = cmd.output().context("run floor")?;
    if !out.status.success() {
        anyhow::bail!("floor failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("parse floor report")
}

/// The woken-reader floor at the fan-out scenario's smallest and largest room, so that a
/// server's growth between them can be set against the kernel's own.
fn measure_floor_growth(
    paths: &ServerPaths,
    small: usize,
    large: usize,
    woken_rounds: Option<usize>,
) -> Result<FloorGrowth> {
    let woken = |sockets: usize| -> Result<WokenFloor> {
        let mut cmd = floor_command(paths, sockets, woken_rounds);
        cmd.arg("--woken-only");
        let out = cmd.output().context("run floor")?;
        if !out.status.success() {
            anyhow::bail!("floor failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).context("parse woken floor")
    };
    Ok(FloorGrowth {
        small_sockets: small,
        small: woken(small)?,
        large_sockets: large,
        large: woken(large)?,
    })
}

/// `hubbub-bench floor --sockets N` pinned like the servers, its readers on this process's CPUs.
fn floor_command(paths: &ServerPaths, sockets: usize, woken_rounds: Option<usize>) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hubbub-bench"));
    let launcher = paths.launcher();
    let mut cmd = match launcher.split_first() {
        Some((first, rest)) => {
            let mut c2 = Command::new(first);
            c2.args(rest).arg(&exe);
            c2
        }
        None => Command::new(&exe),
    };
    cmd.arg("floor").arg("--sockets").arg(sockets.to_string());
    if let Some(rounds) = woken_rounds {
        cmd.arg("--woken-rounds").arg(rounds.to_string());
    }
    // The woken-reader floor's readers run where the load generator runs: here.
    if let Some(cpus) = own_cpus() {
        cmd.arg("--reader-cpus").arg(cpus);
    }
    cmd
}

/// The CPUs this process may run on (`Cpus_allowed_list`), e.g. `1`.
fn own_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}
