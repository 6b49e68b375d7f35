//! Moderation (issue 19, docs/protocol.md "Moderation"): deleting messages (tombstones live, in
//! history, on resume and in a join's replay from memory), kick, ban (a banned account's open
//! connections removed), mute, slow mode, who may do it, and the audit log. Real loopback
//! sockets against an in-process server (PostgreSQL with `HUBBUB_TEST_DB`).
//!
//! Signed-in connections use tokens whose `sub` names an account (made on first use), the way
//! an embedding application signs its users in. The room's owner made it with `create`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, TestServer, assert_api_error, http, start_server, start_server_with};
use hubbub::config::Secret;
use hubbub::token::{Claims, mint};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-some-length";
/// The public room the tests moderate; `ann` owns it.
const ROOM: &str = "ops";
/// How long a test watches for a frame that must not come.
const QUIET: Duration = Duration::from_millis(300);

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

async fn server() -> TestServer {
    common::start_server_with_secret(SECRET).await
}

/// A connection signed in as `name`, past its sidebar (`rooms`, sent to signed-in
/// connections right after `welcome`).
async fn signed_in(server: &TestServer, name: &str) -> Client {
    let mut client = server.client(&format!("token={}", token(name))).await;
    client.recv_type("rooms").await;
    client
}

/// Sends `frame` and expects an `error` with `code` for it.
async fn refused(client: &mut Client, mut frame: Value, code: &str) {
    frame["ref"] = json!("r");
    client.send(frame).await;
    client.expect_error(code, json!("r")).await;
}

/// One in-process node, also when the suite runs on a cluster: for what is counted per node
/// (slow mode's clock, docs/deploy.md "Accounts in a cluster").
async fn single_node() -> TestServer {
    start_server_with(|c| c.auth_secret = Some(Secret::new(SECRET))).await
}

/// A server where `ann` owns the public room [`ROOM`] and is in it.
async fn owned_room() -> (TestServer, Client) {
    owned_room_on(server().await).await
}

/// `server`, where `ann` now owns the public room [`ROOM`] and is in it.
async fn owned_room_on(server: TestServer) -> (TestServer, Client) {
    let mut ann = signed_in(&server, "ann").await;
    ann.request(json!({"type": "create", "data": {"room": ROOM, "private": false}}))
        .await;
    ann.join(ROOM).await;
    (server, ann)
}

/// `name`, signed in and in [`ROOM`].
async fn member(server: &TestServer, name: &str) -> Client {
    let mut client = signed_in(server, name).await;
    client.join(ROOM).await;
    client
}

fn frame(kind: &str, data: Value) -> Value {
    json!({"type": kind, "data": data})
}

/// The room's history as the HTTP API serves it to `name`.
async fn api_history(server: &TestServer, name: &str) -> Vec<Value> {
    let url = server.url(&format!("/api/rooms/{ROOM}/messages"));
    let response = http()
        .get(url)
        .header("authorization", bearer(name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    page["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_guest_cannot_moderate() {
    let server = start_server().await;
    let mut guest = server.client("").await;
    guest.join("lobby").await;
    let delete = frame("delete", json!({"room": "lobby", "id": 1}));
    refused(&mut guest, delete, "unauthorized").await;
    server.stop().await;
}

#[tokio::test]
async fn an_account_without_a_role_is_forbidden_to_moderate() {
    let (server, mut ann) = owned_room().await;
    let id = ann.post(ROOM, "hello").await["id"].clone();
    let mut eve = member(&server, "eve").await;
    let delete = frame("delete", json!({"room": ROOM, "id": id}));
    refused(&mut eve, delete, "forbidden").await;
    let kick = frame("kick", json!({"room": ROOM, "name": "ann"}));
    refused(&mut eve, kick, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn moderating_a_private_room_one_is_not_in_answers_not_found() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    let created = ann
        .request(json!({"type": "create", "data": {"title": "Secret", "private": true}}))
        .await;
    let room = created["room"].as_str().unwrap().to_owned();
    let mut eve = signed_in(&server, "eve").await;
    let slow = frame("slow", json!({"room": room, "seconds": 5}));
    refused(&mut eve, slow, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_message_reaches_the_room_as_deleted() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    let id = bob.post(ROOM, "spam").await["id"].as_u64().unwrap();
    let ack = ann
        .request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    assert_eq!(ack["room"], ROOM);
    let deleted = bob.recv_type("deleted").await;
    assert_eq!(deleted["data"], json!({"room": ROOM, "id": id}));
    server.stop().await;
}

#[tokio::test]
async fn history_after_a_delete_has_a_tombstone_without_the_text() {
    let (server, mut ann) = owned_room().await;
    ann.post(ROOM, "keep").await;
    let id = ann.post(ROOM, "secret").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    let messages = api_history(&server, "ann").await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["data"], "keep");
    assert!(messages[0].get("deleted").is_none(), "{}", messages[0]);
    assert_eq!(messages[1]["id"], id);
    assert_eq!(messages[1]["deleted"], true);
    assert_eq!(messages[1]["data"], "");
    ann.send(json!({"type": "history", "room": ROOM})).await;
    let page = ann.recv_type("history").await;
    assert_eq!(page["data"]["messages"][1]["deleted"], true);
    assert_eq!(page["data"]["messages"][1]["data"], "");
    server.stop().await;
}

#[tokio::test]
async fn a_resume_with_since_after_a_delete_replays_the_tombstone() {
    let (server, mut ann) = owned_room().await;
    let id = ann.post(ROOM, "secret").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    // Everyone leaves, so the rejoin reads the store.
    drop(ann);
    let mut bob = signed_in(&server, "bob").await;
    bob.send(json!({"type": "join", "room": ROOM, "data": {"since": id - 1}}))
        .await;
    let replayed = bob.recv_msg().await;
    assert_eq!(replayed["id"], id);
    assert_eq!(replayed["deleted"], true);
    assert_eq!(replayed["data"], "");
    server.stop().await;
}

#[tokio::test]
async fn a_join_replayed_from_memory_after_a_delete_shows_the_tombstone() {
    let (server, mut ann) = owned_room().await;
    let id = ann.post(ROOM, "secret").await["id"].as_u64().unwrap();
    ann.request(frame("delete", json!({"room": ROOM, "id": id})))
        .await;
    // ann is still in the room: the join is served from the room's recent frames.
    let mut bob = signed_in(&server, "bob").await;
    bob.send(json!({"type": "join", "room": ROOM})).await;
    let replayed = bob.recv_msg().await;
    assert_eq!(replayed["id"], id);
    assert_eq!(replayed["deleted"], true);
    assert_eq!(replayed["data"], "");
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_message_that_does_not_exist_answers_not_found() {
    let (server, mut ann) = owned_room().await;
    let delete = frame("delete", json!({"room": ROOM, "id": 99}));
    refused(&mut ann, delete, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_kicked_account_is_told_and_leaves_the_room() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.send(json!({"type": "kick", "data": {"room": ROOM, "name": "bob"}, "ref": "k"}))
        .await;
    // The room hears bob leave; that may come before or after the kick's ack.
    let (mut left, mut acked) = (false, false);
    while !(left && acked) {
        let frame = ann.recv().await;
        left |= frame["type"] == "presence" && frame["data"]["left"] == "bob";
        acked |= frame["type"] == "ack" && frame["ref"] == "k";
        assert_ne!(frame["type"], "error", "{frame}");
    }
    let kicked = bob.recv_type("kicked").await;
    assert_eq!(
        kicked["data"],
        json!({"room": ROOM, "reason": "kicked", "by": "ann"})
    );
    refused(
        &mut bob,
        json!({"type": "msg", "room": ROOM, "data": "still here?"}),
        "not_member",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_kicked_account_may_join_again() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("kick", json!({"room": ROOM, "name": "bob"})))
        .await;
    bob.recv_type("kicked").await;
    bob.join(ROOM).await;
    server.stop().await;
}

#[tokio::test]
async fn a_banned_accounts_join_is_refused() {
    let (server, mut ann) = owned_room().await;
    let mut bob = signed_in(&server, "bob").await;
    ann.request(frame("ban", json!({"room": ROOM, "name": "bob"})))
        .await;
    refused(&mut bob, json!({"type": "join", "room": ROOM}), "banned").await;
    server.stop().await;
}

#[tokio::test]
async fn a_banned_accounts_open_connections_are_all_removed_from_the_room() {
    let (server, mut ann) = owned_room().await;
    let mut phone = member(&server, "bob").await;
    let mut laptop = member(&server, "bob").await;
    ann.request(frame(
        "ban",
        json!({"room": ROOM, "name": "bob", "seconds": 3600}),
    ))
    .await;
    for bob in [&mut phone, &mut laptop] {
        let kicked = bob.recv_type("kicked").await;
        assert_eq!(kicked["data"]["reason"], "banned");
        let post = json!({"type": "msg", "room": ROOM, "data": "let me in"});
        refused(bob, post, "not_member").await;
        refused(bob, json!({"type": "join", "room": ROOM}), "banned").await;
    }
    ann.post(ROOM, "after the ban").await;
    phone.assert_no("msg", QUIET).await;
    server.stop().await;
}

#[tokio::test]
async fn an_unbanned_account_may_join_again() {
    let (server, mut ann) = owned_room().await;
    let mut bob = signed_in(&server, "bob").await;
    ann.request(frame("ban", json!({"room": ROOM, "name": "bob"})))
        .await;
    ann.request(frame("unban", json!({"room": ROOM, "name": "bob"})))
        .await;
    bob.join(ROOM).await;
    server.stop().await;
}

#[tokio::test]
async fn unbanning_an_account_that_is_not_banned_answers_not_found() {
    let (server, mut ann) = owned_room().await;
    signed_in(&server, "bob").await;
    let unban = frame("unban", json!({"room": ROOM, "name": "bob"}));
    refused(&mut ann, unban, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_muted_account_is_told_and_its_posts_are_refused_and_not_stored() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame(
        "mute",
        json!({"room": ROOM, "name": "bob", "seconds": 600}),
    ))
    .await;
    let muted = bob.recv_type("muted").await;
    assert_eq!(muted["data"]["room"], ROOM);
    assert!(muted["data"]["until"].as_i64().unwrap() > 0);
    let post = json!({"type": "msg", "room": ROOM, "data": "can you hear me"});
    refused(&mut bob, post, "muted").await;
    assert!(api_history(&server, "ann").await.is_empty());
    ann.assert_no("msg", QUIET).await;
    server.stop().await;
}

#[tokio::test]
async fn a_muted_account_still_reads_the_room() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("mute", json!({"room": ROOM, "name": "bob"})))
        .await;
    bob.recv_type("muted").await;
    ann.post(ROOM, "announcement").await;
    assert_eq!(bob.recv_msg().await["data"], "announcement");
    server.stop().await;
}

#[tokio::test]
async fn a_muted_accounts_api_post_is_refused() {
    let (server, mut ann) = owned_room().await;
    signed_in(&server, "bob").await;
    ann.request(frame("mute", json!({"room": ROOM, "name": "bob"})))
        .await;
    let response = http()
        .post(server.url(&format!("/api/rooms/{ROOM}/messages")))
        .header("authorization", bearer("bob"))
        .json(&json!({"data": "through the side door"}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 403, "muted").await;
    assert!(api_history(&server, "ann").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_unmuted_account_may_post_again() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("mute", json!({"room": ROOM, "name": "bob"})))
        .await;
    ann.request(frame("unmute", json!({"room": ROOM, "name": "bob"})))
        .await;
    bob.recv_type("unmuted").await;
    bob.post(ROOM, "thanks").await;
    server.stop().await;
}

#[tokio::test]
async fn slow_mode_reaches_the_room_as_a_slow_frame() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 30})))
        .await;
    let slow = bob.recv_type("slow").await;
    assert_eq!(slow["data"], json!({"room": ROOM, "seconds": 30}));
    server.stop().await;
}

#[tokio::test]
async fn slow_mode_refuses_a_second_post_within_the_interval_and_stores_nothing() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    bob.recv_type("slow").await;
    bob.post(ROOM, "first").await;
    let second = json!({"type": "msg", "room": ROOM, "data": "second", "ref": "r"});
    bob.send(second).await;
    let error = bob.recv_type("error").await;
    assert_eq!(error["data"]["code"], "slow_mode");
    let message = error["data"]["message"].as_str().unwrap();
    assert!(message.contains("wait"), "{message}");
    let texts: Vec<Value> = api_history(&server, "ann")
        .await
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(texts, [json!("first")]);
    server.stop().await;
}

#[tokio::test]
async fn slow_mode_counts_an_account_across_its_connections() {
    // Two connections of one account on one node: slow mode's clock is per node.
    let (server, mut ann) = owned_room_on(single_node().await).await;
    let mut phone = member(&server, "bob").await;
    let mut laptop = member(&server, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    phone.post(ROOM, "from the phone").await;
    let post = json!({"type": "msg", "room": ROOM, "data": "from the laptop"});
    refused(&mut laptop, post, "slow_mode").await;
    server.stop().await;
}

#[tokio::test]
async fn owners_are_exempt_from_slow_mode() {
    let (server, mut ann) = owned_room().await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    ann.post(ROOM, "one").await;
    ann.post(ROOM, "two").await;
    server.stop().await;
}

#[tokio::test]
async fn slow_mode_of_zero_turns_it_off() {
    let (server, mut ann) = owned_room().await;
    let mut bob = member(&server, "bob").await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 60})))
        .await;
    // Bob's node has applied the 60 s before it is turned off: two changes in a row may reach
    // a node together, and then its members are told only where they ended (no change).
    assert_eq!(bob.recv_type("slow").await["data"]["seconds"], 60);
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 0})))
        .await;
    let slow = bob.recv_type("slow").await;
    assert_eq!(slow["data"], json!({"room": ROOM, "seconds": 0}));
    bob.post(ROOM, "one").await;
    bob.post(ROOM, "two").await;
    server.stop().await;
}

#[tokio::test]
async fn a_moderator_cannot_ban_the_owner() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    let created = ann
        .request(json!({"type": "create", "data": {"title": "Team", "private": true}}))
        .await;
    let room = created["room"].as_str().unwrap().to_owned();
    let mut bob = signed_in(&server, "bob").await;
    ann.request(frame("invite", json!({"room": room, "name": "bob"})))
        .await;
    let role = json!({"room": room, "name": "bob", "role": "moderator"});
    ann.request(frame("role", role)).await;
    let ban = frame("ban", json!({"room": room, "name": "ann"}));
    refused(&mut bob, ban, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn nobody_moderates_themselves() {
    let (server, mut ann) = owned_room().await;
    let mute = frame("mute", json!({"room": ROOM, "name": "ann"}));
    refused(&mut ann, mute, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn moderating_an_unknown_account_answers_not_found() {
    let (server, mut ann) = owned_room().await;
    let ban = frame("ban", json!({"room": ROOM, "name": "nobody"}));
    refused(&mut ann, ban, "not_found").await;
    server.stop().await;
}

/// `GET /api/audit` as `name`, with `query`.
async fn audit(server: &TestServer, name: &str, query: &str) -> reqwest::Response {
    http()
        .get(server.url(&format!("/api/audit{query}")))
        .header("authorization", bearer(name))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_moderation_action_is_in_the_rooms_audit_log_newest_first() {
    let (server, mut ann) = owned_room().await;
    // Bob's message: an author's delete of their own is not a moderation action (issue 20).
    let mut bob = member(&server, "bob").await;
    let id = bob.post(ROOM, "oops").await["id"].as_u64().unwrap();
    for (kind, data) in [
        ("delete", json!({"room": ROOM, "id": id})),
        ("kick", json!({"room": ROOM, "name": "bob"})),
        ("ban", json!({"room": ROOM, "name": "bob", "seconds": 60})),
        ("unban", json!({"room": ROOM, "name": "bob"})),
        ("mute", json!({"room": ROOM, "name": "bob"})),
        ("unmute", json!({"room": ROOM, "name": "bob"})),
        ("slow", json!({"room": ROOM, "seconds": 5})),
    ] {
        ann.request(frame(kind, data)).await;
    }
    let response = audit(&server, "ann", &format!("?room={ROOM}")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let rows = body["entries"].as_array().unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["slow", "unmute", "mute", "unban", "ban", "kick", "delete"]
    );
    assert!(
        rows.iter()
            .all(|r| r["actor"] == "ann" && r["room"] == ROOM)
    );
    assert_eq!(rows[6]["target"], format!("#{id}"));
    assert_eq!(rows[4]["target"], "bob");
    assert_eq!(rows[4]["detail"], "60 s");
    server.stop().await;
}

#[tokio::test]
async fn the_audit_log_without_a_room_lists_the_rooms_one_moderates() {
    let (server, mut ann) = owned_room().await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 5})))
        .await;
    let response = audit(&server, "ann", "").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["entries"][0]["action"], "slow");
    let eve = audit(&server, "eve", "").await;
    let body: Value = eve.json().await.unwrap();
    assert_eq!(body["entries"], json!([]), "eve moderates nothing");
    server.stop().await;
}

#[tokio::test]
async fn the_audit_log_of_a_room_one_does_not_moderate_is_forbidden() {
    let (server, mut ann) = owned_room().await;
    ann.request(frame("slow", json!({"room": ROOM, "seconds": 5})))
        .await;
    let response = audit(&server, "eve", &format!("?room={ROOM}")).await;
    assert_api_error(response, 403, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn the_audit_log_needs_a_signed_in_caller() {
    let server = start_server().await;
    let response = http().get(server.url("/api/audit")).send().await.unwrap();
    assert_api_error(response, 401, "unauthenticated").await;
    server.stop().await;
}

#[tokio::test]
async fn disabling_an_account_takes_an_operator() {
    let (server, _ann) = owned_room().await;
    signed_in(&server, "bob").await;
    let response = http()
        .post(server.url("/api/admin/accounts/bob/disable"))
        .header("authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 403, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn an_operator_disabling_an_account_closes_its_open_connections() {
    let (_dir, data) = common::scratch();
    let db = common::pg::binary_db_args(&data, &[]).await;
    let data_arg = data.display().to_string();
    let mut add = vec![
        "user",
        "add",
        "root",
        "--admin",
        "--data",
        data_arg.as_str(),
    ];
    add.extend(db.iter().map(String::as_str));
    common::cli::succeeded(&common::cli::run_hubbub(&add, None));
    let server =
        common::Binary::start(&data, common::free_port(), &["--auth-secret", SECRET]).await;
    let mut bob = server.client(&format!("token={}", token("bob"))).await;
    bob.recv_type("rooms").await;
    let response = http()
        .post(format!(
            "http://{}/api/admin/accounts/bob/disable",
            server.addr
        ))
        .header("authorization", bearer("root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(bob.closed().await, common::Closed::Code(1008));
    let audit: Value = http()
        .get(format!("http://{}/api/audit", server.addr))
        .header("authorization", bearer("root"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let newest = &audit["entries"][0];
    assert_eq!(
        (&newest["action"], &newest["target"]),
        (&json!("disable"), &json!("bob"))
    );
    assert_eq!(newest["actor"], "root");
}
