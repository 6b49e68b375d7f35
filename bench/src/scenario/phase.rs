//! One measured fan-out phase, shared by every scenario that posts (fan-out, saturation, rooms,
//! acks): run it on a fleet with the server's and the generator's CPU sampled around it, then
//! fold the workers' reports and the samples into a record's metrics.

use std::time::Instant;

use anyhow::Result;
use hdrhistogram::Histogram;

use crate::coordinator::Fleet;
use crate::hist::{self, Percentiles};
use crate::procfs::{self, CpuSample};
use crate::report::Record;
use crate::servers::Server;
use crate::spec::{FanoutPhase, FanoutReport};

/// Samples taken around one phase.
pub struct Samples {
    /// CPU the measured server processes spent during the phase (one server, or every process
    /// of a cluster: nodes, Redis, PostgreSQL).
    pub server: CpuSample,
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
    let pid = server.pid;
    let (reports, before, after, mut samples) =
        measured_phase_of(fleet, server.core, phase, || procfs::cpu(pid)).await?;
    samples.server = before.spent_until(&after);
    Ok((reports, samples))
}

/// Run one phase on `fleet` with the generator's CPU and `core`'s busy time sampled around it,
/// and the servers' CPU read by `sample` before and after (the caller folds those into
/// [`Samples::server`], which is left zero here).
pub async fn measured_phase_of<S>(
    fleet: &mut Fleet,
    core: Option<usize>,
    phase: FanoutPhase,
    sample: impl Fn() -> Result<S>,
) -> Result<(Vec<FanoutReport>, S, S, Samples)> {
    let core0 = core.and_then(procfs::core_busy_s);
    let before = sample()?;
    let gen0 = fleet.cpu();
    let t0 = Instant::now();
    let reports = fleet.fanout(phase).await?;
    let wall_s = t0.elapsed().as_secs_f64();
    let after = sample()?;
    let gen1 = fleet.cpu();
    let core1 = core.and_then(procfs::core_busy_s);
    let core_busy_s = core0.zip(core1).map(|(a, b)| b - a);
    let samples = Samples {
        server: CpuSample::default(),
        gen0,
        gen1,
        wall_s,
        core_busy_s,
    };
    Ok((reports, before, after, samples))
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
    let mut cross: Histogram<u64> = hist::new_histogram();
    let mut local: Histogram<u64> = hist::new_histogram();
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
        r.cross_latency.merge_into(&mut cross);
        r.local_latency.merge_into(&mut local);
        if rec.note.is_none() {
            rec.note = r.first_error.clone();
        }
    }
    let cpu_s = s.server.secs();
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
    m.insert("server_sys_fraction".into(), s.server.sys_fraction());
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
    // Members spread over several nodes: deliveries that crossed nodes against those that did
    // not, in the same phase.
    for (h, key) in [(&cross, "cross"), (&local, "local")] {
        if !h.is_empty() {
            let p = Percentiles::of(h);
            m.insert(format!("{key}_deliveries"), p.count as f64);
            m.insert(format!("{key}_p50_ms"), p.p50_ms);
            m.insert(format!("{key}_p99_ms"), p.p99_ms);
        }
    }
    m.insert("error_frames".into(), errors as f64);
    m.insert("closed".into(), closed as f64);
}
