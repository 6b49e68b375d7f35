//! /echo, the tutorial's first server.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, start_server, start_server_with};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn echo_returns_text_and_binary_unchanged() {
    let server = start_server().await;
    let mut client = Client::connect_raw(server.addr, "/echo", "").await;
    client
        .ws
        .send(Message::text("héllo {not json}"))
        .await
        .unwrap();
    client
        .ws
        .send(Message::binary(vec![0u8, 159, 255]))
        .await
        .unwrap();
    let text = client.ws.next().await.unwrap().unwrap();
    assert_eq!(text, Message::text("héllo {not json}"));
    let binary = client.ws.next().await.unwrap().unwrap();
    assert_eq!(binary, Message::binary(vec![0u8, 159, 255]));
    server.stop().await;
}

#[tokio::test]
async fn echo_accepts_messages_far_beyond_the_chat_frame_limit() {
    let server = start_server().await;
    let mut client = Client::connect_raw(server.addr, "/echo", "").await;
    let big = "z".repeat(1024 * 1024);
    client.ws.send(Message::text(big.clone())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), client.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), big);
    server.stop().await;
}

#[tokio::test]
async fn no_echo_turns_the_endpoint_off() {
    let server = start_server_with(|c| c.echo_enabled = false).await;
    let result = tokio_tungstenite::connect_async(format!("ws://{}/echo", server.addr)).await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404, got {other:?}"),
    }
    server.stop().await;
}
