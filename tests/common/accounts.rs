//! Accounts in tests (issue 19): signing up and in over the real HTTP routes, carrying the
//! session cookie and CSRF token by hand (the test HTTP client keeps no cookie jar, so every
//! request says exactly what it sends), and opening a signed-in WebSocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hubbub::accounts::{AccountSettings, Accounts};
use hubbub::config::{Config, Durability};
use hubbub::store::{People, PostgresStore, SchemaAtOpen, SqliteStore};
use serde_json::{Value, json};

use super::{Client, http, try_connect};

/// A password that passes the rule.
pub const PASSWORD: &str = "correct horse battery";

/// A browser's sign-in: its cookie (`hubbub_session=...`, as a `Cookie` header sends it), the
/// CSRF token `/api/me` gave, and the raw `Set-Cookie` line.
#[derive(Debug, Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
    pub set_cookie: String,
}

/// The `Set-Cookie` line of a response (panics without one).
pub fn set_cookie_of(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// The `name=value` part of a `Set-Cookie` line.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

/// POSTs JSON `body` to `path` with no cookie.
pub async fn post_json(addr: SocketAddr, path: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn browser_from(response: reqwest::Response, status: u16) -> Browser {
    assert_eq!(response.status(), status);
    let set_cookie = set_cookie_of(&response);
    let body: Value = response.json().await.unwrap();
    Browser {
        cookie: cookie_pair(&set_cookie),
        csrf: body["csrf"].as_str().unwrap().to_owned(),
        set_cookie,
    }
}

/// Signs `name` up with [`PASSWORD`] (expects 201).
pub async fn sign_up(addr: SocketAddr, name: &str) -> Browser {
    let response = post_json(
        addr,
        "/api/auth/signup",
        json!({"name": name, "password": PASSWORD}),
    )
    .await;
    browser_from(response, 201).await
}

/// Signs `name` in with `password` (expects 200).
pub async fn sign_in(addr: SocketAddr, name: &str, password: &str) -> Browser {
    let response = post_json(
        addr,
        "/api/auth/signin",
        json!({"name": name, "password": password}),
    )
    .await;
    browser_from(response, 200).await
}

impl Browser {
    /// A cookie-authenticated request as the web client makes it: cookie and CSRF token.
    pub async fn post(&self, addr: SocketAddr, path: &str, body: Value) -> reqwest::Response {
        http()
            .post(format!("http://{addr}{path}"))
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `GET path` with the cookie.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> reqwest::Response {
        http()
            .get(format!("http://{addr}{path}"))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
    }

    /// `/ws?{query}` with the cookie, past its `welcome` (returned).
    pub async fn connect(&self, addr: SocketAddr, query: &str) -> (Client, Value) {
        let path = if query.is_empty() {
            "/ws".to_owned()
        } else {
            format!("/ws?{query}")
        };
        let mut client = try_connect(addr, &path, &[("cookie", &self.cookie)], None)
            .await
            .unwrap();
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (client, welcome)
    }
}

/// The accounts service on the database of a test server started with `config` (the same
/// SQLite file or PostgreSQL schema): for what only an operator can do (admins, disabling).
pub async fn operator(config: &Config) -> Accounts {
    let timeout = Duration::from_secs(5);
    let people = match &config.postgres {
        Some(url) => People::of(Arc::new(
            PostgresStore::open(url, timeout, Durability::Process, SchemaAtOpen::Migrate)
                .await
                .unwrap(),
        )),
        None => People::of(Arc::new(
            SqliteStore::open(&config.database_path(), timeout, Durability::Process)
                .await
                .unwrap(),
        )),
    };
    Accounts::new(&people, AccountSettings::default())
}

/// [`super::start_server_with`] once it serves, also returning the config the server runs with (its database
/// included, for [`operator`]).
pub async fn start_server_keeping_config(
    adjust: impl FnOnce(&mut Config),
) -> (super::TestServer, Config) {
    let mut kept = None;
    let server = super::start_server_with(|config| {
        adjust(config);
        kept = Some(config.clone());
    })
    .await;
    // The server opens (and migrates) its database before it serves: wait for that, so the
    // operator's store opens a migrated database.
    super::pg::until_serving(server.addr).await;
    (server, kept.unwrap())
}
