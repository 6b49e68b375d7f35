//! A whole benchmark run: the kernel floor, then every scenario against every server, one
//! server after another within each scenario so the servers are compared under the same
//! machine conditions. Results are saved after every record, so an interrupted run keeps
//! what it measured.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::plan::{Plan, Size};
use crate::report::{Machine, Results};
use crate::run::Run;
use crate::scenario::{self, Scenario};
use crate::servers::{ServerKind, ServerPaths};

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
    match run.measure_floor() {
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
        match run.measure_floor_growth(small, large) {
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
        Scenario::Cluster => scenario::cluster::run(run).await,
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
