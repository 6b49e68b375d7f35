//! Shared test harness: an in-process server on 127.0.0.1:0, the real binary as a child process,
//! and a small WebSocket client that speaks protocol v1.
//!
//! Two variables move the suite off its default (one in-process node on a fresh SQLite file):
//! `HUBBUB_TEST_DB=postgres://...` puts every test server on a fresh PostgreSQL schema (pg.rs),
//! and `HUBBUB_TEST_CLUSTER="POSTGRES_URL REDIS_URL"` makes [`start_server`] start three real
//! nodes behind a real nginx instead (cluster.rs).
#![allow(dead_code, clippy::unwrap_used)]

pub mod accounts;
pub mod cli;
pub mod cluster;
pub mod contract;
pub mod pg;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hubbub::config::Config;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long a test waits for any one frame before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running inside the test process, or (cluster mode) the nginx in front of three real
/// nodes.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<hubbub::Result<()>>>,
    /// Cluster mode: the nodes and nginx, stopped with the server.
    cluster: Option<cluster::Cluster>,
    _dir: Option<TempDir>,
}

/// Starts a server with default settings and a fresh database. With `HUBBUB_TEST_CLUSTER` set
/// (cluster.rs) that is a cluster of three real nodes behind nginx, and `addr` is nginx's.
pub async fn start_server() -> TestServer {
    if let Some(env) = cluster::suite_env() {
        let cluster =
            cluster::Cluster::start(cluster::ClusterSpec::new(cluster::SUITE_NODES, &env)).await;
        return TestServer {
            addr: cluster.addr,
            stop: None,
            task: None,
            cluster: Some(cluster),
            _dir: None,
        };
    }
    start_single_node().await
}

/// A server that takes tokens signed with `secret` (`--auth-secret`), for the suites whose
/// accounts sign in with tokens (tests/moderation.rs, tests/conversations.rs). In cluster mode,
/// like [`start_server`], three real nodes behind nginx, each started with that secret, so a
/// test's connections of one account and its moderator land on different nodes.
pub async fn start_server_with_secret(secret: &str) -> TestServer {
    if let Some(env) = cluster::suite_env() {
        let mut spec = cluster::ClusterSpec::new(cluster::SUITE_NODES, &env);
        spec.extra = vec!["--auth-secret".to_owned(), secret.to_owned()];
        let cluster = cluster::Cluster::start(spec).await;
        return TestServer {
            addr: cluster.addr,
            stop: None,
            task: None,
            cluster: Some(cluster),
            _dir: None,
        };
    }
    start_server_with(|c| c.auth_secret = Some(hubbub::config::Secret::new(secret))).await
}

/// One in-process node with default settings, also in cluster mode: for a test that is about
/// one node by nature (it reads that node's /metrics, say). Such a test says why it uses this.
pub async fn start_single_node() -> TestServer {
    start_server_with(|_| {}).await
}

/// Starts a server after letting the test adjust its config. Rate limiting is off unless the
/// test turns it on (`c.rate_limit = 10`): tests of other behaviours post in bursts from one
/// address, and tests/limits.rs covers the limiter itself.
pub async fn start_server_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        rate_limit: 0,
        ..Config::default()
    };
    pg::use_test_db(&mut config).await; // HUBBUB_TEST_DB: a fresh PostgreSQL schema
    adjust(&mut config);
    start_config(config, dir).await
}

/// Serves `config` in-process on a free loopback port; `dir` (its data) lives as long as it.
async fn start_config(config: Config, dir: TempDir) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(hubbub::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        stop: Some(stop),
        task: Some(task),
        cluster: None,
        _dir: Some(dir),
    }
}

/// Starts a server with `hubbub serve` flags: in cluster mode ([`cluster::CLUSTER_VAR`]) every
/// node gets them on its command line; otherwise one in-process node runs with the config they
/// describe (`hubbub::cli::serve_config`). One spelling for both, so a suite that needs a flag
/// still runs on every backend. Rate limiting is off unless the flags set `--rate-limit`, and the
/// database is the suite's (a fresh PostgreSQL schema with `HUBBUB_TEST_DB`).
pub async fn start_server_with_flags(flags: &[&str]) -> TestServer {
    if let Some(env) = cluster::suite_env() {
        let mut spec = cluster::ClusterSpec::new(cluster::SUITE_NODES, &env);
        spec.extra = flags.iter().map(|flag| (*flag).to_owned()).collect();
        let cluster = cluster::Cluster::start(spec).await;
        return TestServer {
            addr: cluster.addr,
            stop: None,
            task: None,
            cluster: Some(cluster),
            _dir: None,
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--data".to_owned(), dir.path().display().to_string()];
    args.extend(flags.iter().map(|flag| (*flag).to_owned()));
    let mut config = hubbub::cli::serve_config(&args).unwrap();
    if !flags.iter().any(|flag| flag.starts_with("--rate-limit")) {
        config.rate_limit = 0;
    }
    pg::use_test_db(&mut config).await;
    start_config(config, dir).await
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn client(&self, query: &str) -> Client {
        Client::connect(self.addr, query).await
    }

    /// Stops the server gracefully and waits for it (in cluster mode: nginx, then every node).
    /// Its clients' streams are ended once it is told to stop ([`ClientStream`]).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        ClientStream::end_all_to(self.addr);
        if let Some(cluster) = self.cluster.take() {
            cluster.stop().await;
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// Whether something listens on `addr`. A connect to a loopback port in the kernel's ephemeral
/// range that nothing listens on yet can succeed anyway: when the kernel picks that same port as
/// the connection's source port, TCP's simultaneous open connects the socket to itself. Such a
/// connection is not a listener. ([`free_port`]'s ports are below that range; a caller may pass
/// any.)
async fn listening(addr: SocketAddr) -> bool {
    match TcpStream::connect(addr).await {
        Ok(stream) => stream.local_addr().ok() != stream.peer_addr().ok(),
        Err(_) => false,
    }
}

/// Ports a test server is given: above the well-known and registered ports servers on a
/// machine commonly use, below the kernel's ephemeral range, and below the ports
/// scripts/lib.sh gives the PostgreSQL, Redis and nginx a test starts (from 20000), so the two
/// never hand out the same port at once.
const LOWEST_TEST_PORT: u16 = 10_000;
const TEST_PORTS_END: u16 = 20_000;

/// Picks a loopback port for a server the test is about to start, never one this test process
/// handed out before (tests run in parallel threads, and a test that restarts a binary on a new
/// port many times, tests/store_faults.rs kill -9, would otherwise be handed a port another
/// test's binary is about to bind).
///
/// The port is below the kernel's ephemeral range (as scripts/lib.sh's ports are), so neither
/// an outgoing connection's source port nor another `bind(0)` can take it between this call and
/// the server's bind. And it is checked free with a socket that is bound but never listens:
/// a child spawned by another thread holds a copy of every open descriptor from its fork until
/// its exec, and a *listening* probe socket kept alive that way accepts the test's first
/// connections to the port and then resets them (a test once took such a reset for its own
/// server failing to serve). A bound socket with `SO_REUSEADDR` accepts nothing and, the server's
/// listener having `SO_REUSEADDR` too, does not keep the server off the port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poison| poison.into_inner());
    let end = TEST_PORTS_END.min(ephemeral_range_start());
    let span = u32::from(end - LOWEST_TEST_PORT);
    // Each process starts somewhere else in the span, so that two test processes at once (by
    // hand; cargo runs one test binary at a time) rarely try the same ports.
    let start = std::process::id().wrapping_mul(7_919) % span;
    for step in 0..span {
        let port = LOWEST_TEST_PORT + ((start + step) % span) as u16;
        if !given.contains(&port) && bindable(port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port from {LOWEST_TEST_PORT} to {end}");
}

/// The first port of the kernel's ephemeral range (32768 if it cannot be read or leaves too
/// little room below it).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > LOWEST_TEST_PORT + 1_000)
        .unwrap_or(32_768)
}

/// Whether a server could bind `port` on 127.0.0.1 now: nothing listens there, and no socket
/// without `SO_REUSEADDR` (an outgoing connection's end) holds it. Bound, never listening.
fn bindable(port: u16) -> bool {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return false;
    };
    socket.set_reuseaddr(true).is_ok()
        && socket
            .bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .is_ok()
}

/// The real `hubbub` binary, run as a child process; killed on drop by its PID.
pub struct Binary {
    pub addr: SocketAddr,
    child: std::process::Child,
}

impl Binary {
    /// Starts `hubbub serve` on `port` with its database in `data`, and waits until it answers.
    /// Rate limiting is off (`HUBBUB_RATE_LIMIT=0`) unless `extra` passes `--rate-limit`.
    pub async fn start(data: &Path, port: u16, extra: &[&str]) -> Binary {
        Self::spawn(data, port, extra, None).await
    }

    /// [`Binary::start`] with its log at `info` written to `log` instead of the test's stderr.
    pub async fn start_logging_to(data: &Path, port: u16, extra: &[&str], log: &Path) -> Binary {
        Self::spawn(data, port, extra, Some(log)).await
    }

    async fn spawn(data: &Path, port: u16, extra: &[&str], log: Option<&Path>) -> Binary {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let (level, stderr) = match log {
            Some(path) => ("info", Stdio::from(std::fs::File::create(path).unwrap())),
            None => ("warn", Stdio::inherit()),
        };
        // HUBBUB_TEST_NODE_LOG (e.g. `hubbub=debug`) raises the level to chase a failure.
        let level = std::env::var("HUBBUB_TEST_NODE_LOG").unwrap_or_else(|_| level.to_owned());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
            .arg("serve")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--data")
            .arg(data)
            .args(pg::binary_db_args(data, extra).await) // HUBBUB_TEST_DB: its own PostgreSQL schema
            .args(extra)
            .env("HUBBUB_LOG", level)
            .env("HUBBUB_RATE_LIMIT", "0")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut binary = Binary { addr, child };
        for _ in 0..200 {
            if let Some(status) = binary.child.try_wait().unwrap() {
                panic!("hubbub for {addr} exited while starting: {status}");
            }
            if listening(addr).await {
                // The port is bound before the store opens.
                if let Err(cause) = pg::serving(addr).await {
                    let status = binary.child.try_wait().unwrap();
                    let log = log.map(std::fs::read_to_string);
                    panic!("{cause}\nexit status: {status:?}\nits log: {log:?}");
                }
                return binary;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("hubbub did not start listening on {addr}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the child by PID.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the child to exit and returns its status.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("hubbub did not exit");
    }

    pub async fn client(&self, query: &str) -> Client {
        Client::connect(self.addr, query).await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh scratch directory.
pub fn scratch() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// A protocol v1 WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<ClientStream>,
}

/// A test client's TCP stream, shared with a registry of the streams open to each server
/// address, so that [`TestServer::stop`] can end its clients' side.
///
/// Tests stop their server at the end and drop their clients after that, unread. A stopping
/// server closes each socket with 1001 and then waits, up to its close timeout (2 s), for the
/// peer's close frame or end of stream before dropping the socket (closing with unread input
/// would make the kernel send a reset that can destroy the close frame). A client nobody reads
/// never answers, so every test paid those 2 s at its stop. `stop` now shuts the write side of
/// its clients' streams once the server is told to stop: the server reads the end of the stream
/// and drops the socket at once. Nothing else changes for the client: it is read and written as
/// before, and dropping it still closes the connection (the registry holds only weak references).
pub struct ClientStream(Arc<TcpStream>);

/// Open client streams by the server address they connected to.
static CLIENT_STREAMS: std::sync::Mutex<Vec<(SocketAddr, Weak<TcpStream>)>> =
    std::sync::Mutex::new(Vec::new());

impl ClientStream {
    /// Registers `tcp`, connected to `server`.
    pub fn new(server: SocketAddr, tcp: TcpStream) -> ClientStream {
        let tcp = Arc::new(tcp);
        let mut streams = CLIENT_STREAMS
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        streams.retain(|(_, stream)| stream.strong_count() > 0);
        streams.push((server, Arc::downgrade(&tcp)));
        ClientStream(tcp)
    }

    /// Shuts the write side of every open client stream to `server` (the server sees the end
    /// of the stream), and forgets them.
    pub fn end_all_to(server: SocketAddr) {
        let mut streams = CLIENT_STREAMS
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        streams.retain(|(addr, stream)| {
            if *addr != server {
                return stream.strong_count() > 0;
            }
            if let Some(tcp) = stream.upgrade() {
                // Fails only when the connection is gone already.
                let _ = socket2::SockRef::from(&*tcp).shutdown(std::net::Shutdown::Write);
            }
            false
        });
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(data) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.0).shutdown(std::net::Shutdown::Write))
    }
}

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    WithoutCloseFrame,
}

impl Client {
    /// Connects to `/ws?{query}` and consumes the `welcome` frame.
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        let mut client = Client::connect_raw(addr, "/ws", query).await;
        let welcome = client.recv().await;
        assert_eq!(
            welcome["type"], "welcome",
            "first frame is welcome: {welcome}"
        );
        client
    }

    /// Connects to any WebSocket path without reading anything.
    pub async fn connect_raw(addr: SocketAddr, path: &str, query: &str) -> Client {
        let url = if query.is_empty() {
            format!("ws://{addr}{path}")
        } else {
            format!("ws://{addr}{path}?{query}")
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, ClientStream::new(addr, tcp))
            .await
            .unwrap();
        Client { ws }
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame as JSON (pings are skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame arrives in time")
                .expect("the connection is open")
                .expect("the frame is valid");
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Skips frames until one of `kind` arrives; a timeout names the frames skipped.
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let mut skipped = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await;
            let Ok(message) = next else {
                panic!("no {kind:?} frame within {WAIT:?}; skipped: {skipped:?}");
            };
            match message
                .expect("the connection is open")
                .expect("the frame is valid")
            {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == kind {
                        return frame;
                    }
                    skipped.push(frame);
                }
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `frame` with the `ref` "req" and returns its `ack`, skipping other frames; fails
    /// the test on an `error` for it.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        frame["ref"] = json!("req");
        self.send(frame.clone()).await;
        loop {
            let answer = self.recv().await;
            match answer["type"].as_str() {
                Some("ack") if answer["ref"] == "req" => return answer,
                Some("error") if answer["ref"] == "req" => panic!("{frame} refused: {answer}"),
                _ => continue,
            }
        }
    }

    /// Skips frames until an `error`, and asserts its code and echoed `ref`.
    pub async fn expect_error(&mut self, code: &str, reference: Value) {
        let error = self.recv_type("error").await;
        assert_eq!(error["data"]["code"], code, "{error}");
        assert_eq!(error["ref"], reference, "{error}");
    }

    /// Skips frames until a `msg`, returning it.
    pub async fn recv_msg(&mut self) -> Value {
        self.recv_type("msg").await
    }

    /// Every text frame that arrives within `wait`.
    pub async fn frames_within(&mut self, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if let Message::Text(text) = message {
                frames.push(serde_json::from_str(text.as_str()).unwrap());
            }
        }
        frames
    }

    /// Asserts no frame of `kind` arrives within `wait` (other frames are consumed).
    pub async fn assert_no(&mut self, kind: &str, wait: Duration) {
        for frame in self.frames_within(wait).await {
            assert_ne!(frame["type"], kind, "unexpected frame {frame}");
        }
    }

    /// Joins `room` and returns the `joined` frame.
    pub async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        let joined = self.recv_type("joined").await;
        assert_eq!(joined["room"], room);
        joined
    }

    /// Posts `text` to `room` and returns the ack.
    pub async fn post(&mut self, room: &str, text: &str) -> Value {
        self.send_post(room, text).await.unwrap();
        self.recv_type("ack").await
    }

    /// Sends a post of `text` to `room` (with `text` as its `ref`) without reading its answer;
    /// an error once the connection has ended, for tests whose server may die under them.
    pub async fn send_post(
        &mut self,
        room: &str,
        text: &str,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let frame = json!({"type": "msg", "room": room, "data": text, "ref": text});
        self.ws.send(Message::text(frame.to_string())).await
    }

    /// Reads until the server closes, returning the close code.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("connection was not closed in time"),
                Ok(None) | Ok(Some(Err(_))) => return Closed::WithoutCloseFrame,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or(Closed::WithoutCloseFrame, |f| {
                        Closed::Code(u16::from(f.code))
                    });
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The close code a normal close carries, for comparisons.
pub fn code(code: CloseCode) -> Closed {
    Closed::Code(u16::from(code))
}

/// An HTTP client for the API.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Asserts an API error response: its status and the `error.code` of its JSON body, which it
/// returns for further checks.
pub async fn assert_api_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    body
}

/// GETs `url` and parses the JSON body.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// GETs `url` and returns the body text.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// Posts through the HTTP API and returns the new id.
pub async fn api_post(addr: SocketAddr, room: &str, from: &str, text: &str) -> u64 {
    api_post_with(&http(), addr, room, from, text).await
}

/// [`api_post`] with a client of the caller's (tests/reconnect_storm.rs: one that waits longer
/// than [`http`]'s 10 s for an answer from a loaded server).
pub async fn api_post_with(
    http: &reqwest::Client,
    addr: SocketAddr,
    room: &str,
    from: &str,
    text: &str,
) -> u64 {
    let response = http
        .post(format!("http://{addr}/api/rooms/{room}/messages"))
        .json(&json!({"from": from, "data": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["id"].as_u64().unwrap()
}

/// Opens a WebSocket to `path_and_query` with extra request headers, from the loopback address
/// `source` (e.g. 127.0.0.2, so per-IP caps can be tested), without reading anything.
/// Returns the handshake error so refusals before the upgrade can be inspected.
pub async fn try_connect(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
    source: Option<&str>,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(source) = source {
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    }
    let tcp = socket.connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(request, ClientStream::new(addr, tcp)).await?;
    Ok(Client { ws })
}

/// The HTTP status and JSON error code of a refused WebSocket handshake.
pub fn refusal(result: Result<Client, tokio_tungstenite::tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let code = response
                .body()
                .as_ref()
                .and_then(|body| serde_json::from_slice::<Value>(body).ok())
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            (status, code)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other:?}"),
        Ok(_) => panic!("expected an HTTP refusal, the upgrade was accepted"),
    }
}

/// The server's /metrics text.
pub async fn metrics(addr: SocketAddr) -> String {
    http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Reads frames until the answer to a post (`ack` or `error`) arrives.
pub async fn answer(client: &mut Client) -> Value {
    loop {
        let frame = client.recv().await;
        if frame["type"] == "ack" || frame["type"] == "error" {
            return frame;
        }
    }
}

/// Every stored message of `room` by id, read through the HTTP history route.
pub async fn history(addr: SocketAddr, room: &str) -> BTreeMap<u64, String> {
    let mut stored = BTreeMap::new();
    for m in history_messages(addr, room).await {
        let previous = stored.insert(
            m["id"].as_u64().unwrap(),
            m["data"].as_str().unwrap().to_owned(),
        );
        assert!(previous.is_none(), "id {} listed twice", m["id"]);
    }
    stored
}

/// Every stored message of `room` as the HTTP history route lists it (its JSON objects), oldest
/// first: the newest page, then each older one by `before`.
pub async fn history_messages(addr: SocketAddr, room: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut url = format!("http://{addr}/api/rooms/{room}/messages?limit=200");
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let page: Value = http().get(url).send().await.unwrap().json().await.unwrap();
        let messages = page["messages"].as_array().unwrap().clone();
        before = messages.first().and_then(|m| m["id"].as_u64());
        pages.push(messages);
        if page["has_more"] != true {
            return pages.into_iter().rev().flatten().collect();
        }
    }
}

/// How long (real time) a [`HeldClock`] keeps tokio's clock still at most: past it the clock
/// auto-advances again, so a test whose awaited event never comes fails on its own timeouts
/// (`WAIT`) instead of hanging.
pub const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// The granularity of tokio's timers: deadlines are rounded up to it.
pub const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

/// Virtual time for a test whose server runs in this process (issue 21): tokio's clock is paused
/// and held still, so idle timeouts, pings, header timeouts and close timeouts fire only when the
/// test moves time with [`HeldClock::advance_past`], after it has seen the event it waits for (a
/// frame, a close). Deterministic, and a timeout of seconds costs nothing.
///
/// Why held, not plain `tokio::time::pause`: a paused clock auto-advances to the next timer
/// whenever every task is idle, and a task waiting for SQLite's worker thread, PostgreSQL or
/// the kernel looks idle, so a timeout could fire while the answer is on its way. While a
/// blocking task runs tokio does not auto-advance (documented under `tokio::time::pause`), so
/// the clock keeps one running until it is dropped, or for [`HOLD_LIMIT`] of real time.
///
/// Only tokio's clock is virtual: the rate limiters (governor) run on `std::time::Instant`.
/// Needs the current-thread runtime (`#[tokio::test]`), and the real binary cannot use it.
pub struct HeldClock {
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl HeldClock {
    /// Pauses tokio's clock and holds it still. Call it first in the test, before the server
    /// starts, so every timer is on virtual time.
    pub fn hold() -> HeldClock {
        tokio::time::pause();
        let (release, released) = std::sync::mpsc::channel::<()>();
        drop(tokio::task::spawn_blocking(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                released.recv_timeout(HOLD_LIMIT)
            {
                eprintln!(
                    "virtual time was held for {HOLD_LIMIT:?} of real time without the awaited \
                     event; the clock moves on its own again so the test's timeouts end it"
                );
            }
        }));
        HeldClock {
            release: Some(release),
        }
    }

    /// Moves virtual time forward by `by` and a millisecond more, so that every timer set to
    /// fire within `by` of the call fires: tokio rounds a timer's deadline up to the next whole
    /// millisecond, so advancing by exactly `by` would leave a timer set `by` from now pending.
    pub async fn advance_past(&self, by: Duration) {
        tokio::time::advance(by + TIMER_RESOLUTION).await;
    }
}

impl Drop for HeldClock {
    fn drop(&mut self) {
        // The blocking task sees the channel closed and ends; the clock may auto-advance again.
        self.release.take();
    }
}

/// The PostgreSQL server the store contract suites run their PostgreSQL half on:
/// `HUBBUB_TEST_POSTGRES`, else the test script's `HUBBUB_TEST_DB`.
pub fn postgres_server() -> Option<String> {
    std::env::var("HUBBUB_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(pg::test_db)
}

/// For the store contract suites (`#[macro_use] mod common;`): runs each named behaviour once per
/// implementation: `sqlite::NAME` and `postgres::NAME`.
#[allow(unused_macros)]
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    if let Some(db) = super::Db::postgres(stringify!($behaviour)).await {
                        super::$behaviour(db).await;
                    }
                }
            )*
        }
    };
}
