//! The security rules of accounts (issue 19; docs/security.md "Accounts"), one behaviour per
//! test, against the real server on loopback: session fixation, CSRF on every state-changing
//! route, cookie flags, login rate limits, no enumeration of names, and access from outsiders.
#![allow(clippy::unwrap_used)]

mod common;

use common::accounts::{Browser, PASSWORD, cookie_pair, post_json, set_cookie_of, sign_up};
use common::{assert_api_error, http, start_server, start_server_with, start_server_with_flags};
use serde_json::{Value, json};

/// Every state-changing HTTP route a signed-in browser can call, with a body it accepts.
fn state_changing_routes() -> Vec<(&'static str, Value)> {
    vec![
        ("/api/auth/signout", json!({})),
        ("/api/auth/signout-all", json!({})),
        (
            "/api/auth/password",
            json!({"old": PASSWORD, "new": "another secret"}),
        ),
        ("/api/invites", json!({})),
        ("/api/rooms/lobby/messages", json!({"data": "hi"})),
        ("/api/admin/accounts/bob/disable", json!({})),
        ("/api/admin/accounts/bob/enable", json!({})),
    ]
}

/// POSTs `body` to `path` with `browser`'s cookie and the given extra headers only.
async fn post_with(
    addr: std::net::SocketAddr,
    browser: &Browser,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http()
        .post(format!("http://{addr}{path}"))
        .header("cookie", &browser.cookie)
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn signing_in_always_makes_a_new_session_and_ends_the_one_the_browser_had() {
    let server = start_server().await;
    let before = sign_up(server.addr, "alice").await;
    let response = http()
        .post(server.url("/api/auth/signin"))
        .header("cookie", &before.cookie)
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = cookie_pair(&set_cookie_of(&response));
    assert_ne!(after, before.cookie);
    assert_eq!(before.get(server.addr, "/api/me").await.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn a_session_id_planted_before_sign_in_is_never_adopted() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let planted = "hubbub_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let response = http()
        .post(server.url("/api/auth/signin"))
        .header("cookie", planted)
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_ne!(cookie_pair(&set_cookie_of(&response)), planted);
    let me = http()
        .get(server.url("/api/me"))
        .header("cookie", planted)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn every_state_changing_route_refuses_a_cookie_request_without_the_csrf_token() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    for (path, body) in state_changing_routes() {
        let response = post_with(server.addr, &alice, path, &body, &[]).await;
        assert_eq!(response.status(), 403, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "bad_csrf", "{path}");
    }
    assert_eq!(alice.get(server.addr, "/api/me").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn every_state_changing_route_refuses_a_cookie_request_with_a_wrong_csrf_token() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let bob = sign_up(server.addr, "bob").await;
    for (path, body) in state_changing_routes() {
        let headers = [("x-csrf-token", bob.csrf.as_str())];
        let response = post_with(server.addr, &alice, path, &body, &headers).await;
        assert_api_error(response, 403, "bad_csrf").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn every_state_changing_route_refuses_a_cookie_request_from_a_foreign_origin() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    for (path, body) in state_changing_routes() {
        let headers = [
            ("x-csrf-token", alice.csrf.as_str()),
            ("origin", "https://evil.example"),
        ];
        let response = post_with(server.addr, &alice, path, &body, &headers).await;
        assert_api_error(response, 403, "bad_origin").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn sign_in_from_a_foreign_origin_is_refused() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let response = http()
        .post(server.url("/api/auth/signin"))
        .header("origin", "https://evil.example")
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 403, "bad_origin").await;
    server.stop().await;
}

#[tokio::test]
async fn a_same_origin_cookie_request_with_the_csrf_token_passes() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let origin = format!("http://{}", server.addr);
    let headers = [
        ("x-csrf-token", alice.csrf.as_str()),
        ("origin", origin.as_str()),
    ];
    let response = post_with(
        server.addr,
        &alice,
        "/api/auth/signout",
        &json!({}),
        &headers,
    )
    .await;
    assert_eq!(response.status(), 204);
    server.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_same_site_lax_for_the_whole_site() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let attributes: Vec<&str> = alice.set_cookie.split(';').map(str::trim).collect();
    assert!(attributes.contains(&"HttpOnly"), "{}", alice.set_cookie);
    assert!(attributes.contains(&"SameSite=Lax"), "{}", alice.set_cookie);
    assert!(attributes.contains(&"Path=/"), "{}", alice.set_cookie);
    server.stop().await;
}

#[tokio::test]
async fn over_plain_http_the_session_cookie_is_not_secure() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    assert!(!alice.set_cookie.contains("Secure"), "{}", alice.set_cookie);
    server.stop().await;
}

#[tokio::test]
async fn with_secure_cookies_the_session_cookie_is_secure() {
    let server = start_server_with(|c| c.secure_cookies = true).await;
    let alice = sign_up(server.addr, "alice").await;
    assert!(
        alice.set_cookie.contains("; Secure"),
        "{}",
        alice.set_cookie
    );
    server.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_the_session_cookie_is_secure() {
    let server =
        start_server_with(|c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let response = http()
        .post(server.url("/api/auth/signup"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(set_cookie_of(&response).contains("; Secure"));
    server.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_saying_https_does_not_make_the_cookie_secure() {
    let server = start_server().await;
    let response = http()
        .post(server.url("/api/auth/signup"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert!(!set_cookie_of(&response).contains("Secure"));
    server.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_for_one_name_past_the_limit_get_429_with_retry_after() {
    // Two a minute: the next attempt is allowed 30 s later, far beyond the test's few hashes
    // (with the default 5 a minute, a busy machine's 5 hashes could outlast the 12 s refill).
    let server = start_server_with_flags(&["--sign-in-per-name", "2"]).await;
    sign_up(server.addr, "alice").await;
    let wrong = json!({"name": "alice", "password": "not the password"});
    for _ in 0..2 {
        let response = post_json(server.addr, "/api/auth/signin", wrong.clone()).await;
        assert_eq!(response.status(), 401);
    }
    let response = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_api_error(response, 429, "rate_limited").await;
    server.stop().await;
}

#[tokio::test]
async fn the_name_limit_counts_unknown_names_like_known_ones() {
    let server = start_server_with_flags(&["--sign-in-per-name", "2"]).await;
    let wrong = json!({"name": "nobody", "password": "not the password"});
    for _ in 0..2 {
        let response = post_json(server.addr, "/api/auth/signin", wrong.clone()).await;
        assert_eq!(response.status(), 401);
    }
    let response = post_json(server.addr, "/api/auth/signin", wrong).await;
    assert_api_error(response, 429, "rate_limited").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_past_the_limit_get_429_whatever_the_names() {
    // Three a minute, so no attempt is refilled while the test runs (the default 20 refills
    // every 3 s, which 20 password hashes on a busy machine can outlast).
    let server = start_server_with_flags(&["--sign-in-per-address", "3"]).await;
    for n in 0..3 {
        let body = json!({"name": format!("user{n}"), "password": "not the password"});
        let response = post_json(server.addr, "/api/auth/signin", body).await;
        assert_eq!(response.status(), 401);
    }
    let body = json!({"name": "someone", "password": "not the password"});
    let response = post_json(server.addr, "/api/auth/signin", body).await;
    assert_api_error(response, 429, "rate_limited").await;
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_name_and_a_wrong_password_get_the_same_answer() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let unknown = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "nobody", "password": "not the password"}),
    )
    .await;
    let wrong = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "alice", "password": "not the password"}),
    )
    .await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(wrong.status(), 401);
    assert!(unknown.headers().get("set-cookie").is_none());
    assert_eq!(unknown.text().await.unwrap(), wrong.text().await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_password_signs_nobody_in() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let response = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "alice", "password": "not the password"}),
    )
    .await;
    assert!(response.headers().get("set-cookie").is_none());
    assert_api_error(response, 401, "unauthenticated").await;
    server.stop().await;
}

/// `owner`'s new private room (made over its socket) and its name.
async fn private_room(addr: std::net::SocketAddr, owner: &Browser) -> String {
    let (mut socket, _) = owner.connect(addr, "").await;
    socket
        .send(json!({"type": "create", "data": {"title": "Secret", "private": true}, "ref": "c"}))
        .await;
    loop {
        let frame = socket.recv().await;
        match frame["type"].as_str() {
            Some("ack") if frame["ref"] == "c" => {
                return frame["room"].as_str().unwrap().to_owned();
            }
            Some("error") => panic!("create refused: {frame}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn an_outsiders_history_read_of_a_private_room_answers_like_a_room_that_does_not_exist() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let mallory = sign_up(server.addr, "mallory").await;
    let room = private_room(server.addr, &alice).await;
    let real = mallory
        .get(server.addr, &format!("/api/rooms/{room}/messages"))
        .await;
    let missing = mallory
        .get(server.addr, "/api/rooms/p-0000000000000000/messages")
        .await;
    assert_eq!(real.status(), 404);
    assert_eq!(missing.status(), 404);
    assert_eq!(real.text().await.unwrap(), missing.text().await.unwrap());
    server.stop().await;
}

#[tokio::test]
async fn an_outsiders_api_post_to_a_private_room_is_404() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let mallory = sign_up(server.addr, "mallory").await;
    let room = private_room(server.addr, &alice).await;
    let response = mallory
        .post(
            server.addr,
            &format!("/api/rooms/{room}/messages"),
            json!({"data": "let me in"}),
        )
        .await;
    assert_api_error(response, 404, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn the_room_list_shows_a_private_room_to_its_members_only() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let mallory = sign_up(server.addr, "mallory").await;
    let room = private_room(server.addr, &alice).await;
    alice
        .post(
            server.addr,
            &format!("/api/rooms/{room}/messages"),
            json!({"data": "members only"}),
        )
        .await;
    let listed = |body: Value| {
        body["rooms"]
            .as_array()
            .or(body.as_array())
            .unwrap()
            .iter()
            .any(|r| r["room"] == room.as_str())
    };
    let for_alice: Value = alice
        .get(server.addr, "/api/rooms")
        .await
        .json()
        .await
        .unwrap();
    let for_mallory: Value = mallory
        .get(server.addr, "/api/rooms")
        .await
        .json()
        .await
        .unwrap();
    let for_guest: Value = http()
        .get(server.url("/api/rooms"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed(for_alice.clone()), "{for_alice}");
    assert!(!listed(for_mallory.clone()), "{for_mallory}");
    assert!(!listed(for_guest.clone()), "{for_guest}");
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_socket_from_a_foreign_page_is_refused_before_the_upgrade() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let attempt = common::try_connect(
        server.addr,
        "/ws",
        &[
            ("cookie", &alice.cookie),
            ("origin", "https://evil.example"),
        ],
        None,
    )
    .await;
    assert_eq!(common::refusal(attempt), (403, "bad_origin".to_owned()));
    server.stop().await;
}
