//! Real clusters for tests (issue 18): several real hubbub processes (this test build's binary)
//! on one PostgreSQL schema and one Redis, behind a real nginx.
//!
//! **Cluster mode of the protocol suite.** With `HUBBUB_TEST_CLUSTER="POSTGRES_URL REDIS_URL"`
//! (two URLs separated by a space: a PostgreSQL server, scripts/pg.sh, and a Redis,
//! scripts/redis.sh), [`super::start_server`] starts [`SUITE_NODES`] nodes on a fresh schema of
//! that PostgreSQL, that Redis and a pub/sub channel of the test's own (tests run in parallel on
//! one Redis), node ids 1..3, behind a private nginx (scripts/nginx.sh, the site config of
//! deploy/nginx.conf). The test's `TestServer.addr` is nginx's, so its clients spread over the
//! nodes round-robin, exactly as clients of a deployment do. Tests started with
//! [`super::start_server_with`] or [`super::start_single_node`] stay one in-process node.
//! scripts/test.sh sets the variable for the protocol suite (tests/ws_protocol.rs, sse.rs,
//! http_api.rs, echo.rs, ws_framing.rs); the other files that call `start_server()` run
//! in-process there.
//!
//! tests/cluster_nodes.rs uses the same parts directly ([`Cluster`], [`PrivateRedis`],
//! [`PrivatePostgres`]) to kill a node, stop PostgreSQL or cut a Redis subscription; the
//! in-process clusters of tests/cluster.rs and the broker test of tests/readyz.rs use its
//! [`PrivateRedis`], [`nodes_env`], [`read_resuming`] and [`until_readyz`].
//!
//! Every process is stopped by its PID: nodes when the cluster is stopped or dropped (SIGTERM on
//! [`Cluster::stop`], SIGKILL on drop), nginx, Redis and PostgreSQL by their scripts, which read
//! the PID from the pid file in their own directory. A test that fails prints the tail of every
//! node's log and of nginx's error log, which otherwise go away with the cluster's directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::{Binary, Client, free_port, http, pg};

/// The variable that moves the protocol suite onto a cluster: `"POSTGRES_URL REDIS_URL"`.
pub const CLUSTER_VAR: &str = "HUBBUB_TEST_CLUSTER";

/// How many nodes the protocol suite's cluster has: three, so that round-robin puts a test's
/// clients on different nodes and a node sees messages from two others.
pub const SUITE_NODES: u64 = 3;

/// How long a node may take to become ready (store and broker reachable) after it serves.
const READY_WAIT: Duration = Duration::from_secs(20);

/// The PostgreSQL server and Redis a cluster runs on.
#[derive(Debug, Clone)]
pub struct ClusterEnv {
    /// A PostgreSQL server URL; each cluster gets a fresh schema in it.
    pub postgres: String,
    /// A Redis URL; each cluster gets a channel of its own on it.
    pub redis: String,
}

/// The cluster the protocol suite runs on, if [`CLUSTER_VAR`] is set. A malformed value fails
/// the test rather than silently running single-node.
pub fn suite_env() -> Option<ClusterEnv> {
    let value = std::env::var(CLUSTER_VAR).ok()?;
    let parts: Vec<&str> = value.split_whitespace().collect();
    match parts.as_slice() {
        [postgres, redis] => Some(ClusterEnv {
            postgres: (*postgres).to_owned(),
            redis: (*redis).to_owned(),
        }),
        _ => panic!("{CLUSTER_VAR} must be \"POSTGRES_URL REDIS_URL\", got {value:?}"),
    }
}

/// The PostgreSQL server and Redis for tests/cluster.rs and tests/cluster_nodes.rs
/// (`HUBBUB_TEST_POSTGRES` or `HUBBUB_TEST_DB`, and `HUBBUB_TEST_REDIS`), or `None` after saying
/// why `test` is skipped.
pub fn nodes_env(test: &str) -> Option<ClusterEnv> {
    let postgres = pg::test_server();
    let redis = std::env::var("HUBBUB_TEST_REDIS").ok();
    match (postgres, redis) {
        (Some(postgres), Some(redis)) => Some(ClusterEnv { postgres, redis }),
        _ => {
            eprintln!(
                "skipped: {test}: needs HUBBUB_TEST_POSTGRES and HUBBUB_TEST_REDIS \
                 (scripts/test.sh starts both)"
            );
            None
        }
    }
}

/// A path under the crate root (the test scripts live there).
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// A pub/sub channel no other cluster of this or any other test process uses.
fn fresh_channel() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "hubbub-test:{}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `bash scripts/NAME ARGS...` and returns its stdout, trimmed; fails the test with the
/// script's stderr if it fails.
pub async fn run_script(name: &str, args: &[&str]) -> String {
    let output = tokio::process::Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/{name} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The same, blocking: for `Drop`, which cannot await.
fn run_script_blocking(name: &str, args: &[&str]) {
    let _ = std::process::Command::new("bash")
        .arg(script(name))
        .args(args)
        .status();
}

/// Several real hubbub nodes on one schema and one Redis behind one nginx.
pub struct Cluster {
    /// nginx's address: what clients of the cluster connect to.
    pub addr: SocketAddr,
    /// The nginx in front of the nodes.
    pub nginx: Nginx,
    /// The nodes; node `i` (from 0) runs with `--node-id i+1`.
    pub nodes: Vec<Binary>,
    /// The schema's URL every node uses (history can be checked through any node's API).
    pub db_url: String,
    /// Where each node's log is (`node{id}.log`); printed when a test fails.
    logs: Vec<PathBuf>,
    /// Holds the nodes' data directories, their logs and nginx's directory; dropped last.
    dir: TempDir,
}

/// What a [`Cluster`] is started with.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// How many nodes.
    pub nodes: u64,
    /// A PostgreSQL server URL: the cluster gets a fresh schema in it.
    pub postgres: String,
    /// The Redis URL of each node, by index (one entry for all when shorter than `nodes`), so a
    /// test can give one node credentials of its own (tests/cluster_nodes.rs cuts that node's
    /// subscription alone).
    pub redis: Vec<String>,
    /// More flags for every node.
    pub extra: Vec<String>,
}

impl ClusterSpec {
    /// `nodes` nodes on `env`, no extra flags.
    pub fn new(nodes: u64, env: &ClusterEnv) -> Self {
        Self {
            nodes,
            postgres: env.postgres.clone(),
            redis: vec![env.redis.clone()],
            extra: Vec::new(),
        }
    }
}

impl Cluster {
    /// Starts the nodes at once (migrations on one fresh schema from every node at the same
    /// time, as a deployment's nodes do), waits until each serves and is ready, then starts
    /// nginx in front of them.
    pub async fn start(spec: ClusterSpec) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let db_url = pg::fresh_schema_url(&spec.postgres).await;
        let channel = fresh_channel();
        let mut starting = Vec::new();
        let mut logs = Vec::new();
        for node_id in 1..=spec.nodes {
            let index = usize::try_from(node_id - 1).unwrap();
            let redis = spec.redis.get(index).unwrap_or(&spec.redis[0]).clone();
            let mut args = vec![
                "--db".to_owned(),
                db_url.clone(),
                "--broker".to_owned(),
                redis,
                "--node-id".to_owned(),
                node_id.to_string(),
                "--broker-channel".to_owned(),
                channel.clone(),
                // nginx: the client's address comes from its X-Forwarded-For.
                "--trusted-proxy".to_owned(),
                "127.0.0.1/32".to_owned(),
            ];
            args.extend(spec.extra.iter().cloned());
            let data = dir.path().join(format!("node{node_id}"));
            let log = dir.path().join(format!("node{node_id}.log"));
            logs.push(log.clone());
            starting.push(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Binary::start_logging_to(&data, free_port(), &args, &log).await
            });
        }
        let nodes = futures_util::future::join_all(starting).await;
        for node in &nodes {
            until_ready(node.addr).await;
        }
        let upstreams: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
        let nginx = Nginx::start(&dir.path().join("nginx"), &upstreams).await;
        Cluster {
            addr: nginx.addr,
            nginx,
            nodes,
            db_url,
            logs,
            dir,
        }
    }

    /// A client of node `index` (from 0), connected to it directly, not through nginx.
    pub async fn client_of(&self, index: usize, query: &str) -> Client {
        Client::connect(self.nodes[index].addr, query).await
    }

    /// Stops nginx (its clients' connections end with it), then every node still running with
    /// SIGTERM, and asserts each exits with status 0, as a node of a deployment does when it is
    /// stopped.
    pub async fn stop(mut self) {
        self.nginx.stop().await;
        let nodes = std::mem::take(&mut self.nodes);
        let stopping = nodes.into_iter().filter_map(|mut node| {
            if node.child.try_wait().unwrap().is_some() {
                return None; // killed by the test
            }
            node.signal("TERM");
            Some(async move {
                let addr = node.addr;
                let status = node.wait().await;
                assert!(status.success(), "node on {addr} exits with 0: {status}");
            })
        });
        futures_util::future::join_all(stopping).await;
    }

    /// The last lines of every node's log and of nginx's logs (its access log names the node
    /// that served each request), for a failing test.
    fn print_logs(&self) {
        let nginx_logs = [
            self.nginx.dir.join("access.log"),
            self.nginx.dir.join("error.log"),
        ];
        for log in self.logs.iter().chain(&nginx_logs) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("---- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        // The nodes are killed by their own drop (by PID); nginx by its script.
        self.nginx.stop_blocking();
    }
}

/// Waits until `addr` answers `/readyz` with 200: its store and its Redis subscription are up,
/// so nothing a test does on it is missed by the bus.
pub async fn until_ready(addr: SocketAddr) {
    until_readyz(addr, 200, READY_WAIT).await;
}

/// Waits until `addr`'s `/readyz` answers `status`, for at most `wait`.
pub async fn until_readyz(addr: SocketAddr, status: u16, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let answer = http().get(format!("http://{addr}/readyz")).send().await;
        match answer {
            Ok(response) if response.status() == status => return,
            Ok(response) => last = Some(response.status().to_string()),
            Err(err) => last = Some(err.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/readyz on {addr} did not answer {status} within {wait:?} (last: {last:?})");
}

/// A private nginx (scripts/nginx.sh) in front of some upstreams; stopped by PID on drop.
pub struct Nginx {
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `dir` on a free loopback port, round-robin over `upstreams`.
    pub async fn start(dir: &Path, upstreams: &[SocketAddr]) -> Nginx {
        let port = free_port();
        let dir_arg = dir.to_str().unwrap().to_owned();
        let port_arg = port.to_string();
        let upstream_args: Vec<String> = upstreams.iter().map(ToString::to_string).collect();
        let mut args = vec!["start", &dir_arg, &port_arg];
        args.extend(upstream_args.iter().map(String::as_str));
        let url = run_script("nginx.sh", &args).await;
        assert_eq!(url, format!("http://127.0.0.1:{port}"));
        Nginx {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir: dir.to_path_buf(),
        }
    }

    /// Stops it (fast shutdown: open connections are cut) and waits until it is gone.
    pub async fn stop(&self) {
        run_script("nginx.sh", &["stop", self.dir.to_str().unwrap()]).await;
    }

    fn stop_blocking(&self) {
        run_script_blocking("nginx.sh", &["stop", self.dir.to_str().unwrap()]);
    }
}

/// A server one of the test scripts (`start DIR` / `stop DIR`) runs in a temporary directory of
/// its own; stopped by that script, by the PID it finds in the directory, when dropped.
struct ScriptedServer {
    script: &'static str,
    dir: TempDir,
}

impl ScriptedServer {
    /// Starts one with `scripts/{script} start`; returns it and the URL the script printed.
    async fn start(script: &'static str) -> (ScriptedServer, String) {
        let server = ScriptedServer {
            script,
            dir: tempfile::tempdir().unwrap(),
        };
        let url = server.run("start").await;
        (server, url)
    }

    /// `scripts/{script} ACTION DIR`, returning what it printed.
    async fn run(&self, action: &str) -> String {
        run_script(self.script, &[action, self.dir()]).await
    }

    /// Stops it and waits until its process is gone.
    async fn stop(&self) {
        self.run("stop").await;
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        run_script_blocking(self.script, &["stop", self.dir()]);
    }
}

/// A private Redis for one test (scripts/redis.sh), stopped by PID when dropped. For tests that
/// stop it or cut its clients, which would disturb every other test on a shared one.
pub struct PrivateRedis {
    server: ScriptedServer,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl PrivateRedis {
    /// Starts one on a free port.
    pub async fn start() -> PrivateRedis {
        let (server, url) = ScriptedServer::start("redis.sh").await;
        PrivateRedis { server, url }
    }

    /// Stops it and waits until its process is gone.
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Starts it again on the same port (the script remembers it in its directory).
    pub async fn restart(&self) {
        let url = self.server.run("start").await;
        assert_eq!(url, self.url, "back on the same port");
    }

    /// Runs `redis-cli ARGS...` against it and returns the reply, trimmed.
    pub async fn cli(&self, args: &[&str]) -> String {
        let port = self.url.rsplit(':').next().unwrap();
        let output = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", port])
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }
}

/// A private PostgreSQL for one test (scripts/pg.sh), stopped by PID (pg_ctl) when dropped. For
/// the test that stops it for a while and starts it again on the same port.
pub struct PrivatePostgres {
    server: ScriptedServer,
    /// `postgres://postgres@127.0.0.1:PORT/hubbub`.
    pub url: String,
}

impl PrivatePostgres {
    /// Starts one on a free port (initdb included: a few seconds).
    pub async fn start() -> PrivatePostgres {
        let (server, url) = ScriptedServer::start("pg.sh").await;
        PrivatePostgres { server, url }
    }

    /// Stops it (`pg_ctl stop -m fast`, which waits until the server is gone).
    pub async fn stop(&self) {
        self.server.stop().await;
    }

    /// Starts it again with the options of its last start, so on the same port: `pg_ctl
    /// restart` on a stopped server reads them from `postmaster.opts` (scripts/pg.sh `start`
    /// would pick a new port and create the database again). As its owner, as pg.sh runs it.
    pub async fn restart(&self) {
        let dir = self.server.dir();
        let restart = format!(
            "bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1); \
             as_owner=''; [ \"$(id -u)\" = 0 ] && as_owner='runuser -u postgres --'; \
             $as_owner \"$bin/pg_ctl\" -D '{dir}/data' -l '{dir}/log' -w -t 60 restart"
        );
        let output = tokio::process::Command::new("bash")
            .args(["-c", &restart])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl restart: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Reads `room` on the node at `node` as a real client does, for as long as a burst lasts: closed
/// (as a slow consumer: a node's catch-up can be more than its outbox holds while the socket is
/// full) it reconnects to the same node and resumes with `since`. Returns every message id it
/// received, over all its connections, once it has the id `last` announces.
pub async fn read_resuming(
    mut client: Client,
    node: SocketAddr,
    room: &'static str,
    mut last: tokio::sync::watch::Receiver<Option<u64>>,
) -> Vec<u64> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut ids: Vec<u64> = Vec::new();
    loop {
        let target = *last.borrow_and_update();
        if target.is_some_and(|target| ids.last().is_some_and(|id| *id >= target)) {
            return ids;
        }
        tokio::select! {
            frame = client.ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == "msg" {
                        ids.push(frame["id"].as_u64().unwrap());
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    client = Client::connect(node, "").await;
                    let since = ids.last().copied().unwrap_or(0);
                    let join = serde_json::json!({"type": "join", "room": room, "data": {"since": since}});
                    client.send(join).await;
                }
                Some(Ok(_)) => {}
            },
            changed = last.changed() => changed.unwrap(),
        }
    }
}
