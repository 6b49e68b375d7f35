//! The security rules of accounts (issue 19; docs/security.md "Accounts"), one behaviour per
//! test, against the real server on loopback: session fixation, CSRF on every state-changing
//! route, cookie flags, login rate limits, no enumeration of names, and access from outsiders.
#![allow(clippy::unwrap_used)]

mod common;

use common::accounts::{Browser, PASSWORD, cookie_pair, post_json, set_cookie_of, sign_up};
use common::{assert_api_error, http, start_server, start_server_with};
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
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let wrong = json!({"name": "alice", "password": "not the password"});
    for _ in 0..5 {
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
    let server = start_server().await;
    let wrong = json!({"name": "nobody", "password": "not the password"});
    for _ in 0..5 {
        let response = post_json(server.addr, "/api/auth/signin", wrong.clone()).await;
        assert_eq!(response.status(), 401);
    }
    let response = post_json(server.addr, "/api/auth/signin", wrong).await;
    assert_api_error(response, 429, "rate_limited").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_in_attempts_from_one_address_past_the_limit_get_429_whatever_the_names() {
    let server = start_server().await;
    for n in 0..20 {
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
