//! Read markers (issue 19, docs/protocol.md "Read markers"): an account's last read id per room,
//! kept by the server, synced at once to the account's other connections, and the unread and
//! mention counts `joined` and `rooms` derive from it. Markers are written in batches (at most a
//! second late) and at shutdown: the restart test runs the real binary.
//!
//! Signed-in connections use tokens whose `sub` names an account.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Binary, Client, TestServer, free_port, scratch, start_server, start_server_with};
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
    start_server_with(|c| c.auth_secret = Some(Secret::new(SECRET))).await
}

/// A connection signed in as `name`, with its `rooms` sidebar read and returned.
async fn signed_in(addr: std::net::SocketAddr, name: &str) -> (Client, Value) {
    let mut client = Client::connect(addr, &format!("token={}", token(name))).await;
    let rooms = client.recv_type("rooms").await;
    (client, rooms)
}

/// The entry for `room` in a `rooms` frame.
fn sidebar_entry(rooms: &Value, room: &str) -> Value {
    rooms["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["room"] == room)
        .cloned()
        .unwrap_or_else(|| panic!("{room} not in the sidebar: {rooms}"))
}

/// Marks `room` read up to `id` and waits for the ack.
async fn read(client: &mut Client, room: &str, id: u64) {
    client
        .send(json!({"type": "read", "data": {"room": room, "id": id}, "ref": "read"}))
        .await;
    loop {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("ack") if frame["ref"] == "read" => return,
            Some("error") => panic!("read refused: {frame}"),
            _ => continue,
        }
    }
}

/// Posts each text to `room` from `client` (which must have joined it).
async fn post_all(client: &mut Client, room: &str, texts: &[&str]) {
    for text in texts {
        client.post(room, text).await;
    }
}

#[tokio::test]
async fn a_guests_read_is_unauthorized() {
    let server = start_server().await;
    let mut guest = server.client("").await;
    guest.join("lobby").await;
    guest
        .send(json!({"type": "read", "data": {"room": "lobby", "id": 1}, "ref": 1}))
        .await;
    guest.expect_error("unauthorized", json!(1)).await;
    server.stop().await;
}

#[tokio::test]
async fn another_connection_of_the_account_gets_the_read_frame() {
    let server = server().await;
    let (mut laptop, _) = signed_in(server.addr, "ann").await;
    let (mut phone, _) = signed_in(server.addr, "ann").await;
    laptop.join("lobby").await;
    post_all(&mut laptop, "lobby", &["one", "two"]).await;
    read(&mut laptop, "lobby", 2).await;
    let moved = phone.recv_type("read").await;
    assert_eq!(moved["data"], json!({"room": "lobby", "id": 2}));
    server.stop().await;
}

#[tokio::test]
async fn another_account_does_not_get_the_read_frame() {
    let server = server().await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    post_all(&mut ann, "lobby", &["one"]).await;
    read(&mut ann, "lobby", 1).await;
    // bob's next answer comes after anything queued for him before it.
    bob.send(json!({"type": "members", "room": "lobby"})).await;
    loop {
        let frame = bob.recv().await;
        assert_ne!(frame["type"], "read", "{frame}");
        if frame["type"] == "members" {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn the_reading_connection_is_not_sent_its_own_read_frame() {
    let server = server().await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    ann.join("lobby").await;
    post_all(&mut ann, "lobby", &["one"]).await;
    read(&mut ann, "lobby", 1).await;
    ann.send(json!({"type": "members", "room": "lobby"})).await;
    loop {
        let frame = ann.recv().await;
        assert_ne!(frame["type"], "read", "{frame}");
        if frame["type"] == "members" {
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn joined_counts_unread_messages_after_the_marker_not_sent_by_the_account() {
    let server = server().await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    bob.join("lobby").await;
    ann.join("lobby").await;
    post_all(&mut bob, "lobby", &["1", "2", "3"]).await;
    post_all(&mut ann, "lobby", &["mine"]).await;
    post_all(&mut bob, "lobby", &["5"]).await;
    read(&mut ann, "lobby", 2).await;
    let (mut again, _) = signed_in(server.addr, "ann").await;
    let joined = again.join("lobby").await;
    assert_eq!(joined["data"]["last_read"], 2);
    assert_eq!(joined["data"]["unread"], 2, "3 and 5: 4 is ann's own");
    server.stop().await;
}

/// A connection's first joins count from the markers its sidebar read as it opened, and from
/// what moved since: a read on another device after the sidebar was read still counts.
#[tokio::test]
async fn a_join_soon_after_connecting_counts_from_a_marker_moved_after_the_sidebar_was_read() {
    let server = server().await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    bob.join("lobby").await;
    post_all(&mut bob, "lobby", &["1", "2", "3"]).await;
    let (mut phone, _) = signed_in(server.addr, "ann").await;
    phone.join("lobby").await;
    read(&mut phone, "lobby", 1).await;
    let (mut laptop, rooms) = signed_in(server.addr, "ann").await;
    let lobby = sidebar_entry(&rooms, "lobby");
    assert_eq!(lobby["last_read"], 1);
    read(&mut phone, "lobby", 3).await;
    let moved = laptop.recv_type("read").await;
    assert_eq!(moved["data"], json!({"room": "lobby", "id": 3}));
    let joined = laptop.join("lobby").await;
    assert_eq!(joined["data"]["last_read"], 3, "{joined}");
    assert_eq!(joined["data"]["unread"], 0, "{joined}");
    server.stop().await;
}

#[tokio::test]
async fn joined_counts_mentions_of_the_account() {
    let server = server().await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    signed_in(server.addr, "ann").await;
    bob.join("lobby").await;
    post_all(
        &mut bob,
        "lobby",
        &["hi @Ann", "@annie no", "plain", "@ann again"],
    )
    .await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    let joined = ann.join("lobby").await;
    assert_eq!(joined["data"]["unread"], 4);
    assert_eq!(joined["data"]["mentions"], 2);
    server.stop().await;
}

/// Leaves `room` and waits for `left` (the member is gone from the node when it comes).
async fn leave(client: &mut Client, room: &str) {
    client.send(json!({"type": "leave", "room": room})).await;
    client.recv_type("left").await;
}

/// A node counts a join's unread messages from memory while it holds every message after the
/// marker (hub/unread_ledger.rs); a room it has just taken up again holds only its newest 50,
/// so an older marker is counted by the store, with the same rules.
#[tokio::test]
async fn joined_counts_from_the_store_a_marker_older_than_the_nodes_memory_of_the_room() {
    let server = server().await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    bob.join("lobby").await;
    ann.join("lobby").await;
    post_all(&mut ann, "lobby", &["mine"]).await;
    read(&mut ann, "lobby", 1).await;
    let texts: Vec<String> = (2..=60).map(|id| format!("message {id}")).collect();
    let mut texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    texts[0] = "early news for @ann";
    post_all(&mut bob, "lobby", &texts).await;
    leave(&mut ann, "lobby").await;
    leave(&mut bob, "lobby").await;
    // Nobody is in the room: the next join reads its newest 50 (11..=60) and takes it up again.
    let (mut again, _) = signed_in(server.addr, "ann").await;
    let joined = again.join("lobby").await;
    assert_eq!(joined["data"]["last_read"], 1, "{joined}");
    assert_eq!(joined["data"]["unread"], 59, "{joined}");
    assert_eq!(joined["data"]["mentions"], 1, "{joined}");
    // Within memory now: read up to 10, and a later join counts 11..=60 there.
    read(&mut again, "lobby", 10).await;
    let (mut third, _) = signed_in(server.addr, "ann").await;
    let joined = third.join("lobby").await;
    assert_eq!(joined["data"]["unread"], 50, "{joined}");
    assert_eq!(joined["data"]["mentions"], 0, "{joined}");
    server.stop().await;
}

#[tokio::test]
async fn a_marker_never_moves_back() {
    let server = server().await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    ann.join("lobby").await;
    post_all(&mut ann, "lobby", &["1", "2", "3"]).await;
    read(&mut ann, "lobby", 3).await;
    read(&mut ann, "lobby", 1).await;
    let (mut again, _) = signed_in(server.addr, "ann").await;
    assert_eq!(again.join("lobby").await["data"]["last_read"], 3);
    server.stop().await;
}

#[tokio::test]
async fn the_sidebar_carries_a_public_rooms_unread_count_once_it_has_a_marker() {
    let server = server().await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    let (mut bob, _) = signed_in(server.addr, "bob").await;
    ann.join("rust").await;
    bob.join("rust").await;
    post_all(&mut bob, "rust", &["1", "2", "3 @ann"]).await;
    read(&mut ann, "rust", 1).await;
    let (_, rooms) = signed_in(server.addr, "ann").await;
    let rust = sidebar_entry(&rooms, "rust");
    assert_eq!(rust["last_id"], 3);
    assert_eq!(rust["last_read"], 1);
    assert_eq!(rust["unread"], 2);
    assert_eq!(rust["mentions"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_read_in_a_private_room_of_others_is_not_found() {
    let server = server().await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    ann.send(json!({"type": "create", "data": {"title": "Design", "private": true}}))
        .await;
    let room = ann.recv_type("room").await["data"]["room"].clone();
    let (mut eve, _) = signed_in(server.addr, "eve").await;
    eve.send(json!({"type": "read", "data": {"room": room, "id": 1}, "ref": 1}))
        .await;
    eve.expect_error("not_found", json!(1)).await;
    server.stop().await;
}

/// The real binary: a marker moved just before a graceful stop is written by the last flush and
/// is there after the restart.
#[tokio::test]
async fn a_marker_moved_just_before_a_stop_survives_the_restart() {
    let (_dir, data) = scratch();
    let port = free_port();
    let flags = ["--auth-secret", SECRET];
    let server = Binary::start(&data, port, &flags).await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    ann.join("lobby").await;
    post_all(&mut ann, "lobby", &["1", "2", "3"]).await;
    read(&mut ann, "lobby", 2).await;
    server.signal("TERM");
    assert!(server.wait().await.success());

    let server = Binary::start(&data, port, &flags).await;
    let (mut ann, _) = signed_in(server.addr, "ann").await;
    assert_eq!(ann.join("lobby").await["data"]["last_read"], 2);
    server.signal("TERM");
    assert!(server.wait().await.success());
}
