//! The servers under test: how to start each one pinned to its core, and how to stop it.
//!
//! Every server is started through `sh -c 'ulimit -n <hard>; exec taskset -c 0 ...'`: the
//! shell raises the open-file limit, `exec` keeps the PID, so the PID we hold is the server's
//! own and /proc measurements and the final signal reach exactly it.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::client::Mode;

/// A server the harness knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
#[clap(rename_all = "kebab-case")]
pub enum ServerKind {
    Hubbub,
    /// The same hubbub binary started with `--auth-secret`, whose clients connect with a token
    /// each (`/ws?token=`): every connection is a signed-in member with an account (issue 19),
    /// so guests and members can be measured side by side in one run.
    HubbubAccounts,
    NodeWs,
    Socketio,
    GoGorilla,
    /// The echo scenario's reference (`hubbub-bench echo-floor`), not a peer: run by the suite
    /// beside the echo scenario, never chosen with `--servers`.
    #[value(skip)]
    EchoFloor,
}

impl ServerKind {
    pub const ALL: [ServerKind; 4] = [
        ServerKind::Hubbub,
        ServerKind::NodeWs,
        ServerKind::Socketio,
        ServerKind::GoGorilla,
    ];

    /// The name used in tables and result files.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Hubbub => "hubbub",
            ServerKind::HubbubAccounts => HUBBUB_ACCOUNTS,
            ServerKind::NodeWs => "node-ws",
            ServerKind::Socketio => "socketio",
            ServerKind::GoGorilla => "go-gorilla",
            ServerKind::EchoFloor => ECHO_FLOOR,
        }
    }

    /// The client mode that speaks this server's protocol.
    pub fn mode(self) -> Mode {
        match self {
            ServerKind::Hubbub | ServerKind::HubbubAccounts => Mode::Hubbub,
            ServerKind::Socketio => Mode::Socketio,
            ServerKind::NodeWs | ServerKind::GoGorilla | ServerKind::EchoFloor => Mode::Raw,
        }
    }

    /// The secret the server signs tokens with and the clients mint theirs with, for the kinds
    /// whose clients sign in; `None` for guests and peers.
    pub fn auth_secret(self) -> Option<&'static str> {
        (self == ServerKind::HubbubAccounts).then_some(BENCH_AUTH_SECRET)
    }
}

/// The signed-in hubbub's name in results: compared with `hubbub` (guests), never a peer.
pub const HUBBUB_ACCOUNTS: &str = "hubbub-accounts";

/// A fixed HS256 secret for the benchmark's own private server (longer than the 32 bytes hubbub
/// requires). It protects nothing: the server lives for one run on loopback with a scratch
/// data directory.
const BENCH_AUTH_SECRET: &str = "hubbub-bench-fixed-secret-for-loopback-runs-only";

/// The echo floor's name in results: a reference, left out wherever peers are compared.
pub const ECHO_FLOOR: &str = "echo-floor";

/// Where the server programs live.
#[derive(Debug, Clone)]
pub struct ServerPaths {
    pub hubbub_bin: PathBuf,
    /// `bench/peers`, holding `node-ws/server.js` and `socketio/server.js` (with node_modules).
    pub peers_dir: PathBuf,
    /// The Go hub binary built by run.sh.
    pub go_bin: PathBuf,
    /// Core to pin servers to (`taskset -c`), or none.
    pub pin_core: Option<usize>,
    /// Directory for server logs.
    pub log_dir: PathBuf,
    /// Scheduling niceness for the servers (e.g. -10), so that other work on a shared machine
    /// takes less of the server's core during a measurement.
    pub nice: Option<i32>,
    /// Extra flags for `hubbub serve` (e.g. `--durability process`).
    pub hubbub_args: Vec<String>,
    /// The project's `scripts/`, whose `pg.sh` and `redis.sh` start the cluster scenario's
    /// private PostgreSQL and Redis.
    pub scripts_dir: PathBuf,
}

impl ServerPaths {
    /// The prefix that pins and prioritises a command: `nice -n N taskset -c C`.
    pub fn launcher(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(n) = self.nice {
            // `nice -n` is relative to our own niceness (run.sh already runs us at -10):
            // adjust by the difference so the server ends up at exactly `n`.
            let adjust = n - own_niceness();
            if adjust != 0 {
                v.extend(["nice".to_string(), "-n".to_string(), adjust.to_string()]);
            }
        }
        if let Some(c) = self.pin_core {
            v.extend(["taskset".to_string(), "-c".to_string(), c.to_string()]);
        }
        v
    }
}

/// This process's niceness (field 19 of /proc/self/stat), 0 if unreadable.
fn own_niceness() -> i32 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            rest.split_whitespace()
                .nth(19 - 3)
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub pid: u32,
    /// The core the server is pinned to, if any.
    pub core: Option<usize>,
    child: Child,
    data_dir: Option<PathBuf>,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    /// Start `kind`, wait until it accepts TCP connections, then leave it alone for `warmup`
    /// so that its runtime finishes starting (JIT, GC heaps) before a baseline is taken.
    pub fn start(kind: ServerKind, paths: &ServerPaths, warmup: Duration) -> Result<Server> {
        Server::launch(kind, paths, warmup, &[], kind.name())
    }

    /// Start one hubbub node of a cluster configuration: `hubbub serve` with `extra` flags
    /// (`--db`, `--broker`, `--node-id`, ...) after the usual ones, logging to `log_name.log`.
    pub fn start_node(
        paths: &ServerPaths,
        warmup: Duration,
        extra: &[String],
        log_name: &str,
    ) -> Result<Server> {
        Server::launch(ServerKind::Hubbub, paths, warmup, extra, log_name)
    }

    /// Stops hubbub and starts it again on the same data directory (a new port): what the
    /// accounts, rooms and history of a first run look like to a fresh process, whose memory
    /// holds nothing of that run's connections.
    pub fn restart(
        &mut self,
        kind: ServerKind,
        paths: &ServerPaths,
        warmup: Duration,
    ) -> Result<()> {
        let dir = self
            .data_dir
            .take()
            .context("only hubbub keeps a data directory to restart on")?;
        self.stop();
        let fresh = Server::launch_on(kind, paths, warmup, &[], kind.name(), Some(dir))?;
        *self = fresh;
        Ok(())
    }

    fn launch(
        kind: ServerKind,
        paths: &ServerPaths,
        warmup: Duration,
        extra: &[String],
        log_name: &str,
    ) -> Result<Server> {
        Server::launch_on(kind, paths, warmup, extra, log_name, None)
    }

    fn launch_on(
        kind: ServerKind,
        paths: &ServerPaths,
        warmup: Duration,
        extra: &[String],
        log_name: &str,
        existing_dir: Option<PathBuf>,
    ) -> Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut data_dir = None;
        let argv: Vec<String> = match kind {
            ServerKind::Hubbub | ServerKind::HubbubAccounts => {
                let dir = existing_dir.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("hubbub-bench-{}-{port}", std::process::id()))
                });
                std::fs::create_dir_all(&dir).context("create hubbub data dir")?;
                let v = vec![
                    paths.hubbub_bin.display().to_string(),
                    "serve".into(),
                    "--addr".into(),
                    addr.to_string(),
                    "--data".into(),
                    dir.display().to_string(),
                ];
                let mut v = v;
                v.extend(benchmark_flags(&paths.hubbub_bin));
                if let Some(secret) = kind.auth_secret() {
                    v.extend(["--auth-secret".to_string(), secret.to_string()]);
                }
                v.extend(paths.hubbub_args.iter().cloned());
                v.extend(extra.iter().cloned());
                data_dir = Some(dir);
                v
            }
            ServerKind::NodeWs => vec!["node".into(), script(paths, "node-ws")?],
            ServerKind::Socketio => vec!["node".into(), script(paths, "socketio")?],
            ServerKind::GoGorilla => vec![
                paths.go_bin.display().to_string(),
                "-addr".into(),
                addr.to_string(),
            ],
            ServerKind::EchoFloor => vec![
                std::env::current_exe()
                    .context("find hubbub-bench")?
                    .display()
                    .to_string(),
                "echo-floor".into(),
                "--addr".into(),
                addr.to_string(),
            ],
        };
        let pin = format!("exec {} \"$@\"", paths.launcher().join(" "));
        std::fs::create_dir_all(&paths.log_dir).ok();
        let log = File::create(paths.log_dir.join(format!("{log_name}.log")))
            .context("create server log")?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n \"$(ulimit -Hn)\"; {pin}"))
            .arg("sh")
            .args(&argv)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .env("NODE_ENV", "production")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", log_name))?;
        let pid = child.id();
        let mut server = Server {
            addr,
            pid,
            core: paths.pin_core,
            child,
            data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "{} exited at start ({status}); see {}",
                    log_name,
                    paths.log_dir.display()
                );
            }
            if Instant::now() > deadline {
                server.stop();
                bail!("{} did not listen on {addr} within 30 s", log_name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(warmup);
        Ok(server)
    }

    /// SIGTERM by PID, wait up to 5 s, then SIGKILL through the child handle.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Flags that keep hubbub's abuse limits from refusing the load generator itself, for the
/// versions that have them (probed from `hubbub serve --help`): every generator worker holds up
/// to 9,000 connections from one source address, far over the per-address cap meant for the
/// internet. The per-connection post rate limit stays on: the scenarios post under it.
fn benchmark_flags(bin: &Path) -> Vec<String> {
    let help = Command::new(bin)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut flags = Vec::new();
    if help.contains("--max-connections-per-ip") {
        flags.extend([
            "--max-connections-per-ip".to_string(),
            "1000000".to_string(),
        ]);
    }
    flags
}

fn script(paths: &ServerPaths, peer: &str) -> Result<String> {
    let p: &Path = &paths.peers_dir.join(peer).join("server.js");
    if !p.exists() {
        bail!("{} is missing", p.display());
    }
    Ok(p.display().to_string())
}
