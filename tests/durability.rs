//! Crashes and restarts of the real binary: acked messages survive `kill -9` with their ids, ids
//! keep increasing across restarts, and SIGTERM closes sockets with 1001 and exits 0.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{Binary, Closed, api_post, free_port, get_json, scratch};
use serde_json::{Value, json};

async fn stored_ids(addr: std::net::SocketAddr, room: &str) -> BTreeMap<u64, String> {
    let mut ids = BTreeMap::new();
    let mut before: Option<u64> = None;
    loop {
        let url = match before {
            Some(b) => format!("http://{addr}/api/rooms/{room}/messages?limit=200&before={b}"),
            None => format!("http://{addr}/api/rooms/{room}/messages?limit=200"),
        };
        let page: Value = get_json(url).await;
        let messages = page["messages"].as_array().unwrap();
        for m in messages {
            ids.insert(
                m["id"].as_u64().unwrap(),
                m["data"].as_str().unwrap().to_owned(),
            );
        }
        if page["has_more"] != true {
            return ids;
        }
        before = messages.first().and_then(|m| m["id"].as_u64());
    }
}

#[tokio::test]
async fn acked_messages_survive_kill_9_with_their_ids() {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, &[]).await;
    let mut client = server.client("").await;
    client.join("r").await;

    // Post a burst without waiting for each ack, then kill the process mid-burst.
    for i in 0..300 {
        client
            .send(json!({"type": "msg", "room": "r", "data": format!("m{i}"), "ref": i}))
            .await;
    }
    let mut acked = BTreeMap::new();
    while acked.len() < 100 {
        let frame = client.recv().await;
        if frame["type"] == "ack" {
            acked.insert(frame["id"].as_u64().unwrap(), format!("m{}", frame["ref"]));
        }
    }
    server.signal("KILL");
    server.wait().await;

    let server = Binary::start(&data, port, &[]).await;
    let stored = stored_ids(server.addr, "r").await;
    for (id, text) in &acked {
        assert_eq!(
            stored.get(id),
            Some(text),
            "acked message {id} survived with its id"
        );
    }
    let next = api_post(server.addr, "r", "a", "after restart").await;
    assert!(
        next > *stored.keys().last().unwrap(),
        "ids are never reused"
    );
}

#[tokio::test]
async fn ids_strictly_increase_across_a_restart() {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, &[]).await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
    assert_eq!(api_post(server.addr, "r", "a", "two").await, 2);
    server.signal("TERM");
    assert!(server.wait().await.success());

    let server = Binary::start(&data, port, &[]).await;
    assert_eq!(api_post(server.addr, "r", "a", "three").await, 3);
    let mut client = server.client("").await;
    client
        .send(json!({"type": "join", "room": "r", "data": {"since": 1}}))
        .await;
    client.recv_type("joined").await;
    assert_eq!(client.recv_msg().await["data"], "two");
    assert_eq!(client.recv_msg().await["data"], "three");
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_flushes_acks_and_exits_0() {
    let (_dir, data) = scratch();
    let port = free_port();
    let server = Binary::start(&data, port, &[]).await;
    let mut watcher = server.client("").await;
    watcher.join("r").await;
    let mut poster = server.client("").await;
    poster.join("r").await;
    for i in 0..50 {
        poster
            .send(json!({"type": "msg", "room": "r", "data": format!("m{i}"), "ref": i}))
            .await;
    }
    server.signal("TERM");

    // Every ack the poster receives before the close names a stored message.
    let mut acked = Vec::new();
    let closed = loop {
        match tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut poster.ws))
            .await
            .unwrap()
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "ack" {
                    acked.push(frame["id"].as_u64().unwrap());
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed, Some(1001));
    assert_eq!(watcher.closed().await, Closed::Code(1001));
    assert!(server.wait().await.success(), "exit status 0");

    let server = Binary::start(&data, port, &[]).await;
    let stored = stored_ids(server.addr, "r").await;
    for id in acked {
        assert!(stored.contains_key(&id), "acked message {id} was stored");
    }
}
