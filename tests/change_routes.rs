//! Changes to messages over HTTP (issue 20, docs/protocol.md "HTTP API"): `PATCH` and `DELETE`
//! `/api/rooms/{room}/messages/{id}`, and `POST`/`DELETE` `.../reactions`. Each success reaches
//! a live WebSocket member as the `change` frame a WebSocket edit, delete or reaction sends;
//! each refusal has the WebSocket frame's code as its HTTP error (someone else's message, a bad
//! emoji, a caller without an account, a cookie request without its CSRF token, a room the
//! caller may not see), and changes nothing. Real loopback sockets against an in-process server
//! (PostgreSQL with `HUBBUB_TEST_DB`).
#![allow(clippy::unwrap_used)]

mod common;

use common::accounts::sign_up;
use common::tokens::{member_of, server, token};
use common::{Client, TestServer, assert_api_error, http, start_server};
use reqwest::Method;
use serde_json::{Value, json};

const ROOM: &str = "lobby";

/// `name`, signed in with a token, past its sidebar, and in [`ROOM`].
async fn member(server: &TestServer, name: &str) -> Client {
    member_of(server, name, ROOM).await
}

/// `method path` as `name` (a bearer token), with a JSON body when given.
async fn as_account(
    server: &TestServer,
    name: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = http()
        .request(method, server.url(path))
        .header("authorization", format!("Bearer {}", token(name)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

fn message_path(id: &Value) -> String {
    format!("/api/rooms/{ROOM}/messages/{id}")
}

fn reactions_path(id: &Value) -> String {
    format!("/api/rooms/{ROOM}/messages/{id}/reactions")
}

/// The room's history page as the HTTP API serves it to `name`.
async fn api_page(server: &TestServer, name: &str) -> Value {
    let response = as_account(
        server,
        name,
        Method::GET,
        &format!("/api/rooms/{ROOM}/messages"),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn patch_edits_ones_own_message_and_members_get_the_change() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "teh plan").await["id"].clone();
    bob.recv_msg().await;

    let response = as_account(
        &server,
        "ann",
        Method::PATCH,
        &message_path(&id),
        Some(json!({"text": "the plan"})),
    )
    .await;
    assert_eq!(response.status(), 204);

    let change = bob.recv_type("change").await;
    assert_eq!(change["data"]["kind"], "edit");
    assert_eq!(change["data"]["id"], id);
    assert_eq!(
        api_page(&server, "bob").await["messages"][0]["data"],
        "the plan"
    );
    server.stop().await;
}

#[tokio::test]
async fn delete_removes_ones_own_message_and_members_get_the_change() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "regret").await["id"].clone();
    bob.recv_msg().await;

    let response = as_account(&server, "ann", Method::DELETE, &message_path(&id), None).await;
    assert_eq!(response.status(), 204);

    let change = bob.recv_type("change").await;
    assert_eq!(change["data"]["kind"], "delete");
    assert_eq!(change["data"]["by"], "author");
    assert_eq!(
        api_page(&server, "bob").await["messages"][0]["deleted"],
        true
    );
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_added_by_post_and_taken_back_by_delete_with_query_or_body() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "ship it?").await["id"].clone();

    for emoji in ["👍", "🎉"] {
        let added = as_account(
            &server,
            "bob",
            Method::POST,
            &reactions_path(&id),
            Some(json!({"emoji": emoji})),
        )
        .await;
        assert_eq!(added.status(), 204);
        let change = ann.recv_type("change").await;
        assert_eq!(change["data"]["kind"], "react", "{change}");
        assert_eq!(change["data"]["emoji"], emoji, "{change}");
    }
    let by_query = format!("{}?emoji=%F0%9F%91%8D", reactions_path(&id));
    let removed = as_account(&server, "bob", Method::DELETE, &by_query, None).await;
    assert_eq!(removed.status(), 204);
    assert_eq!(ann.recv_type("change").await["data"]["emoji"], "👍");
    let by_body = as_account(
        &server,
        "bob",
        Method::DELETE,
        &reactions_path(&id),
        Some(json!({"emoji": "🎉"})),
    )
    .await;
    assert_eq!(by_body.status(), 204);
    assert_eq!(ann.recv_type("change").await["data"]["emoji"], "🎉");

    let page = api_page(&server, "ann").await;
    assert!(page.get("state").is_none(), "no reaction is left: {page}");
    server.stop().await;
}

#[tokio::test]
async fn someone_elses_message_is_403_forbidden_and_unchanged() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "mine").await["id"].clone();

    let edit = as_account(
        &server,
        "bob",
        Method::PATCH,
        &message_path(&id),
        Some(json!({"text": "yours now"})),
    )
    .await;
    assert_api_error(edit, 403, "forbidden").await;
    let delete = as_account(&server, "bob", Method::DELETE, &message_path(&id), None).await;
    assert_api_error(delete, 403, "forbidden").await;

    let page = api_page(&server, "ann").await;
    assert_eq!(page["messages"][0]["data"], "mine");
    assert_eq!(page["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_reaction_that_is_not_one_emoji_is_400_bad_emoji() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "react to me").await["id"].clone();

    for emoji in ["lol", "👍👍", ""] {
        let response = as_account(
            &server,
            "bob",
            Method::POST,
            &reactions_path(&id),
            Some(json!({"emoji": emoji})),
        )
        .await;
        assert_api_error(response, 400, "bad_emoji").await;
    }
    assert_eq!(api_page(&server, "ann").await["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_message_that_does_not_exist_is_404() {
    let server = server().await;
    let response = as_account(
        &server,
        "ann",
        Method::PATCH,
        &message_path(&json!(99)),
        Some(json!({"text": "x"})),
    )
    .await;
    assert_api_error(response, 404, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn a_caller_without_a_token_is_401_when_auth_is_on() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "mine").await["id"].clone();

    let response = http()
        .patch(server.url(&message_path(&id)))
        .json(&json!({"text": "anonymous"}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 401, "unauthenticated").await;
    assert_eq!(
        api_page(&server, "ann").await["messages"][0]["data"],
        "mine"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_guest_is_401_and_changes_nothing() {
    let server = start_server().await;
    let mut guest = server.client("name=visitor").await;
    guest.join(ROOM).await;
    let id = guest.post(ROOM, "guest words").await["id"].clone();

    let edit = http()
        .patch(server.url(&message_path(&id)))
        .json(&json!({"text": "changed"}))
        .send()
        .await
        .unwrap();
    assert_api_error(edit, 401, "unauthenticated").await;
    let react = http()
        .post(server.url(&reactions_path(&id)))
        .json(&json!({"emoji": "👍"}))
        .send()
        .await
        .unwrap();
    assert_api_error(react, 401, "unauthenticated").await;
    let delete = http()
        .delete(server.url(&message_path(&id)))
        .send()
        .await
        .unwrap();
    assert_api_error(delete, 401, "unauthenticated").await;

    let page = common::get_json(server.url(&format!("/api/rooms/{ROOM}/messages"))).await;
    assert_eq!(page["messages"][0]["data"], "guest words");
    assert_eq!(page["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_cookie_request_without_the_csrf_token_is_403_and_with_it_passes() {
    let server = start_server().await;
    let ann = sign_up(server.addr, "ann").await;
    let posted = ann
        .post(
            server.addr,
            &format!("/api/rooms/{ROOM}/messages"),
            json!({"data": "teh"}),
        )
        .await;
    assert_eq!(posted.status(), 201);
    let id = posted.json::<Value>().await.unwrap()["id"].clone();

    let without = http()
        .patch(server.url(&message_path(&id)))
        .header("cookie", &ann.cookie)
        .json(&json!({"text": "forged"}))
        .send()
        .await
        .unwrap();
    assert_api_error(without, 403, "bad_csrf").await;
    let with = http()
        .patch(server.url(&message_path(&id)))
        .header("cookie", &ann.cookie)
        .header("x-csrf-token", &ann.csrf)
        .json(&json!({"text": "the"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 204);

    let page = common::get_json(server.url(&format!("/api/rooms/{ROOM}/messages"))).await;
    assert_eq!(page["messages"][0]["data"], "the");
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_the_caller_is_not_in_is_404_like_no_room() {
    let server = server().await;
    let mut ann = server.client(&format!("token={}", token("ann"))).await;
    ann.recv_type("rooms").await;
    ann.send(json!({"type": "create", "data": {"title": "Secret", "private": true}, "ref": 1}))
        .await;
    let room = ann.recv_type("ack").await["room"]
        .as_str()
        .unwrap()
        .to_owned();
    ann.join(&room).await;
    let id = ann.post(&room, "hidden").await["id"].clone();

    let path = format!("/api/rooms/{room}/messages/{id}/reactions");
    let response = as_account(
        &server,
        "bob",
        Method::POST,
        &path,
        Some(json!({"emoji": "👀"})),
    )
    .await;
    assert_api_error(response, 404, "not_found").await;
    server.stop().await;
}
