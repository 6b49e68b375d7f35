//! Search (issue 20, docs/protocol.md "Search"): `GET /api/search` finds messages by their
//! words with highlighted snippets, newest first and paged, and never returns a message from a
//! room the caller may not read (another's private room or DM; a guest sees public rooms only)
//! or a deleted message's text. Real loopback sockets against an in-process server (PostgreSQL
//! with `HUBBUB_TEST_DB`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tokens::{SECRET, token};
use common::{
    Client, TestServer, api_post, assert_api_error, http, start_server_with,
    start_server_with_flags,
};
use hubbub::config::Secret;
use hubbub::token::{Claims, mint};
use serde_json::{Value, json};

/// A server with token auth on and guests still allowed.
async fn server() -> TestServer {
    start_server_with_flags(&["--auth-secret", SECRET, "--guests=true"]).await
}

async fn signed_in(server: &TestServer, name: &str) -> Client {
    let mut client = server.client(&format!("token={}", token(name))).await;
    client.recv_type("rooms").await;
    client
}

/// Sends a frame with a `ref` and returns its `ack`, failing on an `error`.
async fn request(client: &mut Client, kind: &str, data: Value) -> Value {
    client
        .send(json!({"type": kind, "data": data, "ref": kind}))
        .await;
    loop {
        let frame = client.recv().await;
        match frame["type"].as_str() {
            Some("ack") if frame["ref"] == kind => return frame,
            Some("error") => panic!("{kind} refused: {frame}"),
            _ => continue,
        }
    }
}

/// A private room `client` creates (and is the only member of): its name.
async fn private_room(client: &mut Client) -> String {
    let created = request(client, "create", json!({"title": "Plans", "private": true})).await;
    created["room"].as_str().unwrap().to_owned()
}

/// The search URL with `query` encoded.
fn search_url(server: &TestServer, query: &[(&str, &str)]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&server.url("/api/search")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    url
}

/// `GET /api/search` with `query` as `name` (a guest when `None`); the response.
async fn search_as(
    server: &TestServer,
    name: Option<&str>,
    query: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().get(search_url(server, query));
    if let Some(name) = name {
        request = request.header("Authorization", format!("Bearer {}", token(name)));
    }
    request.send().await.unwrap()
}

/// The JSON of a search that must succeed.
async fn found(server: &TestServer, name: Option<&str>, query: &[(&str, &str)]) -> Value {
    let response = search_as(server, name, query).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The (room, id) of every result, in order.
fn hits(page: &Value) -> Vec<(String, u64)> {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| {
            (
                hit["room"].as_str().unwrap().to_owned(),
                hit["id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_word_finds_the_messages_holding_it_newest_first() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "the blue whale").await;
    api_post(server.addr, "lobby", "bob", "a red herring").await;
    api_post(server.addr, "garden", "cat", "Whale songs at dawn").await;
    let page = found(&server, None, &[("q", "whale")]).await;
    assert_eq!(
        hits(&page),
        [("garden".to_owned(), 1), ("lobby".to_owned(), 1)]
    );
    let first = &page["results"][0];
    assert_eq!(first["from"], "cat");
    assert!(first["ts"].as_i64().unwrap() > 0);
    assert_eq!(page["next"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn every_word_of_a_query_must_occur() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "blue whale").await;
    api_post(server.addr, "lobby", "ann", "blue sky").await;
    let page = found(&server, None, &[("q", "sky blue")]).await;
    assert_eq!(hits(&page), [("lobby".to_owned(), 2)]);
    server.stop().await;
}

#[tokio::test]
async fn a_snippet_marks_each_match_with_the_private_use_markers() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "Hello <b>World</b> and world").await;
    let page = found(&server, None, &[("q", "world")]).await;
    assert_eq!(
        page["results"][0]["snippet"],
        "Hello <b>\u{E000}World\u{E001}</b> and \u{E000}world\u{E001}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_markers_in_a_message_never_reach_a_snippet_as_markers() {
    let server = server().await;
    api_post(
        server.addr,
        "lobby",
        "ann",
        "fake \u{E000}mark\u{E001} here",
    )
    .await;
    let page = found(&server, None, &[("q", "here")]).await;
    let snippet = page["results"][0]["snippet"].as_str().unwrap();
    assert_eq!(snippet.matches('\u{E000}').count(), 1, "{snippet:?}");
    assert!(snippet.contains("\u{E000}here\u{E001}"), "{snippet:?}");
    server.stop().await;
}

#[tokio::test]
async fn pages_follow_next_until_every_hit_was_seen_once() {
    let server = server().await;
    for n in 1..=5 {
        api_post(server.addr, "lobby", "ann", &format!("needle number {n}")).await;
    }
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut query = vec![("q", "needle"), ("limit", "2")];
        if let Some(before) = &before {
            query.push(("before", before));
        }
        let page = found(&server, None, &query).await;
        seen.extend(hits(&page).into_iter().map(|(_, id)| id));
        match page["next"].as_u64() {
            Some(next) => before = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    server.stop().await;
}

/// Every page of `query` (50 hits each) as `name`, following `next`: the (room, id) of every hit.
async fn every_page(server: &TestServer, name: &str, query: &[(&str, &str)]) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut paged = query.to_vec();
        paged.push(("limit", "50"));
        if let Some(before) = &before {
            paged.push(("before", before));
        }
        let page = found(server, Some(name), &paged).await;
        seen.extend(hits(&page));
        match page["next"].as_u64() {
            Some(next) => before = Some(next.to_string()),
            None => return seen,
        }
    }
}

/// Posts each `(room, text)` as `client`, a hundred frames at a time before reading their acks
/// (in order: one session handles its frames in turn); returns each post's (room, id).
async fn post_all(client: &mut Client, posts: &[(String, String)]) -> Vec<(String, u64)> {
    let mut ids = Vec::with_capacity(posts.len());
    for chunk in posts.chunks(100) {
        for (room, text) in chunk {
            client.send_post(room, text).await.unwrap();
        }
        for (room, text) in chunk {
            let ack = client.recv_type("ack").await;
            assert_eq!(ack["ref"], text.as_str(), "{ack}");
            ids.push((room.clone(), ack["id"].as_u64().unwrap()));
        }
    }
    ids
}

/// More matches than PostgreSQL's first pass counts (2,000, store/postgres/search.rs) take its
/// other plan, the newest-first walk in windows, over every room and over one room; 1,000
/// newer messages without the word fill the walk's first window exactly, so it must go on to
/// the next (whose first row is a match). SQLite has one plan for all of it.
#[tokio::test]
async fn a_word_in_thousands_of_messages_is_paged_newest_first_everywhere_and_in_one_room() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    let private = private_room(&mut ann).await;
    for room in ["lobby", "garden", private.as_str()] {
        ann.join(room).await;
    }
    let mut posts = Vec::new();
    for n in 1..=2_100_u64 {
        let room = if n % 3 == 0 { "garden" } else { "lobby" };
        posts.push((room.to_owned(), format!("common word {n}")));
        if n % 100 == 50 {
            posts.push((private.clone(), format!("common but private {n}")));
        }
    }
    let posted = post_all(&mut ann, &posts).await;
    let fillers: Vec<(String, String)> = (1..=1_000)
        .map(|n| ("lobby".to_owned(), format!("filler {n}")))
        .collect();
    post_all(&mut ann, &fillers).await;
    let newest_first: Vec<(String, u64)> = posted
        .iter()
        .rev()
        .filter(|(room, _)| *room != private)
        .cloned()
        .collect();
    assert_eq!(
        every_page(&server, "eve", &[("q", "common")]).await,
        newest_first
    );
    for room in ["lobby", "garden"] {
        let expected: Vec<(String, u64)> = newest_first
            .iter()
            .filter(|(posted_in, _)| posted_in == room)
            .cloned()
            .collect();
        let found_in = every_page(&server, "eve", &[("q", "common"), ("room", room)]).await;
        assert_eq!(found_in, expected, "in {room}");
    }
    let own = every_page(&server, "ann", &[("q", "common")]).await;
    assert_eq!(own.len(), posted.len());
    server.stop().await;
}

#[tokio::test]
async fn a_private_room_is_searched_by_its_members_only() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    let room = private_room(&mut ann).await;
    ann.join(&room).await;
    ann.post(&room, "the secret launch date").await;
    let own = found(&server, Some("ann"), &[("q", "launch")]).await;
    assert_eq!(hits(&own), [(room.clone(), 1)]);
    let outsider = found(&server, Some("eve"), &[("q", "launch")]).await;
    assert_eq!(hits(&outsider), []);
    let guest = found(&server, None, &[("q", "launch")]).await;
    assert_eq!(hits(&guest), []);
    server.stop().await;
}

#[tokio::test]
async fn a_direct_conversation_is_searched_by_its_two_people_only() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    signed_in(&server, "bob").await;
    let dm = request(&mut ann, "dm", json!({"with": ["bob"]})).await["room"]
        .as_str()
        .unwrap()
        .to_owned();
    ann.join(&dm).await;
    ann.post(&dm, "psst bob").await;
    assert_eq!(
        hits(&found(&server, Some("bob"), &[("q", "psst")]).await),
        [(dm, 1)]
    );
    assert_eq!(
        hits(&found(&server, Some("eve"), &[("q", "psst")]).await),
        []
    );
    server.stop().await;
}

#[tokio::test]
async fn searching_in_another_persons_private_room_is_not_found() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    let room = private_room(&mut ann).await;
    let response = search_as(&server, Some("eve"), &[("q", "x"), ("room", &room)]).await;
    assert_api_error(response, 404, "not_found").await;
    server.stop().await;
}

#[tokio::test]
async fn room_narrows_a_search_to_that_room() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "tea time").await;
    api_post(server.addr, "garden", "ann", "tea leaves").await;
    let page = found(&server, None, &[("q", "tea"), ("room", "lobby")]).await;
    assert_eq!(hits(&page), [("lobby".to_owned(), 1)]);
    server.stop().await;
}

#[tokio::test]
async fn a_token_limited_to_some_rooms_finds_nothing_outside_them() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "kiwi").await;
    api_post(server.addr, "garden", "ann", "kiwi").await;
    let limited = mint(
        &Secret::new(SECRET),
        &Claims::new(
            "zed",
            Some(vec!["garden".to_owned()]),
            Duration::from_secs(600),
        ),
    )
    .unwrap();
    let response = http()
        .get(search_url(&server, &[("q", "kiwi")]))
        .header("Authorization", format!("Bearer {limited}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let page: Value = response.json().await.unwrap();
    assert_eq!(hits(&page), [("garden".to_owned(), 1)]);
    server.stop().await;
}

#[tokio::test]
async fn a_deleted_message_is_no_longer_found() {
    let server = server().await;
    let mut ann = signed_in(&server, "ann").await;
    request(&mut ann, "create", json!({"room": "ops", "private": false})).await;
    ann.join("ops").await;
    ann.post("ops", "oops my password is hunter2").await;
    ann.post("ops", "hunter2 was a joke").await;
    request(&mut ann, "delete", json!({"room": "ops", "id": 1})).await;
    let page = found(&server, None, &[("q", "hunter2")]).await;
    assert_eq!(hits(&page), [("ops".to_owned(), 2)]);
    assert_eq!(hits(&found(&server, None, &[("q", "password")]).await), []);
    server.stop().await;
}

#[tokio::test]
async fn search_syntax_is_searched_as_plain_words_not_an_error() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "near or not").await;
    for q in [
        "NEAR(\"near\"",
        "body:near*",
        "\"unbalanced",
        "near OR -not",
        "^near AND",
    ] {
        let response = search_as(&server, None, &[("q", q)]).await;
        assert_eq!(response.status(), 200, "{q}");
    }
    let page = found(&server, None, &[("q", "\"near\" OR")]).await;
    assert_eq!(hits(&page), [("lobby".to_owned(), 1)]);
    server.stop().await;
}

#[tokio::test]
async fn a_query_without_words_is_a_bad_query() {
    let server = server().await;
    for q in ["", "  ", "\"*()-"] {
        let response = search_as(&server, None, &[("q", q)]).await;
        assert_api_error(response, 400, "bad_query").await;
    }
    let response = http().get(server.url("/api/search")).send().await.unwrap();
    assert_api_error(response, 400, "bad_query").await;
    server.stop().await;
}

#[tokio::test]
async fn a_query_with_a_nul_or_a_bad_cursor_is_a_clear_error_or_empty() {
    let server = server().await;
    api_post(server.addr, "lobby", "ann", "zero").await;
    let page = found(&server, None, &[("q", "zero\u{0}")]).await;
    assert_eq!(hits(&page), [("lobby".to_owned(), 1)]);
    let response = search_as(&server, None, &[("q", "zero"), ("before", "-1")]).await;
    assert_api_error(response, 400, "bad_query").await;
    server.stop().await;
}

#[tokio::test]
async fn searches_count_against_the_api_rate_limit() {
    let server = start_server_with(|c| {
        c.rate_limit = 1;
        c.rate_burst = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            search_as(&server, None, &[("q", "x")])
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    server.stop().await;
}
