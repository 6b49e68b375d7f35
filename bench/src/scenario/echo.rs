//! Echo: C connections each doing back-to-back round trips on the echo route for a fixed time.
//! Round trips per server CPU-second is the figure of merit: it measures the per-frame cost of
//! the WebSocket stack itself, without any chat logic.

use std::time::Instant;

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::client::Route;
use crate::coordinator::Fleet;
use crate::hist::{self, Percentiles};
use crate::procfs;
use crate::run::Run;
use crate::servers::{Server, ServerKind};
use crate::spec::RoomLayout;

use super::{Scenario, record};

/// Round `round` of `rounds` against `kind` (the rounds alternate between the servers).
pub async fn run(run: &mut Run, kind: ServerKind, round: usize, rounds: usize) -> Result<()> {
    let plan = run.plan.clone();
    let mut server = Server::start(kind, &run.paths, plan.server_warmup)?;
    let n = plan.echo_conns;
    let mut fleet = Fleet::new(kind.mode(), Route::Echo, server.addr, RoomLayout::Single, n);
    let result = async {
        let c = fleet.grow_to(n, plan.connect_timeout).await?;
        let cpu0 = procfs::cpu(server.pid)?;
        let gen0 = fleet.cpu();
        let t0 = Instant::now();
        let reports = fleet.echo(plan.echo_ms, plan.text_len).await?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu1 = procfs::cpu(server.pid)?;
        let gen1 = fleet.cpu();
        let mut lat: Histogram<u64> = hist::new_histogram();
        let (mut rts, mut closed) = (0u64, 0u64);
        for r in &reports {
            rts += r.round_trips;
            closed += r.closed;
            r.latency.merge_into(&mut lat);
        }
        let cpu_s = cpu0.secs_until(&cpu1);
        let p = Percentiles::of(&lat);
        let label = if rounds > 1 {
            format!("round {}", round + 1)
        } else {
            String::new()
        };
        let mut rec = record(kind, Scenario::Echo, n, label);
        rec.m.insert("failed".into(), c.failed as f64);
        rec.m.insert("round_trips".into(), rts as f64);
        rec.m.insert(
            "round_trips_per_s".into(),
            rts as f64 / (plan.echo_ms as f64 / 1000.0),
        );
        rec.m.insert("server_cpu_s".into(), cpu_s);
        // Below 1 the server slept between frames, and each wake-up costs both sides: with the
        // generator's core saturated, that (not the server's own code) sets the figure of merit.
        rec.m.insert("server_busy".into(), cpu_s / wall.max(1e-9));
        rec.m.insert(
            "server_sys_fraction".into(),
            cpu0.spent_until(&cpu1).sys_fraction(),
        );
        rec.m.insert(
            "gen_cpu_fraction".into(),
            gen0.secs_until(&gen1) / wall.max(1e-9),
        );
        if cpu_s > 0.0 {
            rec.m
                .insert("round_trips_per_cpu_s".into(), rts as f64 / cpu_s);
            rec.m.insert(
                "cpu_us_per_round_trip".into(),
                cpu_s * 1e6 / rts.max(1) as f64,
            );
        }
        rec.m.insert("p50_ms".into(), p.p50_ms);
        rec.m.insert("p99_ms".into(), p.p99_ms);
        rec.m.insert("closed".into(), closed as f64);
        if let Some(l) = procfs::loadavg() {
            rec.m.insert("loadavg".into(), l);
        }
        run.push(rec)?;
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    server.stop();
    result
}
