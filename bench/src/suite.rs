//! A whole benchmark run: the kernel floor, then every scenario against every server, one
//! server after another within each scenario so the servers are compared under the same
//! machine conditions. Results are saved after every record, so an interrupted run keeps
//! what it measured.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::floor::{FloorGrowth, FloorReport, WokenFloor};
use crate::report::{Machine, Record, Results};
use crate::scenario::{self, Plan, Scenario, Size};
use crate::servers::{ServerKind, ServerPaths};

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
            crate::report::one_line(&rec)
        );
        self.results.records.push(rec);
        self.save()
    }

    pub fn save(&self) -> Result<()> {
        if let Some(dir) = self.out_file.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        let json = serde_json::to_string_pretty(&self.results)?;
        std::fs::write(&self.out_file, json)
            .with_context(|| format!("write {}", self.out_file.display()))
    }
}

/// Measure the kernel floor in a child process pinned like the servers; `woken_rounds` bounds
/// the woken-reader part (`None`: the floor's default).
pub fn measure_floor(
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
pub fn measure_floor_growth(
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

/// Run the scenarios in `scenarios` against `servers`.
pub async fn run(
    paths: ServerPaths,
    size: Size,
    servers: &[ServerKind],
    scenarios: &[Scenario],
    out_file: PathBuf,
    command_line: String,
) -> Result<Results> {
    let plan = Plan::new(size);
    let results = Results {
        machine: Machine::read(),
        command: command_line,
        size,
        started: date(),
        finished: String::new(),
        floor: None,
        floor_growth: None,
        records: Vec::new(),
        failures: Vec::new(),
    };
    let mut run = Run {
        paths,
        plan,
        results,
        out_file,
    };
    match measure_floor(&run.paths, run.floor_sockets(), run.plan.floor_woken_rounds) {
        Ok(f) => {
            eprintln!(
                "[bench] kernel floor: {:.2} µs per write ({} sockets); with woken readers: {}",
                f.cpu_us_per_write,
                f.sockets,
                f.woken
                    .as_ref()
                    .map_or("not measured".to_string(), |w| format!(
                        "{:.2} µs",
                        w.cpu_us_per_write
                    ))
            );
            run.results.floor = Some(f);
        }
        Err(e) => run.results.failures.push(format!("floor: {e:#}")),
    }
    let fanout = &run.plan.fanout_stages;
    if scenarios.contains(&Scenario::Fanout)
        && let (Some(&(small, _)), Some(&(large, _))) = (fanout.first(), fanout.last())
    {
        match measure_floor_growth(&run.paths, small, large, run.plan.floor_woken_rounds) {
            Ok(g) => {
                eprintln!(
                    "[bench] woken floor: {:.2} µs at {} sockets, {:.2} µs at {} ({:.2}×)",
                    g.small.cpu_us_per_write,
                    g.small_sockets,
                    g.large.cpu_us_per_write,
                    g.large_sockets,
                    g.ratio()
                );
                run.results.floor_growth = Some(g);
            }
            Err(e) => run.results.failures.push(format!("floor growth: {e:#}")),
        }
    }
    run.save()?;
    for &sc in scenarios {
        // The echo floor runs after the servers, under the same conditions, as their reference.
        let reference = (sc == Scenario::Echo).then_some(ServerKind::EchoFloor);
        let rounds = if sc == Scenario::Echo {
            run.plan.echo_rounds.max(1)
        } else {
            1
        };
        for round in 0..rounds {
            for kind in servers.iter().copied().chain(reference) {
                if sc.applies_to(kind) {
                    run_one(&mut run, sc, kind, round, rounds).await?;
                }
            }
        }
    }
    run.results.finished = date();
    run.save()?;
    Ok(run.results)
}

/// One scenario against one server; a failure is recorded in the results, not returned.
async fn run_one(
    run: &mut Run,
    sc: Scenario,
    kind: ServerKind,
    round: usize,
    rounds: usize,
) -> Result<()> {
    eprintln!("[bench] === {} against {} ===", sc.name(), kind.name());
    let r = match sc {
        Scenario::Idle => scenario::idle::run(run, kind).await,
        Scenario::Fanout => scenario::fanout::run(run, kind).await,
        Scenario::Saturation => scenario::saturation::run(run, kind).await,
        Scenario::Rooms => scenario::rooms::run(run, kind).await,
        Scenario::Acks => scenario::acks::run(run, kind).await,
        Scenario::Echo => scenario::echo::run(run, kind, round, rounds).await,
    };
    if let Err(e) = r {
        eprintln!(
            "[bench] {} against {} failed: {e:#}",
            sc.name(),
            kind.name()
        );
        run.results
            .failures
            .push(format!("{} against {}: {e:#}", sc.name(), kind.name()));
        run.save()?;
    }
    Ok(())
}

/// The current UTC time, from `date` (no time-zone crate needed for one line).
pub fn date() -> String {
    Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
