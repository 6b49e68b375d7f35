//! A member that stops reading is closed with 1013 and never slows the room down.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Closed, get_text, start_server_with};
use serde_json::json;

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
