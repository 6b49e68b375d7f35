//! `/readyz` (issue 18): 200 with a JSON body while the node can take new clients; 503 naming
//! what is not ready while the store does not answer (a hung database included: the probe is
//! bounded) or the broker is cut off from the other nodes; 200 again once they are back.
//! `/healthz` stays a liveness check throughout.
//!
//! The store and broker faults need PostgreSQL (`HUBBUB_TEST_POSTGRES` or `HUBBUB_TEST_DB`, as
//! scripts/test.sh sets them; without, those tests print why they are skipped). SQLite is inside
//! the process: its ping fails only when the database file was deleted or replaced, which
//! tests/store_faults.rs covers.
//!
//! - **Hung database**: the server reaches PostgreSQL through a relay on loopback that this test
//!   runs; stopping the relay's traffic (every byte held, both ways, connections left open) is a
//!   database that stops answering, as behind a dead network path. Letting it flow again is the
//!   database coming back, deterministically and without disturbing the PostgreSQL other tests
//!   share. **Database down**: the relay closes every connection and each new one at once.
//! - **Broker cut off**: a private Redis (scripts/redis.sh, stopped by PID) whose port is then
//!   free: the server starts with `--broker` pointing there, and the Redis is started again on
//!   the same port.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::PrivateRedis;
use common::{WAIT, http};
use hubbub::config::{PostgresUrl, Secret};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a test waits for the node to become ready again after a fault ends: the broker
/// resubscribes within its backoff (at most 2 s), a database connection resumes at once.
const RECOVERY: Duration = Duration::from_secs(20);

/// `GET /readyz`: status and JSON body.
async fn readyz(addr: SocketAddr) -> (u16, Value) {
    let response = http()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("/readyz answers (a probe must never hang)");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Asks `/readyz` until it answers `status`, within `within`; returns that answer's body.
async fn readyz_until(addr: SocketAddr, status: u16, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let (got, body) = readyz(addr).await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {got} {body} after {within:?}, waiting for {status}"
        );
    }
}

/// `GET /healthz` is 200.
async fn assert_live(addr: SocketAddr) {
    let response = http()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "/healthz stays a liveness check");
}

/// The PostgreSQL server of this run, or `None` after saying why `test` is skipped.
fn postgres(test: &str) -> Option<String> {
    let url = common::pg::test_server();
    if url.is_none() {
        eprintln!(
            "skipped: {test}: needs HUBBUB_TEST_POSTGRES (a PostgreSQL server; scripts/test.sh \
             starts one)"
        );
    }
    url
}

/// A server on a fresh schema of `postgres` that reaches its database only through a [`Relay`]
/// of its own, once it serves.
async fn server_behind_relay(postgres: &str) -> (common::TestServer, Relay) {
    let schema = common::pg::fresh_schema_url(postgres).await;
    let relay = Relay::start(&schema).await;
    let through_relay = relay.url(&schema);
    let server = common::start_server_with(move |c| {
        c.postgres = Some(PostgresUrl::new(through_relay));
    })
    .await;
    common::pg::until_serving(server.addr).await;
    (server, relay)
}

/// Lets the relay's traffic flow again and asserts the node reports itself ready, its store
/// `ok`, within [`RECOVERY`]; then stops both.
async fn ready_again_once_the_relay_flows(server: common::TestServer, relay: Relay) {
    relay.flow();
    let body = readyz_until(server.addr, 200, RECOVERY).await;
    assert_eq!(body["store"], "ok", "{body}");
    server.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_healthy_node_is_ready() {
    let server = common::start_server().await;
    let (status, body) = readyz(server.addr).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "ready": true,
            "not_ready": [],
            "store": "ok",
            "broker": "ok",
            "draining": false,
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn readyz_needs_no_token_no_origin_and_no_rate_limit_budget() {
    let server = common::start_server_with(|c| {
        c.auth_secret = Some(Secret::new("a-secret-of-sixteen-bytes"));
        c.rate_limit = 1;
        c.rate_burst = 1;
    })
    .await;
    // The API wants a token here, and allows one request per second per address.
    let api = http().get(server.url("/api/rooms")).send().await.unwrap();
    assert_eq!(api.status(), 401);
    for _ in 0..10 {
        let response = http()
            .get(server.url("/readyz"))
            .header("origin", "https://elsewhere.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_hung_database_makes_the_node_unready_and_its_return_ready_again() {
    let Some(postgres) =
        postgres("a_hung_database_makes_the_node_unready_and_its_return_ready_again")
    else {
        return;
    };
    let (server, relay) = server_behind_relay(&postgres).await;
    let (status, body) = readyz(server.addr).await;
    assert_eq!((status, &body["store"]), (200, &json!("ok")), "{body}");

    relay.hold();
    let body = readyz_until(server.addr, 503, WAIT).await;
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["not_ready"], json!(["store"]), "{body}");
    assert_eq!(body["store"], "timed_out", "{body}");
    assert_eq!(body["broker"], "ok", "{body}");
    assert_live(server.addr).await;

    ready_again_once_the_relay_flows(server, relay).await;
}

#[tokio::test]
async fn a_database_that_goes_down_makes_the_node_unready_and_its_return_ready_again() {
    let Some(postgres) =
        postgres("a_database_that_goes_down_makes_the_node_unready_and_its_return_ready_again")
    else {
        return;
    };
    let (server, relay) = server_behind_relay(&postgres).await;
    readyz_until(server.addr, 200, WAIT).await;

    relay.cut();
    let body = readyz_until(server.addr, 503, WAIT).await;
    assert_eq!(body["not_ready"], json!(["store"]), "{body}");
    // Refused at once or, while the pool keeps retrying its connection, not within the bound.
    assert!(
        body["store"] == "unavailable" || body["store"] == "timed_out",
        "{body}"
    );
    assert_live(server.addr).await;

    ready_again_once_the_relay_flows(server, relay).await;
}

#[tokio::test]
async fn a_disconnected_broker_makes_the_node_unready_and_its_return_ready_again() {
    let Some(postgres) =
        postgres("a_disconnected_broker_makes_the_node_unready_and_its_return_ready_again")
    else {
        return;
    };
    let redis = PrivateRedis::start().await;
    // Stopped: its port is now one where nothing listens, remembered for the restart.
    redis.stop().await;
    let schema = common::pg::fresh_schema_url(&postgres).await;
    let (url, channel) = (
        redis.url.clone(),
        format!("hubbub-test:{}:readyz", std::process::id()),
    );
    let server = common::start_server_with(move |c| {
        c.postgres = Some(PostgresUrl::new(schema));
        c.broker = Some(Secret::new(url));
        c.broker_channel = channel;
    })
    .await;
    common::pg::until_serving(server.addr).await;

    let (status, body) = readyz(server.addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["not_ready"], json!(["broker"]), "{body}");
    assert_eq!(body["broker"], "disconnected", "{body}");
    assert_eq!(body["store"], "ok", "{body}");
    assert_live(server.addr).await;

    redis.restart().await;
    let body = readyz_until(server.addr, 200, RECOVERY).await;
    assert_eq!(body["broker"], "ok", "{body}");
    server.stop().await;
    redis.stop().await;
}

/// A TCP relay on loopback to the PostgreSQL server: forwards every connection's bytes both ways
/// while flowing; while held it accepts and reads but forwards nothing, so the database looks
/// hung to the server (its connections stay open and silent); while cut it closes every
/// connection and each new one at once, as a database that went down.
struct Relay {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: JoinSet<()>,
}

/// What the relay does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flow,
    Hold,
    Cut,
}

impl Relay {
    /// A relay to the host and port of the PostgreSQL URL `url` (`postgres://user@host:port/..`).
    async fn start(url: &str) -> Relay {
        let authority = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?']).next())
            .unwrap();
        let host_port = authority.rsplit('@').next().unwrap();
        let upstream: SocketAddr = tokio::net::lookup_host(host_port)
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watching) = watch::channel(Mode::Flow);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                if *watching.borrow() == Mode::Cut {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pipes.spawn(pipe(client_read, server_write, watching.clone()));
                pipes.spawn(pipe(server_read, client_write, watching.clone()));
            }
        });
        Relay { addr, mode, tasks }
    }

    /// `url` with its host and port replaced by the relay's.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}{tail}", self.addr)
    }

    /// Stops forwarding: the database hangs.
    fn hold(&self) {
        self.mode.send_replace(Mode::Hold);
    }

    /// Closes every connection and refuses new ones: the database is down.
    fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Forwards again (what was held first).
    fn flow(&self) {
        self.mode.send_replace(Mode::Flow);
    }

    async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Copies `from` to `to` while the relay flows; holds what it read while held; ends (closing
/// both halves) when cut.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|mode| *mode == Mode::Cut) => return,
        };
        match mode.wait_for(|mode| *mode != Mode::Hold).await {
            Ok(mode) if *mode == Mode::Flow => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
