//! The coordinator's side of the worker processes: spawn them, hand out connections and
//! source addresses, run phases on all of them at once and gather their reports.
//!
//! Each worker is `hubbub-bench worker`, a child of this process, so it inherits the CPU pin
//! (`taskset -c 1`) and the raised open-file limit of the coordinator.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command as Proc};

use crate::client::{Mode, Route};
use crate::procfs::{self, CpuSample};
use crate::spec::{Command, EchoReport, Event, FanoutPhase, FanoutReport, RoomLayout, WorkerSpec};

/// Connections per worker: well under the 20,000 open files one process may hold.
pub const MAX_PER_WORKER: usize = 9_000;

/// One running worker process.
struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn send(&mut self, cmd: &Command) -> Result<()> {
        let mut line = serde_json::to_string(cmd)?;
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("write to worker")?;
        self.stdin.flush().await.context("flush to worker")?;
        Ok(())
    }

    async fn event(&mut self, timeout: Duration) -> Result<Event> {
        loop {
            let line = tokio::time::timeout(timeout, self.lines.next_line())
                .await
                .with_context(|| format!("worker {} silent for {timeout:?}", self.pid))??
                .with_context(|| format!("worker {} exited", self.pid))?;
            // Only JSON objects are events; anything else would be a stray print.
            if line.starts_with('{') {
                return serde_json::from_str(&line)
                    .with_context(|| format!("bad event line {line:?}"));
            }
        }
    }
}

/// What a batch of workers reported after connecting.
#[derive(Debug, Default, Clone)]
pub struct Connected {
    pub connected: usize,
    pub failed: usize,
    pub errors: Vec<String>,
}

/// All workers of one test against one server.
pub struct Fleet {
    mode: Mode,
    route: Route,
    server: SocketAddr,
    /// The nodes connections are spread over (empty: all on `server`).
    nodes: Vec<SocketAddr>,
    layout: RoomLayout,
    /// Total connections the test will reach (room sizes are computed against it).
    total: usize,
    workers: Vec<Worker>,
    /// The token secret when the connections sign in (see [`WorkerSpec::auth_secret`]).
    auth_secret: Option<String>,
    /// Connections asked for so far (the next global index).
    next_index: usize,
    pub connected: usize,
}

impl Fleet {
    pub fn new(
        mode: Mode,
        route: Route,
        server: SocketAddr,
        layout: RoomLayout,
        total: usize,
    ) -> Self {
        Fleet {
            mode,
            route,
            server,
            nodes: Vec::new(),
            layout,
            total,
            workers: Vec::new(),
            auth_secret: None,
            next_index: 0,
            connected: 0,
        }
    }

    /// Sign every connection in with a token minted from `secret` (the server kind's
    /// [`ServerKind::auth_secret`](crate::servers::ServerKind::auth_secret)); `None` keeps guests.
    pub fn signed_in(mut self, secret: Option<&str>) -> Self {
        self.auth_secret = secret.map(str::to_owned);
        self
    }

    /// Spread the connections over the nodes of a cluster, round-robin by connection index:
    /// every node gets members and senders alike.
    pub fn spread_over(mut self, nodes: Vec<SocketAddr>) -> Self {
        if let Some(&first) = nodes.first() {
            self.server = first;
        }
        self.nodes = nodes;
        self
    }

    /// Add workers until `target` connections have been attempted; waits for all of them to
    /// finish connecting (up to `timeout`).
    pub async fn grow_to(&mut self, target: usize, timeout: Duration) -> Result<Connected> {
        let exe = std::env::current_exe().context("locate own executable")?;
        let mut fresh = Vec::new();
        while self.next_index < target {
            let count = (target - self.next_index).min(MAX_PER_WORKER);
            let w = self.workers.len() + fresh.len();
            if w > 250 {
                bail!("too many workers: source addresses run out");
            }
            let spec = WorkerSpec {
                mode: self.mode,
                route: self.route,
                server: self.server,
                nodes: self.nodes.clone(),
                source_ip: Ipv4Addr::new(127, 0, 0, 2 + w as u8),
                first: self.next_index,
                count,
                total: self.total,
                layout: self.layout,
                concurrency: 100,
                connect_timeout_ms: timeout.as_millis() as u64,
                auth_secret: self.auth_secret.clone(),
            };
            let mut child = Proc::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawn worker")?;
            let pid = child.id().context("worker pid")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let mut line = serde_json::to_string(&spec)?;
            line.push('\n');
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
            fresh.push(Worker {
                child,
                pid,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
            self.next_index += count;
        }
        let mut out = Connected::default();
        for w in fresh.iter_mut() {
            match w.event(timeout + Duration::from_secs(10)).await? {
                Event::Ready {
                    connected,
                    failed,
                    errors,
                    ..
                } => {
                    out.connected += connected;
                    out.failed += failed;
                    out.errors.extend(errors);
                }
                other => bail!("expected ready, got {other:?}"),
            }
        }
        self.connected += out.connected;
        self.workers.extend(fresh);
        Ok(out)
    }

    /// CPU time of all workers (the load generator), for spotting a saturated generator.
    pub fn cpu(&self) -> CpuSample {
        let mut total = CpuSample::default();
        for w in &self.workers {
            if let Ok(s) = procfs::cpu(w.pid) {
                total.run_ns += s.run_ns;
                total.utime_ticks += s.utime_ticks;
                total.stime_ticks += s.stime_ticks;
            }
        }
        total
    }

    /// Run one fan-out phase on every worker and return their reports.
    pub async fn fanout(&mut self, phase: FanoutPhase) -> Result<Vec<FanoutReport>> {
        let wait =
            Duration::from_millis(crate::spec::LEAD_IN_MS + phase.duration_ms + phase.drain_ms)
                + Duration::from_secs(30);
        let cmd = Command::Fanout(phase);
        for w in self.workers.iter_mut() {
            w.send(&cmd).await?;
        }
        let mut out = Vec::new();
        for w in self.workers.iter_mut() {
            match w.event(wait).await? {
                Event::Fanout(r) => out.push(r),
                other => bail!("expected fanout report, got {other:?}"),
            }
        }
        Ok(out)
    }

    /// Run one echo phase on every worker.
    pub async fn echo(&mut self, duration_ms: u64, text_len: usize) -> Result<Vec<EchoReport>> {
        let wait = Duration::from_millis(duration_ms) + Duration::from_secs(30);
        let cmd = Command::Echo {
            duration_ms,
            text_len,
        };
        for w in self.workers.iter_mut() {
            w.send(&cmd).await?;
        }
        let mut out = Vec::new();
        for w in self.workers.iter_mut() {
            match w.event(wait).await? {
                Event::Echo(r) => out.push(r),
                other => bail!("expected echo report, got {other:?}"),
            }
        }
        Ok(out)
    }

    /// How many connections are still open across all workers.
    pub async fn open(&mut self) -> Result<usize> {
        let mut open = 0;
        for w in self.workers.iter_mut() {
            w.send(&Command::Status).await?;
            match w.event(Duration::from_secs(30)).await? {
                Event::Status { open: o } => open += o,
                other => bail!("expected status, got {other:?}"),
            }
        }
        Ok(open)
    }

    /// Tell every worker to close its connections, wait for it, and kill (by PID, through its
    /// `Child`) any worker that does not exit in time.
    pub async fn stop(mut self) {
        for w in self.workers.iter_mut() {
            let _ = w.send(&Command::Stop).await;
        }
        for mut w in self.workers.drain(..) {
            if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
                .await
                .is_err()
            {
                let _ = w.child.kill().await;
            }
        }
    }
}
