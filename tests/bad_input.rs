//! Every malformed frame gets a defined answer: an `error` frame (connection keeps working) or the
//! close code RFC 6455 prescribes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Closed, api_post, assert_api_error, get_json, http, start_server, start_server_with};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

async fn error_code_for(text: &str) -> Value {
    let server = start_server().await;
    let mut client = server.client("").await;
    client.send_text(text).await;
    let error = client.recv_type("error").await;
    // The connection keeps working after an error.
    client.join("still-open").await;
    server.stop().await;
    error
}

#[tokio::test]
async fn invalid_json_is_bad_json_and_the_connection_keeps_working() {
    assert_eq!(
        error_code_for("{not json").await["data"]["code"],
        "bad_json"
    );
}

#[tokio::test]
async fn json_that_is_not_an_object_is_bad_json() {
    assert_eq!(error_code_for("[1,2]").await["data"]["code"], "bad_json");
}

#[tokio::test]
async fn unknown_type_is_reported_with_ref() {
    let error = error_code_for(r#"{"type":"dance","ref":"r7"}"#).await;
    assert_eq!(error["data"]["code"], "unknown_type");
    assert_eq!(error["ref"], "r7");
}

#[tokio::test]
async fn missing_field_is_bad_json() {
    assert_eq!(
        error_code_for(r#"{"type":"join"}"#).await["data"]["code"],
        "bad_json"
    );
}

#[tokio::test]
async fn wrong_field_type_is_bad_json() {
    assert_eq!(
        error_code_for(r#"{"type":"msg","data":42}"#).await["data"]["code"],
        "bad_json"
    );
}

#[tokio::test]
async fn bad_room_name_is_bad_room() {
    let error = error_code_for(r#"{"type":"join","room":"no spaces"}"#).await;
    assert_eq!(error["data"]["code"], "bad_room");
}

#[tokio::test]
async fn text_over_the_limit_is_too_long_and_nothing_is_stored_or_broadcast() {
    let server = start_server_with(|c| c.max_message_bytes = 100).await;
    let mut sender = server.client("").await;
    let mut other = server.client("").await;
    sender.join("r").await;
    other.join("r").await;
    sender
        .send(json!({"type": "msg", "room": "r", "data": "x".repeat(101), "ref": 1}))
        .await;
    sender.expect_error("too_long", json!(1)).await;
    other
        .assert_no("msg", std::time::Duration::from_millis(200))
        .await;
    let history: Value = get_json(server.url("/api/rooms/r/messages")).await;
    assert_eq!(history["messages"], json!([]));
    // Exactly at the limit is fine.
    let ack = sender.post("r", &"y".repeat(100)).await;
    assert_eq!(ack["id"], 1);
    server.stop().await;
}

#[tokio::test]
async fn frame_over_the_frame_limit_closes_1009() {
    let server = start_server_with(|c| c.max_frame_bytes = 1024).await;
    let mut client = server.client("").await;
    client.send_text(&"x".repeat(2048)).await;
    assert_eq!(client.closed().await, Closed::Code(1009));
    server.stop().await;
}

#[tokio::test]
async fn binary_frame_closes_1003() {
    let server = start_server().await;
    let mut client = server.client("").await;
    client
        .ws
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(client.closed().await, Closed::Code(1003));
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_1007() {
    let server = start_server().await;
    let mut client = server.client("").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.closed().await, Closed::Code(1007));
    server.stop().await;
}

#[tokio::test]
async fn api_post_without_json_body_is_bad_json() {
    let server = start_server().await;
    let response = http()
        .post(server.url("/api/rooms/r/messages"))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_api_error(response, 400, "bad_json").await;
    server.stop().await;
}

#[tokio::test]
async fn api_post_with_bad_room_is_bad_room() {
    let server = start_server().await;
    let response = http()
        .post(server.url("/api/rooms/bad%20room/messages"))
        .json(&json!({"from": "a", "data": "b"}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 400, "bad_room").await;
    server.stop().await;
}

#[tokio::test]
async fn api_post_over_the_text_limit_is_too_long() {
    let server = start_server_with(|c| c.max_message_bytes = 10).await;
    let response = http()
        .post(server.url("/api/rooms/r/messages"))
        .json(&json!({"from": "a", "data": "x".repeat(11)}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 400, "too_long").await;
    assert_eq!(
        api_post(server.addr, "r", "a", "short").await,
        1,
        "nothing was stored before"
    );
    server.stop().await;
}
