//! `hubbub copy`, `hubbub export` and `hubbub import`, run as the real binary against a real
//! SQLite file and a real PostgreSQL schema: a history of several rooms (one longer than a
//! batch, odd texts in another) arrives with ids, ts, senders and texts unchanged; a server on the
//! target serves it, resumes `join` with `since` and gives the next post the next id; bad input
//! and targets that already hold other messages are refused with errors that say where.
//!
//! The PostgreSQL cases need a server (`HUBBUB_TEST_POSTGRES` or `HUBBUB_TEST_DB`, e.g. from
//! `bash scripts/pg.sh start DIR`) and say so when skipped; the SQLite cases always run.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::cli::{UnreachablePostgres, failed_saying, run_hubbub, stdout, succeeded};
use common::pg::fresh_schema_or_skip;
use common::{Binary, free_port, scratch};
use hubbub::config::{Durability, PostgresUrl};
use hubbub::protocol::{Attachment, RoomName};
use hubbub::store::copy::BATCH;
use hubbub::store::{NewMessage, PostgresStore, SchemaAtOpen, SqliteStore, Store, StoredMessage};
use serde_json::{Value, json};
use tempfile::TempDir;

const BUSY: Duration = Duration::from_secs(5);

/// Messages in the long room: more than two batches, and not a multiple of one.
const LONG_ROOM: usize = 2 * BATCH + 123;

/// Texts a history must carry unchanged.
const ODD_TEXTS: [&str; 6] = [
    "NUL \u{0} inside",
    "emoji 🦀👩‍👩‍👧 and Ünïcödé, 漢字",
    "עברית מימין לשמאל \u{202e}override",
    "quotes ' \" \\ and a line\nbreak\r\nand\ttab",
    "<script>alert(1)</script>",
    "\u{feff}BOM and \u{200b}zero width",
];

/// Runs the binary with `args`, stdin from `input` (none: empty), and waits for it.
fn hubbub(args: &[&str], input: Option<&Path>) -> Output {
    run_hubbub(args, input)
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The history every test starts from: `lobby` longer than two batches, `odd` with the texts of
/// [`ODD_TEXTS`], `tiny` with one message; senders and timestamps vary.
fn seed_messages() -> Vec<NewMessage> {
    let mut seed = Vec::new();
    for i in 0..LONG_ROOM {
        seed.push(NewMessage {
            room: room("lobby"),
            from: ["alice", "bob", "Zoë"][i % 3].to_owned(),
            text: format!("lobby message {i}"),
            ts: 1_700_000_000_000 + i as i64 * 1_000,
            author: None,
            reply_to: None,
            attachment: None,
        });
    }
    for (i, text) in ODD_TEXTS.iter().enumerate() {
        seed.push(NewMessage {
            room: room("odd"),
            from: "مريم".to_owned(),
            text: (*text).to_owned(),
            ts: 1_700_000_500_000 + i as i64,
            author: None,
            reply_to: None,
            attachment: None,
        });
    }
    seed.push(NewMessage {
        room: room("tiny"),
        from: "carol".to_owned(),
        text: "only one".to_owned(),
        ts: 1_650_000_000_000,
        author: None,
        reply_to: None,
        // An attachment (issue 20) travels with its message like the text.
        attachment: Some(Box::new(Attachment {
            hash: "ab".repeat(32),
            name: "plan of the day.png".to_owned(),
            mime: "image/png".to_owned(),
            size: 4242,
        })),
    });
    seed
}

/// A SQLite file at `path` holding [`seed_messages`], stored as a node stores posts.
async fn seeded_sqlite(path: &Path) {
    let store = SqliteStore::open(path, BUSY, Durability::Machine)
        .await
        .unwrap();
    for chunk in seed_messages().chunks(256) {
        store.append(chunk).await.unwrap();
    }
    store.close().await;
}

/// Every message of every room of `store`, by room.
async fn everything(store: &dyn Store) -> BTreeMap<String, Vec<StoredMessage>> {
    let mut all = BTreeMap::new();
    for summary in store.rooms().await.unwrap() {
        let mut messages = Vec::new();
        let mut since = 0;
        loop {
            let page = store.after(&room(&summary.room), since, 300).await.unwrap();
            let Some(last) = page.last() else { break };
            since = last.id;
            messages.extend(page);
        }
        assert_eq!(messages.last().map(|m| m.id), Some(summary.last_id));
        all.insert(summary.room, messages);
    }
    all
}

async fn sqlite_history(path: &Path) -> BTreeMap<String, Vec<StoredMessage>> {
    let store = SqliteStore::open(path, BUSY, Durability::Machine)
        .await
        .unwrap();
    let all = everything(&store).await;
    store.close().await;
    all
}

async fn postgres_store(url: &str) -> PostgresStore {
    PostgresStore::open(
        &PostgresUrl::new(url),
        BUSY,
        Durability::Machine,
        SchemaAtOpen::RequireCurrent,
    )
    .await
    .unwrap()
}

async fn postgres_history(url: &str) -> BTreeMap<String, Vec<StoredMessage>> {
    let store = postgres_store(url).await;
    let all = everything(&store).await;
    store.close().await;
    all
}

/// Every message of `room` as a server's HTTP history route serves it, oldest first.
async fn served_history(addr: SocketAddr, room_name: &str) -> Vec<StoredMessage> {
    let listed = common::history_messages(addr, room_name).await;
    listed.iter().map(stored_from_json).collect()
}

fn stored_from_json(m: &Value) -> StoredMessage {
    StoredMessage {
        room: RoomName::parse(m["room"].as_str().unwrap()).unwrap(),
        id: m["id"].as_u64().unwrap(),
        ts: m["ts"].as_i64().unwrap(),
        from: m["from"].as_str().unwrap().to_owned(),
        text: m["data"].as_str().unwrap().to_owned(),
        author: None,
        reply_to: None,
        attachment: m
            .get("attachment")
            .map(|a| Box::new(serde_json::from_value(a.clone()).unwrap())),
    }
}

/// Writes `lines` (each a JSON value) as an import file.
fn import_file(dir: &Path, lines: &[Value]) -> PathBuf {
    let path = dir.join("input.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    path
}

fn header() -> Value {
    json!({"format": "hubbub-history", "version": 1})
}

fn line(room_name: &str, id: u64, text: &str) -> Value {
    json!({"room": room_name, "id": id, "ts": 1_700_000_000_000_i64 + id as i64, "from": "alice", "text": text})
}

fn end(rooms: u64, messages: u64) -> Value {
    json!({"end": {"rooms": rooms, "messages": messages}})
}

/// `hubbub export` of the SQLite file at `db` into `dir/export.jsonl`.
fn export_sqlite(db: &Path, dir: &Path) -> PathBuf {
    let output = hubbub(&["export", "--db", &sqlite_url(db)], None);
    succeeded(&output);
    let path = dir.join("export.jsonl");
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

/// A scratch directory with a seeded SQLite file in it ([`seeded_sqlite`]): the guard that
/// removes it, its path and the file's.
async fn seeded_scratch() -> (TempDir, PathBuf, PathBuf) {
    let (dir, data) = scratch();
    let db = data.join("hubbub.db");
    seeded_sqlite(&db).await;
    (dir, data, db)
}

/// `hubbub copy` from the SQLite file `from` to the SQLite file `to`.
fn copy_between_sqlite(from: &Path, to: &Path) -> Output {
    hubbub(
        &["copy", "--from", &sqlite_url(from), "--to", &sqlite_url(to)],
        None,
    )
}

/// `hubbub import` of `file` into a new SQLite file in `dir`: that file's path and the run.
fn import_into_new_sqlite(dir: &Path, file: &Path) -> (PathBuf, Output) {
    let target = dir.join("t.db");
    let output = hubbub(&["import", "--db", &sqlite_url(&target)], Some(file));
    (target, output)
}

/// Makes `path` a SQLite file whose room `room_name` holds one message of its own (mallory's
/// "mine", id 1), which a copy or import must not overwrite.
async fn sqlite_holding_mine(path: &Path, room_name: &str) {
    let store = SqliteStore::open(path, BUSY, Durability::Machine)
        .await
        .unwrap();
    store
        .append(&[NewMessage {
            room: room(room_name),
            from: "mallory".to_owned(),
            text: "mine".to_owned(),
            ts: 5,
            author: None,
            reply_to: None,
            attachment: None,
        }])
        .await
        .unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_postgres_gives_a_server_there_the_identical_history_and_the_next_ids() {
    let Some(url) =
        fresh_schema_or_skip("copy_to_postgres_gives_a_server_there_the_identical_history").await
    else {
        return;
    };
    let (_dir, _, db) = seeded_scratch().await;
    let source = sqlite_history(&db).await;

    let output = hubbub(&["copy", "--from", &sqlite_url(&db), "--to", &url], None);
    succeeded(&output);
    let total = seed_messages().len();
    assert!(
        stdout(&output).contains(&format!(
            "stored {total} messages in 3 rooms (0 already there, skipped)"
        )),
        "{}",
        stdout(&output)
    );

    let (_server_dir, server_data) = scratch();
    let server = Binary::start(&server_data, free_port(), &["--db", &url]).await;
    for (name, messages) in &source {
        assert_eq!(
            &served_history(server.addr, name).await,
            messages,
            "room {name}"
        );
    }
    // A client resuming with the `since` it had on the old node gets exactly what follows.
    let since = LONG_ROOM as u64 - 3;
    let mut client = server.client("name=resumer").await;
    client
        .send(json!({"type": "join", "room": "lobby", "data": {"since": since}}))
        .await;
    client.recv_type("joined").await;
    for id in since + 1..=LONG_ROOM as u64 {
        let msg = client.recv_msg().await;
        assert_eq!(msg["id"], id);
        assert_eq!(msg["data"], source["lobby"][id as usize - 1].text);
    }
    let ack = client.post("lobby", "first on PostgreSQL").await;
    assert_eq!(ack["id"], LONG_ROOM as u64 + 1, "the next post continues");
    let next_odd = common::api_post(server.addr, "odd", "dave", "next").await;
    assert_eq!(next_odd, ODD_TEXTS.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_postgres_keeps_every_message_and_continues_ids() {
    let Some(url) =
        fresh_schema_or_skip("export_then_import_into_postgres_keeps_every_message").await
    else {
        return;
    };
    let (_dir, data, db) = seeded_scratch().await;
    let file = export_sqlite(&db, &data);

    let output = hubbub(&["import", "--db", &url], Some(&file));
    succeeded(&output);
    assert_eq!(postgres_history(&url).await, sqlite_history(&db).await);
    let store = postgres_store(&url).await;
    let next = store
        .append(&[NewMessage {
            room: room("tiny"),
            from: "carol".to_owned(),
            text: "two".to_owned(),
            ts: 1,
            author: None,
            reply_to: None,
            attachment: None,
        }])
        .await
        .unwrap();
    assert_eq!(next[0].id, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_postgres_back_to_a_sqlite_file_keeps_every_message() {
    let Some(url) =
        fresh_schema_or_skip("copy_from_postgres_back_to_a_sqlite_file_keeps_every_message").await
    else {
        return;
    };
    let (_dir, data, db) = seeded_scratch().await;
    succeeded(&hubbub(
        &["copy", "--from", &sqlite_url(&db), "--to", &url],
        None,
    ));
    let back = data.join("back.db");
    succeeded(&hubbub(
        &["copy", "--from", &url, "--to", &sqlite_url(&back)],
        None,
    ));
    assert_eq!(sqlite_history(&back).await, sqlite_history(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_applies_the_postgres_migrations_first() {
    let Some(url) = fresh_schema_or_skip("import_applies_the_postgres_migrations_first").await
    else {
        return;
    };
    let (_dir, data) = scratch();
    let file = import_file(&data, &[header(), line("r", 1, "one"), end(1, 1)]);
    let output = hubbub(&["import", "--db", &url], Some(&file));
    succeeded(&output);
    // RequireCurrent opens only a schema with every migration applied.
    let history = postgres_history(&url).await;
    assert_eq!(history["r"].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_into_a_new_sqlite_file_keeps_every_message() {
    let (_dir, data, db) = seeded_scratch().await;
    let file = export_sqlite(&db, &data);
    let target = data.join("elsewhere").join("new.db");

    let output = hubbub(&["import", "--db", &sqlite_url(&target)], Some(&file));
    succeeded(&output);
    assert_eq!(sqlite_history(&target).await, sqlite_history(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_file_is_a_header_one_line_per_message_and_an_end_line() {
    let (_dir, data, db) = seeded_scratch().await;
    let file = export_sqlite(&db, &data);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let total = seed_messages().len();
    assert_eq!(lines.len(), total + 2);
    assert_eq!(lines[0], json!({"format": "hubbub-history", "version": 2}));
    assert_eq!(lines[total + 1], end(3, total as u64));
    let first = &lines[1];
    assert_eq!(
        (&first["room"], &first["id"], &first["from"], &first["text"]),
        (
            &json!("lobby"),
            &json!(1),
            &json!("alice"),
            &json!("lobby message 0")
        )
    );
    assert!(
        text.contains(r#""text":"NUL \u0000 inside""#),
        "U+0000 escaped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_reads_the_sqlite_file_of_a_running_node() {
    let (_dir, data, db) = seeded_scratch().await;
    let node = Binary::start(&data, free_port(), &["--db", &sqlite_url(&db)]).await;
    let posted = common::api_post(node.addr, "tiny", "erin", "while running").await;
    assert_eq!(posted, 2);

    let target = data.join("copy.db");
    let output = copy_between_sqlite(&db, &target);
    succeeded(&output);
    let copied = sqlite_history(&target).await;
    for (name, messages) in &copied {
        assert_eq!(
            &served_history(node.addr, name).await,
            messages,
            "room {name}"
        );
    }
    assert_eq!(
        copied["tiny"].len(),
        2,
        "the post committed before the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copying_again_skips_every_message_and_stores_none() {
    let (_dir, data, db) = seeded_scratch().await;
    let target = data.join("copy.db");
    succeeded(&copy_between_sqlite(&db, &target));
    let again = copy_between_sqlite(&db, &target);
    succeeded(&again);
    let total = seed_messages().len();
    assert!(
        stdout(&again).contains(&format!(
            "stored 0 messages in 3 rooms ({total} already there, skipped)"
        )),
        "{}",
        stdout(&again)
    );
    assert_eq!(sqlite_history(&target).await, sqlite_history(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_into_a_room_holding_other_messages_is_refused_and_overwrites_nothing() {
    let (_dir, data, db) = seeded_scratch().await;
    // The target already took posts of its own in `tiny`.
    let target = data.join("busy.db");
    sqlite_holding_mine(&target, "tiny").await;

    let output = copy_between_sqlite(&db, &target);
    failed_saying(
        &output,
        "room \"tiny\": message 1 is already stored in the target with a different ts, sender or text",
    );
    let kept = sqlite_history(&target).await;
    assert_eq!(kept["tiny"][0].text, "mine", "never overwritten");
    assert_eq!(kept["tiny"].len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_into_a_postgres_room_holding_other_messages_is_refused() {
    let Some(url) =
        fresh_schema_or_skip("a_copy_into_a_postgres_room_holding_other_messages_is_refused").await
    else {
        return;
    };
    let (_dir, _, db) = seeded_scratch().await;
    let (_server_dir, server_data) = scratch();
    let server = Binary::start(&server_data, free_port(), &["--db", &url]).await;
    common::api_post(server.addr, "odd", "mallory", "posted on PostgreSQL first").await;

    let output = hubbub(&["copy", "--from", &sqlite_url(&db), "--to", &url], None);
    failed_saying(
        &output,
        "room \"odd\": message 1 is already stored in the target",
    );
    let served = served_history(server.addr, "odd").await;
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].text, "posted on PostgreSQL first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_malformed_line_fails_naming_the_line() {
    let (_dir, data) = scratch();
    let path = data.join("input.jsonl");
    std::fs::write(
        &path,
        format!(
            "{}\n{}\n{{\"room\":\"r\",\"id\":2,\n",
            header(),
            line("r", 1, "one")
        ),
    )
    .unwrap();
    let (_, output) = import_into_new_sqlite(&data, &path);
    failed_saying(&output, "line 3: not a valid line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_missing_field_fails_naming_the_line_and_field() {
    let (_dir, data) = scratch();
    let mut without_ts = line("r", 2, "two");
    without_ts.as_object_mut().unwrap().remove("ts");
    let file = import_file(&data, &[header(), line("r", 1, "one"), without_ts]);
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(&output, "line 3: the message has no `ts`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_a_gap_in_a_rooms_ids_fails_naming_the_line() {
    let (_dir, data) = scratch();
    let file = import_file(
        &data,
        &[
            header(),
            line("r", 1, "one"),
            line("s", 1, "other room"),
            line("r", 3, "three"),
            end(2, 3),
        ],
    );
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(&output, "line 4: room \"r\": id 3 follows 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_with_ids_out_of_order_fails_naming_the_line() {
    let (_dir, data) = scratch();
    let file = import_file(
        &data,
        &[
            header(),
            line("r", 1, "one"),
            line("r", 2, "two"),
            line("r", 2, "two again"),
        ],
    );
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(&output, "line 4: room \"r\": id 2 follows 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_starting_a_room_past_the_targets_next_id_is_refused() {
    let (_dir, data) = scratch();
    let file = import_file(&data, &[header(), line("r", 5, "five"), end(1, 1)]);
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(
        &output,
        "line 2: room \"r\": message 5 would leave a gap: the room's next id in the target is 1",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_of_an_unknown_format_version_is_refused() {
    let (_dir, data) = scratch();
    let file = import_file(
        &data,
        &[
            json!({"format": "hubbub-history", "version": 3}),
            line("r", 1, "one"),
        ],
    );
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(
        &output,
        "line 1: unknown format version 3: this hubbub reads versions 1 to 2",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_without_a_header_is_refused() {
    let (_dir, data) = scratch();
    let file = import_file(&data, &[line("r", 1, "one")]);
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(&output, "line 1: not a hubbub-history header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_stores_what_it_holds_and_fails_saying_so() {
    let (_dir, data) = scratch();
    let file = import_file(&data, &[header(), line("r", 1, "one"), line("r", 2, "two")]);
    let (target, output) = import_into_new_sqlite(&data, &file);
    failed_saying(&output, "without its end line: the export was cut short");
    let kept = sqlite_history(&target).await;
    assert_eq!(kept["r"].len(), 2, "a gapless prefix was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_line_whose_counts_disagree_is_refused() {
    let (_dir, data) = scratch();
    let file = import_file(&data, &[header(), line("r", 1, "one"), end(1, 2)]);
    let (_, output) = import_into_new_sqlite(&data, &file);
    failed_saying(
        &output,
        "line 3: the end line counts 1 rooms and 2 messages, the file holds 1 and 1",
    );
}

#[test]
fn a_copy_to_an_unreachable_postgres_fails_naming_it_without_its_password() {
    let (_dir, data) = scratch();
    let db = data.join("hubbub.db");
    // An empty but valid source: `migrate` creates it.
    succeeded(&hubbub(&["migrate", "--db", &sqlite_url(&db)], None));
    let postgres = UnreachablePostgres::new();
    let output = hubbub(
        &["copy", "--from", &sqlite_url(&db), "--to", &postgres.url],
        None,
    );
    postgres.assert_refused_naming_it(&output, "could not open the target database");
}

#[test]
fn a_copy_from_a_missing_sqlite_file_is_refused_and_creates_nothing() {
    let (_dir, data) = scratch();
    let missing = data.join("nope.db");
    let target = data.join("t.db");
    let output = copy_between_sqlite(&missing, &target);
    failed_saying(&output, "does not exist");
    assert!(!missing.exists(), "the source was not created");
    assert!(!target.exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_from_a_sqlite_file_without_hubbubs_schema_is_refused_and_leaves_it_unchanged() {
    use sqlx::{ConnectOptions, Connection};
    let (_dir, data) = scratch();
    let foreign = data.join("foreign.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&foreign)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let before = std::fs::read(&foreign).unwrap();

    let target = data.join("t.db");
    let output = copy_between_sqlite(&foreign, &target);
    failed_saying(&output, "could not open the source database");
    // Every migration is missing, the first one included (how many there are changes).
    failed_saying(&output, "lacks migration(s) [1, ");
    assert!(
        std::fs::read(&foreign).unwrap() == before,
        "the source is neither migrated nor otherwise written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_after_stopping_the_node_stores_only_what_was_posted_since_the_first() {
    let (_dir, data, db) = seeded_scratch().await;
    let target = data.join("copy.db");
    let node = Binary::start(&data, free_port(), &["--db", &sqlite_url(&db)]).await;
    succeeded(&copy_between_sqlite(&db, &target));
    // Posted after the first pass: not in it.
    let late = common::api_post(node.addr, "lobby", "frank", "after pass one").await;
    assert_eq!(late, LONG_ROOM as u64 + 1);
    common::api_post(node.addr, "new-room", "frank", "a room born meanwhile").await;
    node.signal("TERM");
    assert!(node.wait().await.success());

    let second = copy_between_sqlite(&db, &target);
    succeeded(&second);
    let total = seed_messages().len();
    assert!(
        stdout(&second).contains(&format!(
            "stored 2 messages in 4 rooms ({total} already there, skipped)"
        )),
        "{}",
        stdout(&second)
    );
    assert_eq!(sqlite_history(&target).await, sqlite_history(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_history_whatever_the_log_level() {
    let (_dir, _, db) = seeded_scratch().await;
    let output = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(["export", "--db", &sqlite_url(&db)])
        .env("HUBBUB_LOG", "error")
        .env_remove("HUBBUB_DB")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeeded(&output);
    let lines = String::from_utf8(output.stdout).unwrap().lines().count();
    assert_eq!(lines, seed_messages().len() + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_over_a_different_message_names_its_line_and_stores_nothing_of_its_batch() {
    let (_dir, data) = scratch();
    let target = data.join("t.db");
    sqlite_holding_mine(&target, "r").await;
    let file = import_file(
        &data,
        &[
            header(),
            line("a", 1, "fresh"),
            line("a", 2, "fresh too"),
            line("r", 1, "theirs"),
            end(2, 3),
        ],
    );
    let output = hubbub(&["import", "--db", &sqlite_url(&target)], Some(&file));
    failed_saying(
        &output,
        "line 4: room \"r\": message 1 is already stored in the target with a different ts",
    );
    failed_saying(&output, "(nothing from line 2 on was stored)");
    let kept = sqlite_history(&target).await;
    assert!(!kept.contains_key("a"), "the refused batch stored nothing");
    assert_eq!(kept["r"][0].text, "mine");
}
