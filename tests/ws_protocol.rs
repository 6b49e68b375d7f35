//! Protocol v1 over /ws, row by row (docs/protocol.md), against a real server on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, api_post, start_server};
use serde_json::json;

#[tokio::test]
async fn welcome_is_first_frame_with_generated_guest_name() {
    let server = start_server().await;
    let mut client = Client::connect_raw(server.addr, "/ws", "").await;
    let welcome = client.recv().await;
    assert_eq!(welcome["type"], "welcome");
    assert!(
        welcome["data"]["name"]
            .as_str()
            .unwrap()
            .starts_with("guest-")
    );
    assert_eq!(welcome["data"]["version"], env!("CARGO_PKG_VERSION"));
    server.stop().await;
}

#[tokio::test]
async fn name_query_sets_display_name() {
    let server = start_server().await;
    let mut client = Client::connect_raw(server.addr, "/ws", "name=alice").await;
    assert_eq!(client.recv().await["data"]["name"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn bad_name_query_is_refused_before_upgrade() {
    let server = start_server().await;
    let result =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?name=%07bell", server.addr)).await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn nick_changes_name_and_answers_welcome() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.send(json!({"type": "nick", "data": "bob"})).await;
    let welcome = client.recv_type("welcome").await;
    assert_eq!(welcome["data"]["name"], "bob");
    client.join("r").await;
    let ack = client.post("r", "hello").await;
    assert_eq!(ack["id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn nick_with_control_characters_is_bad_name() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client
        .send(json!({"type": "nick", "data": "a\u{7}b", "ref": 1}))
        .await;
    client.expect_error("bad_name", json!(1)).await;
    server.stop().await;
}

#[tokio::test]
async fn nick_announces_rename_to_other_members() {
    let server = start_server().await;
    let mut alice = server.client("name=alice").await;
    alice.join("r").await;
    let mut bob = server.client("name=bob").await;
    bob.join("r").await;
    alice.recv_type("presence").await;
    bob.send(json!({"type": "nick", "data": "robert"})).await;
    assert_eq!(alice.recv_type("presence").await["data"]["left"], "bob");
    assert_eq!(
        alice.recv_type("presence").await["data"]["joined"],
        "robert"
    );
    server.stop().await;
}

#[tokio::test]
async fn join_answers_joined_with_members_and_last_id() {
    let server = start_server().await;
    api_post(server.addr, "r", "x", "one").await;
    api_post(server.addr, "r", "x", "two").await;
    let mut alice = server.client("name=alice").await;
    alice.join("r").await;
    let mut bob = server.client("name=bob").await;
    let joined = bob.join("r").await;
    assert_eq!(joined["data"]["members"], json!(["alice", "bob"]));
    assert_eq!(joined["data"]["last_id"], 2);
    server.stop().await;
}

#[tokio::test]
async fn room_query_auto_joins() {
    let server = start_server().await;
    let mut client = server.client("room=auto").await;
    let joined = client.recv_type("joined").await;
    assert_eq!(joined["room"], "auto");
    server.stop().await;
}

#[tokio::test]
async fn join_without_since_replays_the_last_50() {
    let server = start_server().await;
    for i in 1..=60 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut client = server.client("").await;
    client.join("r").await;
    expect_messages(&mut client, 11..=60).await;
    server.stop().await;
}

#[tokio::test]
async fn join_with_since_replays_only_newer_messages_in_order() {
    let server = start_server().await;
    for i in 1..=5 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut client = server.client("").await;
    client
        .send(json!({"type": "join", "room": "r", "data": {"since": 3}}))
        .await;
    client.recv_type("joined").await;
    assert_eq!(client.recv_msg().await["id"], 4);
    assert_eq!(client.recv_msg().await["id"], 5);
    client.assert_no("msg", Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn joining_twice_answers_joined_again_without_replay() {
    let server = start_server().await;
    api_post(server.addr, "r", "x", "m1").await;
    let mut client = server.client("").await;
    client.join("r").await;
    client.recv_msg().await;
    client.join("r").await;
    client.assert_no("msg", Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn msg_is_broadcast_to_every_member_including_sender_then_acked() {
    let server = start_server().await;
    let mut alice = server.client("name=alice").await;
    let mut bob = server.client("name=bob").await;
    alice.join("r").await;
    bob.join("r").await;
    alice
        .send(json!({"type": "msg", "room": "r", "data": "hi bob", "ref": "a1"}))
        .await;
    let own = alice.recv_msg().await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(own["from"], "alice");
    assert_eq!(own["data"], "hi bob");
    assert_eq!(
        ack,
        json!({"type": "ack", "ref": "a1", "room": "r", "id": own["id"]})
    );
    let seen = bob.recv_msg().await;
    assert_eq!(seen, own);
    assert!(seen["ts"].as_i64().unwrap() > 1_600_000_000_000);
    server.stop().await;
}

#[tokio::test]
async fn tutorial_bare_msg_auto_joins_lobby() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.send_text(r#"{"type":"msg","data":"hi"}"#).await;
    let joined = client.recv_type("joined").await;
    assert_eq!(joined["room"], "lobby");
    let msg = client.recv_msg().await;
    assert_eq!(msg["room"], "lobby");
    assert_eq!(msg["data"], "hi");
    let ack = client.recv_type("ack").await;
    assert_eq!(ack["id"], msg["id"]);
    server.stop().await;
}

#[tokio::test]
async fn msg_to_a_room_not_joined_is_not_member() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.join("a").await;
    client
        .send(json!({"type": "msg", "room": "b", "data": "x", "ref": 9}))
        .await;
    client.expect_error("not_member", json!(9)).await;
    // Once a connection has joined a room, the bare form no longer auto-joins the lobby.
    client.send(json!({"type": "msg", "data": "x"})).await;
    assert_eq!(
        client.recv_type("error").await["data"]["code"],
        "not_member"
    );
    server.stop().await;
}

#[tokio::test]
async fn leave_answers_left_and_tells_the_others() {
    let server = start_server().await;
    let mut alice = server.client("name=alice").await;
    let mut bob = server.client("name=bob").await;
    alice.join("r").await;
    bob.join("r").await;
    alice.recv_type("presence").await;
    bob.send(json!({"type": "leave", "room": "r"})).await;
    assert_eq!(bob.recv_type("left").await["room"], "r");
    let presence = alice.recv_type("presence").await;
    assert_eq!(presence["data"], json!({"left": "bob"}));
    bob.send(json!({"type": "leave", "room": "r"})).await;
    assert_eq!(bob.recv_type("error").await["data"]["code"], "not_member");
    server.stop().await;
}

#[tokio::test]
async fn presence_reaches_other_members_on_join_and_disconnect() {
    let server = start_server().await;
    let mut alice = server.client("name=alice").await;
    alice.join("r").await;
    let mut bob = server.client("name=bob").await;
    bob.join("r").await;
    let joined = alice.recv_type("presence").await;
    assert_eq!(
        joined,
        json!({"type": "presence", "room": "r", "data": {"joined": "bob"}})
    );
    drop(bob);
    let left = alice.recv_type("presence").await;
    assert_eq!(left["data"], json!({"left": "bob"}));
    server.stop().await;
}

#[tokio::test]
async fn typing_reaches_the_others_but_not_the_sender() {
    let server = start_server().await;
    let mut alice = server.client("name=alice").await;
    let mut bob = server.client("name=bob").await;
    alice.join("r").await;
    bob.join("r").await;
    bob.send(json!({"type": "typing", "room": "r"})).await;
    let typing = alice.recv_type("typing").await;
    assert_eq!(
        typing,
        json!({"type": "typing", "room": "r", "from": "bob"})
    );
    bob.assert_no("typing", Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn typing_in_a_room_not_joined_is_not_member() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.send(json!({"type": "typing", "room": "r"})).await;
    assert_eq!(
        client.recv_type("error").await["data"]["code"],
        "not_member"
    );
    server.stop().await;
}

#[tokio::test]
async fn history_pages_backwards_with_has_more() {
    let server = start_server().await;
    for i in 1..=5 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut client = server.client("").await;
    client
        .send(json!({"type": "history", "room": "r", "data": {"before": 5, "limit": 2}}))
        .await;
    let history = client.recv_type("history").await;
    let ids: Vec<u64> = history["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![3, 4]);
    assert_eq!(history["data"]["has_more"], true);
    client
        .send(json!({"type": "history", "room": "r", "data": {"before": 3, "limit": 2}}))
        .await;
    let history = client.recv_type("history").await;
    assert_eq!(history["data"]["messages"][0]["id"], 1);
    assert_eq!(history["data"]["has_more"], false);
    server.stop().await;
}

#[tokio::test]
async fn messages_to_different_rooms_stay_in_their_room() {
    let server = start_server().await;
    let mut alice = server.client("").await;
    let mut bob = server.client("").await;
    alice.join("a").await;
    bob.join("b").await;
    alice.post("a", "for a").await;
    bob.send(json!({"type": "msg", "room": "b", "data": "for b"}))
        .await;
    assert_eq!(bob.recv_msg().await["data"], "for b");
    assert_eq!(bob.recv_type("ack").await["id"], 1, "ids are per room");
    bob.assert_no("msg", Duration::from_millis(200)).await;
    server.stop().await;
}

#[tokio::test]
async fn resume_with_since_has_no_gap_and_no_duplicate_while_others_post() {
    resume_while_others_post(false).await;
}

/// Posts continue while a reader is away and while it rejoins with `since`; with `occupied` a
/// keeper stays in the room, so the rejoin replays from memory when it can.
async fn resume_while_others_post(occupied: bool) {
    let server = start_server().await;
    let mut keeper = server.client("").await;
    if occupied {
        keeper.join("r").await;
    }
    let mut reader = server.client("").await;
    reader.join("r").await;
    for i in 1..=10 {
        api_post(server.addr, "r", "w", &format!("m{i}")).await;
    }
    let mut last_seen = 0;
    for _ in 0..10 {
        last_seen = reader.recv_msg().await["id"].as_u64().unwrap();
    }
    drop(reader);

    let addr = server.addr;
    let writer = tokio::spawn(async move {
        for i in 11..=200 {
            api_post(addr, "r", "w", &format!("m{i}")).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut reader = server.client("").await;
    reader
        .send(json!({"type": "join", "room": "r", "data": {"since": last_seen}}))
        .await;
    reader.recv_type("joined").await;
    writer.await.unwrap();
    for expected in 11..=200 {
        let msg = reader.recv_msg().await;
        assert_eq!(msg["id"], expected, "in order, no gap, no duplicate");
    }
    reader.assert_no("msg", Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn since_beyond_the_newest_id_still_gets_new_messages() {
    let server = start_server().await;
    api_post(server.addr, "r", "x", "m1").await;
    let mut client = server.client("").await;
    client
        .send(json!({"type": "join", "room": "r", "data": {"since": 500}}))
        .await;
    assert_eq!(client.recv_type("joined").await["data"]["last_id"], 1);
    api_post(server.addr, "r", "x", "m2").await;
    let msg = client.recv_msg().await;
    assert_eq!(msg["id"], 2);
    assert_eq!(msg["data"], "m2");
    server.stop().await;
}

/// While a room has members, a join replays its newest messages from memory: what the first
/// join read from the store merged with what was posted since, exactly as the store has them.
#[tokio::test]
async fn join_into_an_occupied_room_replays_the_last_50_from_memory() {
    let server = start_server().await;
    for i in 1..=30 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut keeper = server.client("").await;
    keeper.join("r").await;
    for i in 31..=60 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut client = server.client("").await;
    assert_eq!(client.join("r").await["data"]["last_id"], 60);
    expect_messages(&mut client, 11..=60).await;
    server.stop().await;
}

/// A resume from further back than the room keeps in memory reads the store.
#[tokio::test]
async fn resume_from_before_the_recent_messages_reads_them_from_the_store() {
    let server = start_server().await;
    let mut keeper = server.client("").await;
    keeper.join("r").await;
    for i in 1..=60 {
        api_post(server.addr, "r", "x", &format!("m{i}")).await;
    }
    let mut client = server.client("").await;
    client
        .send(json!({"type": "join", "room": "r", "data": {"since": 5}}))
        .await;
    client.recv_type("joined").await;
    expect_messages(&mut client, 6..=60).await;
    server.stop().await;
}

#[tokio::test]
async fn resume_into_an_occupied_room_has_no_gap_and_no_duplicate_while_others_post() {
    resume_while_others_post(true).await;
}

/// The next messages are exactly `ids`, in order, each with the text `m{id}` it was posted with.
async fn expect_messages(client: &mut Client, ids: std::ops::RangeInclusive<u64>) {
    for id in ids {
        let msg = client.recv_msg().await;
        assert_eq!(msg["id"], id);
        assert_eq!(msg["data"], format!("m{id}"));
    }
    client.assert_no("msg", Duration::from_millis(200)).await;
}
