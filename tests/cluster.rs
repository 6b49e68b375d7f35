//! Several nodes on one PostgreSQL database and one Redis act as one chat (issue 18, the broker
//! half). Each test starts two or three in-process servers, each with its own config pointing at
//! the same fresh PostgreSQL schema and at Redis, on a channel of the test's own (tests run in
//! parallel on one Redis), and checks what members on every node receive.
//!
//! Needs `HUBBUB_TEST_POSTGRES` (a PostgreSQL server: scripts/pg.sh) and `HUBBUB_TEST_REDIS`
//! (a Redis: scripts/redis.sh); without them each test prints why it is skipped. The Redis
//! restart test starts a private Redis of its own with scripts/redis.sh (stopped by PID, started
//! again on the same port), so it disturbs no other test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{Client, TestServer, WAIT};
use hubbub::config::{PostgresUrl, Secret};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The PostgreSQL server and the Redis, or `None` after saying why the test is skipped.
fn cluster_env(test: &str) -> Option<(String, String)> {
    let postgres = std::env::var("HUBBUB_TEST_POSTGRES")
        .ok()
        .or_else(common::pg::test_db);
    let redis = std::env::var("HUBBUB_TEST_REDIS").ok();
    match (postgres, redis) {
        (Some(postgres), Some(redis)) => Some((postgres, redis)),
        _ => {
            eprintln!(
                "skipped: {test}: needs HUBBUB_TEST_POSTGRES and HUBBUB_TEST_REDIS \
                 (scripts/test.sh starts both)"
            );
            None
        }
    }
}

/// `n` nodes on one fresh schema, one Redis and the test's own channel.
async fn start_nodes(n: u64, postgres: &str, redis: &str, test: &str) -> Vec<TestServer> {
    let schema = common::pg::fresh_schema_url(postgres).await;
    let channel = format!("hubbub-test:{}:{test}", std::process::id());
    let mut nodes = Vec::new();
    for node_id in 1..=n {
        let (schema, channel) = (schema.clone(), channel.clone());
        let redis = redis.to_owned();
        nodes.push(
            common::start_server_with(move |c| {
                c.postgres = Some(PostgresUrl::new(schema));
                c.broker = Some(Secret::new(redis));
                c.node_id = Some(node_id);
                c.broker_channel = channel;
            })
            .await,
        );
    }
    nodes
}

/// Stops every node at once (each waits for its sockets to close; the clients are gone by then).
async fn stop_all(nodes: Vec<TestServer>) {
    futures_util::future::join_all(nodes.into_iter().map(TestServer::stop)).await;
}

/// A client on `node` that has joined `room`.
async fn member(node: &TestServer, room: &str) -> Client {
    let mut client = node.client("").await;
    client.join(room).await;
    client
}

/// Reads `msg` frames until one with id `last` arrives; returns every one read, in order.
async fn messages_through(client: &mut Client, last: u64) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let msg = client.recv_msg().await;
        let id = msg["id"].as_u64().unwrap();
        got.push(msg);
        if id >= last {
            return got;
        }
    }
}

/// Reads `room` on `node` as a real client does, for as long as a burst lasts: closed as a slow
/// consumer (a node's catch-up after a Redis outage can be more than its outbox holds while the
/// socket is full) it reconnects to the same node and resumes with `since`. Returns every id it
/// received, over all its connections, once it has the id `last` announces.
async fn read_resuming(
    mut client: Client,
    node: std::net::SocketAddr,
    room: &'static str,
    mut last: watch::Receiver<Option<u64>>,
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
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if frame["type"] == "msg" {
                        ids.push(frame["id"].as_u64().unwrap());
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    client = Client::connect(node, "").await;
                    let since = ids.last().copied().unwrap_or(0);
                    client
                        .send(json!({"type": "join", "room": room, "data": {"since": since}}))
                        .await;
                }
                Some(Ok(_)) => {}
            },
            changed = last.changed() => changed.unwrap(),
        }
    }
}

fn ids(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_message_posted_on_one_node_reaches_members_on_every_node_once_with_the_same_id() {
    let test = "one_message_every_node";
    let Some((postgres, redis)) = cluster_env(test) else {
        return;
    };
    let nodes = start_nodes(3, &postgres, &redis, test).await;
    let mut members = Vec::new();
    for node in &nodes {
        members.push(member(node, "lobby").await);
    }
    let mut poster = member(&nodes[0], "lobby").await;
    let first = poster.post("lobby", "hello from node 1").await;
    let second = poster.post("lobby", "and again").await;
    assert_eq!(first["id"], 1);
    assert_eq!(second["id"], 2);
    for member in &mut members {
        let got = messages_through(member, 2).await;
        assert_eq!(ids(&got), vec![1, 2], "each once, in id order");
        assert_eq!(got[0]["data"], "hello from node 1");
        assert_eq!(got[1]["data"], "and again");
    }
    drop((members, poster));
    stop_all(nodes).await;
}

#[tokio::test]
async fn concurrent_posts_from_every_node_reach_every_member_on_every_node_once_in_id_order() {
    let test = "concurrent_posts";
    let Some((postgres, redis)) = cluster_env(test) else {
        return;
    };
    const PER_POSTER: usize = 40;
    let nodes = start_nodes(3, &postgres, &redis, test).await;
    let mut members = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            members.push(member(node, "busy").await);
        }
    }
    let mut posters = JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut poster = member(node, "busy").await;
        posters.spawn(async move {
            for i in 0..PER_POSTER {
                poster.post("busy", &format!("node{n}-{i}")).await;
            }
            poster
        });
    }
    let mut done = Vec::new();
    while let Some(poster) = posters.join_next().await {
        done.push(poster.unwrap());
    }
    let total = (PER_POSTER * nodes.len()) as u64;
    // One more after every ack: whatever a member receives after `total` is this one, so a
    // duplicate or a late straggler would show up before it.
    let sentinel = done[0].post("busy", "sentinel").await;
    assert_eq!(sentinel["id"], total + 1);
    for member in &mut members {
        let got = messages_through(member, total + 1).await;
        assert_eq!(
            ids(&got),
            (1..=total + 1).collect::<Vec<_>>(),
            "every message once, in id order"
        );
        let texts: HashSet<&str> = got.iter().map(|m| m["data"].as_str().unwrap()).collect();
        assert_eq!(texts.len() as u64, total + 1, "no text twice");
    }
    drop((members, done));
    stop_all(nodes).await;
}

#[tokio::test]
async fn a_client_resumes_with_since_on_another_node() {
    let test = "resume_elsewhere";
    let Some((postgres, redis)) = cluster_env(test) else {
        return;
    };
    let nodes = start_nodes(2, &postgres, &redis, test).await;
    let mut poster = member(&nodes[0], "lobby").await;
    for text in ["one", "two", "three", "four", "five"] {
        poster.post("lobby", text).await;
    }
    // The client saw up to 2 on node 1, lost its connection and comes back on node 2.
    let mut resumed = nodes[1].client("").await;
    resumed
        .send(json!({"type": "join", "room": "lobby", "data": {"since": 2}}))
        .await;
    let joined = resumed.recv_type("joined").await;
    assert_eq!(joined["data"]["last_id"], 5);
    let replay = messages_through(&mut resumed, 5).await;
    assert_eq!(ids(&replay), vec![3, 4, 5]);
    assert_eq!(replay[0]["data"], "three");
    // And it is live on node 2 from there: the next post on node 1 arrives once.
    poster.post("lobby", "six").await;
    let live = messages_through(&mut resumed, 6).await;
    assert_eq!(ids(&live), vec![6]);
    drop((poster, resumed));
    stop_all(nodes).await;
}

/// A private Redis for one test, stopped by PID when dropped.
struct PrivateRedis {
    dir: tempfile::TempDir,
    url: String,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().unwrap();
        let url = redis_script("start", dir.path()).await;
        PrivateRedis { dir, url }
    }

    async fn stop(&self) {
        redis_script("stop", self.dir.path()).await;
    }

    /// Starts it again on the same port (the script remembers it in its directory).
    async fn restart(&self) {
        let url = redis_script("start", self.dir.path()).await;
        assert_eq!(url, self.url, "back on the same port");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg("scripts/redis.sh")
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

async fn redis_script(action: &str, dir: &Path) -> String {
    let output = tokio::process::Command::new("bash")
        .arg("scripts/redis.sh")
        .arg(action)
        .arg(dir)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/redis.sh {action}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn nothing_acked_is_missing_for_anyone_after_redis_restarts_mid_burst() {
    let test = "redis_restart";
    let Some((postgres, _shared_redis)) = cluster_env(test) else {
        return;
    };
    /// Acks awaited before Redis stops, while it is down, and after it is back.
    const STEP: u64 = 30;
    let redis = PrivateRedis::start().await;
    let nodes = start_nodes(3, &postgres, &redis.url, test).await;
    // Every member reads along (and resumes if closed), as clients do.
    let (last_tx, last_rx) = watch::channel(None);
    let mut members = JoinSet::new();
    for node in &nodes {
        for _ in 0..2 {
            let client = member(node, "burst").await;
            members.spawn(read_resuming(client, node.addr, "burst", last_rx.clone()));
        }
    }
    // Nodes 1 and 2 post until told to stop; node 3 only listens, so what its members miss
    // while Redis is down can only come back through its catch-up from the store afterwards.
    let (progress, mut acked) = watch::channel(0u64);
    let (finish, finished) = watch::channel(false);
    let mut posters = JoinSet::new();
    for node in &nodes[..2] {
        let mut poster = member(node, "burst").await;
        let progress = progress.clone();
        let finished = finished.clone();
        posters.spawn(async move {
            let mut ids = Vec::new();
            while !*finished.borrow() {
                let ack = poster.post("burst", &format!("p{}", ids.len())).await;
                assert_eq!(ack["type"], "ack", "every post is acked: {ack}");
                ids.push(ack["id"].as_u64().unwrap());
                progress.send_modify(|n| *n += 1);
            }
            (poster, ids)
        });
    }
    drop(progress);
    acked.wait_for(|n| *n >= STEP).await.unwrap();
    redis.stop().await;
    let at_stop = *acked.borrow();
    acked
        .wait_for(|n| *n >= at_stop + STEP)
        .await
        .expect("posts are acked while Redis is down");
    redis.restart().await;
    let at_restart = *acked.borrow();
    acked
        .wait_for(|n| *n >= at_restart + STEP)
        .await
        .expect("posts are acked after Redis is back");
    finish.send_replace(true);
    let mut acked_ids = Vec::new();
    let mut done = Vec::new();
    while let Some(result) = posters.join_next().await {
        let (poster, ids) = result.unwrap();
        acked_ids.extend(ids);
        done.push(poster);
    }
    let total = acked_ids.len() as u64;
    acked_ids.sort_unstable();
    assert_eq!(acked_ids, (1..=total).collect::<Vec<_>>(), "ids gapless");
    let sentinel = done[0].post("burst", "sentinel").await;
    assert_eq!(sentinel["id"], total + 1);
    last_tx.send_replace(Some(total + 1));
    let mut n = 0;
    while let Some(got) = tokio::time::timeout(WAIT * 3, members.join_next())
        .await
        .expect("every member caught up in time")
    {
        n += 1;
        assert_eq!(
            got.unwrap(),
            (1..=total + 1).collect::<Vec<_>>(),
            "member {n}: every acked message once, in id order"
        );
    }
    assert_eq!(n, 6);
    drop(done);
    stop_all(nodes).await;
    drop(redis);
}

#[tokio::test]
async fn a_broker_with_a_sqlite_database_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = hubbub::Config {
        data_dir: dir.path().to_path_buf(),
        broker: Some(Secret::new("redis://127.0.0.1:1")),
        ..hubbub::Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = hubbub::serve(config, listener, std::future::pending())
        .await
        .expect_err("refused");
    let shown = err.to_string();
    assert!(
        shown.contains("--broker needs a database every node shares"),
        "{shown}"
    );
    assert!(
        !dir.path().join("hubbub.db").exists(),
        "refused before any file was made"
    );
}
