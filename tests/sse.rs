//! Server-Sent Events at /events: the same JSON frames, message ids as event ids.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{api_post, http, start_server};
use serde_json::Value;

/// A minimal EventSource: reads `id:`/`data:` events from a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug)]
struct SseEvent {
    id: Option<String>,
    data: Value,
}

impl EventStream {
    async fn open(url: String, last_event_id: Option<&str>) -> EventStream {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return SseEvent {
                    id,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event arrives in time")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    async fn next_of(&mut self, kind: &str) -> SseEvent {
        loop {
            let event = self.next().await;
            if event.data["type"] == kind {
                return event;
            }
        }
    }
}

#[tokio::test]
async fn events_stream_welcome_joined_and_live_messages_with_ids() {
    let server = start_server().await;
    let mut events = EventStream::open(server.url("/events?room=r&name=sse-user"), None).await;
    assert_eq!(events.next().await.data["data"]["name"], "sse-user");
    let joined = events.next_of("joined").await;
    assert_eq!(joined.data["room"], "r");
    assert_eq!(joined.id, None);
    api_post(server.addr, "r", "a", "live").await;
    let msg = events.next_of("msg").await;
    assert_eq!(msg.id.as_deref(), Some("1"));
    assert_eq!(msg.data["data"], "live");
    server.stop().await;
}

#[tokio::test]
async fn events_since_replays_newer_messages() {
    let server = start_server().await;
    for i in 1..=4 {
        api_post(server.addr, "r", "a", &format!("m{i}")).await;
    }
    let mut events = EventStream::open(server.url("/events?room=r&since=2"), None).await;
    assert_eq!(events.next_of("msg").await.id.as_deref(), Some("3"));
    assert_eq!(events.next_of("msg").await.id.as_deref(), Some("4"));
    server.stop().await;
}

#[tokio::test]
async fn last_event_id_header_wins_over_since() {
    let server = start_server().await;
    for i in 1..=4 {
        api_post(server.addr, "r", "a", &format!("m{i}")).await;
    }
    let mut events = EventStream::open(server.url("/events?room=r&since=0"), Some("3")).await;
    let msg = events.next_of("msg").await;
    assert_eq!(msg.id.as_deref(), Some("4"));
    server.stop().await;
}

#[tokio::test]
async fn sse_member_appears_in_presence_and_leaves_when_closed() {
    let server = start_server().await;
    let mut member = server.client("name=ws").await;
    member.join("r").await;
    let events = EventStream::open(server.url("/events?room=r&name=listener"), None).await;
    let presence = member.recv_type("presence").await;
    assert_eq!(presence["data"]["joined"], "listener");
    drop(events);
    let presence = member.recv_type("presence").await;
    assert_eq!(presence["data"]["left"], "listener");
    server.stop().await;
}

#[tokio::test]
async fn events_with_a_bad_room_is_400() {
    let server = start_server().await;
    let response = http()
        .get(server.url("/events?room=no%20spaces"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    server.stop().await;
}
