//! Attachments (issue 20, docs/protocol.md "Attachments"): a post names an uploaded file by
//! hash and gives it a name; the server checks the file is stored, fills its `type` and `size`
//! from the file, and every `msg` of it carries `"attachment": {"hash", "name", "type", "size"}`
//! live, in replays, history pages (WebSocket and HTTP) and SSE. An unknown hash is
//! `not_found`, a bad name `bad_json`, empty text is allowed only beside an attachment, and a
//! deletion drops the attachment (the file stays). `--upload-types images` refuses other
//! uploads with 415 `bad_type`. Real loopback sockets against an in-process server, and the
//! real binary for the flag (PostgreSQL with `HUBBUB_TEST_DB`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tokens::{SECRET, token};
use common::{Binary, Client, TestServer, assert_api_error, free_port, http, start_server_with};
use hubbub::config::Secret;
use serde_json::{Value, json};

const ROOM: &str = "lobby";
/// How long a test watches for a frame that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// A 1x1 PNG.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\x0f\0\0\x01\x01\0\x05\x18\xd8N\0\0\0\0IEND\xaeB`\x82";

fn bearer(name: &str) -> String {
    format!("Bearer {}", token(name))
}

/// A server with token auth whose files directory is `files`.
async fn server(files: &Path) -> TestServer {
    let files = files.to_path_buf();
    start_server_with(move |c| {
        c.auth_secret = Some(Secret::new(SECRET));
        c.files_dir = Some(files);
    })
    .await
}

/// `name`, signed in with a token, past its sidebar, and in [`ROOM`].
async fn member(server: &TestServer, name: &str) -> Client {
    let mut client = server.client(&format!("token={}", token(name))).await;
    client.recv_type("rooms").await;
    client.join(ROOM).await;
    client
}

/// Uploads `bytes` as `name` and returns the answer's JSON (`hash`, `size`, `type`).
async fn upload(server: &TestServer, name: &str, bytes: &[u8]) -> Value {
    let response = http()
        .post(server.url("/api/files"))
        .header("authorization", bearer(name))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn post_with(hash: &str, name: &str, data: &str) -> Value {
    json!({"type": "msg", "room": ROOM, "data": data, "ref": "p",
           "attachment": {"hash": hash, "name": name}})
}

/// Sends `frame` and returns its `ack`, failing on an `error`.
async fn acked(client: &mut Client, frame: Value) -> Value {
    let reference = frame["ref"].clone();
    client.send(frame.clone()).await;
    loop {
        let answer = client.recv().await;
        match answer["type"].as_str() {
            Some("ack") if answer["ref"] == reference => return answer,
            Some("error") if answer["ref"] == reference => panic!("{frame} refused: {answer}"),
            _ => continue,
        }
    }
}

/// The attachment every `msg` of a post of [`PNG`] named `photo.png` carries.
fn png_attachment(hash: &str) -> Value {
    json!({"hash": hash, "name": "photo.png", "type": "image/png", "size": PNG.len()})
}

/// The room's history page as the HTTP API serves it to `name`.
async fn api_page(server: &TestServer, name: &str) -> Value {
    let response = http()
        .get(server.url(&format!("/api/rooms/{ROOM}/messages")))
        .header("authorization", bearer(name))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Everything in `dir` and its `tmp` directory.
fn stored_files(dir: &Path) -> Vec<PathBuf> {
    let mut names = Vec::new();
    for dir in [dir.to_path_buf(), dir.join("tmp")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_file() {
                    names.push(path);
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn a_picture_without_words_reaches_live_members_with_the_files_type_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    acked(&mut ann, post_with(&hash, " photo.png ", "")).await;

    let live = bob.recv_msg().await;
    assert_eq!(live["data"], "");
    assert_eq!(live["attachment"], png_attachment(&hash));
    assert!(live.get("deleted").is_none(), "{live}");
    server.stop().await;
}

#[tokio::test]
async fn the_attachment_is_in_history_pages_and_replays_from_memory_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    acked(&mut ann, post_with(&hash, "photo.png", "look")).await;
    ann.post(ROOM, "plain").await;

    let page = api_page(&server, "bob").await;
    assert_eq!(page["messages"][0]["attachment"], png_attachment(&hash));
    assert!(page["messages"][1].get("attachment").is_none(), "{page}");

    ann.send(json!({"type": "history", "room": ROOM, "data": {}}))
        .await;
    let ws_page = ann.recv_type("history").await;
    assert_eq!(
        ws_page["data"]["messages"][0]["attachment"],
        png_attachment(&hash)
    );

    // A join without `since` replays the room's recent messages (kept in memory while the
    // room has members); one with `since` reads the store.
    for join in [
        json!({"type": "join", "room": ROOM}),
        json!({"type": "join", "room": ROOM, "data": {"since": 0}}),
    ] {
        let mut carl = server.client(&format!("token={}", token("carl"))).await;
        carl.send(join).await;
        let replayed = carl.recv_msg().await;
        assert_eq!(replayed["id"], 1);
        assert_eq!(replayed["attachment"], png_attachment(&hash));
        assert!(carl.recv_msg().await.get("attachment").is_none());
    }
    server.stop().await;
}

#[tokio::test]
async fn the_attachment_is_in_sse_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    acked(&mut ann, post_with(&hash, "photo.png", "")).await;

    let mut response = http()
        .get(server.url(&format!("/events?room={ROOM}&since=0")))
        .header("authorization", bearer("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    let msg = loop {
        if let Some(line) = seen
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| serde_json::from_str::<Value>(data.trim()).unwrap())
            .find(|event| event["type"] == "msg")
        {
            break line;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event arrives in time")
            .unwrap()
            .expect("the stream is open");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    };
    assert_eq!(msg["attachment"], png_attachment(&hash));
    server.stop().await;
}

#[tokio::test]
async fn an_http_api_post_carries_its_attachment_to_live_members() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut bob = member(&server, "bob").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    let response = http()
        .post(server.url(&format!("/api/rooms/{ROOM}/messages")))
        .header("authorization", bearer("ann"))
        .json(&json!({"data": "", "attachment": {"hash": hash, "name": "photo.png"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let live = bob.recv_msg().await;
    assert_eq!(live["from"], "ann");
    assert_eq!(live["attachment"], png_attachment(&hash));
    server.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_stored_is_not_found_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;

    for hash in ["0".repeat(64), "../../etc/passwd".to_owned()] {
        ann.send(post_with(&hash, "photo.png", "look")).await;
        ann.expect_error("not_found", json!("p")).await;
        let response = http()
            .post(server.url(&format!("/api/rooms/{ROOM}/messages")))
            .header("authorization", bearer("ann"))
            .json(&json!({"data": "look", "attachment": {"hash": hash, "name": "p.png"}}))
            .send()
            .await
            .unwrap();
        assert_api_error(response, 404, "not_found").await;
    }
    ann.assert_no("msg", QUIET).await;
    assert_eq!(api_page(&server, "ann").await["messages"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn a_name_with_a_path_separator_or_control_character_or_no_length_is_bad_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();

    let too_long = "n".repeat(256);
    for name in [
        "../photo.png",
        "a\\b.png",
        "a\nb.png",
        "   ",
        too_long.as_str(),
    ] {
        ann.send(post_with(&hash, name, "look")).await;
        ann.expect_error("bad_json", json!("p")).await;
    }
    ann.assert_no("msg", QUIET).await;
    assert_eq!(api_page(&server, "ann").await["messages"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn empty_text_without_an_attachment_is_still_bad_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;

    ann.send(json!({"type": "msg", "room": ROOM, "data": "", "ref": "p"}))
        .await;
    ann.expect_error("bad_json", json!("p")).await;
    let response = http()
        .post(server.url(&format!("/api/rooms/{ROOM}/messages")))
        .header("authorization", bearer("ann"))
        .json(&json!({"data": ""}))
        .send()
        .await
        .unwrap();
    assert_api_error(response, 400, "bad_json").await;
    assert_eq!(api_page(&server, "ann").await["messages"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn deleting_a_message_drops_its_attachment_but_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let hash = upload(&server, "ann", PNG).await["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = acked(&mut ann, post_with(&hash, "photo.png", "")).await["id"].clone();
    bob.recv_msg().await;

    acked(
        &mut ann,
        json!({"type": "delete", "ref": "d", "data": {"room": ROOM, "id": id}}),
    )
    .await;

    assert_eq!(bob.recv_type("change").await["data"]["kind"], "delete");
    let page = api_page(&server, "bob").await;
    let tombstone = &page["messages"][0];
    assert_eq!(tombstone["deleted"], true, "{page}");
    assert!(tombstone.get("attachment").is_none(), "{page}");
    let mut carl = server.client(&format!("token={}", token("carl"))).await;
    carl.send(json!({"type": "join", "room": ROOM})).await;
    let replayed = carl.recv_msg().await;
    assert_eq!(replayed["deleted"], true, "{replayed}");
    assert!(replayed.get("attachment").is_none(), "{replayed}");
    let file = http()
        .get(server.url(&format!("/api/files/{hash}")))
        .header("authorization", bearer("bob"))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.unwrap().as_ref(), PNG);
    server.stop().await;
}

#[tokio::test]
async fn upload_types_images_refuses_other_files_with_415_and_keeps_nothing() {
    let (_dir, data) = common::scratch();
    let binary = Binary::start(&data, free_port(), &["--upload-types", "images"]).await;
    let url = format!("http://{}/api/files", binary.addr);

    let refused = http()
        .post(&url)
        .header("content-type", "image/png")
        .body(b"<html><script>alert(1)</script></html>".to_vec())
        .send()
        .await
        .unwrap();
    assert_api_error(refused, 415, "bad_type").await;
    assert_eq!(stored_files(&data.join("files")), Vec::<PathBuf>::new());

    let kept = http().post(&url).body(PNG.to_vec()).send().await.unwrap();
    assert_eq!(kept.status(), 201);
    assert_eq!(stored_files(&data.join("files")).len(), 1);
}

#[tokio::test]
async fn upload_types_any_is_the_default_and_keeps_any_file() {
    let (_dir, data) = common::scratch();
    let binary = Binary::start(&data, free_port(), &[]).await;
    let kept = http()
        .post(format!("http://{}/api/files", binary.addr))
        .body(b"plain text".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 201);
    let body: Value = kept.json().await.unwrap();
    assert_eq!(body["type"], "application/octet-stream");
}
