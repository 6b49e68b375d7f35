//! Conversations (issue 19, docs/protocol.md "Accounts and rooms"): private rooms, direct
//! messages, invitations, topics and roles, the sidebar, and the rule that a private room or DM
//! answers an outsider exactly as a room that does not exist. Real loopback sockets against an
//! in-process server (PostgreSQL with `HUBBUB_TEST_DB`).
//!
//! Signed-in connections use tokens whose `sub` names an account (the account is made on first
//! use), the way an embedding application signs its users in.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, TestServer, assert_api_error, http, start_server};
use hubbub::config::Secret;
use hubbub::token::{Claims, mint};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-some-length";

fn token(sub: &str) -> String {
    mint(
        &Secret::new(SECRET),
        &Claims::new(sub, None, Duration::from_secs(600)),
    )
    .unwrap()
}

async fn server() -> TestServer {
    common::start_server_with_secret(SECRET).await
}

/// A connection signed in as `name`; its `rooms` sidebar is read (and returned).
async fn signed_in(server: &TestServer, name: &str) -> (Client, Value) {
    let mut client = server.client(&format!("token={}", token(name))).await;
    let rooms = client.recv_type("rooms").await;
    (client, rooms)
}

/// Sends a conversation frame with `ref` and returns its `ack`.
async fn request(client: &mut Client, kind: &str, data: Value) -> Value {
    client
        .send(json!({"type": kind, "data": data, "ref": kind}))
        .await;
    loop {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("ack") if frame["ref"] == kind => return frame,
            Some("error") => panic!("{kind} refused: {frame}"),
            _ => continue,
        }
    }
}

/// Makes a private room titled `title` and returns its name.
async fn private_room(client: &mut Client, title: &str) -> String {
    let ack = request(client, "create", json!({"title": title, "private": true})).await;
    ack["room"].as_str().unwrap().to_owned()
}

/// Sends `frame` and expects an `error` with `code` for it.
async fn refused(client: &mut Client, mut frame: Value, code: &str) {
    frame["ref"] = json!("r");
    client.send(frame).await;
    client.expect_error(code, json!("r")).await;
}

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

#[tokio::test]
async fn a_guest_cannot_create_a_room() {
    let server = start_server().await;
    let mut guest = server.client("").await;
    let create = json!({"type": "create", "data": {"title": "x", "private": true}});
    refused(&mut guest, create, "unauthorized").await;
    server.stop().await;
}

#[tokio::test]
async fn creating_a_private_room_answers_room_then_ack_with_a_server_made_name() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    ann.send(json!({"type": "create", "data": {"title": "Design", "private": true, "topic": "pixels"}, "ref": 1}))
        .await;
    let room = ann.recv_type("room").await;
    let ack = ann.recv_type("ack").await;
    let name = room["data"]["room"].as_str().unwrap();
    assert!(name.starts_with("p-") && name.len() == 18, "{room}");
    assert_eq!(room["data"]["kind"], "private");
    assert_eq!(room["data"]["title"], "Design");
    assert_eq!(room["data"]["topic"], "pixels");
    assert_eq!(room["data"]["role"], "owner");
    assert_eq!(
        room["data"]["members"],
        json!([{"name": "ann", "role": "owner"}])
    );
    assert_eq!(ack["ref"], 1);
    assert_eq!(ack["room"], name);
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_is_not_found_for_an_outsider_on_join() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    let (mut eve, _) = signed_in(&server, "eve").await;
    refused(&mut eve, json!({"type": "join", "room": room}), "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn an_outsider_is_told_the_same_for_a_private_room_and_a_name_never_made() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    let (mut eve, _) = signed_in(&server, "eve").await;
    let mut answers = Vec::new();
    for name in [room.as_str(), "p-0000000000000000"] {
        eve.send(json!({"type": "join", "room": name, "ref": "r"}))
            .await;
        let mut error = eve.recv_type("error").await;
        error["data"]["message"].take();
        answers.push((error["data"]["code"].clone(), error["data"].clone()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_history_is_not_found_for_an_outsider() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    ann.join(&room).await;
    ann.post(&room, "secret").await;
    let (mut eve, _) = signed_in(&server, "eve").await;
    refused(
        &mut eve,
        json!({"type": "history", "room": room}),
        "not_found",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_is_404_for_an_outsider_over_the_api() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    ann.join(&room).await;
    ann.post(&room, "secret").await;
    let url = server.url(&format!("/api/rooms/{room}/messages"));
    let history = http()
        .get(&url)
        .header("Authorization", bearer("eve"))
        .send()
        .await
        .unwrap();
    assert_api_error(history, 404, "not_found").await;
    let post = http()
        .post(&url)
        .header("Authorization", bearer("eve"))
        .json(&json!({"data": "let me in"}))
        .send()
        .await
        .unwrap();
    assert_api_error(post, 404, "not_found").await;
    let own = http()
        .get(&url)
        .header("Authorization", bearer("ann"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "a member reads it");
    server.stop().await;
}

#[tokio::test]
async fn the_room_list_api_shows_a_private_room_only_to_its_members() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    ann.join(&room).await;
    ann.post(&room, "hello").await;
    let listed = |name: &'static str| {
        let url = server.url("/api/rooms");
        async move {
            let rooms: Value = http()
                .get(url)
                .header("Authorization", bearer(name))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            rooms
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["room"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(listed("ann").await.contains(&room));
    assert!(!listed("eve").await.contains(&room));
    server.stop().await;
}

#[tokio::test]
async fn an_invited_account_gets_the_room_and_can_join_it() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    let added = bob.recv_type("room").await;
    assert_eq!(added["data"]["room"], room.as_str());
    assert_eq!(added["data"]["role"], "member");
    let joined = bob.join(&room).await;
    assert_eq!(joined["data"]["kind"], "private");
    assert_eq!(joined["data"]["title"], "Design");
    server.stop().await;
}

#[tokio::test]
async fn a_member_cannot_invite() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    bob.recv_type("room").await;
    signed_in(&server, "carol").await;
    let invite = json!({"type": "invite", "data": {"room": room, "name": "carol"}});
    refused(&mut bob, invite, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn an_outsider_cannot_invite_itself() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    let (mut eve, _) = signed_in(&server, "eve").await;
    let invite = json!({"type": "invite", "data": {"room": room, "name": "eve"}});
    refused(&mut eve, invite, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_dm_reaches_every_participant_with_a_room_frame() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let (mut carol, _) = signed_in(&server, "carol").await;
    ann.send(json!({"type": "dm", "data": {"with": ["bob", "carol"]}}))
        .await;
    // The caller's own room frame comes before its ack.
    let own = ann.recv_type("room").await;
    let room = own["data"]["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("dm-"), "{own}");
    assert_eq!(ann.recv_type("ack").await["room"], room.as_str());
    let theirs = [bob.recv_type("room").await, carol.recv_type("room").await];
    for frame in [own].iter().chain(&theirs) {
        assert_eq!(frame["data"]["room"], room.as_str());
        assert_eq!(frame["data"]["kind"], "direct");
        let members: Vec<&str> = frame["data"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(members, vec!["ann", "bob", "carol"]);
    }
    server.stop().await;
}

#[tokio::test]
async fn the_same_people_get_the_same_dm() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let first = request(&mut ann, "dm", json!({"with": ["bob"]})).await;
    let second = request(&mut bob, "dm", json!({"with": ["ann"]})).await;
    assert_eq!(first["room"], second["room"]);
    server.stop().await;
}

#[tokio::test]
async fn a_dm_is_not_found_for_a_third_account() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    signed_in(&server, "bob").await;
    let ack = request(&mut ann, "dm", json!({"with": ["bob"]})).await;
    let room = ack["room"].as_str().unwrap().to_owned();
    ann.join(&room).await;
    ann.post(&room, "just us").await;
    let (mut eve, _) = signed_in(&server, "eve").await;
    refused(&mut eve, json!({"type": "join", "room": room}), "not_found").await;
    refused(
        &mut eve,
        json!({"type": "history", "room": room}),
        "not_found",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_dm_with_an_unknown_account_is_not_found() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let dm = json!({"type": "dm", "data": {"with": ["nobody-here"]}});
    refused(&mut ann, dm, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_dm_with_oneself_only_is_refused() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    refused(
        &mut ann,
        json!({"type": "dm", "data": {"with": ["ann"]}}),
        "bad_json",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_topic_reaches_the_rooms_members() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    bob.recv_type("room").await;
    ann.join(&room).await;
    bob.join(&room).await;
    request(&mut ann, "topic", json!({"room": room, "topic": "ship it"})).await;
    let topic = bob.recv_type("topic").await;
    assert_eq!(topic["data"], json!({"room": room, "topic": "ship it"}));
    let rejoined = signed_in(&server, "bob").await.0.join(&room).await;
    assert_eq!(rejoined["data"]["topic"], "ship it");
    server.stop().await;
}

#[tokio::test]
async fn a_member_cannot_set_the_topic() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    bob.recv_type("room").await;
    let topic = json!({"type": "topic", "data": {"room": room, "topic": "mine now"}});
    refused(&mut bob, topic, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn nobody_sets_the_topic_of_a_public_room_without_an_owner() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    ann.join("lobby").await;
    let topic = json!({"type": "topic", "data": {"room": "lobby", "topic": "mine"}});
    refused(&mut ann, topic, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn a_moderator_made_by_the_owner_can_invite() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let (mut carol, _) = signed_in(&server, "carol").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    bob.recv_type("room").await;
    request(
        &mut ann,
        "role",
        json!({"room": room, "name": "bob", "role": "moderator"}),
    )
    .await;
    let promoted = bob.recv_type("room").await;
    assert_eq!(promoted["data"]["role"], "moderator");
    request(&mut bob, "invite", json!({"room": room, "name": "carol"})).await;
    assert_eq!(carol.recv_type("room").await["data"]["room"], room.as_str());
    server.stop().await;
}

#[tokio::test]
async fn only_an_owner_changes_roles() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    request(&mut ann, "invite", json!({"room": room, "name": "bob"})).await;
    bob.recv_type("room").await;
    let role = json!({"type": "role", "data": {"room": room, "name": "bob", "role": "moderator"}});
    refused(&mut bob, role, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn creating_a_public_room_that_has_messages_is_room_exists() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    ann.join("busy").await;
    ann.post("busy", "here first").await;
    ann.send(json!({"type": "leave", "room": "busy"})).await;
    ann.recv_type("left").await;
    let (mut bob, _) = signed_in(&server, "bob").await;
    let create = json!({"type": "create", "data": {"room": "busy"}});
    refused(&mut bob, create, "room_exists").await;
    server.stop().await;
}

#[tokio::test]
async fn creating_a_public_room_makes_the_caller_its_owner() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    request(&mut ann, "create", json!({"room": "fresh", "topic": "new"})).await;
    let joined = ann.join("fresh").await;
    assert_eq!(joined["data"]["kind"], "public");
    assert_eq!(joined["data"]["role"], "owner");
    assert_eq!(joined["data"]["topic"], "new");
    server.stop().await;
}

#[tokio::test]
async fn creating_a_public_room_with_a_reserved_prefix_is_bad_room() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let create = json!({"type": "create", "data": {"room": "p-mine"}});
    refused(&mut ann, create, "bad_room").await;
    server.stop().await;
}

#[tokio::test]
async fn the_sidebar_after_welcome_lists_the_accounts_private_rooms_and_dms() {
    let server = server().await;
    let (mut ann, first) = signed_in(&server, "ann").await;
    assert_eq!(first["data"], json!([]));
    signed_in(&server, "bob").await;
    let room = private_room(&mut ann, "Design").await;
    let dm = request(&mut ann, "dm", json!({"with": ["bob"]})).await["room"].clone();
    let (_, rooms) = signed_in(&server, "ann").await;
    let listed: Vec<(&str, &str)> = rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["room"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    let mut expected = vec![(dm.as_str().unwrap(), "direct"), (room.as_str(), "private")];
    expected.sort();
    assert_eq!(listed, expected);
    server.stop().await;
}

#[tokio::test]
async fn a_guests_joined_frame_has_no_account_fields() {
    let server = start_server().await;
    let mut guest = server.client("").await;
    let joined = guest.join("lobby").await;
    let fields: Vec<&String> = joined["data"].as_object().unwrap().keys().collect();
    assert_eq!(fields, vec!["count", "last_id", "members"]);
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_event_stream_is_404_for_an_outsider() {
    let server = server().await;
    let (mut ann, _) = signed_in(&server, "ann").await;
    let room = private_room(&mut ann, "Design").await;
    let url = server.url(&format!("/events?room={room}&token={}", token("eve")));
    let events = http().get(url).send().await.unwrap();
    assert_api_error(events, 404, "not_found").await;
    server.stop().await;
}
