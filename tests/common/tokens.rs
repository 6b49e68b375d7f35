//! Suites whose clients sign in with tokens (issues 19 and 20): one secret, one way to mint a
//! token for an account name, and a server with token auth on, on every backend.

use std::time::Duration;

use hubbub::config::Secret;
use hubbub::token::{Claims, mint};

use super::{Client, TestServer, start_server_with_flags};

/// The servers' `--auth-secret` (longer than the 32 bytes hubbub requires).
pub const SECRET: &str = "a-test-secret-of-some-length";

/// A token for the account `sub`, good for ten minutes.
pub fn token(sub: &str) -> String {
    mint(
        &Secret::new(SECRET),
        &Claims::new(sub, None, Duration::from_secs(600)),
    )
    .unwrap()
}

/// A server (or, with `HUBBUB_TEST_CLUSTER`, a cluster) with token auth on.
pub async fn server() -> TestServer {
    start_server_with_flags(&["--auth-secret", SECRET]).await
}

/// `name`, signed in with a token, past its `rooms` sidebar, and in `room`.
pub async fn member_of(server: &TestServer, name: &str, room: &str) -> Client {
    let mut client = server.client(&format!("token={}", token(name))).await;
    client.recv_type("rooms").await;
    client.join(room).await;
    client
}
