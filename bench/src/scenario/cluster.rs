//! Cluster: hubbub in five configurations side by side in one run (issue 18): one node on
//! SQLite, one node on PostgreSQL, and one, two and three nodes on PostgreSQL + Redis.
//!
//! The harness starts a private PostgreSQL and Redis once (scripts/pg.sh, scripts/redis.sh,
//! pinned like the servers) and gives every configuration a fresh database and its own Redis
//! channel. Each configuration gets one room whose members are spread round-robin over its
//! nodes, so posts come from members on every node and most deliveries of a several-node
//! configuration cross nodes. Every configuration is started and connected before any is
//! measured, and records:
//! - `cluster_load`: a moderate fixed load (p99 delivery and ack latency, CPU per delivery), in
//!   rounds that go over every configuration in turn, so that the drift of a shared machine
//!   touches each alike (the report takes the median round);
//! - `cluster_saturation`: a growing post rate until p99 ≥ 100 ms or any loss or close.
//!
//! The CPU counted is every process of the configuration: the hubbub nodes, plus PostgreSQL
//! (the postmaster and all its children, backends included) and Redis where the
//! configuration uses them, also split per part so a cost can be placed.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::client::{Mode, Route};
use crate::coordinator::Fleet;
use crate::plan::Plan;
use crate::procfs::{CpuSample, Part, PartsSample};
use crate::report::Record;
use crate::run::Run;
use crate::servers::Server;
use crate::services::{Kind, Service};
use crate::spec::{FanoutPhase, RoomLayout};

use super::nonce;
use super::phase::{Samples, measured_phase_of, summarize};
use super::saturation::P99_LIMIT_MS;

/// The scenario name of the moderate-load rows.
pub const LOAD: &str = "cluster_load";
/// The scenario name of the saturation steps.
pub const SATURATION: &str = "cluster_saturation";

/// Where a configuration keeps its history and how its nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The default: an embedded SQLite file, the in-process broker.
    Sqlite,
    /// PostgreSQL, no broker (a valid one-node setup).
    Postgres,
    /// PostgreSQL and Redis (`--broker`).
    PostgresRedis,
}

/// One configuration of the plan.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// Its name in results and tables.
    name: &'static str,
    backend: Backend,
    nodes: usize,
}

/// The configurations, in the order they run.
static CONFIGS: [Config; 5] = [
    Config {
        name: "sqlite×1",
        backend: Backend::Sqlite,
        nodes: 1,
    },
    Config {
        name: "pg×1",
        backend: Backend::Postgres,
        nodes: 1,
    },
    Config {
        name: "pg+redis×1",
        backend: Backend::PostgresRedis,
        nodes: 1,
    },
    Config {
        name: "pg+redis×2",
        backend: Backend::PostgresRedis,
        nodes: 2,
    },
    Config {
        name: "pg+redis×3",
        backend: Backend::PostgresRedis,
        nodes: 3,
    },
];

/// The private PostgreSQL and Redis every configuration after the first runs on.
struct Services {
    postgres: Service,
    redis: Service,
    dir: PathBuf,
}

impl Drop for Services {
    fn drop(&mut self) {
        self.postgres.stop();
        self.redis.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run every configuration: all of them started and connected at once (idle while another is
/// measured), the moderate load in rounds that go over every configuration in turn (so that a
/// shared machine's drift touches each alike; the report takes each one's median round), then
/// each one's saturation search. A configuration that fails is recorded as a failure and the
/// others go on.
pub async fn run(run: &mut Run) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("hubbub-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let scripts = run.paths.scripts_dir.clone();
    let postgres = Service::start(Kind::Postgres, &run.paths, &scripts, &dir)?;
    let redis = Service::start(Kind::Redis, &run.paths, &scripts, &dir)?;
    let services = Services {
        postgres,
        redis,
        dir,
    };
    eprintln!(
        "[bench] cluster: PostgreSQL {} (PID {}), Redis {} (PID {})",
        services.postgres.url, services.postgres.pid, services.redis.url, services.redis.pid
    );
    let mut deployments = Vec::new();
    for (i, config) in CONFIGS.iter().enumerate() {
        match Deployment::start(run, &services, i, config).await {
            Ok(d) => deployments.push(d),
            Err(e) => fail(run, config, e)?,
        }
    }
    let rounds = run.plan.cluster_rounds.max(1);
    for round in 0..rounds {
        for d in deployments.iter_mut().filter(|d| d.failed.is_none()) {
            let label = format!(
                "round {}: {} posts/s",
                round + 1,
                run.plan.cluster_moderate_rate
            );
            eprintln!("[bench] --- {} {label} ---", d.config.name);
            let rate = run.plan.cluster_moderate_rate;
            match measured(run, d, LOAD, label, rate, run.plan.phase_ms).await {
                Ok(rec) => run.push(rec)?,
                Err(e) => d.failed = Some(e),
            }
        }
    }
    for d in deployments.iter_mut().filter(|d| d.failed.is_none()) {
        eprintln!("[bench] --- {} saturation ---", d.config.name);
        if let Err(e) = saturation(run, d).await {
            d.failed = Some(e);
        }
    }
    for mut d in deployments {
        d.fleet.stop().await;
        for node in d.nodes.iter_mut() {
            node.stop();
        }
        if let Some(e) = d.failed.take() {
            fail(run, d.config, e)?;
        }
    }
    Ok(())
}

/// Record that `config` failed, and why.
fn fail(run: &mut Run, config: &Config, e: anyhow::Error) -> Result<()> {
    eprintln!("[bench] cluster {} failed: {e:#}", config.name);
    run.results
        .failures
        .push(format!("cluster {}: {e:#}", config.name));
    run.save()
}

/// One configuration, running: its nodes, the processes its CPU is counted over, and its room
/// of members, connected.
struct Deployment {
    config: &'static Config,
    nodes: Vec<Server>,
    parts: Vec<Part>,
    fleet: Fleet,
    /// Set when a phase failed: the configuration is measured no further.
    failed: Option<anyhow::Error>,
}

impl Deployment {
    /// Start `config`'s nodes on a fresh database, connect its room, and warm it up.
    async fn start(
        run: &Run,
        services: &Services,
        index: usize,
        config: &'static Config,
    ) -> Result<Deployment> {
        let plan = &run.plan;
        let mut nodes = Vec::new();
        for (k, extra) in node_flags(services, index, config)?.iter().enumerate() {
            let log = format!("cluster-{index}-node{}", k + 1);
            // A node that fails to start stops those already started (Drop).
            nodes.push(Server::start_node(
                &run.paths,
                plan.server_warmup,
                extra,
                &log,
            )?);
        }
        let parts = parts(services, config, &nodes);
        let addrs = nodes.iter().map(|n| n.addr).collect();
        let first = nodes.first().context("a configuration has nodes")?.addr;
        let n = plan.cluster_members;
        let fleet =
            Fleet::new(Mode::Hubbub, Route::Chat, first, RoomLayout::Single, n).spread_over(addrs);
        let mut d = Deployment {
            config,
            nodes,
            parts,
            fleet,
            failed: None,
        };
        let c = d.fleet.grow_to(n, plan.connect_timeout).await?;
        if c.connected < n {
            anyhow::bail!(
                "{} of {n} members connected to {}: {:?}",
                c.connected,
                config.name,
                c.errors
            );
        }
        if plan.cluster_warmup_ms > 0 {
            let warmup = phase(plan, plan.cluster_moderate_rate, plan.cluster_warmup_ms);
            d.fleet.fanout(warmup).await?;
        }
        Ok(d)
    }
}

/// The extra `hubbub serve` flags of each node of `config`.
fn node_flags(services: &Services, index: usize, config: &Config) -> Result<Vec<Vec<String>>> {
    let db = match config.backend {
        Backend::Sqlite => None,
        Backend::Postgres | Backend::PostgresRedis => Some(
            services
                .postgres
                .fresh_database(&format!("bench_cluster_{index}"))?,
        ),
    };
    Ok((1..=config.nodes)
        .map(|node_id| {
            let mut v = Vec::new();
            if let Some(db) = &db {
                v.extend(["--db".to_string(), db.clone()]);
            }
            if config.backend == Backend::PostgresRedis {
                v.extend([
                    "--broker".to_string(),
                    services.redis.url.clone(),
                    "--node-id".to_string(),
                    node_id.to_string(),
                    "--broker-channel".to_string(),
                    format!("bench:cluster:{index}"),
                ]);
            }
            v
        })
        .collect())
}

/// The processes whose CPU `config` costs: its nodes, and PostgreSQL and Redis if it uses them.
fn parts(services: &Services, config: &Config, nodes: &[Server]) -> Vec<Part> {
    let mut parts = vec![Part {
        name: "hubbub",
        pids: nodes.iter().map(|n| n.pid).collect(),
        with_children: false,
    }];
    if config.backend != Backend::Sqlite {
        parts.push(Part {
            name: "postgres",
            pids: vec![services.postgres.pid],
            with_children: true,
        });
    }
    if config.backend == Backend::PostgresRedis {
        parts.push(Part {
            name: "redis",
            pids: vec![services.redis.pid],
            with_children: false,
        });
    }
    parts
}

/// A phase of the room at `rate` total posts per second for `duration_ms`.
fn phase(plan: &Plan, rate: f64, duration_ms: u64) -> FanoutPhase {
    let senders = plan.cluster_senders.min(plan.cluster_members);
    FanoutPhase {
        nonce: nonce(),
        senders,
        sender_stride: 1,
        rate: rate / senders as f64,
        duration_ms,
        drain_ms: plan.drain_ms,
        text_len: plan.text_len,
        room_members: plan.cluster_members,
        until_delivered: plan.drain_until_delivered,
    }
}

/// The saturation steps: a growing post rate until a step fails or the budget runs out.
async fn saturation(run: &mut Run, d: &mut Deployment) -> Result<()> {
    let plan = run.plan.clone();
    let mut rate = plan.cluster_sat_start_rate;
    for step in 0..plan.cluster_sat_steps {
        let label = format!("step {step}: {rate:.0} msg/s");
        let mut rec = measured(run, d, SATURATION, label, rate, plan.sat_phase_ms).await?;
        let ok = passes(&rec);
        rec.m.insert("pass".into(), if ok { 1.0 } else { 0.0 });
        run.push(rec)?;
        if !ok {
            break;
        }
        rate *= plan.cluster_sat_factor;
    }
    Ok(())
}

/// One measured phase of a deployment as a record, its CPU summed over every part and split by
/// part.
async fn measured(
    run: &Run,
    d: &mut Deployment,
    scenario: &str,
    label: String,
    rate: f64,
    duration_ms: u64,
) -> Result<Record> {
    let phase = phase(&run.plan, rate, duration_ms);
    let (config, parts) = (d.config, &d.parts);
    let core = run.paths.pin_core;
    let (reports, before, after, mut samples) =
        measured_phase_of(&mut d.fleet, core, phase.clone(), || {
            Ok(PartsSample::take(parts))
        })
        .await?;
    let by_part = before.spent_by_part_until(&after, parts.len());
    samples.server = by_part
        .iter()
        .fold(CpuSample::default(), |acc, s| acc.plus(s));
    let mut rec = Record {
        server: config.name.to_string(),
        scenario: scenario.to_string(),
        n: run.plan.cluster_members,
        label,
        m: Default::default(),
        note: None,
    };
    summarize(&mut rec, &reports, &samples, &phase, run.floor_us());
    split_by_part(&mut rec, parts, &by_part, &samples);
    rec.m.insert("nodes".into(), config.nodes as f64);
    // How much of a core the configuration's processes used while posts went out: near 1.0
    // on the pinned core, it (not the generator) was the limit.
    let posting_s = phase.duration_ms as f64 / 1000.0;
    rec.m.insert(
        "server_cores_busy".into(),
        samples.server.secs() / posting_s.max(1e-9),
    );
    if let Some(c) = core {
        rec.m.insert("server_core".into(), c as f64);
    }
    Ok(rec)
}

/// Each part's CPU seconds and µs per delivery, beside the total `summarize` recorded.
fn split_by_part(rec: &mut Record, parts: &[Part], by_part: &[CpuSample], samples: &Samples) {
    let received = rec.get("received").unwrap_or(0.0);
    for (part, spent) in parts.iter().zip(by_part) {
        rec.m.insert(format!("{}_cpu_s", part.name), spent.secs());
        rec.m.insert(
            format!("{}_cpu_share", part.name),
            spent.secs() / samples.wall_s.max(1e-9),
        );
        if received > 0.0 {
            rec.m.insert(
                format!("{}_cpu_us_per_delivery", part.name),
                spent.secs() * 1e6 / received,
            );
        }
    }
}

/// A step passes with p99 under the limit, no loss, no close and deliveries at all (the
/// saturation scenario's rule).
fn passes(rec: &Record) -> bool {
    rec.get("p99_ms").unwrap_or(f64::MAX) < P99_LIMIT_MS
        && rec.get("lost").unwrap_or(1.0) == 0.0
        && rec.get("closed").unwrap_or(1.0) == 0.0
        && rec.get("received").unwrap_or(0.0) > 0.0
}
