//! Accounts over HTTP and on the socket (issue 19; docs/protocol.md "Accounts and rooms"),
//! against the real server on loopback: sign-up, sign-in, sign-out (here and everywhere),
//! password change, invites, `--signup` and `--guests`, guests and account names, token `sub`s
//! as accounts. The security rules (fixation, CSRF, cookie flags, limits, enumeration) are in
//! tests/account_security.rs.
#![allow(clippy::unwrap_used)]

mod common;

use common::accounts::{
    PASSWORD, operator, post_json, sign_in, sign_up, start_server_keeping_config,
};
use std::time::Duration;

use common::{assert_api_error, refusal, start_server, start_server_with, try_connect};
use hubbub::accounts::Signup;
use hubbub::config::Secret;
use hubbub::token::{Claims, mint};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn sign_up_answers_201_with_the_accounts_me_body() {
    let server = start_server().await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "Alice", "password": PASSWORD}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["name"], "Alice");
    assert_eq!(body["admin"], false);
    assert_eq!(body["guest"], false);
    assert_eq!(body["csrf"].as_str().unwrap().len(), 43);
    server.stop().await;
}

#[tokio::test]
async fn me_with_the_session_cookie_names_the_account_and_its_csrf_token() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let response = alice.get(server.addr, "/api/me").await;
    assert_eq!(response.status(), 200);
    let me: Value = response.json().await.unwrap();
    assert_eq!(
        me,
        json!({"name": "alice", "admin": false, "guest": false, "csrf": alice.csrf})
    );
    server.stop().await;
}

#[tokio::test]
async fn me_without_a_session_is_401() {
    let server = start_server().await;
    let response = common::http()
        .get(server.url("/api/me"))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 401, "unauthenticated").await;
    server.stop().await;
}

#[tokio::test]
async fn me_with_an_unknown_session_cookie_is_401() {
    let server = start_server().await;
    let response = common::http()
        .get(server.url("/api/me"))
        .header("cookie", "hubbub_session=not-a-session")
        .send()
        .await
        .unwrap();
    assert_api_error(response, 401, "unauthenticated").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_up_of_a_name_taken_in_another_case_is_409_name_taken() {
    let server = start_server().await;
    sign_up(server.addr, "Alice").await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "ALICE", "password": PASSWORD}),
    )
    .await;
    assert_api_error(response, 409, "name_taken").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_up_with_a_short_password_is_400_bad_password() {
    let server = start_server().await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "alice", "password": "short"}),
    )
    .await;
    assert_api_error(response, 400, "bad_password").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_up_with_a_name_breaking_the_rule_is_400_bad_name() {
    let server = start_server().await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "pаypal", "password": PASSWORD}),
    )
    .await;
    assert_api_error(response, 400, "bad_name").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_up_with_a_body_that_is_not_the_expected_json_is_400_bad_json() {
    let server = start_server().await;
    let response = post_json(server.addr, "/api/auth/signup", json!({"name": "alice"})).await;
    assert_api_error(response, 400, "bad_json").await;
    server.stop().await;
}

#[tokio::test]
async fn sign_in_with_the_right_password_in_any_case_of_the_name_opens_a_session() {
    let server = start_server().await;
    sign_up(server.addr, "Alice").await;
    let browser = sign_in(server.addr, "alice", PASSWORD).await;
    let me: Value = browser
        .get(server.addr, "/api/me")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "Alice");
    server.stop().await;
}

#[tokio::test]
async fn sign_out_ends_that_session_only() {
    let server = start_server().await;
    let laptop = sign_up(server.addr, "alice").await;
    let phone = sign_in(server.addr, "alice", PASSWORD).await;
    let response = laptop
        .post(server.addr, "/api/auth/signout", json!({}))
        .await;
    assert_eq!(response.status(), 204);
    assert!(common::accounts::set_cookie_of(&response).contains("Max-Age=0"));
    assert_eq!(laptop.get(server.addr, "/api/me").await.status(), 401);
    assert_eq!(phone.get(server.addr, "/api/me").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn sign_out_everywhere_ends_every_session_of_the_account() {
    let server = start_server().await;
    let laptop = sign_up(server.addr, "alice").await;
    let phone = sign_in(server.addr, "alice", PASSWORD).await;
    let bob = sign_up(server.addr, "bob").await;
    let response = laptop
        .post(server.addr, "/api/auth/signout-all", json!({}))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(laptop.get(server.addr, "/api/me").await.status(), 401);
    assert_eq!(phone.get(server.addr, "/api/me").await.status(), 401);
    assert_eq!(bob.get(server.addr, "/api/me").await.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_password_change_keeps_this_session_and_ends_the_others() {
    let server = start_server().await;
    let laptop = sign_up(server.addr, "alice").await;
    let phone = sign_in(server.addr, "alice", PASSWORD).await;
    let response = laptop
        .post(
            server.addr,
            "/api/auth/password",
            json!({"old": PASSWORD, "new": "a brand new secret"}),
        )
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(laptop.get(server.addr, "/api/me").await.status(), 200);
    assert_eq!(phone.get(server.addr, "/api/me").await.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn after_a_password_change_only_the_new_password_signs_in() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    alice
        .post(
            server.addr,
            "/api/auth/password",
            json!({"old": PASSWORD, "new": "a brand new secret"}),
        )
        .await;
    let old = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_api_error(old, 401, "unauthenticated").await;
    sign_in(server.addr, "alice", "a brand new secret").await;
    server.stop().await;
}

#[tokio::test]
async fn a_password_change_with_a_wrong_old_password_is_401_and_changes_nothing() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let response = alice
        .post(
            server.addr,
            "/api/auth/password",
            json!({"old": "not my password", "new": "a brand new secret"}),
        )
        .await;
    assert_api_error(response, 401, "unauthenticated").await;
    sign_in(server.addr, "alice", PASSWORD).await;
    server.stop().await;
}

#[tokio::test]
async fn with_signup_closed_sign_up_is_403_signup_closed() {
    let server = start_server_with(|c| c.signup = Signup::Closed).await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_api_error(response, 403, "signup_closed").await;
    server.stop().await;
}

#[tokio::test]
async fn with_signup_by_invite_sign_up_without_an_invite_is_403_signup_closed() {
    let server = start_server_with(|c| c.signup = Signup::Invite).await;
    let response = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_api_error(response, 403, "signup_closed").await;
    server.stop().await;
}

#[tokio::test]
async fn an_admins_sign_up_invite_admits_as_many_sign_ups_as_it_has_uses() {
    let (server, config) = start_server_keeping_config(|c| c.signup = Signup::Invite).await;
    operator(&config)
        .await
        .add_account("root", Some(PASSWORD), true)
        .await
        .unwrap();
    let root = sign_in(server.addr, "root", PASSWORD).await;
    let response = root
        .post(server.addr, "/api/invites", json!({"uses": 1}))
        .await;
    assert_eq!(response.status(), 201);
    let invite: Value = response.json().await.unwrap();
    let code = invite["code"].as_str().unwrap();
    assert_eq!(invite["url"], format!("/?invite={code}"));
    let first = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "alice", "password": PASSWORD, "invite": code}),
    )
    .await;
    assert_eq!(first.status(), 201);
    let second = post_json(
        server.addr,
        "/api/auth/signup",
        json!({"name": "bob", "password": PASSWORD, "invite": code}),
    )
    .await;
    assert_api_error(second, 403, "signup_closed").await;
    server.stop().await;
}

#[tokio::test]
async fn a_sign_up_invite_from_an_account_that_is_not_admin_is_403_forbidden() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let response = alice.post(server.addr, "/api/invites", json!({})).await;
    assert_api_error(response, 403, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn a_disabled_account_cannot_sign_in() {
    let (server, config) = start_server_keeping_config(|_| {}).await;
    sign_up(server.addr, "alice").await;
    let operator = operator(&config).await;
    let alice = operator.find("alice").await.unwrap().unwrap();
    operator.store().set_disabled(alice.id, true).await.unwrap();
    let response = post_json(
        server.addr,
        "/api/auth/signin",
        json!({"name": "alice", "password": PASSWORD}),
    )
    .await;
    assert_api_error(response, 403, "forbidden").await;
    server.stop().await;
}

#[tokio::test]
async fn disabling_an_account_ends_its_browser_sessions() {
    let (server, config) = start_server_keeping_config(|_| {}).await;
    let browser = sign_up(server.addr, "alice").await;
    let operator = operator(&config).await;
    let alice = operator.find("alice").await.unwrap().unwrap();
    operator.store().set_disabled(alice.id, true).await.unwrap();
    assert_eq!(browser.get(server.addr, "/api/me").await.status(), 401);
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_browsers_socket_carries_the_accounts_name() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "Alice").await;
    let (_client, welcome) = alice.connect(server.addr, "").await;
    assert_eq!(welcome["data"]["name"], "Alice");
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_welcome_names_the_account_and_says_it_is_no_operator() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "Alice").await;
    let (_client, welcome) = alice.connect(server.addr, "").await;
    assert_eq!(
        welcome["data"]["account"],
        json!({"name": "Alice", "admin": false})
    );
    server.stop().await;
}

#[tokio::test]
async fn an_operators_welcome_says_admin() {
    let (server, config) = start_server_keeping_config(|_| {}).await;
    let root = sign_up(server.addr, "root").await;
    let operator = operator(&config).await;
    let account = operator.find("root").await.unwrap().unwrap();
    operator.store().set_admin(account.id, true).await.unwrap();
    let (_client, welcome) = root.connect(server.addr, "").await;
    assert_eq!(
        welcome["data"]["account"],
        json!({"name": "root", "admin": true})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_guests_welcome_on_a_server_with_accounts_is_as_before() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let mut guest = common::Client::connect_raw(server.addr, "/ws", "name=visitor").await;
    let welcome = guest.recv().await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "data": {"name": "visitor", "version": hubbub::protocol::VERSION}})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_holders_welcome_is_as_before_even_when_its_sub_is_an_account() {
    let secret = "a-test-secret-of-some-length";
    let server = start_server_with(|c| c.auth_secret = Some(Secret::new(secret))).await;
    let token = mint(
        &Secret::new(secret),
        &Claims::new("carol", None, Duration::from_secs(600)),
    )
    .unwrap();
    let mut carol =
        common::Client::connect_raw(server.addr, "/ws", &format!("token={token}")).await;
    let welcome = carol.recv().await;
    assert_eq!(
        welcome,
        json!({"type": "welcome", "data": {"name": "carol", "version": hubbub::protocol::VERSION}})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_browser_asking_for_another_name_is_403_before_the_upgrade() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let attempt = try_connect(
        server.addr,
        "/ws?name=bob",
        &[("cookie", &alice.cookie)],
        None,
    )
    .await;
    assert_eq!(refusal(attempt), (403, "unauthorized".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn a_guest_asking_for_an_accounts_name_in_any_case_is_409_name_taken() {
    let server = start_server().await;
    sign_up(server.addr, "Alice").await;
    let attempt = try_connect(server.addr, "/ws?name=aLiCe", &[], None).await;
    assert_eq!(refusal(attempt), (409, "name_taken".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn a_guests_nick_to_an_accounts_name_is_refused_with_name_taken() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let mut guest = server.client("name=visitor").await;
    guest
        .send(json!({"type": "nick", "data": "ALICE", "ref": "n"}))
        .await;
    guest.expect_error("name_taken", json!("n")).await;
    server.stop().await;
}

#[tokio::test]
async fn a_guests_api_post_under_an_accounts_name_is_409_name_taken() {
    let server = start_server().await;
    sign_up(server.addr, "alice").await;
    let response = post_json(
        server.addr,
        "/api/rooms/lobby/messages",
        json!({"from": "Alice", "data": "it is me, honest"}),
    )
    .await;
    assert_api_error(response, 409, "name_taken").await;
    server.stop().await;
}

#[tokio::test]
async fn with_guests_off_an_anonymous_socket_is_401() {
    let server = start_server_with(|c| c.guests = Some(false)).await;
    let attempt = try_connect(server.addr, "/ws?name=visitor", &[], None).await;
    assert_eq!(refusal(attempt), (401, "unauthenticated".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn with_guests_off_an_anonymous_api_post_is_401() {
    let server = start_server_with(|c| c.guests = Some(false)).await;
    let response = post_json(
        server.addr,
        "/api/rooms/lobby/messages",
        json!({"from": "visitor", "data": "hi"}),
    )
    .await;
    assert_api_error(response, 401, "unauthenticated").await;
    server.stop().await;
}

#[tokio::test]
async fn with_guests_off_a_signed_in_browser_still_connects() {
    let server = start_server_with(|c| c.guests = Some(false)).await;
    let alice = sign_up(server.addr, "alice").await;
    let (_client, welcome) = alice.connect(server.addr, "").await;
    assert_eq!(welcome["data"]["name"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_signed_in_browser_posts_through_the_api_under_its_account_name() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let response = alice
        .post(
            server.addr,
            "/api/rooms/lobby/messages",
            json!({"data": "hello from the API"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let history = common::history_messages(server.addr, "lobby").await;
    assert_eq!(history.last().unwrap()["from"], "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_tokens_sub_becomes_an_account_whose_name_guests_cannot_take() {
    let secret = "a-test-secret-of-some-length";
    let server = start_server_with(|c| {
        c.auth_secret = Some(Secret::new(secret));
        c.guests = Some(true);
    })
    .await;
    let token = mint(
        &Secret::new(secret),
        &Claims::new("carol", None, Duration::from_secs(600)),
    )
    .unwrap();
    server.client(&format!("token={token}")).await;
    let attempt = try_connect(server.addr, "/ws?name=Carol", &[], None).await;
    assert_eq!(refusal(attempt), (409, "name_taken".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn a_token_for_a_disabled_account_is_401() {
    let secret = "a-test-secret-of-some-length";
    let (server, config) =
        start_server_keeping_config(|c| c.auth_secret = Some(Secret::new(secret))).await;
    let operator = operator(&config).await;
    let carol = operator.add_account("carol", None, false).await.unwrap();
    operator.store().set_disabled(carol.id, true).await.unwrap();
    let token = mint(
        &Secret::new(secret),
        &Claims::new("carol", None, Duration::from_secs(600)),
    )
    .unwrap();
    let attempt = try_connect(server.addr, &format!("/ws?token={token}"), &[], None).await;
    assert_eq!(refusal(attempt), (401, "unauthenticated".to_owned()));
    server.stop().await;
}

#[tokio::test]
async fn signing_out_everywhere_closes_the_accounts_open_sockets() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let (mut socket, _) = alice.connect(server.addr, "").await;
    let response = alice
        .post(server.addr, "/api/auth/signout-all", json!({}))
        .await;
    assert_eq!(response.status(), 204);
    assert_eq!(socket.closed().await, common::code(CloseCode::Policy));
    server.stop().await;
}

/// The server purges expired sessions on its own (`--session-purge-secs`, here 50 ms): an
/// expired session row is deleted, a live one stays. The row's presence is read as
/// `session(hash, now = 0)`: at time 0 the expired row (expires at 1 ms) still counts as live,
/// so that answers `Some` exactly while the row exists.
#[tokio::test]
async fn expired_sessions_are_purged_by_the_running_server_and_live_ones_kept() {
    use hubbub::accounts::secret::hash_token;
    use hubbub::store::accounts::NewSession;

    let (server, config) = start_server_keeping_config(|c| {
        c.session_purge_every = Duration::from_millis(50);
    })
    .await;
    let alice = sign_up(server.addr, "alice").await;
    let operator = operator(&config).await;
    let account = operator.find("alice").await.unwrap().unwrap();
    let expired = hash_token("an expired session's token");
    operator
        .store()
        .create_session(&NewSession {
            token_hash: expired,
            account: account.id,
            csrf: "csrf".to_owned(),
            created_ms: 0,
            expires_ms: 1,
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while operator
        .store()
        .session(&expired, 0)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired session row is still there after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let me = alice.get(server.addr, "/api/me").await;
    assert_eq!(me.status(), 200, "the live session survives the purges");
    server.stop().await;
}
