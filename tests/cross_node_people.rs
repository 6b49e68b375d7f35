//! Issue 19 across nodes: accounts, conversations, read markers and moderation on a real
//! cluster (two real hubbub processes, this test build's binary, on one PostgreSQL schema and
//! one Redis; tests/common/cluster.rs starts them). In every test an account is connected to
//! node A directly while the action happens on node B (or the other way round), so what the
//! test sees can only have travelled through the store and the cluster's control events
//! (src/broker/control.rs: `CloseAccount`, `RemoveFromRoom`, `ToAccount`, `RoomChanged`,
//! `MessageDeleted`).
//!
//! Needs `HUBBUB_TEST_POSTGRES` (scripts/pg.sh) and `HUBBUB_TEST_REDIS` (scripts/redis.sh);
//! without them each test prints why it is skipped (scripts/test.sh runs it with both).
//!
//! Signed-in connections use tokens whose `sub` names an account (made on first use), as in
//! tests/moderation.rs; the sign-out test signs up over HTTP for a session cookie.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::accounts::{post_json, sign_up};
use common::cluster::{Cluster, ClusterSpec, nodes_env};
use common::{Client, Closed, assert_api_error, http};
use hubbub::config::Secret;
use hubbub::token::{Claims, mint};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-some-length";
/// The public room the moderation tests use; `ann` owns it.
const ROOM: &str = "ops";
/// Node A: where the account acted on is connected.
const A: usize = 0;
/// Node B: where the action is taken.
const B: usize = 1;

fn token(sub: &str) -> String {
    mint(
        &Secret::new(SECRET),
        &Claims::new(sub, None, Duration::from_secs(600)),
    )
    .unwrap()
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

/// Two nodes that accept [`SECRET`]'s tokens, or `None` (the test is skipped) without
/// PostgreSQL and Redis.
async fn two_nodes(test: &str) -> Option<Cluster> {
    let env = nodes_env(test)?;
    let mut spec = ClusterSpec::new(2, &env);
    spec.extra = vec!["--auth-secret".to_owned(), SECRET.to_owned()];
    Some(Cluster::start(spec).await)
}

/// A connection of node `index` signed in as `name`, with its `rooms` sidebar read and returned.
async fn signed_in(cluster: &Cluster, index: usize, name: &str) -> (Client, Value) {
    let mut client = cluster
        .client_of(index, &format!("token={}", token(name)))
        .await;
    let rooms = client.recv_type("rooms").await;
    (client, rooms)
}

/// Sends `frame` and expects an `error` with `code` for it.
async fn refused(client: &mut Client, mut frame: Value, code: &str) {
    frame["ref"] = json!("r");
    client.send(frame).await;
    client.expect_error(code, json!("r")).await;
}

fn frame(kind: &str, data: Value) -> Value {
    json!({"type": kind, "data": data})
}

/// `ann` on node B, owner of the public room [`ROOM`] and in it.
async fn owner_on_b(cluster: &Cluster) -> Client {
    let (mut ann, _) = signed_in(cluster, B, "ann").await;
    ann.request(frame("create", json!({"room": ROOM, "private": false})))
        .await;
    ann.join(ROOM).await;
    ann
}

/// `name` signed in on node `index` and in [`ROOM`].
async fn member_of(cluster: &Cluster, index: usize, name: &str) -> Client {
    let (mut client, _) = signed_in(cluster, index, name).await;
    client.join(ROOM).await;
    client
}

/// A private room `ann` (on node A) made and invited `bob` to, with the room frame `bob` (on
/// node B) got for the invitation: returns both clients and the room's name.
async fn private_room_across(cluster: &Cluster) -> (Client, Client, String) {
    let (mut ann, _) = signed_in(cluster, A, "ann").await;
    let (mut bob, _) = signed_in(cluster, B, "bob").await;
    let created = ann
        .request(frame("create", json!({"title": "Design", "private": true})))
        .await;
    let room = created["room"].as_str().unwrap().to_owned();
    ann.request(frame("invite", json!({"room": room, "name": "bob"})))
        .await;
    let added = bob.recv_type("room").await;
    assert_eq!(added["data"]["room"], room.as_str(), "{added}");
    (ann, bob, room)
}

/// Marks `room` read up to `id` and waits for the ack.
async fn read(client: &mut Client, room: &str, id: u64) {
    client
        .request(frame("read", json!({"room": room, "id": id})))
        .await;
}

/// The room's history as the HTTP API of the node at `addr` serves it to `name`.
async fn api_history(addr: SocketAddr, room: &str, name: &str) -> Vec<Value> {
    let response = http()
        .get(format!("http://{addr}/api/rooms/{room}/messages"))
        .header("authorization", bearer(name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    page["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_ban_on_one_node_removes_the_account_from_the_room_on_the_other_and_refuses_its_rejoin() {
    let Some(cluster) = two_nodes("ban_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    ann.request(frame("ban", json!({"room": ROOM, "name": "bob"})))
        .await;
    let kicked = bob.recv_type("kicked").await;
    assert_eq!(
        kicked["data"],
        json!({"room": ROOM, "reason": "banned", "by": "ann"})
    );
    let post = json!({"type": "msg", "room": ROOM, "data": "let me in"});
    refused(&mut bob, post, "not_member").await;
    refused(&mut bob, json!({"type": "join", "room": ROOM}), "banned").await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_kick_on_one_node_takes_the_account_out_of_the_room_on_the_other() {
    let Some(cluster) = two_nodes("kick_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    ann.request(frame("kick", json!({"room": ROOM, "name": "bob"})))
        .await;
    let kicked = bob.recv_type("kicked").await;
    assert_eq!(
        kicked["data"],
        json!({"room": ROOM, "reason": "kicked", "by": "ann"})
    );
    let post = json!({"type": "msg", "room": ROOM, "data": "still here?"});
    refused(&mut bob, post, "not_member").await;
    cluster.stop().await;
}

#[tokio::test]
async fn a_mute_on_one_node_refuses_the_accounts_posts_on_the_other() {
    let Some(cluster) = two_nodes("mute_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    let mute = json!({"room": ROOM, "name": "bob", "seconds": 600});
    ann.request(frame("mute", mute)).await;
    let muted = bob.recv_type("muted").await;
    assert_eq!(muted["data"]["room"], ROOM);
    let post = json!({"type": "msg", "room": ROOM, "data": "can you hear me"});
    refused(&mut bob, post, "muted").await;
    assert!(
        api_history(cluster.nodes[B].addr, ROOM, "ann")
            .await
            .is_empty()
    );
    cluster.stop().await;
}

#[tokio::test]
async fn slow_mode_set_on_one_node_refuses_a_second_post_on_the_other() {
    let Some(cluster) = two_nodes("slow_mode_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    let slow = bob.recv_type("slow").await;
    assert_eq!(slow["data"], json!({"room": ROOM, "seconds": 60}));
    bob.post(ROOM, "first").await;
    let second = json!({"type": "msg", "room": ROOM, "data": "second"});
    refused(&mut bob, second, "slow_mode").await;
    cluster.stop().await;
}

#[tokio::test]
async fn slow_mode_counts_an_accounts_posts_on_every_node_together() {
    let Some(cluster) = two_nodes("slow_mode_one_clock").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob_on_a = member_of(&cluster, A, "bob").await;
    let mut bob_on_b = member_of(&cluster, B, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    bob_on_a.recv_type("slow").await;
    bob_on_b.recv_type("slow").await;
    bob_on_a.post(ROOM, "first, on node A").await;
    let second = json!({"type": "msg", "room": ROOM, "data": "second, on node B"});
    refused(&mut bob_on_b, second, "slow_mode").await;
    cluster.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_for_one_name_are_limited_across_nodes_together() {
    let Some(env) = nodes_env("login_limit_across_nodes") else {
        return;
    };
    // Three a minute (a refill only after 20 s, beyond the test's few hashes), spent on both
    // nodes: two on A and one on B.
    let mut spec = ClusterSpec::new(2, &env);
    spec.extra = ["--auth-secret", SECRET, "--sign-in-per-name", "3"]
        .map(str::to_owned)
        .to_vec();
    let cluster = Cluster::start(spec).await;
    let wrong = json!({"name": "carol", "password": "not the password"});
    for node in [A, A, B] {
        let addr = cluster.nodes[node].addr;
        let response = post_json(addr, "/api/auth/signin", wrong.clone()).await;
        assert_eq!(response.status(), 401, "attempt on node {node}");
    }
    let on_b = post_json(cluster.nodes[B].addr, "/api/auth/signin", wrong.clone()).await;
    assert_api_error(on_b, 429, "rate_limited").await;
    let on_a = post_json(cluster.nodes[A].addr, "/api/auth/signin", wrong).await;
    assert_api_error(on_a, 429, "rate_limited").await;
    cluster.stop().await;
}

#[tokio::test]
async fn an_operator_disabling_an_account_on_one_node_closes_its_sockets_on_the_other() {
    let Some(cluster) = two_nodes("disable_across_nodes").await else {
        return;
    };
    let (_dir, data) = common::scratch();
    let data_arg = data.display().to_string();
    let add = [
        "user",
        "add",
        "root",
        "--admin",
        "--data",
        data_arg.as_str(),
        "--db",
        cluster.db_url.as_str(),
    ];
    common::cli::succeeded(&common::cli::run_hubbub(&add, None));
    let (mut phone, _) = signed_in(&cluster, A, "bob").await;
    let (mut laptop, _) = signed_in(&cluster, A, "bob").await;
    let response = http()
        .post(format!(
            "http://{}/api/admin/accounts/bob/disable",
            cluster.nodes[B].addr
        ))
        .header("authorization", bearer("root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(phone.closed().await, Closed::Code(1008));
    assert_eq!(laptop.closed().await, Closed::Code(1008));
    cluster.stop().await;
}

#[tokio::test]
async fn signing_out_everywhere_on_one_node_closes_the_accounts_sockets_on_the_other() {
    let Some(cluster) = two_nodes("signout_across_nodes").await else {
        return;
    };
    let (a, b) = (cluster.nodes[A].addr, cluster.nodes[B].addr);
    let alice = sign_up(b, "alice").await;
    let (mut socket, _) = alice.connect(a, "").await;
    let response = alice.post(b, "/api/auth/signout-all", json!({})).await;
    assert_eq!(response.status(), 204);
    assert_eq!(socket.closed().await, Closed::Code(1008));
    cluster.stop().await;
}

#[tokio::test]
async fn a_read_marker_moved_on_one_node_reaches_the_accounts_connection_on_the_other() {
    let Some(cluster) = two_nodes("read_frame_across_nodes").await else {
        return;
    };
    let (mut laptop, _) = signed_in(&cluster, A, "ann").await;
    let (mut phone, _) = signed_in(&cluster, B, "ann").await;
    laptop.join("lobby").await;
    laptop.post("lobby", "one").await;
    let id = laptop.post("lobby", "two").await["id"].as_u64().unwrap();
    read(&mut laptop, "lobby", id).await;
    let moved = phone.recv_type("read").await;
    assert_eq!(moved["data"], json!({"room": "lobby", "id": id}));
    cluster.stop().await;
}

#[tokio::test]
async fn a_fresh_connection_on_another_node_counts_no_unread_after_a_read_elsewhere() {
    let Some(cluster) = two_nodes("unread_across_nodes").await else {
        return;
    };
    let (mut laptop, _) = signed_in(&cluster, A, "ann").await;
    let (mut phone, _) = signed_in(&cluster, B, "ann").await;
    let (mut bob, _) = signed_in(&cluster, A, "bob").await;
    laptop.join("lobby").await;
    bob.join("lobby").await;
    bob.post("lobby", "one").await;
    let id = bob.post("lobby", "two").await["id"].as_u64().unwrap();
    read(&mut laptop, "lobby", id).await;
    // Node B has applied the move once its connection of ann got the `read` frame.
    phone.recv_type("read").await;
    let (mut tablet, _) = signed_in(&cluster, B, "ann").await;
    let joined = tablet.join("lobby").await;
    assert_eq!(joined["data"]["last_read"], id, "{joined}");
    assert_eq!(joined["data"]["unread"], 0, "{joined}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_dm_made_on_one_node_reaches_the_peer_on_the_other_with_its_messages() {
    let Some(cluster) = two_nodes("dm_across_nodes").await else {
        return;
    };
    let (mut ann, _) = signed_in(&cluster, A, "ann").await;
    let (mut bob, _) = signed_in(&cluster, B, "bob").await;
    let ack = ann.request(frame("dm", json!({"with": ["bob"]}))).await;
    let room = ack["room"].as_str().unwrap().to_owned();
    let added = bob.recv_type("room").await;
    assert_eq!(added["data"]["room"], room.as_str(), "{added}");
    assert_eq!(added["data"]["kind"], "direct");
    let joined = bob.join(&room).await;
    assert_eq!(joined["data"]["kind"], "direct", "{joined}");
    ann.join(&room).await;
    ann.post(&room, "psst").await;
    let message = bob.recv_msg().await;
    assert_eq!(
        (&message["room"], &message["data"]),
        (&json!(room), &json!("psst"))
    );
    assert_eq!(message["from"], "ann");
    cluster.stop().await;
}

#[tokio::test]
async fn a_private_room_invitation_on_one_node_lets_the_invitee_join_on_the_other() {
    let Some(cluster) = two_nodes("invite_across_nodes").await else {
        return;
    };
    let (_ann, mut bob, room) = private_room_across(&cluster).await;
    let joined = bob.join(&room).await;
    assert_eq!(joined["data"]["kind"], "private", "{joined}");
    assert_eq!(joined["data"]["title"], "Design", "{joined}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_topic_set_on_one_node_reaches_the_rooms_members_on_the_other() {
    let Some(cluster) = two_nodes("topic_across_nodes").await else {
        return;
    };
    let (mut ann, mut bob, room) = private_room_across(&cluster).await;
    bob.join(&room).await;
    let topic = json!({"room": room, "topic": "ship it"});
    ann.request(frame("topic", topic.clone())).await;
    assert_eq!(bob.recv_type("topic").await["data"], topic);
    cluster.stop().await;
}

#[tokio::test]
async fn a_delete_on_one_node_reaches_the_room_on_the_other_as_deleted() {
    let Some(cluster) = two_nodes("delete_live_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    let id = bob.post(ROOM, "spam").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    let deleted = bob.recv_type("deleted").await;
    assert_eq!(deleted["data"], json!({"room": ROOM, "id": id}));
    cluster.stop().await;
}

#[tokio::test]
async fn a_join_on_another_node_after_a_delete_replays_the_tombstone() {
    let Some(cluster) = two_nodes("delete_replay_across_nodes").await else {
        return;
    };
    let mut ann = owner_on_b(&cluster).await;
    let mut bob = member_of(&cluster, A, "bob").await;
    let id = bob.post(ROOM, "spam").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    // Once bob has the `deleted` frame node A has the tombstone in the room's recent frames: a
    // join there is served from them (bob is still in the room).
    bob.recv_type("deleted").await;
    let (mut carol, _) = signed_in(&cluster, A, "carol").await;
    carol.send(json!({"type": "join", "room": ROOM})).await;
    let replayed = carol.recv_msg().await;
    assert_eq!(replayed["id"], id);
    assert_eq!(replayed["deleted"], true, "{replayed}");
    assert_eq!(replayed["data"], "", "{replayed}");
    cluster.stop().await;
}

#[tokio::test]
async fn a_delete_on_one_node_is_a_tombstone_in_the_other_nodes_history_and_resume() {
    let Some(cluster) = two_nodes("delete_history_across_nodes").await else {
        return;
    };
    // Nobody is in the room on node A, so its history and the resume below read the store.
    let mut ann = owner_on_b(&cluster).await;
    let id = ann.post(ROOM, "oops").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    let messages = api_history(cluster.nodes[A].addr, ROOM, "bob").await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["deleted"], true, "{}", messages[0]);
    assert_eq!(messages[0]["data"], "", "{}", messages[0]);
    let (mut bob, _) = signed_in(&cluster, A, "bob").await;
    bob.send(json!({"type": "join", "room": ROOM, "data": {"since": id - 1}}))
        .await;
    let replayed = bob.recv_msg().await;
    assert_eq!(replayed["id"], id);
    assert_eq!(replayed["deleted"], true, "{replayed}");
    assert_eq!(replayed["data"], "", "{replayed}");
    cluster.stop().await;
}
