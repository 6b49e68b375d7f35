//! Several nodes on one PostgreSQL database and one Redis act as one chat (issue 18: messages,
//! presence and typing). Each test starts two or three in-process servers, each with its own
//! config pointing at the same fresh PostgreSQL schema and at Redis, on a channel of the test's
//! own (tests run in parallel on one Redis), and checks what members on every node receive.
//! A node that must die without a goodbye runs on a tokio runtime of its own, which the test
//! drops at once ([`CrashableNode::crash`]): its tasks and sockets vanish mid-flight as in a
//! `kill -9`, and nothing of its shutdown path runs.
//!
//! Needs `HUBBUB_TEST_POSTGRES` (a PostgreSQL server: scripts/pg.sh) and `HUBBUB_TEST_REDIS`
//! (a Redis: scripts/redis.sh); without them each test prints why it is skipped. The Redis
//! restart test starts a private Redis of its own with scripts/redis.sh (stopped by PID, started
//! again on the same port), so it disturbs no other test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{ClusterEnv, PrivateRedis, nodes_env, read_resuming, until_readyz};
use common::{Client, TestServer, WAIT};
use hubbub::config::Config;
use hubbub::config::{PostgresUrl, Secret};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// One fresh schema, one Redis and the test's own channel: what every node of a test shares.
#[derive(Clone)]
struct Cluster {
    schema: String,
    redis: String,
    channel: String,
}

impl Cluster {
    async fn new(postgres: &str, redis: &str, test: &str) -> Cluster {
        Cluster {
            schema: common::pg::fresh_schema_url(postgres).await,
            redis: redis.to_owned(),
            channel: format!("hubbub-test:{}:{test}", std::process::id()),
        }
    }

    /// A cluster for `test` on the run's PostgreSQL and Redis, or `None` after saying why the
    /// test is skipped.
    async fn for_test(test: &str) -> Option<Cluster> {
        let ClusterEnv { postgres, redis } = nodes_env(test)?;
        Some(Cluster::new(&postgres, &redis, test).await)
    }

    /// Points `config` at the cluster as node `node_id`.
    fn configure(&self, config: &mut Config, node_id: u64) {
        config.postgres = Some(PostgresUrl::new(self.schema.clone()));
        config.broker = Some(Secret::new(self.redis.clone()));
        config.node_id = Some(node_id);
        config.broker_channel = self.channel.clone();
    }

    /// An in-process node, after `adjust` had its say on the config.
    async fn node(&self, node_id: u64, adjust: impl FnOnce(&mut Config) + Send) -> TestServer {
        let cluster = self.clone();
        common::start_server_with(move |c| {
            cluster.configure(c, node_id);
            adjust(c);
        })
        .await
    }

    /// A node on a runtime of its own, which [`CrashableNode::crash`] drops.
    fn crashable_node(&self, node_id: u64, adjust: impl FnOnce(&mut Config)) -> CrashableNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            rate_limit: 0,
            ..Config::default()
        };
        self.configure(&mut config, node_id);
        adjust(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            hubbub::serve(config, listener, std::future::pending()).await
        });
        CrashableNode {
            addr,
            runtime: Some(runtime),
            _dir: dir,
        }
    }
}

/// A node that can die the way a killed process does (see the module doc).
struct CrashableNode {
    addr: std::net::SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl CrashableNode {
    async fn client(&self, query: &str) -> Client {
        Client::connect(self.addr, query).await
    }

    /// Drops every task of the node where it stands: no goodbye, no cleanup, sockets closed
    /// by the kernel as for a killed process.
    fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for CrashableNode {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `n` nodes for `test` on the run's PostgreSQL and Redis ([`start_nodes`]), or `None` after
/// saying why the test is skipped.
async fn nodes_for(test: &str, n: u64) -> Option<Vec<TestServer>> {
    let ClusterEnv { postgres, redis } = nodes_env(test)?;
    Some(start_nodes(n, &postgres, &redis, test).await)
}

/// `n` nodes on one fresh schema, one Redis and the test's own channel.
async fn start_nodes(n: u64, postgres: &str, redis: &str, test: &str) -> Vec<TestServer> {
    start_nodes_with(n, postgres, redis, test, |_| {}).await
}

/// [`start_nodes`] with `adjust` applied to every node's config.
async fn start_nodes_with(
    n: u64,
    postgres: &str,
    redis: &str,
    test: &str,
    adjust: impl Fn(&mut Config) + Clone + Send,
) -> Vec<TestServer> {
    let cluster = Cluster::new(postgres, redis, test).await;
    let mut nodes = Vec::new();
    for node_id in 1..=n {
        nodes.push(cluster.node(node_id, adjust.clone()).await);
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

fn ids(messages: &[Value]) -> Vec<u64> {
    messages.iter().map(|m| m["id"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn a_message_posted_on_one_node_reaches_members_on_every_node_once_with_the_same_id() {
    let test = "one_message_every_node";
    let Some(nodes) = nodes_for(test, 3).await else {
        return;
    };
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
    const PER_POSTER: usize = 40;
    let Some(nodes) = nodes_for(test, 3).await else {
        return;
    };
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
    let Some(nodes) = nodes_for(test, 2).await else {
        return;
    };
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

#[tokio::test]
async fn nothing_acked_is_missing_for_anyone_after_redis_restarts_mid_burst() {
    let test = "redis_restart";
    let Some(ClusterEnv { postgres, .. }) = nodes_env(test) else {
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
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        broker: Some(Secret::new("redis://127.0.0.1:1")),
        ..Config::default()
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

/// A client named `name` on the node at `addr` that has joined `room`.
async fn named_member(addr: std::net::SocketAddr, name: &str, room: &str) -> (Client, Value) {
    let mut client = Client::connect(addr, &format!("name={name}")).await;
    let joined = client.join(room).await;
    (client, joined)
}

/// Reads until a `presence` frame of `room` with `data[key] == name` arrives ("joined" or
/// "left"), failing after `deadline`; returns every `presence` frame read, that one last.
async fn presence_of(
    client: &mut Client,
    room: &str,
    key: &str,
    name: &str,
    deadline: Duration,
) -> Vec<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    // Not `Client::recv`, whose own wait for each frame is shorter than some deadlines here.
    let until = tokio::time::Instant::now() + deadline;
    let mut read = Vec::new();
    loop {
        let message = tokio::time::timeout_at(until, client.ws.next())
            .await
            .unwrap_or_else(|_| panic!("no presence {key} {name} in {room} within {deadline:?}"))
            .expect("the connection is open")
            .expect("the frame is valid");
        let Message::Text(text) = message else {
            continue;
        };
        let frame: Value = serde_json::from_str(text.as_str()).unwrap();
        if frame["type"] != "presence" {
            continue;
        }
        let found = frame["room"] == room && frame["data"][key] == name;
        read.push(frame);
        if found {
            return read;
        }
    }
}

/// Reads until a `presence` `{"count": count}` of `room` arrives.
async fn count_of(client: &mut Client, room: &str, count: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = client.recv_type("presence").await;
            if frame["room"] == room && frame["data"]["count"] == count {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no count {count} in {room} in time"));
}

/// The sorted names a `members` request answers, and the count.
async fn members_of(client: &mut Client, room: &str) -> (Vec<String>, u64) {
    client.send(json!({"type": "members", "room": room})).await;
    let frame = client.recv_type("members").await;
    let names = frame["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    (names, frame["data"]["count"].as_u64().unwrap())
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

/// Returns once `client`, whose `join` was answered with `joined`, knows `name` is a member:
/// at once if `joined` lists `name`, else when the `presence` frame of `name`'s arrival comes
/// (the write of `name`'s arrival on another node may leave after that of `client`'s own).
async fn until_listed(client: &mut Client, joined: &Value, name: &str) {
    let room = joined["room"].as_str().unwrap();
    if !names(&joined["data"]["members"]).contains(&name) {
        presence_of(client, room, "joined", name, WAIT).await;
    }
}

#[tokio::test]
async fn presence_frames_cross_nodes_also_for_members_with_the_same_connection_id() {
    let test = "presence_frames";
    let Some(nodes) = nodes_for(test, 2).await else {
        return;
    };
    // Both are their node's first connection, so both have connection id 1: a remote event
    // that skipped its origin's id would skip bob.
    let (mut bob, _) = named_member(nodes[1].addr, "bob", "lobby").await;
    let (mut alice, _) = named_member(nodes[0].addr, "alice", "lobby").await;
    presence_of(&mut bob, "lobby", "joined", "alice", WAIT).await;
    alice.send(json!({"type": "leave", "room": "lobby"})).await;
    presence_of(&mut bob, "lobby", "left", "alice", WAIT).await;
    drop((alice, bob));
    stop_all(nodes).await;
}

#[tokio::test]
async fn joined_and_members_include_members_on_other_nodes() {
    let test = "joined_members";
    let Some(nodes) = nodes_for(test, 2).await else {
        return;
    };
    let (mut alice, _) = named_member(nodes[0].addr, "alice", "lobby").await;
    let (mut bob, joined) = named_member(nodes[1].addr, "bob", "lobby").await;
    // Each node has the other's member once its member has heard of it.
    until_listed(&mut bob, &joined, "alice").await;
    presence_of(&mut alice, "lobby", "joined", "bob", WAIT).await;
    let (mut carol, joined) = named_member(nodes[1].addr, "carol", "lobby").await;
    assert_eq!(names(&joined["data"]["members"]), ["alice", "bob", "carol"]);
    assert_eq!(joined["data"]["count"], 3);
    let everyone = (vec!["alice".into(), "bob".into(), "carol".into()], 3);
    assert_eq!(members_of(&mut carol, "lobby").await, everyone);
    presence_of(&mut alice, "lobby", "joined", "carol", WAIT).await;
    assert_eq!(members_of(&mut alice, "lobby").await, everyone);
    let rooms = common::get_json(nodes[0].url("/api/rooms")).await;
    assert_eq!(
        rooms,
        json!([{"room": "lobby", "members": 3, "last_id": 0}])
    );
    // A rename on one node is a leave and a join on the other.
    bob.send(json!({"type": "nick", "data": "bobby"})).await;
    presence_of(&mut alice, "lobby", "left", "bob", WAIT).await;
    presence_of(&mut alice, "lobby", "joined", "bobby", WAIT).await;
    let renamed = (vec!["alice".into(), "bobby".into(), "carol".into()], 3);
    assert_eq!(members_of(&mut alice, "lobby").await, renamed);
    drop((alice, bob, carol));
    stop_all(nodes).await;
}

#[tokio::test]
async fn typing_crosses_nodes_and_is_not_echoed_to_the_typer() {
    let test = "typing";
    let Some(nodes) = nodes_for(test, 2).await else {
        return;
    };
    let (mut alice, _) = named_member(nodes[0].addr, "alice", "lobby").await;
    let (mut bob, _) = named_member(nodes[1].addr, "bob", "lobby").await;
    alice.send(json!({"type": "typing", "room": "lobby"})).await;
    let typing = bob.recv_type("typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "room": "lobby", "from": "alice"})
    );
    // Bob's typing is published after alice's reached him, so Redis hands it to node 1 after
    // alice's own: had anything echoed alice's typing back to her, it would come first.
    bob.send(json!({"type": "typing", "room": "lobby"})).await;
    let typing = alice.recv_type("typing").await;
    assert_eq!(typing["from"], "bob", "the typer does not hear itself");
    drop((alice, bob));
    stop_all(nodes).await;
}

/// Heartbeat and expiry short enough that a test waits seconds, not the production 15 s.
fn quick_presence(config: &mut Config) {
    config.hub.presence_heartbeat = Duration::from_millis(250);
    config.hub.presence_expiry = Duration::from_secs(5);
}

#[tokio::test]
async fn the_members_of_a_node_that_dies_without_goodbye_leave_everyones_view() {
    let test = "node_dies";
    let Some(cluster) = Cluster::for_test(test).await else {
        return;
    };
    let survivor = cluster.node(1, quick_presence).await;
    let doomed = cluster.crashable_node(2, quick_presence);
    let (mut watcher, _) = named_member(survivor.addr, "watcher", "lobby").await;
    let mut ghost = doomed.client("name=ghost").await;
    ghost.join("lobby").await;
    presence_of(&mut watcher, "lobby", "joined", "ghost", WAIT).await;
    doomed.crash();
    // The promise is 30 s; with the production settings it is at most 15.5 s after the last
    // heartbeat. Here expiry is 5 s, twenty heartbeats, so a busy machine does not expire a
    // live node.
    presence_of(
        &mut watcher,
        "lobby",
        "left",
        "ghost",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        members_of(&mut watcher, "lobby").await,
        (vec!["watcher".into()], 1)
    );
    drop((watcher, ghost));
    survivor.stop().await;
}

#[tokio::test]
async fn a_node_restarted_with_the_same_id_leaves_no_ghosts() {
    let test = "node_restarts";
    let Some(cluster) = Cluster::for_test(test).await else {
        return;
    };
    // Expiry far beyond the test's waits: only the restart can remove the ghost in time.
    let slow_expiry = |c: &mut Config| c.hub.presence_expiry = Duration::from_secs(600);
    let survivor = cluster.node(1, slow_expiry).await;
    let first_life = cluster.crashable_node(2, slow_expiry);
    let (mut watcher, _) = named_member(survivor.addr, "watcher", "lobby").await;
    let mut ghost = first_life.client("name=ghost").await;
    ghost.join("lobby").await;
    presence_of(&mut watcher, "lobby", "joined", "ghost", WAIT).await;
    first_life.crash();
    drop(ghost);
    let second_life = cluster.node(2, slow_expiry).await;
    presence_of(&mut watcher, "lobby", "left", "ghost", WAIT).await;
    let (_again, joined) = named_member(second_life.addr, "again", "lobby").await;
    presence_of(&mut watcher, "lobby", "joined", "again", WAIT).await;
    assert_eq!(
        members_of(&mut watcher, "lobby").await,
        (vec!["again".into(), "watcher".into()], 2)
    );
    assert!(
        !names(&joined["data"]["members"]).contains(&"ghost"),
        "{joined}"
    );
    drop((watcher, _again));
    stop_all(vec![survivor, second_life]).await;
}

#[tokio::test]
async fn large_room_counts_include_members_on_other_nodes() {
    let test = "large_room_counts";
    let Some(ClusterEnv { postgres, redis }) = nodes_env(test) else {
        return;
    };
    let small_limit = |c: &mut Config| {
        c.hub.presence_limit = 2;
        c.hub.presence_tick = Duration::from_millis(100);
    };
    let nodes = start_nodes_with(2, &postgres, &redis, test, small_limit).await;
    let (mut first, _) = named_member(nodes[0].addr, "m1", "big").await;
    let (_second, _) = named_member(nodes[0].addr, "m2", "big").await;
    let (mut third, _) = named_member(nodes[1].addr, "m3", "big").await;
    // Three members over two nodes: more than the limit on both, counted on both.
    count_of(&mut first, "big", 3).await;
    count_of(&mut third, "big", 3).await;
    let (mut fourth, joined) = named_member(nodes[1].addr, "m4", "big").await;
    assert_eq!(joined["data"]["count"], 4);
    assert_eq!(
        names(&joined["data"]["members"]).len(),
        2,
        "a sample of the limit"
    );
    let (all, count) = members_of(&mut fourth, "big").await;
    assert_eq!(
        (all, count),
        (vec!["m1".into(), "m2".into(), "m3".into(), "m4".into()], 4)
    );
    count_of(&mut first, "big", 4).await;
    drop((first, _second, third, fourth));
    stop_all(nodes).await;
}

#[tokio::test]
async fn presence_survives_a_redis_restart_without_false_departures() {
    let test = "presence_redis_restart";
    let Some(ClusterEnv { postgres, .. }) = nodes_env(test) else {
        return;
    };
    let redis = PrivateRedis::start().await;
    let nodes = start_nodes_with(2, &postgres, &redis.url, test, quick_presence).await;
    let (mut alice, _) = named_member(nodes[0].addr, "alice", "lobby").await;
    let (mut bob, joined) = named_member(nodes[1].addr, "bob", "lobby").await;
    until_listed(&mut bob, &joined, "alice").await;
    presence_of(&mut alice, "lobby", "joined", "bob", WAIT).await;
    // Redis comes back empty (no persistence): every presence hash is gone.
    redis.stop().await;
    redis.restart().await;
    // Node 1 finds its hash gone at its next write and rewrites it whole, node 2 re-reads it:
    // dave's arrival crosses, and alice never left bob's view on the way.
    let (_dave, _) = named_member(nodes[0].addr, "dave", "lobby").await;
    let seen = presence_of(&mut bob, "lobby", "joined", "dave", Duration::from_secs(30)).await;
    assert!(
        !seen.iter().any(|frame| frame["data"]["left"] == "alice"),
        "no false departure: {seen:?}"
    );
    let (everyone, count) = members_of(&mut bob, "lobby").await;
    assert_eq!(
        (everyone, count),
        (vec!["alice".into(), "bob".into(), "dave".into()], 3)
    );
    drop((alice, bob, _dave));
    stop_all(nodes).await;
    drop(redis);
}

#[tokio::test]
async fn the_first_node_to_find_a_node_dead_makes_every_node_drop_it() {
    let test = "node_buried";
    let Some(cluster) = Cluster::for_test(test).await else {
        return;
    };
    let finder = cluster.node(1, quick_presence).await;
    // Beats as often as the others, but would wait ten minutes before expiring anyone itself.
    let patient = cluster
        .node(2, |c| {
            quick_presence(c);
            c.hub.presence_expiry = Duration::from_secs(600);
        })
        .await;
    let doomed = cluster.crashable_node(3, quick_presence);
    let (mut watcher, _) = named_member(finder.addr, "watcher", "lobby").await;
    let (mut observer, joined) = named_member(patient.addr, "observer", "lobby").await;
    until_listed(&mut observer, &joined, "watcher").await;
    let mut ghost = doomed.client("name=ghost").await;
    ghost.join("lobby").await;
    presence_of(&mut watcher, "lobby", "joined", "ghost", WAIT).await;
    presence_of(&mut observer, "lobby", "joined", "ghost", WAIT).await;
    doomed.crash();
    presence_of(
        &mut watcher,
        "lobby",
        "left",
        "ghost",
        Duration::from_secs(30),
    )
    .await;
    // Long before its own expiry, the patient node has dropped the ghost too.
    presence_of(&mut observer, "lobby", "left", "ghost", WAIT).await;
    let (_newcomer, joined) = named_member(patient.addr, "newcomer", "lobby").await;
    assert_eq!(
        names(&joined["data"]["members"]),
        ["newcomer", "observer", "watcher"]
    );
    drop((watcher, observer, ghost));
    stop_all(vec![finder, patient]).await;
}

#[test]
fn a_presence_expiry_under_three_heartbeats_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--presence-heartbeat-ms", "5000"])
        .args(["--presence-expiry-ms", "10000"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "--presence-expiry-ms (10000) must be at least three --presence-heartbeat-ms (5000)"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn two_live_nodes_with_one_node_id_are_reported_not_ready_until_one_stops() {
    let test = "duplicate_node_id";
    let Some(cluster) = Cluster::for_test(test).await else {
        return;
    };
    let first = cluster.node(7, quick_presence).await;
    until_readyz(first.addr, 200, 3 * WAIT).await;
    let second = cluster.node(7, quick_presence).await;
    // Each hears the other's heartbeats under its own id with another incarnation.
    until_readyz(first.addr, 503, 3 * WAIT).await;
    until_readyz(second.addr, 503, 3 * WAIT).await;
    second.stop().await;
    // The namesake's silence for one expiry ends the episode.
    until_readyz(first.addr, 200, 3 * WAIT).await;
    first.stop().await;
}

/// Issue 20: a change made on one node (an edit, a reaction) reaches a member on another node
/// as one `change` frame, and a client resuming on a third node with `changes_since` gets the
/// change it missed once.
#[tokio::test]
async fn changes_made_on_one_node_reach_members_on_the_others_and_resume_anywhere() {
    let test = "changes_cross_nodes";
    let Some(cluster) = Cluster::for_test(test).await else {
        return;
    };
    const SECRET: &str = "a-test-secret-of-some-length";
    let secret = || Secret::new(SECRET);
    let mut nodes = Vec::new();
    for node_id in 1..=3 {
        nodes.push(
            cluster
                .node(node_id, move |c| c.auth_secret = Some(secret()))
                .await,
        );
    }
    let token = |sub: &str| {
        let claims = hubbub::token::Claims::new(sub, None, Duration::from_secs(600));
        hubbub::token::mint(&Secret::new(SECRET), &claims).unwrap()
    };
    let signed_in = |node: &TestServer, sub: &str| {
        let query = format!("token={}", token(sub));
        let addr = node.addr;
        async move {
            let mut client = Client::connect(addr, &query).await;
            client.recv_type("rooms").await;
            client.join("lobby").await;
            client
        }
    };
    let mut ann = signed_in(&nodes[0], "ann").await;
    let mut bob = signed_in(&nodes[1], "bob").await;
    let id = ann.post("lobby", "helo").await["id"].clone();
    bob.recv_msg().await;

    ann.send(
        json!({"type": "edit", "ref": 1, "data": {"room": "lobby", "id": id, "text": "hello"}}),
    )
    .await;
    let change = bob.recv_type("change").await;
    assert_eq!(change["data"]["kind"], "edit");
    assert_eq!(change["data"]["seq"], 1);

    drop(bob);
    ann.send(
        json!({"type": "react", "ref": 2, "data": {"room": "lobby", "id": id, "emoji": "👍"}}),
    )
    .await;
    ann.recv_type("ack").await;
    let mut back = Client::connect(nodes[2].addr, &format!("token={}", token("bob"))).await;
    back.recv_type("rooms").await;
    back.send(json!({"type": "join", "room": "lobby", "data": {"since": id, "changes_since": 1}}))
        .await;
    let caught_up = back.recv_type("change").await;
    assert_eq!(caught_up["data"]["seq"], 2);
    assert_eq!(caught_up["data"]["kind"], "react");
    back.assert_no("change", Duration::from_millis(300)).await;
    drop((ann, back));
    stop_all(nodes).await;
}
