//! `hubbub copy`, `export` and `import` carry the whole database (issue 19 and 20 tables), run as
//! the real binary: a source node's accounts (signed up over HTTP, so with real password hashes
//! and sessions), messages with an edit, a deletion and a reaction (over the WebSocket, so with
//! their change feed), and moderation, a private room, members and read markers (written into
//! its SQLite file as a node stores them). A server on the target signs the same people in with
//! the same password and the old cookie, refuses the banned account, resumes a `join` with
//! `since` and `changes_since` with exactly the missed messages and changes, and gives the next
//! sign-up, post and change the next id and seq. A second pass carries only what changed; a
//! target row that differs is refused naming it.
//!
//! The PostgreSQL cases need a server (`HUBBUB_TEST_DB`, e.g. from `bash scripts/pg.sh start
//! DIR`) and say so when skipped; the SQLite cases always run.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::accounts::{Browser, PASSWORD, sign_in, sign_up};
use common::cli::{failed_saying, run_hubbub, stdout, succeeded};
use common::pg::fresh_schema_or_skip;
use common::{Binary, free_port, scratch};
use serde_json::{Value, json};
use sqlx::{Connection, SqliteConnection};

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// What the populated source holds that the checks on the target need.
struct Source {
    db: PathBuf,
    alice: Browser,
    /// Alice's sidebar (the `rooms` frame's data) as the source served it.
    sidebar: Value,
}

/// Stops a node as an operator does (SIGTERM, which drains and stores everything pending).
async fn stop(node: Binary) {
    node.signal("TERM");
    assert!(node.wait().await.success());
}

/// A node on `data/source.db`, used as people do: alice and bob sign up; alice posts three
/// messages to `lobby`, reacts to the first, edits the second and deletes the third (changes 1
/// to 3); she makes the public room `hall` and the private room "The den" (bob invited), opens
/// a DM with bob, bans bob from `hall`, mutes him in the den and puts the den in slow mode (each
/// an audit row). Then, with the node stopped, alice's read marker in `lobby` and an invite are
/// written into the file as the server writes them, and alice's sidebar is read from the node
/// started again.
async fn populated_source(data: &Path) -> Source {
    let db = data.join("source.db");
    let node_data = data.join("source-node");
    let node = Binary::start(&node_data, free_port(), &["--db", &sqlite_url(&db)]).await;
    let alice = sign_up(node.addr, "alice").await;
    sign_up(node.addr, "bob").await;
    let (mut ws, _) = alice.connect(node.addr, "").await;
    ws.join("lobby").await;
    for text in ["one", "two", "three"] {
        ws.post("lobby", text).await;
    }
    for frame in [
        json!({"type": "react", "data": {"room": "lobby", "id": 1, "emoji": "👍"}}),
        json!({"type": "edit", "data": {"room": "lobby", "id": 2, "text": "two, fixed"}}),
        json!({"type": "delete", "data": {"room": "lobby", "id": 3}}),
        json!({"type": "create", "data": {"room": "hall"}}),
        json!({"type": "dm", "data": {"with": ["bob"]}}),
        json!({"type": "ban", "data": {"room": "hall", "name": "bob"}}),
    ] {
        ws.request(frame).await;
    }
    let den = ws
        .request(json!({"type": "create", "data": {"title": "The den", "private": true}}))
        .await["room"]
        .clone();
    for frame in [
        json!({"type": "invite", "data": {"room": den, "name": "bob"}}),
        json!({"type": "mute", "data": {"room": den, "name": "bob", "seconds": 3600}}),
        json!({"type": "slow", "data": {"room": den, "seconds": 30}}),
    ] {
        ws.request(frame).await;
    }
    drop(ws);
    stop(node).await;

    let mut conn = SqliteConnection::connect(&sqlite_url(&db)).await.unwrap();
    for sql in [
        "INSERT INTO read_markers VALUES (1, 'lobby', 2, 1700000000003)",
        "INSERT INTO invites VALUES (x'00ff10', 1, NULL, 4000000000000, 3)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let node = Binary::start(&node_data, free_port(), &["--db", &sqlite_url(&db)]).await;
    let (mut ws, _) = alice.connect(node.addr, "").await;
    let sidebar = ws.recv_type("rooms").await["data"].clone();
    drop(ws);
    stop(node).await;
    Source { db, alice, sidebar }
}

/// `hubbub export` of `db` as text.
fn export(db: &str) -> String {
    let output = run_hubbub(&["export", "--db", db], None);
    succeeded(&output);
    stdout(&output)
}

/// The export's lines of record `kind`.
fn records(export: &str, kind: &str) -> Vec<Value> {
    export
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|line| line.get(kind).cloned())
        .collect()
}

/// Everything a server on `target` must serve as the source did.
async fn check_target_serves_the_source(target: &str, data: &Path, source: &Source) {
    let node = Binary::start(&data.join("target-node"), free_port(), &["--db", target]).await;
    let addr = node.addr;

    // The old session cookie is still signed in; the password still works.
    assert_eq!(source.alice.get(addr, "/api/me").await.status(), 200);
    sign_in(addr, "bob", PASSWORD).await;

    // The same sidebar: rooms, kinds, titles, roles, members, read markers and unread counts.
    let (mut ws, _) = source.alice.connect(addr, "").await;
    let sidebar = ws.recv_type("rooms").await["data"].clone();
    assert_eq!(sidebar, source.sidebar);
    assert_eq!(sidebar.as_array().unwrap().len(), 4, "{sidebar}");

    // Resuming from before the edit, the deletion and the reaction: exactly what was missed.
    ws.send(json!({"type": "join", "room": "lobby", "data": {"since": 1, "changes_since": 0}}))
        .await;
    ws.recv_type("joined").await;
    let replayed = [ws.recv_msg().await, ws.recv_msg().await];
    assert_eq!(
        replayed.iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        [json!(2), json!(3)]
    );
    let kinds: Vec<(Value, Value)> = [
        ws.recv_type("change").await,
        ws.recv_type("change").await,
        ws.recv_type("change").await,
    ]
    .iter()
    .map(|c| (c["data"]["seq"].clone(), c["data"]["kind"].clone()))
    .collect();
    assert_eq!(
        kinds,
        [
            (json!(1), json!("react")),
            (json!(2), json!("edit")),
            (json!(3), json!("delete")),
        ]
    );

    // The next post, change and sign-up take the next id and seq.
    assert_eq!(ws.post("lobby", "four").await["id"], 4);
    let unreact =
        json!({"type": "react", "data": {"room": "lobby", "id": 1, "emoji": "👍", "remove": true}});
    ws.send(unreact).await;
    // The change reaches its author too, before or after the ack.
    let change = ws.recv_type("change").await;
    assert_eq!(change["data"]["seq"], 4);
    sign_up(addr, "carol").await;

    // Bob is still banned from the hall.
    let bob = sign_in(addr, "bob", PASSWORD).await;
    let (mut bob_ws, _) = bob.connect(addr, "").await;
    bob_ws
        .send(json!({"type": "join", "room": "hall", "ref": "j"}))
        .await;
    bob_ws.expect_error("banned", json!("j")).await;
    drop(bob_ws);
    drop(ws);
    drop(node);
    let carol: Vec<Value> = records(&export(target), "account")
        .into_iter()
        .filter(|account| account["name"] == "carol")
        .collect();
    assert_eq!(
        carol[0]["id"], 3,
        "the next sign-up takes the next account id"
    );
}

/// Every kind of row the source holds is in the export, and the target's export is the same.
fn assert_same_database(source: &str, target: &str) {
    let exported = export(source);
    for (kind, count) in [
        ("account", 2),
        ("session", 2),
        ("invite", 1),
        ("room_settings", 3),
        ("member", 5),
        ("read_marker", 1),
        ("ban", 1),
        ("mute", 1),
        ("slow_mode", 1),
        ("audit", 3),
        ("reaction", 1),
        ("change", 3),
    ] {
        assert_eq!(records(&exported, kind).len(), count, "{kind} rows");
    }
    assert_eq!(export(target), exported);
}

async fn copy_there_and_check(target: &str) {
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let from = sqlite_url(&source.db);
    let output = run_hubbub(&["copy", "--from", &from, "--to", target], None);
    succeeded(&output);
    assert_same_database(&from, target);
    check_target_serves_the_source(target, &data, &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_another_sqlite_file_carries_accounts_sessions_rooms_moderation_and_changes() {
    let (_dir, data) = scratch();
    copy_there_and_check(&sqlite_url(&data.join("target.db"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_postgres_carries_accounts_sessions_rooms_moderation_and_changes() {
    let Some(url) = fresh_schema_or_skip(
        "copy_to_postgres_carries_accounts_sessions_rooms_moderation_and_changes",
    )
    .await
    else {
        return;
    };
    copy_there_and_check(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_postgres_back_to_sqlite_carries_the_whole_database() {
    let Some(url) =
        fresh_schema_or_skip("copy_from_postgres_back_to_sqlite_carries_the_whole_database").await
    else {
        return;
    };
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let from = sqlite_url(&source.db);
    succeeded(&run_hubbub(&["copy", "--from", &from, "--to", &url], None));
    let back = sqlite_url(&data.join("back.db"));
    succeeded(&run_hubbub(&["copy", "--from", &url, "--to", &back], None));
    assert_same_database(&from, &back);
    check_target_serves_the_source(&back, &data, &source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_carries_the_whole_database() {
    let (_dir, data) = scratch();
    let target = sqlite_url(&data.join("imported.db"));
    export_then_import_into(&data, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_postgres_carries_the_whole_database() {
    let Some(target) =
        fresh_schema_or_skip("export_then_import_into_postgres_carries_the_whole_database").await
    else {
        return;
    };
    let (_dir, data) = scratch();
    export_then_import_into(&data, &target).await;
}

async fn export_then_import_into(data: &Path, target: &str) {
    let target = target.to_owned();
    let source = populated_source(data).await;
    let from = sqlite_url(&source.db);
    let file = data.join("export.jsonl");
    std::fs::write(&file, export(&from)).unwrap();
    succeeded(&run_hubbub(&["import", "--db", &target], Some(&file)));
    assert_same_database(&from, &target);
    // The same file again: everything is already there.
    let again = run_hubbub(&["import", "--db", &target], Some(&file));
    succeeded(&again);
    assert_eq!(export(&target), export(&from));
    check_target_serves_the_source(&target, data, &source).await;
}

/// A second pass after the source changed: a new account, a new message, an edit of a message
/// copied before, a reaction added and one taken back, a new topic, a lifted ban, a member
/// removed and a session signed out arrive; the target ends up as the source is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_brings_over_what_changed_on_the_source_since_the_first() {
    let (_dir, data) = scratch();
    let target = sqlite_url(&data.join("target.db"));
    second_pass_into(&data, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_to_postgres_brings_over_what_changed_on_the_source_since_the_first() {
    let Some(target) = fresh_schema_or_skip(
        "a_second_copy_to_postgres_brings_over_what_changed_on_the_source_since_the_first",
    )
    .await
    else {
        return;
    };
    let (_dir, data) = scratch();
    second_pass_into(&data, &target).await;
}

async fn second_pass_into(data: &Path, target: &str) {
    let target = target.to_owned();
    let source = populated_source(data).await;
    let from = sqlite_url(&source.db);
    succeeded(&run_hubbub(
        &["copy", "--from", &from, "--to", &target],
        None,
    ));

    let node = Binary::start(&data.join("source-node"), free_port(), &["--db", &from]).await;
    sign_up(node.addr, "dave").await;
    let (mut ws, _) = source.alice.connect(node.addr, "").await;
    ws.join("lobby").await;
    ws.post("lobby", "after the first pass").await;
    let edit =
        json!({"type": "edit", "data": {"room": "lobby", "id": 1, "text": "one, edited later"}});
    ws.request(edit).await;
    let react = json!({"type": "react", "data": {"room": "lobby", "id": 2, "emoji": "🎉"}});
    ws.request(react).await;
    let unreact =
        json!({"type": "react", "data": {"room": "lobby", "id": 1, "emoji": "👍", "remove": true}});
    ws.request(unreact).await;
    drop(ws);
    drop(node);
    let mut conn = SqliteConnection::connect(&from).await.unwrap();
    for sql in [
        "UPDATE room_settings SET topic = 'louder' WHERE name LIKE 'p-%'",
        "DELETE FROM bans WHERE room = 'hall'",
        "DELETE FROM room_members WHERE room LIKE 'p-%' AND account_id = 2",
        "DELETE FROM sessions WHERE account_id = 2",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let second = run_hubbub(&["copy", "--from", &from, "--to", &target], None);
    succeeded(&second);
    assert_eq!(export(&target), export(&from));
    let said = common::cli::stderr(&second) + &stdout(&second);
    assert!(said.contains("stored 1 messages"), "{said}");
    // The lifted ban, the removed member, bob's ended session and alice's 👍 on message 1.
    assert!(
        said.contains("4 the source no longer has, removed"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_change_row_that_differs_is_refused_naming_it() {
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let from = sqlite_url(&source.db);
    let target_path = data.join("target.db");
    let target = sqlite_url(&target_path);
    succeeded(&run_hubbub(
        &["copy", "--from", &from, "--to", &target],
        None,
    ));
    let mut conn = SqliteConnection::connect(&target).await.unwrap();
    sqlx::query("UPDATE message_changes SET payload = '{}' WHERE room = 'lobby' AND seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let again = run_hubbub(&["copy", "--from", &from, "--to", &target], None);
    failed_saying(
        &again,
        "message_changes room=\"lobby\" seq=2: the target holds it with different values",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_under_a_copied_id_is_refused_naming_it() {
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let from = sqlite_url(&source.db);
    let target = sqlite_url(&data.join("target.db"));
    succeeded(&run_hubbub(&["migrate", "--db", &target], None));
    let mut conn = SqliteConnection::connect(&target).await.unwrap();
    sqlx::query(
        "INSERT INTO accounts (id, name, name_key, created_ms) VALUES (1, 'zed', 'zed', 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let output = run_hubbub(&["copy", "--from", &from, "--to", &target], None);
    failed_saying(
        &output,
        "accounts id=1: the target holds another row under this key (name_key is \"zed\" there, \"alice\" in the source)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_over_another_account_names_the_line_and_stores_nothing_of_its_batch() {
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let file = data.join("export.jsonl");
    std::fs::write(&file, export(&sqlite_url(&source.db))).unwrap();
    let target = sqlite_url(&data.join("target.db"));
    succeeded(&run_hubbub(&["migrate", "--db", &target], None));
    let mut conn = SqliteConnection::connect(&target).await.unwrap();
    sqlx::query(
        "INSERT INTO accounts (id, name, name_key, created_ms) VALUES (2, 'zed', 'zed', 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let output = run_hubbub(&["import", "--db", &target], Some(&file));
    failed_saying(
        &output,
        "line 3: accounts id=2: the target holds another row under this key (name_key is \"zed\" \
         there, \"bob\" in the source); a copy never overwrites it (nothing from line 2 on was \
         stored)",
    );
    let accounts = records(&export(&target), "account");
    assert_eq!(
        accounts.len(),
        1,
        "alice was not stored either: {accounts:?}"
    );
}

/// A version 1 file holds messages only: importing one into a copied database leaves every
/// other row (sessions, members, bans ...) as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_import_into_a_copied_database_removes_nothing() {
    let (_dir, data) = scratch();
    let source = populated_source(&data).await;
    let from = sqlite_url(&source.db);
    let target = sqlite_url(&data.join("target.db"));
    succeeded(&run_hubbub(
        &["copy", "--from", &from, "--to", &target],
        None,
    ));
    let file = data.join("v1.jsonl");
    let lines = [
        json!({"format": "hubbub-history", "version": 1}),
        json!({"room": "archive", "id": 1, "ts": 1_600_000_000_000_i64, "from": "old", "text": "kept"}),
        json!({"end": {"rooms": 1, "messages": 1}}),
    ];
    let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    std::fs::write(&file, text).unwrap();

    let output = run_hubbub(&["import", "--db", &target], Some(&file));
    succeeded(&output);
    let after = export(&target);
    for kind in ["session", "member", "ban", "reaction"] {
        assert_eq!(
            records(&after, kind),
            records(&export(&from), kind),
            "{kind} rows"
        );
    }
    assert!(after.contains(r#""text":"kept""#));
}
