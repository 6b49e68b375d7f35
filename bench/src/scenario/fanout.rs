//! Fan-out: one room of N members, S of them posting; every member measures delivery latency
//! and counts deliveries, and the server's CPU time per delivered message is the cost.
//!
//! The room grows in stages on one server (1,000 → 19,000 members in the full plan), so the
//! same run also measures what filling a big room costs (joins and presence: the fill time and
//! the server CPU spent while the stage connects).

use std::time::Instant;

use anyhow::Result;

use crate::client::Route;
use crate::coordinator::Fleet;
use crate::procfs;
use crate::run::Run;
use crate::servers::{Server, ServerKind};
use crate::spec::{FanoutPhase, RoomLayout};

use super::phase::{measured_phase, summarize};
use super::{Scenario, nonce, record};

/// Run the fan-out stages against `kind`.
pub async fn run(run: &mut Run, kind: ServerKind) -> Result<()> {
    let plan = run.plan.clone();
    // On a shared machine the floor moves by a fifth from one minute to the next: measured
    // again right before this server, its multiple compares costs taken under the same load.
    let beside = match run.measure_floor() {
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
    let accounts_made_s =
        super::make_accounts_beforehand(&mut server, kind, run, RoomLayout::Single, total).await?;
    let mut fleet = Fleet::new(
        kind.mode(),
        Route::Chat,
        server.addr,
        RoomLayout::Single,
        total,
    )
    .signed_in(kind.auth_secret());
    let rss0 = procfs::rss_kib(server.pid)?;
    let result = async {
        for &(n, rate) in &plan.fanout_stages {
            let profile = FillProfile::start(kind, n, server.pid).await;
            let cpu0 = procfs::cpu(server.pid)?;
            let t0 = Instant::now();
            let c = fleet.grow_to(n, plan.connect_timeout).await?;
            let fill_s = t0.elapsed().as_secs_f64();
            let fill_cpu = cpu0.secs_until(&procfs::cpu(server.pid)?);
            if let Some(profile) = profile {
                profile.stop().await;
            }
            let rss = procfs::rss_kib(server.pid)?;
            let mut rec = record(kind, Scenario::Fanout, n, format!("{rate} msg/s"));
            rec.m.insert("connected".into(), fleet.connected as f64);
            rec.m.insert("failed".into(), c.failed as f64);
            rec.m.insert("fill_s".into(), fill_s);
            rec.m.insert("fill_server_cpu_s".into(), fill_cpu);
            if let Some(made) = accounts_made_s {
                rec.m.insert("accounts_made_s".into(), made);
            }
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

/// With `HUBBUB_BENCH_PERF_DIR` set, `perf record` of the server while a stage fills (one file
/// per server and stage, `<server>-fill-<n>.data`; `HUBBUB_BENCH_PERF_CALL_GRAPH` picks perf's
/// `--call-graph`): where a fill's CPU goes, for profiling by hand. Off by default; nothing in
/// the report depends on it. perf starts disabled and is switched on and off through its
/// control fifo, each command acknowledged, so the samples cover exactly the fill. A perf that
/// fails or does not answer within [`PERF_ANSWER`] is killed and the stage runs unprofiled.
struct FillProfile {
    perf: tokio::process::Child,
    control: tokio::net::unix::pipe::Sender,
    ack: tokio::io::BufReader<tokio::net::unix::pipe::Receiver>,
    /// Removes the fifos when the profile ends, however it ends; only the `.data` file stays.
    _fifos: Fifos,
}

/// Paths of fifos made for one profile, removed on drop.
struct Fifos(Vec<std::path::PathBuf>);

impl Drop for Fifos {
    fn drop(&mut self) {
        for fifo in &self.0 {
            let _ = std::fs::remove_file(fifo);
        }
    }
}

/// How long perf may take to start or to acknowledge a command.
const PERF_ANSWER: std::time::Duration = std::time::Duration::from_secs(10);

impl FillProfile {
    async fn start(kind: ServerKind, n: usize, pid: u32) -> Option<Self> {
        let dir = std::path::PathBuf::from(std::env::var_os("HUBBUB_BENCH_PERF_DIR")?);
        match Self::try_start(&dir, kind, n, pid).await {
            Ok(profile) => Some(profile),
            Err(err) => {
                eprintln!("[bench] perf record: {err:#}");
                None
            }
        }
    }

    async fn try_start(
        dir: &std::path::Path,
        kind: ServerKind,
        n: usize,
        pid: u32,
    ) -> Result<Self> {
        use anyhow::Context;
        use tokio::net::unix::pipe;
        let name = format!("{}-fill-{n}", kind.name());
        // `fp` by default; `dwarf` walks the release build's stacks, which keep no frame pointers.
        let call_graph =
            std::env::var("HUBBUB_BENCH_PERF_CALL_GRAPH").unwrap_or_else(|_| "fp".to_owned());
        let (ctl, ack_path) = (
            dir.join(format!("{name}.ctl")),
            dir.join(format!("{name}.ack")),
        );
        let mut fifos = Fifos(Vec::new());
        for fifo in [&ctl, &ack_path] {
            let _ = std::fs::remove_file(fifo);
            let made = std::process::Command::new("mkfifo").arg(fifo).status()?;
            anyhow::ensure!(made.success(), "mkfifo {}", fifo.display());
            fifos.0.push(fifo.clone());
        }
        // Opened read-write, so neither open waits for perf to open its end (a perf that
        // exits at once would otherwise leave the bench waiting for ever).
        let control = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&ctl)?;
        let ack = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&ack_path)?;
        let perf = tokio::process::Command::new("perf")
            .args([
                "record",
                "-q",
                "-F",
                "1999",
                "-D",
                "-1",
                "-p",
                &pid.to_string(),
            ])
            .arg(format!("--call-graph={call_graph}"))
            .arg(format!(
                "--control=fifo:{},{}",
                ctl.display(),
                ack_path.display()
            ))
            .arg("-o")
            .arg(dir.join(format!("{name}.data")))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawn perf")?;
        let mut profile = Self {
            perf,
            control,
            ack: tokio::io::BufReader::new(ack),
            _fifos: fifos,
        };
        profile.command("enable").await?;
        Ok(profile)
    }

    /// Sends a control command and waits for perf's acknowledgement.
    async fn command(&mut self, what: &str) -> Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        self.control
            .write_all(format!("{what}\n").as_bytes())
            .await?;
        let mut answer = String::new();
        tokio::select! {
            read = self.ack.read_line(&mut answer) => { read?; }
            exit = self.perf.wait() => anyhow::bail!("perf exited: {}", exit?),
            () = tokio::time::sleep(PERF_ANSWER) => anyhow::bail!("perf did not answer {what:?}"),
        }
        Ok(())
    }

    /// Disables sampling, then SIGINT so perf writes its file, and waits for it.
    async fn stop(mut self) {
        if let Err(err) = self.command("disable").await {
            eprintln!("[bench] perf record: {err:#}");
        }
        if let Some(pid) = self.perf.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(PERF_ANSWER, self.perf.wait()).await;
    }
}
