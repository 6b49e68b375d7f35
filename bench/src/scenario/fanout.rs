//! Fan-out: one room of N members, S of them posting; every member measures delivery latency
//! and counts deliveries, and the server's CPU time per delivered message is the cost.
//!
//! The room grows in stages on one server (1,000 → 19,000 members in the full plan), so the
//! same run also measures what filling a big room costs (joins and presence: the fill time and
//! the server CPU spent while the stage connects).

use std::time::Instant;

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::coordinator::Fleet;
use crate::hist::{self, Percentiles};
use crate::procfs::{self, CpuSample};
use crate::report::Record;
use crate::servers::{Server, ServerKind};
use crate::spec::{FanoutPhase, FanoutReport, RoomLayout, Route};
use crate::suite::{self, Run};

use super::{Scenario, nonce, record};

/// Samples taken around one phase.
pub struct Samples {
    pub server0: CpuSample,
    pub server1: CpuSample,
    pub gen0: CpuSample,
    pub gen1: CpuSample,
    pub wall_s: f64,
    /// Busy seconds of the server's core (all processes, softirq included), if pinned.
    pub core_busy_s: Option<f64>,
}

/// Run one phase on `fleet` with server and generator CPU sampled around it.
pub async fn measured_phase(
    fleet: &mut Fleet,
    server: &Server,
    phase: FanoutPhase,
) -> Result<(Vec<FanoutReport>, Samples)> {
    let core0 = server.core.and_then(procfs::core_busy_s);
    let server0 = procfs::cpu(server.pid)?;
    let gen0 = fleet.cpu();
    let t0 = Instant::now();
    let reports = fleet.fanout(phase).await?;
    let wall_s = t0.elapsed().as_secs_f64();
    let server1 = procfs::cpu(server.pid)?;
    let gen1 = fleet.cpu();
    let core1 = server.core.and_then(procfs::core_busy_s);
    let core_busy_s = core0.zip(core1).map(|(a, b)| b - a);
    Ok((
        reports,
        Samples {
            server0,
            server1,
            gen0,
            gen1,
            wall_s,
            core_busy_s,
        },
    ))
}

/// Fold worker reports and samples into a record's metrics.
pub fn summarize(
    rec: &mut Record,
    reports: &[FanoutReport],
    s: &Samples,
    phase: &FanoutPhase,
    floor_us: f64,
) {
    let mut lat: Histogram<u64> = hist::new_histogram();
    let mut ack: Histogram<u64> = hist::new_histogram();
    let (mut sent, mut expected, mut received, mut acks, mut errors, mut closed) =
        (0, 0, 0, 0, 0, 0);
    for r in reports {
        sent += r.sent;
        expected += r.expected;
        received += r.received;
        acks += r.acks;
        errors += r.error_frames;
        closed += r.closed;
        r.latency.merge_into(&mut lat);
        r.ack_latency.merge_into(&mut ack);
        if rec.note.is_none() {
            rec.note = r.first_error.clone();
        }
    }
    let cpu_s = s.server0.secs_until(&s.server1);
    let phase_s = phase.duration_ms as f64 / 1000.0;
    let p = Percentiles::of(&lat);
    let m = &mut rec.m;
    m.insert("senders".into(), phase.senders as f64);
    m.insert("rate_total".into(), phase.rate * phase.senders as f64);
    m.insert("sent".into(), sent as f64);
    m.insert("expected".into(), expected as f64);
    m.insert("received".into(), received as f64);
    m.insert("lost".into(), expected.saturating_sub(received) as f64);
    // More deliveries than posts × members means some member got a post twice.
    m.insert(
        "duplicates".into(),
        received.saturating_sub(expected) as f64,
    );
    m.insert("deliveries_per_s".into(), received as f64 / phase_s);
    m.insert("p50_ms".into(), p.p50_ms);
    m.insert("p99_ms".into(), p.p99_ms);
    m.insert("p999_ms".into(), p.p999_ms);
    m.insert("max_ms".into(), p.max_ms);
    m.insert("server_cpu_s".into(), cpu_s);
    m.insert(
        "server_sys_fraction".into(),
        s.server0.sys_fraction_until(&s.server1),
    );
    m.insert(
        "gen_cpu_fraction".into(),
        s.gen0.secs_until(&s.gen1) / s.wall_s.max(1e-9),
    );
    if received > 0 {
        let per = cpu_s * 1e6 / received as f64;
        m.insert("cpu_us_per_delivery".into(), per);
        if floor_us > 0.0 {
            m.insert("floor_multiple".into(), per / floor_us);
        }
        if let Some(core) = s.core_busy_s {
            m.insert("core_us_per_delivery".into(), core * 1e6 / received as f64);
        }
    }
    if let Some(core) = s.core_busy_s {
        // Share of the server's core used by anything but the server: other people's work.
        m.insert(
            "foreign_core_share".into(),
            ((core - cpu_s) / s.wall_s.max(1e-9)).max(0.0),
        );
    }
    if let Some(l) = procfs::loadavg() {
        m.insert("loadavg".into(), l);
    }
    if acks > 0 {
        let a = Percentiles::of(&ack);
        m.insert("acks".into(), acks as f64);
        m.insert("ack_p50_ms".into(), a.p50_ms);
        m.insert("ack_p99_ms".into(), a.p99_ms);
        m.insert("ack_max_ms".into(), a.max_ms);
    }
    m.insert("error_frames".into(), errors as f64);
    m.insert("closed".into(), closed as f64);
}

/// Run the fan-out stages against `kind`.
pub async fn run(run: &mut Run, kind: ServerKind) -> Result<()> {
    let plan = run.plan.clone();
    // On a shared machine the floor moves by a fifth from one minute to the next: measured
    // again right before this server, its multiple compares costs taken under the same load.
    let beside =
        match suite::measure_floor(&run.paths, run.floor_sockets(), plan.floor_woken_rounds) {
            Ok(floor) => Some(floor),
            Err(err) => {
                eprintln!("[bench] floor beside {}: {err:#}", kind.name());
                None
            }
        };
    let floor_us = beside
        .as_ref()
        .map_or(run.floor_us(), |f| f.cpu_us_per_write);
    let woken_us = beside
        .as_ref()
        .and_then(|f| f.woken.as_ref())
        .map(|w| w.cpu_us_per_write);
    let mut server = Server::start(kind, &run.paths, plan.server_warmup)?;
    let total = plan.fanout_stages.iter().map(|s| s.0).max().unwrap_or(0);
    let mut fleet = Fleet::new(
        kind.mode(),
        Route::Chat,
        server.addr,
        RoomLayout::Single,
        total,
    );
    let rss0 = procfs::rss_kib(server.pid)?;
    let result = async {
        for &(n, rate) in &plan.fanout_stages {
            let cpu0 = procfs::cpu(server.pid)?;
            let t0 = Instant::now();
            let c = fleet.grow_to(n, plan.connect_timeout).await?;
            let fill_s = t0.elapsed().as_secs_f64();
            let fill_cpu = cpu0.secs_until(&procfs::cpu(server.pid)?);
            let rss = procfs::rss_kib(server.pid)?;
            let mut rec = record(kind, Scenario::Fanout, n, format!("{rate} msg/s"));
            rec.m.insert("connected".into(), fleet.connected as f64);
            rec.m.insert("failed".into(), c.failed as f64);
            rec.m.insert("fill_s".into(), fill_s);
            rec.m.insert("fill_server_cpu_s".into(), fill_cpu);
            rec.m.insert("rss_kib".into(), rss as f64);
            rec.m.insert("kib_per_conn_in_room".into(), rss.saturating_sub(rss0) as f64 / fleet.connected.max(1) as f64);
            if fleet.connected == 0 {
                rec.note = c.errors.first().cloned();
                run.push(rec)?;
                break;
            }
            let senders = plan.fanout_senders.min(n);
            let phase = FanoutPhase {
                nonce: nonce(),
                senders,
                sender_stride: 1,
                rate: rate / senders as f64,
                duration_ms: plan.phase_ms,
                drain_ms: plan.drain_ms,
                text_len: plan.text_len,
                room_members: fleet.connected,
                until_delivered: plan.drain_until_delivered,
            };
            let (reports, samples) = measured_phase(&mut fleet, &server, phase.clone()).await?;
            summarize(&mut rec, &reports, &samples, &phase, floor_us);
            rec.m.insert("floor_us".into(), floor_us);
            if let Some(woken) = woken_us {
                rec.m.insert("woken_floor_us".into(), woken);
            }
            if c.failed > 0 && rec.note.is_none() {
                rec.note = c.errors.first().cloned();
            }
            let broken = c.failed > 0 || rec.get("closed").unwrap_or(0.0) > 0.0;
            run.push(rec)?;
            if broken {
                // A room that lost members is no base for a bigger stage: stop growing here.
                run.results.failures.push(format!(
                    "fanout against {}: stopped growing at {n} members (connect failures or closes)",
                    kind.name()
                ));
                break;
            }
        }
        anyhow::Ok(())
    }
    .await;
    fleet.stop().await;
    server.stop();
    result
}
