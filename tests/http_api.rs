//! The HTTP routes: API, health, metrics and the embedded client.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    api_post, assert_api_error, get_json, get_text, http, start_server, start_single_node,
};
use serde_json::{Value, json};

#[tokio::test]
async fn post_answers_201_with_id_and_broadcasts_like_a_websocket_msg() {
    let server = start_server().await;
    let mut member = server.client("").await;
    member.join("r").await;
    let response = http()
        .post(server.url("/api/rooms/r/messages"))
        .json(&json!({"from": "bot", "data": "from http"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"id": 1, "room": "r"}));
    let msg = member.recv_msg().await;
    assert_eq!(msg["id"], 1);
    assert_eq!(msg["from"], "bot");
    assert_eq!(msg["data"], "from http");
    server.stop().await;
}

#[tokio::test]
async fn websocket_and_http_posts_share_one_id_sequence() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.join("r").await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
    assert_eq!(client.post("r", "two").await["id"], 2);
    assert_eq!(api_post(server.addr, "r", "a", "three").await, 3);
    server.stop().await;
}

#[tokio::test]
async fn history_route_pages_oldest_first_with_has_more() {
    let server = start_server().await;
    for i in 1..=7 {
        api_post(server.addr, "r", "a", &format!("m{i}")).await;
    }
    let page: Value = get_json(server.url("/api/rooms/r/messages?limit=3")).await;
    let ids: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![5, 6, 7]);
    assert_eq!(page["has_more"], true);
    assert_eq!(
        page["messages"][0],
        json!({"room": "r", "id": 5, "ts": page["messages"][0]["ts"], "from": "a", "data": "m5"})
    );
    let older: Value = get_json(server.url("/api/rooms/r/messages?before=5&limit=10")).await;
    assert_eq!(older["messages"].as_array().unwrap().len(), 4);
    assert_eq!(older["has_more"], false);
    server.stop().await;
}

#[tokio::test]
async fn history_with_a_non_numeric_before_is_bad_json() {
    let server = start_server().await;
    let response = http()
        .get(server.url("/api/rooms/r/messages?before=abc"))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 400, "bad_json").await;
    server.stop().await;
}

#[tokio::test]
async fn rooms_route_lists_members_and_last_id() {
    let server = start_server().await;
    api_post(server.addr, "stored", "a", "x").await;
    api_post(server.addr, "stored", "a", "y").await;
    let mut client = server.client("").await;
    client.join("live").await;
    let rooms: Value = get_json(server.url("/api/rooms")).await;
    assert_eq!(
        rooms,
        json!([
            {"room": "live", "members": 1, "last_id": 0},
            {"room": "stored", "members": 0, "last_id": 2},
        ])
    );
    server.stop().await;
}

#[tokio::test]
async fn healthz_is_ok() {
    let server = start_server().await;
    let response = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
    server.stop().await;
}

/// One node even in cluster mode: /metrics describes the node that answers it, and behind nginx
/// the request would reach any of three.
#[tokio::test]
async fn metrics_report_connections_rooms_messages_and_store_latency() {
    let server = start_single_node().await;
    let mut client = server.client("").await;
    client.join("r").await;
    client.post("r", "counted").await;
    let text = get_text(server.url("/metrics")).await;
    assert!(
        text.contains("hubbub_connections{transport=\"ws\"} 1"),
        "{text}"
    );
    assert!(text.contains("hubbub_rooms 1"), "{text}");
    assert!(text.contains("hubbub_messages_in_total 1"), "{text}");
    assert!(text.contains("hubbub_messages_out_total 1"), "{text}");
    assert!(
        text.contains("hubbub_store_commit_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn index_serves_the_embedded_web_client() {
    let server = start_server().await;
    let response = http().get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.text().await.unwrap().contains("hubbub"));
    let missing = http().get(server.url("/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
