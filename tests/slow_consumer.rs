//! A member that stops reading is closed with 1013 and never slows the room down.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Closed, get_text, start_server_with};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn member_that_stops_reading_is_closed_1013_and_others_get_everything() {
    let server = start_server_with(|c| c.hub.outbox_frames = 32).await;
    let mut stalled = server.client("name=stalled").await;
    stalled.join("r").await;
    let mut healthy = server.client("name=healthy").await;
    healthy.join("r").await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;

    // Big frames fill the stalled client's socket buffers quickly; it never reads.
    let text = "x".repeat(4000);
    let total = 1500;
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            let msg = healthy.recv_msg().await;
            assert_eq!(msg["id"], seen + 1, "the healthy member misses nothing");
            seen += 1;
        }
        healthy
    });
    for i in 0..total {
        poster
            .send(json!({"type": "msg", "room": "r", "data": text, "ref": i}))
            .await;
        poster.recv_type("ack").await;
    }
    let _healthy = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the healthy member keeps up")
        .unwrap();

    let metrics = get_text(server.url("/metrics")).await;
    assert!(
        metrics.contains("hubbub_slow_consumer_closes_total 1"),
        "{metrics}"
    );

    // Now the stalled client reads: what was queued before the verdict, then the close frame
    // (or a reset if the server gave up on writing to it).
    let closed = stalled.closed().await;
    assert!(
        matches!(closed, Closed::Code(1013) | Closed::WithoutCloseFrame),
        "{closed:?}"
    );

    // It can resume with `since` and get everything.
    let mut resumed = Client::connect(server.addr, "name=stalled").await;
    resumed
        .send(json!({"type": "join", "room": "r", "data": {"since": 0}}))
        .await;
    resumed.recv_type("joined").await;
    for id in 1..=total {
        assert_eq!(resumed.recv_msg().await["id"], id);
    }
    server.stop().await;
}

/// A member whose connection breaks while its replay waits for room in the outbox leaves the
/// room at once: its task stops waiting for a drain that a broken socket can never give, in a
/// room where nothing else happens that would close it.
#[tokio::test]
async fn a_member_whose_connection_breaks_during_its_replay_leaves_the_room() {
    let server = start_server_with(|c| c.hub.outbox_frames = 32).await;
    // A history far bigger than the socket buffers, posted pipelined.
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    let text = "x".repeat(4000);
    let total = 1500;
    for i in 0..total {
        poster
            .send(json!({"type": "msg", "room": "r", "data": text, "ref": i}))
            .await;
    }
    for _ in 0..total {
        poster.recv_type("ack").await;
    }
    let mut watcher = server.client("name=watcher").await;
    watcher.join("r").await;

    // A member that asks for the whole history behind a small receive buffer and reads only up
    // to its `joined`: the server's replay fills the socket and waits for room.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let request = format!("ws://{}/ws?name=ghost", server.addr)
        .into_client_request()
        .unwrap();
    let (mut ghost, _) = tokio_tungstenite::client_async(request, tcp).await.unwrap();
    let join = json!({"type": "join", "room": "r", "data": {"since": 0}});
    ghost.send(Message::text(join.to_string())).await.unwrap();
    loop {
        let frame = ghost.next().await.unwrap().unwrap();
        if frame.to_text().unwrap().contains(r#""type":"joined""#) {
            break;
        }
    }
    assert_eq!(presence_of(&mut watcher).await, json!({"joined": "ghost"}));

    // The connection breaks (a reset: no close frame, no FIN).
    ghost.get_ref().set_zero_linger().unwrap();
    drop(ghost);
    assert_eq!(presence_of(&mut watcher).await, json!({"left": "ghost"}));
    server.stop().await;
}

/// The data of the next `presence` frame about a member joining or leaving (counts skipped).
async fn presence_of(client: &mut Client) -> serde_json::Value {
    loop {
        let frame = client.recv_type("presence").await;
        if frame["data"].get("count").is_none() {
            return frame["data"].clone();
        }
    }
}
