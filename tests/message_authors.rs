//! Message authors and guest marking (issue 19) against the real server: once the server has
//! accounts, a guest's messages carry `"guest": true` (live, in history); a signed-in account's
//! never do; a server nobody made an account on sends messages exactly as before.
#![allow(clippy::unwrap_used)]

mod common;

use common::accounts::sign_up;
use common::{history_messages, start_server};

#[tokio::test]
async fn a_guests_message_is_marked_guest_once_the_server_has_accounts() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let (mut alice_socket, _) = alice.connect(server.addr, "").await;
    alice_socket.join("lobby").await;
    let mut guest = server.client("name=visitor").await;
    guest.join("lobby").await;

    guest.post("lobby", "hello from a guest").await;

    let live = alice_socket.recv_msg().await;
    assert_eq!(live["from"], "visitor");
    assert_eq!(live["guest"], true, "{live}");
    let stored = history_messages(server.addr, "lobby").await;
    assert_eq!(stored[0]["guest"], true, "{stored:?}");
}

#[tokio::test]
async fn a_signed_in_accounts_message_is_never_marked_guest() {
    let server = start_server().await;
    let alice = sign_up(server.addr, "alice").await;
    let (mut alice_socket, _) = alice.connect(server.addr, "").await;
    alice_socket.join("lobby").await;
    let mut guest = server.client("name=visitor").await;
    guest.join("lobby").await;

    alice_socket.post("lobby", "hello from alice").await;

    let live = guest.recv_msg().await;
    assert_eq!(live["from"], "alice");
    assert!(live.get("guest").is_none(), "{live}");
    let stored = history_messages(server.addr, "lobby").await;
    assert!(stored[0].get("guest").is_none(), "{stored:?}");
}

#[tokio::test]
async fn a_server_without_accounts_sends_messages_without_a_guest_field() {
    let server = start_server().await;
    let mut guest = server.client("name=visitor").await;
    guest.join("lobby").await;
    let mut other = server.client("name=other").await;
    other.join("lobby").await;

    guest.post("lobby", "as before").await;

    let live = other.recv_msg().await;
    assert!(live.get("guest").is_none(), "{live}");
}
