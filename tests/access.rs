//! Who may do what (issue #4): the Origin check on sockets, token auth on sockets, SSE and the
//! API, the token's name and rooms, and the `hubbub token` command. Real loopback sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Binary, assert_api_error, free_port, http, refusal, scratch, start_server_with, try_connect,
};
use hubbub::config::Secret;
use hubbub::token::{Claims, mint, now_secs, sign};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-some-length";

fn token(sub: &str, rooms: Option<&[&str]>) -> String {
    let rooms = rooms.map(|r| r.iter().map(|s| (*s).to_owned()).collect());
    mint(
        &Secret::new(SECRET),
        &Claims::new(sub, rooms, Duration::from_secs(600)),
    )
    .unwrap()
}

/// POSTs `body` to `url` with `token` as a bearer token.
async fn post_with_token(
    url: impl reqwest::IntoUrl,
    token: &str,
    body: &Value,
) -> reqwest::Response {
    http()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn auth_server() -> common::TestServer {
    start_server_with(|c| c.auth_secret = Some(Secret::new(SECRET))).await
}

#[tokio::test]
async fn cross_origin_socket_is_403() {
    let server = start_server_with(|_| {}).await;
    let evil = [("Origin", "https://evil.example")];
    let (status, code) = refusal(try_connect(server.addr, "/ws", &evil, None).await);
    assert_eq!(status, 403);
    assert_eq!(code, "bad_origin");
    let events = http()
        .get(server.url("/events?room=r"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_api_error(events, 403, "bad_origin").await;
    // The server's own pages, and clients that send no Origin, are allowed.
    let own = format!("http://{}", server.addr);
    let mut same = try_connect(server.addr, "/ws", &[("Origin", &own)], None)
        .await
        .unwrap();
    assert_eq!(same.recv().await["type"], "welcome");
    let mut plain = try_connect(server.addr, "/ws", &[], None).await.unwrap();
    assert_eq!(plain.recv().await["type"], "welcome");
    server.stop().await;
}

#[tokio::test]
async fn allowed_origin_may_open_a_socket() {
    let server =
        start_server_with(|c| c.allowed_origins = vec!["https://app.example".to_owned()]).await;
    let app = [("Origin", "https://app.example")];
    let mut client = try_connect(server.addr, "/ws", &app, None).await.unwrap();
    assert_eq!(client.recv().await["type"], "welcome");
    let other = [("Origin", "https://other.example")];
    let (status, _) = refusal(try_connect(server.addr, "/ws", &other, None).await);
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn expired_token_is_401_before_upgrade() {
    let server = auth_server().await;
    // No token at all.
    let (status, code) = refusal(try_connect(server.addr, "/ws", &[], None).await);
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    // Expired.
    let mut claims = Claims::new("alice", None, Duration::from_secs(60));
    claims.exp = now_secs() - 3600;
    let expired = sign(&Secret::new(SECRET), &claims).unwrap();
    let path = format!("/ws?token={expired}");
    let (status, code) = refusal(try_connect(server.addr, &path, &[], None).await);
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    // Signed with another secret.
    let forged = mint(
        &Secret::new("another-secret-entirely"),
        &Claims::new("alice", None, Duration::from_secs(60)),
    )
    .unwrap();
    let path = format!("/ws?token={forged}");
    let (status, _) = refusal(try_connect(server.addr, &path, &[], None).await);
    assert_eq!(status, 401);
    // Garbage.
    let (status, _) = refusal(try_connect(server.addr, "/ws?token=abc.def.ghi", &[], None).await);
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn valid_token_in_query_or_bearer_header_names_the_connection() {
    let server = auth_server().await;
    let path = format!("/ws?token={}", token("alice", None));
    let mut by_query = try_connect(server.addr, &path, &[], None).await.unwrap();
    assert_eq!(by_query.recv().await["data"]["name"], "alice");
    let bearer = format!("Bearer {}", token("bob", None));
    let mut by_header = try_connect(server.addr, "/ws", &[("Authorization", &bearer)], None)
        .await
        .unwrap();
    assert_eq!(by_header.recv().await["data"]["name"], "bob");
    server.stop().await;
}

#[tokio::test]
async fn token_sub_fixes_the_name() {
    let server = auth_server().await;
    let alice = token("alice", None);
    // Asking for another name in the query is refused before the upgrade...
    let path = format!("/ws?token={alice}&name=bob");
    let (status, _) = refusal(try_connect(server.addr, &path, &[], None).await);
    assert_eq!(status, 403);
    // ...and so is `nick` to another name; `nick` to the same name is fine.
    let path = format!("/ws?token={alice}&name=alice");
    let mut client = try_connect(server.addr, &path, &[], None).await.unwrap();
    client.recv_type("welcome").await;
    client
        .send(json!({"type": "nick", "data": "bob", "ref": "n"}))
        .await;
    client.expect_error("unauthorized", json!("n")).await;
    client.send(json!({"type": "nick", "data": "alice"})).await;
    assert_eq!(client.recv_type("welcome").await["data"]["name"], "alice");
    client.join("r").await;
    client.post("r", "hi").await;
    let page: Value = http()
        .get(server.url("/api/rooms/r/messages"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["messages"][0]["from"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn token_rooms_claim_limits_joins() {
    let server = auth_server().await;
    let limited = token("alice", Some(&["team-*", "lobby"]));
    let path = format!("/ws?token={limited}");
    let mut client = try_connect(server.addr, &path, &[], None).await.unwrap();
    client.recv_type("welcome").await;
    client.join("team-rust").await;
    client.join("lobby").await;
    for frame in [
        json!({"type": "join", "room": "secret", "ref": 1}),
        json!({"type": "msg", "room": "secret", "data": "x", "ref": 2}),
        json!({"type": "history", "room": "secret", "ref": 3}),
        json!({"type": "typing", "room": "secret", "ref": 4}),
    ] {
        let reference = frame["ref"].clone();
        client.send(frame).await;
        let error = client.recv_type("error").await;
        assert_eq!(error["data"]["code"], "unauthorized", "{error}");
        assert_eq!(error["ref"], reference);
    }
    // A room outside the claim in the query is refused before the upgrade.
    let path = format!("/ws?token={limited}&room=secret");
    let (status, _) = refusal(try_connect(server.addr, &path, &[], None).await);
    assert_eq!(status, 403);
    // Without a `rooms` claim every room is open.
    let open = format!("/ws?token={}", token("bob", None));
    let mut bob = try_connect(server.addr, &open, &[], None).await.unwrap();
    bob.recv_type("welcome").await;
    bob.join("secret").await;
    server.stop().await;
}

#[tokio::test]
async fn bare_msg_to_a_lobby_outside_the_claim_is_unauthorized() {
    let server = auth_server().await;
    let path = format!("/ws?token={}", token("alice", Some(&["team-*"])));
    let mut client = try_connect(server.addr, &path, &[], None).await.unwrap();
    client.recv_type("welcome").await;
    client
        .send(json!({"type": "msg", "data": "hi", "ref": "bare"}))
        .await;
    client.expect_error("unauthorized", json!("bare")).await;
    server.stop().await;
}

#[tokio::test]
async fn api_obeys_the_same_token_rules() {
    let server = auth_server().await;
    let url = server.url("/api/rooms/team-a/messages");
    let alice = token("alice", Some(&["team-*"]));
    // No token: 401.
    let response = http()
        .post(&url)
        .json(&json!({"from": "alice", "data": "x"}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 401, "unauthenticated").await;
    // `from` may be omitted (it is the token's sub) or equal to it; anything else is 403.
    let response = post_with_token(&url, &alice, &json!({"data": "one"})).await;
    assert_eq!(response.status(), 201);
    let response = post_with_token(&url, &alice, &json!({"from": "alice", "data": "two"})).await;
    assert_eq!(response.status(), 201);
    let response =
        post_with_token(&url, &alice, &json!({"from": "mallory", "data": "three"})).await;
    assert_eq!(response.status(), 403);
    // Rooms outside the claim: 403 for posts and history; the room list hides them.
    let response = post_with_token(
        server.url("/api/rooms/secret/messages"),
        &alice,
        &json!({"data": "x"}),
    )
    .await;
    assert_api_error(response, 403, "unauthorized").await;
    let open = token("root", None);
    let response = post_with_token(
        server.url("/api/rooms/secret/messages"),
        &open,
        &json!({"data": "hidden"}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let response = http()
        .get(server.url("/api/rooms/secret/messages"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let page: Value = http()
        .get(format!("{url}?token={alice}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let froms: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["from"].as_str().unwrap())
        .collect();
    assert_eq!(froms, ["alice", "alice"]);
    let rooms: Value = http()
        .get(server.url("/api/rooms"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a"]);
    server.stop().await;
}

#[tokio::test]
async fn events_need_a_token_that_allows_the_room() {
    let server = auth_server().await;
    let response = http()
        .get(server.url("/events?room=team-a"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let alice = token("alice", Some(&["team-*"]));
    let response = http()
        .get(server.url(&format!("/events?room=secret&token={alice}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = http()
        .get(server.url(&format!("/events?room=team-a&token={alice}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    server.stop().await;
}

#[tokio::test]
async fn token_command_mints_a_token_the_server_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args([
            "token", "--sub", "alice", "--rooms", "team-*", "--ttl", "1h",
        ])
        .env("HUBBUB_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let server = auth_server().await;
    let path = format!("/ws?token={minted}");
    let mut client = try_connect(server.addr, &path, &[], None).await.unwrap();
    assert_eq!(client.recv().await["data"]["name"], "alice");
    client.join("team-a").await;
    client
        .send(json!({"type": "join", "room": "other", "ref": 1}))
        .await;
    assert_eq!(
        client.recv_type("error").await["data"]["code"],
        "unauthorized"
    );
    // A short secret is refused rather than used.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["token", "--sub", "alice", "--secret", "short"])
        .env_remove("HUBBUB_AUTH_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    server.stop().await;
}

#[tokio::test]
async fn connection_is_closed_when_its_token_expires() {
    let server = auth_server().await;
    let short = mint(
        &Secret::new(SECRET),
        &Claims::new("alice", None, Duration::from_secs(2)),
    )
    .unwrap();
    let path = format!("/ws?token={short}");
    let mut client = try_connect(server.addr, &path, &[], None).await.unwrap();
    assert_eq!(client.recv().await["type"], "welcome");
    assert_eq!(client.closed().await, common::Closed::Code(1008));
    server.stop().await;
}

#[tokio::test]
async fn binary_flags_turn_on_auth_caps_and_rate_limits() {
    let (_dir, data) = common::scratch();
    let port = common::free_port();
    let server = common::Binary::start(
        &data,
        port,
        &[
            "--auth-secret",
            SECRET,
            "--max-connections-per-ip",
            "1",
            "--rate-limit",
            "1",
            "--rate-burst",
            "1",
            "--allowed-origin",
            "https://app.example",
        ],
    )
    .await;
    let (status, _) = refusal(try_connect(server.addr, "/ws", &[], None).await);
    assert_eq!(status, 401, "--auth-secret");
    let path = format!("/ws?token={}", token("alice", None));
    let app = [("Origin", "https://app.example")];
    let mut alice = try_connect(server.addr, &path, &app, None).await.unwrap();
    assert_eq!(alice.recv().await["data"]["name"], "alice");
    let (status, _) = refusal(try_connect(server.addr, &path, &[], None).await);
    assert_eq!(status, 429, "--max-connections-per-ip");
    alice.join("r").await;
    alice
        .send(json!({"type": "msg", "room": "r", "data": "1"}))
        .await;
    alice
        .send(json!({"type": "msg", "room": "r", "data": "2", "ref": "second"}))
        .await;
    let error = alice.recv_type("error").await;
    assert_eq!(
        error["data"]["code"], "rate_limited",
        "--rate-limit overrides the env"
    );
    assert_eq!(error["ref"], "second");
}

#[tokio::test]
async fn access_log_names_the_path_but_never_the_token() {
    let (_dir, data) = scratch();
    let log = data.join("hubbub.log");
    let server =
        Binary::start_logging_to(&data, free_port(), &["--auth-secret", SECRET], &log).await;
    let token = token("alice", None);
    let mut client = try_connect(server.addr, &format!("/ws?token={token}"), &[], None)
        .await
        .unwrap();
    assert_eq!(client.recv().await["data"]["name"], "alice");
    let events = http()
        .get(format!(
            "http://{}/events?room=r&token={token}",
            server.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    drop(events);
    drop(client);
    server.signal("TERM");
    assert!(server.wait().await.success());
    let written = std::fs::read_to_string(&log).unwrap();
    assert!(
        written.contains("path=/ws"),
        "no access line for /ws in {written}"
    );
    assert!(
        written.contains("path=/events"),
        "no access line for /events"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !written.contains(signature),
        "the token is in the log: {written}"
    );
    assert!(!written.contains('\u{1b}'), "colour codes in a log file");
}
