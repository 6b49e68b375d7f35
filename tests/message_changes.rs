//! Changes to messages (issue 20, docs/protocol.md "Changes to messages"): edits and deletes of
//! one's own messages, reactions, the live `change` frames, history's message state, and the
//! change feed a resuming client catches up on (WebSocket `changes_since`, SSE `M.C` event
//! ids). Every bad-input rule answers with an error frame and stores nothing. Real loopback
//! sockets against an in-process server (PostgreSQL with `HUBBUB_TEST_DB`).
//!
//! Signed-in connections use tokens whose `sub` names an account (made on first use).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tokens::{SECRET, member_of, server, token};
use common::{Client, TestServer, http, start_server, start_server_with_flags};
use serde_json::{Value, json};

const ROOM: &str = "lobby";
/// How long a test watches for a frame that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// `name`, signed in with a token, past its sidebar, and in [`ROOM`].
async fn member(server: &TestServer, name: &str) -> Client {
    member_of(server, name, ROOM).await
}

/// Sends `frame` and expects an `error` with `code` for it.
async fn refused(client: &mut Client, mut frame: Value, code: &str) {
    frame["ref"] = json!("r");
    client.send(frame).await;
    client.expect_error(code, json!("r")).await;
}

fn edit(id: &Value, text: &str) -> Value {
    json!({"type": "edit", "data": {"room": ROOM, "id": id, "text": text}})
}

fn react(id: &Value, emoji: &str) -> Value {
    json!({"type": "react", "data": {"room": ROOM, "id": id, "emoji": emoji}})
}

fn unreact(id: &Value, emoji: &str) -> Value {
    json!({"type": "react", "data": {"room": ROOM, "id": id, "emoji": emoji, "remove": true}})
}

fn delete(id: &Value) -> Value {
    json!({"type": "delete", "data": {"room": ROOM, "id": id}})
}

/// The room's history page as the HTTP API serves it to `name`.
async fn api_page(server: &TestServer, name: &str) -> Value {
    let url = server.url(&format!("/api/rooms/{ROOM}/messages"));
    let response = http()
        .get(url)
        .header("authorization", format!("Bearer {}", token(name)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The `history` frame's page for `client`.
async fn ws_page(client: &mut Client) -> Value {
    client
        .send(json!({"type": "history", "room": ROOM, "data": {}}))
        .await;
    client.recv_type("history").await["data"].clone()
}

#[tokio::test]
async fn an_edit_of_ones_own_message_reaches_members_as_one_change_and_history_shows_it() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "helo").await["id"].clone();
    bob.recv_msg().await;

    ann.request(edit(&id, "hello")).await;

    let change = bob.recv_type("change").await;
    assert_eq!(change["room"], ROOM);
    assert_eq!(change["data"]["kind"], "edit");
    assert_eq!(change["data"]["id"], id);
    assert_eq!(change["data"]["seq"], 1);
    assert_eq!(change["data"]["text"], "hello");
    assert!(change["data"]["edited_ms"].as_i64().unwrap() > 0);
    bob.assert_no("change", QUIET).await;
    let page = ws_page(&mut bob).await;
    assert_eq!(page["messages"][0]["data"], "hello");
    assert_eq!(page["state"][0]["id"], id);
    assert!(page["state"][0]["edited_ms"].is_i64(), "{page}");
    assert_eq!(page["changes"], 1);
    server.stop().await;
}

#[tokio::test]
async fn editing_someone_elses_message_is_forbidden_and_stores_nothing() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "mine").await["id"].clone();

    refused(&mut bob, edit(&id, "yours now"), "forbidden").await;

    let page = api_page(&server, "bob").await;
    assert_eq!(page["messages"][0]["data"], "mine");
    assert_eq!(page["changes"], 0);
    assert!(page.get("state").is_none(), "{page}");
    server.stop().await;
}

#[tokio::test]
async fn deleting_someone_elses_message_without_moderator_rights_is_forbidden() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "keep me").await["id"].clone();

    refused(&mut bob, delete(&id), "forbidden").await;

    let page = api_page(&server, "bob").await;
    assert_eq!(page["messages"][0]["data"], "keep me");
    assert_eq!(page["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_guest_cannot_edit_delete_or_react() {
    let server = start_server().await;
    let mut guest = server.client("name=visitor").await;
    guest.join(ROOM).await;
    let id = guest.post(ROOM, "guest words").await["id"].clone();

    refused(&mut guest, edit(&id, "changed"), "unauthorized").await;
    refused(&mut guest, react(&id, "👍"), "unauthorized").await;
    refused(&mut guest, delete(&id), "unauthorized").await;

    let page = ws_page(&mut guest).await;
    assert_eq!(page["messages"][0]["data"], "guest words");
    assert_eq!(page["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn deleting_ones_own_message_leaves_a_tombstone_for_everyone() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "regret").await["id"].clone();
    bob.recv_msg().await;

    ann.request(delete(&id)).await;

    let change = bob.recv_type("change").await;
    assert_eq!(change["data"]["kind"], "delete");
    assert_eq!(change["data"]["by"], "author");
    let page = api_page(&server, "bob").await;
    assert_eq!(page["messages"][0]["data"], "");
    assert_eq!(page["messages"][0]["deleted"], true);
    refused(&mut ann, edit(&id, "back"), "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn the_deleted_frame_still_reaches_issue_19_clients_on_a_delete() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "gone soon").await["id"].clone();
    bob.recv_msg().await;

    ann.request(delete(&id)).await;

    let deleted = bob.recv_type("deleted").await;
    assert_eq!(deleted["data"]["id"], id);
    server.stop().await;
}

#[tokio::test]
async fn a_reaction_that_is_not_one_emoji_or_too_long_is_refused_and_stores_nothing() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "react to me").await["id"].clone();

    for bad in ["+1", "👍👍", "x", ":thumbsup:", &"👍".repeat(12)] {
        refused(&mut ann, react(&id, bad), "bad_emoji").await;
    }

    let page = ws_page(&mut ann).await;
    assert!(page.get("state").is_none(), "{page}");
    assert_eq!(page["changes"], 0);
    server.stop().await;
}

#[tokio::test]
async fn a_change_to_a_message_that_does_not_exist_answers_not_found() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let missing = json!(99);
    refused(&mut ann, edit(&missing, "x"), "not_found").await;
    refused(&mut ann, react(&missing, "👍"), "not_found").await;
    refused(&mut ann, delete(&missing), "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn an_edit_longer_than_a_post_may_be_is_refused() {
    let server =
        start_server_with_flags(&["--auth-secret", SECRET, "--max-message-bytes", "16"]).await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "short").await["id"].clone();
    refused(
        &mut ann,
        edit(&id, "far longer than sixteen bytes"),
        "too_long",
    )
    .await;
    assert_eq!(ws_page(&mut ann).await["messages"][0]["data"], "short");
    server.stop().await;
}

#[tokio::test]
async fn reactions_are_one_per_account_and_emoji_and_history_lists_who_reacted() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "vote").await["id"].clone();

    ann.request(react(&id, "👍")).await;
    bob.request(react(&id, "👍")).await;
    ann.request(react(&id, "👍")).await; // again: no second reaction
    bob.request(react(&id, "🎉")).await;

    let page = api_page(&server, "ann").await;
    let reactions = &page["state"][0]["reactions"];
    assert_eq!(
        reactions,
        &json!([
            {"emoji": "👍", "count": 2, "by": ["ann", "bob"]},
            {"emoji": "🎉", "count": 1, "by": ["bob"]}
        ])
    );
    assert_eq!(page["changes"], 3);
    server.stop().await;
}

#[tokio::test]
async fn a_reaction_and_its_removal_reach_members_with_the_new_count() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "nice").await["id"].clone();

    bob.request(react(&id, "👍🏽")).await;
    let added = ann.recv_type("change").await;
    assert_eq!(
        added["data"],
        json!({"seq": 1, "id": id, "kind": "react", "emoji": "👍🏽", "name": "bob", "on": true, "count": 1})
    );
    bob.request(unreact(&id, "👍🏽")).await;
    let removed = ann.recv_type("change").await;
    assert_eq!(removed["data"]["on"], false);
    assert_eq!(removed["data"]["count"], 0);
    assert_eq!(removed["data"]["seq"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_client_resuming_gets_each_change_made_while_away_once_in_order() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let first = ann.post(ROOM, "one").await["id"].clone();
    let second = ann.post(ROOM, "two").await["id"].clone();
    ann.request(react(&first, "👀")).await;
    let mut bob = member(&server, "bob").await;
    let page = ws_page(&mut bob).await;
    let (since, cursor) = (second.clone(), page["changes"].clone());
    assert_eq!(cursor, 1);
    drop(bob);

    ann.request(edit(&first, "one, edited")).await;
    ann.request(react(&second, "🎉")).await;
    ann.request(delete(&second)).await;

    let mut bob = server.client(&format!("token={}", token("bob"))).await;
    bob.recv_type("rooms").await;
    bob.send(
        json!({"type": "join", "room": ROOM, "data": {"since": since, "changes_since": cursor}}),
    )
    .await;
    bob.recv_type("joined").await;
    let frames = bob.frames_within(QUIET * 2).await;
    let changes: Vec<(u64, String)> = frames
        .iter()
        .filter(|f| f["type"] == "change")
        .map(|f| {
            let data = &f["data"];
            (
                data["seq"].as_u64().unwrap(),
                data["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (2, "edit".to_owned()),
            (3, "react".to_owned()),
            (4, "delete".to_owned())
        ]
    );
    assert!(
        frames.iter().all(|f| f["type"] != "msg"),
        "no message re-read: {frames:?}"
    );

    ann.request(edit(&first, "one, again")).await;
    let live = bob.recv_type("change").await;
    assert_eq!(live["data"]["seq"], 5);
    server.stop().await;
}

#[tokio::test]
async fn a_join_without_changes_since_gets_no_catch_up_and_replays_the_edited_text() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "typo").await["id"].clone();
    ann.request(edit(&id, "fixed")).await;

    let mut bob = member(&server, "bob").await;
    // Its replay (from the room's recent frames) shows the message as it is now.
    let replayed = bob.recv_msg().await;
    assert_eq!(replayed["data"], "fixed");
    bob.assert_no("change", QUIET).await;
    server.stop().await;
}

/// A minimal EventSource: reads `id:`/`data:` events from a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(url: String, last_event_id: Option<&str>) -> EventStream {
        let mut request = http().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event of `kind`: its id and data.
    async fn next_of(&mut self, kind: &str) -> (Option<String>, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data: Value = serde_json::from_str(&data).unwrap();
                if data["type"] == kind {
                    return (id, data);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event arrives in time")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn sse_streams_changes_with_both_cursors_and_resumes_from_them() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let id = ann.post(ROOM, "watch me").await["id"].clone();
    let url = server.url(&format!(
        "/events?room={ROOM}&changes_since=0&token={}",
        token("sue")
    ));
    let mut events = EventStream::open(url.clone(), None).await;
    events.next_of("joined").await;

    ann.request(react(&id, "👍")).await;
    let (event_id, change) = events.next_of("change").await;
    assert_eq!(change["data"]["seq"], 1);
    assert_eq!(event_id.as_deref(), Some("1.1"));
    drop(events);

    ann.request(edit(&id, "watched")).await;
    let mut resumed = EventStream::open(url, Some("1.1")).await;
    let (event_id, change) = resumed.next_of("change").await;
    assert_eq!(
        change["data"]["seq"], 2,
        "the missed change, not the one seen"
    );
    assert_eq!(change["data"]["kind"], "edit");
    assert_eq!(event_id.as_deref(), Some("1.2"));
    server.stop().await;
}

#[tokio::test]
async fn a_reply_names_its_message_live_in_history_and_in_the_api() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let id = ann.post(ROOM, "question?").await["id"].clone();
    bob.recv_msg().await;

    bob.send(json!({"type": "msg", "room": ROOM, "data": "answer", "reply_to": id, "ref": "a"}))
        .await;
    bob.recv_type("ack").await;

    let live = ann.recv_msg().await;
    assert_eq!(live["reply_to"], id);
    let page = ws_page(&mut ann).await;
    assert!(page["messages"][0].get("reply_to").is_none(), "{page}");
    assert_eq!(page["messages"][1]["reply_to"], id);
    let api = api_page(&server, "ann").await;
    assert_eq!(api["messages"][1]["reply_to"], id);
    server.stop().await;
}

#[tokio::test]
async fn a_reply_to_a_message_the_room_does_not_have_is_refused_and_not_stored() {
    let server = server().await;
    let mut ann = member(&server, "ann").await;
    // Message 1 exists in another room only: ids are per room.
    ann.join("elsewhere").await;
    ann.post("elsewhere", "over there").await;

    for bad in [json!(1), json!(0), json!("1")] {
        let code = if bad == json!(1) {
            "not_found"
        } else {
            "bad_json"
        };
        let frame = json!({"type": "msg", "room": ROOM, "data": "re", "reply_to": bad, "ref": "r"});
        ann.send(frame).await;
        ann.expect_error(code, json!("r")).await;
    }

    let page = ws_page(&mut ann).await;
    assert_eq!(page["messages"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn an_api_reply_to_a_missing_message_is_404_and_not_stored() {
    let server = server().await;
    let url = server.url(&format!("/api/rooms/{ROOM}/messages"));
    let response = http()
        .post(&url)
        .header("authorization", format!("Bearer {}", token("ann")))
        .json(&json!({"data": "re", "reply_to": 5}))
        .send()
        .await
        .unwrap();
    common::assert_api_error(response, 404, "not_found").await;
    let page = api_page(&server, "ann").await;
    assert_eq!(page["messages"], json!([]));
    server.stop().await;
}
