//! The `Store` contract: one test body per behaviour, run against every implementation (the way
//! centrifuge runs one engine test suite against its memory and Redis engines). SQLite always;
//! PostgreSQL when `HUBBUB_TEST_POSTGRES` (or `HUBBUB_TEST_DB`) names a server, each test in a
//! schema of its own (scripts/pg.sh starts a private server; scripts/test.sh sets both).
//!
//! Several store instances on one database stand for several nodes: the concurrency tests append
//! to one room from all of them at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hubbub::config::{Durability, PostgresUrl};
use hubbub::protocol::RoomName;
use hubbub::store::accounts::AccountId;
use hubbub::store::{
    ImportConflict, NewMessage, PostgresStore, SchemaAtOpen, SqliteStore, Store, StoreError,
    StoredMessage,
};
use tempfile::TempDir;
use tokio::task::JoinSet;

/// How long a commit waits on a lock held elsewhere, as `--db-busy-timeout-ms` sets it.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One empty database of one implementation; [`Database::open`] may be called several times
/// (several nodes on one database).
enum Database {
    Sqlite { _dir: TempDir, path: PathBuf },
    Postgres { url: PostgresUrl },
}

impl Database {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contract.db");
        Database::Sqlite { _dir: dir, path }
    }

    /// A fresh schema on the test server, or `None` (with a note) when none is configured.
    async fn postgres(test: &str) -> Option<Self> {
        let Some(base) = postgres_server() else {
            eprintln!("skipped: {test} on PostgreSQL: set HUBBUB_TEST_POSTGRES to a server URL");
            return None;
        };
        let url = common::pg::fresh_schema_url(&base).await;
        Some(Database::Postgres {
            url: PostgresUrl::new(url),
        })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Database::Sqlite { path, .. } => Arc::new(
                SqliteStore::open(path, BUSY_TIMEOUT, Durability::Machine)
                    .await
                    .unwrap(),
            ),
            Database::Postgres { url } => Arc::new(
                PostgresStore::open(
                    url,
                    BUSY_TIMEOUT,
                    Durability::Machine,
                    SchemaAtOpen::Migrate,
                )
                .await
                .unwrap(),
            ),
        }
    }
}

/// The PostgreSQL server the contract runs against, if any.
fn postgres_server() -> Option<String> {
    std::env::var("HUBBUB_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(common::pg::test_db)
}

/// Runs each named behaviour once per implementation: `sqlite::NAME` and `postgres::NAME`.
macro_rules! contract {
    ($($behaviour:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    super::$behaviour(super::Database::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    if let Some(db) = super::Database::postgres(stringify!($behaviour)).await {
                        super::$behaviour(db).await;
                    }
                }
            )*
        }
    };
}

contract!(
    a_batch_across_rooms_gets_per_room_ids_from_1_in_batch_order,
    ids_continue_gapless_across_batches,
    an_empty_batch_stores_nothing,
    text_round_trips_exactly,
    after_pages_forward_oldest_first_up_to_the_limit,
    after_the_newest_or_in_an_unknown_room_is_empty,
    before_none_is_the_newest_page_oldest_first,
    before_pages_back_to_the_first_message,
    last_id_is_0_for_an_unknown_room_then_the_newest_id,
    rooms_lists_every_room_with_its_newest_id_in_byte_order,
    a_reopened_store_keeps_history_and_continues_ids,
    concurrent_appends_to_one_room_from_several_stores_get_unique_gapless_ids,
    concurrent_batches_over_shared_rooms_all_commit_gaplessly,
    an_import_keeps_ids_ts_senders_and_texts_exactly,
    the_next_post_after_an_import_continues_at_the_newest_imported_id,
    an_import_continues_a_room_after_the_history_it_holds,
    importing_what_is_already_stored_identically_skips_it,
    an_import_that_would_leave_a_gap_is_refused_whole,
    an_import_over_a_different_message_is_refused_whole,
    an_import_with_ids_out_of_order_is_refused,
    a_messages_author_is_kept_and_a_guests_is_none,
    an_import_keeps_each_messages_author,
);

/// Issue 19: the signed-in account that posted a message comes back with it from every read;
/// a guest's message has none.
async fn a_messages_author_is_kept_and_a_guests_is_none(db: Database) {
    let store = db.open().await;
    let mut signed_in = message("a", "from an account");
    signed_in.author = Some(AccountId(42));
    let stored = store
        .append(&[signed_in, message("a", "from a guest")])
        .await
        .unwrap();
    let authors =
        |messages: &[StoredMessage]| messages.iter().map(|m| m.author).collect::<Vec<_>>();
    let expected = [Some(AccountId(42)), None];
    assert_eq!(authors(&stored), expected);
    assert_eq!(
        authors(&store.after(&room("a"), 0, 10).await.unwrap()),
        expected
    );
    let page = store.before(&room("a"), None, 10).await.unwrap();
    assert_eq!(authors(&page.messages), expected);
}

async fn an_import_keeps_each_messages_author(db: Database) {
    let store = db.open().await;
    let mut batch = exported_run("a", 1, 2, "m");
    batch[0].author = Some(AccountId(7));
    store.import(&batch).await.unwrap();
    assert_eq!(store.after(&room("a"), 0, 10).await.unwrap(), batch);
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn message(room_name: &str, text: &str) -> NewMessage {
    NewMessage {
        room: room(room_name),
        from: "alice".to_owned(),
        text: text.to_owned(),
        ts: 1_700_000_000_000,
        author: None,
        reply_to: None,
        attachment: None,
    }
}

/// `count` messages to `room_name`, texts `{prefix}{i}`.
fn messages(room_name: &str, prefix: &str, count: usize) -> Vec<NewMessage> {
    (0..count)
        .map(|i| message(room_name, &format!("{prefix}{i}")))
        .collect()
}

fn ids(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.id).collect()
}

fn texts(messages: &[StoredMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

async fn a_batch_across_rooms_gets_per_room_ids_from_1_in_batch_order(db: Database) {
    let store = db.open().await;
    let batch = vec![
        message("a", "a1"),
        message("b", "b1"),
        message("a", "a2"),
        message("c", "c1"),
        message("b", "b2"),
        message("a", "a3"),
    ];
    let stored = store.append(&batch).await.unwrap();
    let got: Vec<(&str, u64, &str)> = stored
        .iter()
        .map(|m| (m.room.as_str(), m.id, m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", 1, "a1"),
            ("b", 1, "b1"),
            ("a", 2, "a2"),
            ("c", 1, "c1"),
            ("b", 2, "b2"),
            ("a", 3, "a3"),
        ]
    );
    for (sent, kept) in batch.iter().zip(&stored) {
        assert_eq!((kept.from.as_str(), kept.ts), (sent.from.as_str(), sent.ts));
    }
    // What append returned is what was stored.
    let page = store.after(&room("a"), 0, 100).await.unwrap();
    let expected: Vec<StoredMessage> = stored.iter().filter(|m| m.room == "a").cloned().collect();
    assert_eq!(page, expected);
}

async fn ids_continue_gapless_across_batches(db: Database) {
    let store = db.open().await;
    let mut all = Vec::new();
    for (round, size) in [1, 5, 2, 17, 1].into_iter().enumerate() {
        let stored = store
            .append(&messages("r", &format!("round{round}-"), size))
            .await
            .unwrap();
        all.extend(ids(&stored));
    }
    assert_eq!(all, (1..=26).collect::<Vec<u64>>());
}

async fn an_empty_batch_stores_nothing(db: Database) {
    let store = db.open().await;
    assert!(store.append(&[]).await.unwrap().is_empty());
    assert!(store.rooms().await.unwrap().is_empty());
    assert_eq!(
        store.append(&[message("r", "first")]).await.unwrap()[0].id,
        1
    );
}

async fn text_round_trips_exactly(db: Database) {
    let store = db.open().await;
    let long = "x".repeat(4096);
    let sent = [
        "plain",
        "quotes ' \" and \\ backslash; DROP TABLE messages; --",
        "NUL \u{0} inside",
        "emoji 🦀 and Ünïcödé, 漢字, עברית",
        "line\nbreaks\r\nand\ttabs",
        long.as_str(),
    ];
    let batch: Vec<NewMessage> = sent.iter().map(|t| message("r", t)).collect();
    store.append(&batch).await.unwrap();
    let page = store.after(&room("r"), 0, 100).await.unwrap();
    assert_eq!(texts(&page), sent);
    let history = store.before(&room("r"), None, 100).await.unwrap();
    assert_eq!(texts(&history.messages), sent);
}

async fn after_pages_forward_oldest_first_up_to_the_limit(db: Database) {
    let store = db.open().await;
    store.append(&messages("r", "m", 10)).await.unwrap();
    store.append(&messages("other", "o", 3)).await.unwrap();
    let first = store.after(&room("r"), 0, 4).await.unwrap();
    assert_eq!(ids(&first), [1, 2, 3, 4]);
    assert_eq!(texts(&first), ["m0", "m1", "m2", "m3"]);
    let next = store.after(&room("r"), 4, 4).await.unwrap();
    assert_eq!(ids(&next), [5, 6, 7, 8]);
    let rest = store.after(&room("r"), 8, 4).await.unwrap();
    assert_eq!(ids(&rest), [9, 10]);
    assert!(rest.iter().all(|m| m.room == "r"), "only the asked room");
}

async fn after_the_newest_or_in_an_unknown_room_is_empty(db: Database) {
    let store = db.open().await;
    store.append(&messages("r", "m", 3)).await.unwrap();
    assert!(store.after(&room("r"), 3, 10).await.unwrap().is_empty());
    assert!(
        store
            .after(&room("r"), u64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .after(&room("nobody"), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn before_none_is_the_newest_page_oldest_first(db: Database) {
    let store = db.open().await;
    store.append(&messages("r", "m", 7)).await.unwrap();
    let page = store.before(&room("r"), None, 3).await.unwrap();
    assert_eq!(ids(&page.messages), [5, 6, 7]);
    assert!(page.has_more);
    let all = store.before(&room("r"), None, 7).await.unwrap();
    assert_eq!(ids(&all.messages), [1, 2, 3, 4, 5, 6, 7]);
    assert!(!all.has_more, "nothing older than the first message");
    let empty = store.before(&room("nobody"), None, 3).await.unwrap();
    assert!(empty.messages.is_empty() && !empty.has_more);
}

async fn before_pages_back_to_the_first_message(db: Database) {
    let store = db.open().await;
    store.append(&messages("r", "m", 10)).await.unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.before(&room("r"), before, 4).await.unwrap();
        let page_ids = ids(&page.messages);
        assert!(page_ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        seen.splice(0..0, page_ids.iter().copied());
        if !page.has_more {
            break;
        }
        before = page_ids.first().copied();
    }
    assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
    let page = store.before(&room("r"), Some(1), 4).await.unwrap();
    assert!(page.messages.is_empty() && !page.has_more);
}

async fn last_id_is_0_for_an_unknown_room_then_the_newest_id(db: Database) {
    let store = db.open().await;
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 0);
    store.append(&messages("r", "m", 4)).await.unwrap();
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 4);
    store.append(&messages("s", "s", 2)).await.unwrap();
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 4);
    assert_eq!(store.last_id(&room("s")).await.unwrap(), 2);
}

async fn rooms_lists_every_room_with_its_newest_id_in_byte_order(db: Database) {
    let store = db.open().await;
    assert!(store.rooms().await.unwrap().is_empty());
    // Byte order puts upper case, digits and `-`/`.`/`_` where a locale's collation would not.
    let mut batch = Vec::new();
    for (name, count) in [("beta", 2), ("Zeta", 1), ("alpha", 3), ("_x", 1), ("9", 1)] {
        batch.extend(messages(name, name, count));
    }
    store.append(&batch).await.unwrap();
    let rooms: Vec<(String, u64)> = store
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.room, r.last_id))
        .collect();
    let expected: Vec<(String, u64)> =
        [("9", 1), ("Zeta", 1), ("_x", 1), ("alpha", 3), ("beta", 2)]
            .into_iter()
            .map(|(name, last)| (name.to_owned(), last))
            .collect();
    assert_eq!(rooms, expected);
}

async fn a_reopened_store_keeps_history_and_continues_ids(db: Database) {
    let first = db.open().await;
    first.append(&messages("r", "m", 3)).await.unwrap();
    drop(first);
    let again = db.open().await;
    assert_eq!(
        texts(&again.after(&room("r"), 0, 10).await.unwrap()),
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        again.append(&[message("r", "next")]).await.unwrap()[0].id,
        4
    );
}

/// Stores standing in for nodes, posters per store, and posts per poster.
const NODES: usize = 3;
const POSTERS_PER_NODE: usize = 4;
const POSTS_PER_POSTER: usize = 25;

async fn concurrent_appends_to_one_room_from_several_stores_get_unique_gapless_ids(db: Database) {
    let mut tasks = JoinSet::new();
    for node in 0..NODES {
        let store = db.open().await;
        for poster in 0..POSTERS_PER_NODE {
            let store = store.clone();
            tasks.spawn(async move {
                let mut got = Vec::new();
                for i in 0..POSTS_PER_POSTER {
                    // Batches of one to three, as a group commit under load makes them.
                    let size = 1 + i % 3;
                    let batch = messages("r", &format!("n{node}p{poster}-{i}-"), size);
                    let stored = store.append(&batch).await.unwrap();
                    assert!(
                        ids(&stored).windows(2).all(|w| w[1] == w[0] + 1),
                        "a batch's ids in one room are consecutive: {:?}",
                        ids(&stored)
                    );
                    got.extend(stored);
                }
                got
            });
        }
    }
    let mut acked = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let got = done.unwrap();
        assert!(
            ids(&got).windows(2).all(|w| w[0] < w[1]),
            "one poster's ids increase in its own order"
        );
        acked.extend(got);
    }
    let total: usize =
        (0..POSTS_PER_POSTER).map(|i| 1 + i % 3).sum::<usize>() * NODES * POSTERS_PER_NODE;
    let unique: BTreeSet<u64> = acked.iter().map(|m| m.id).collect();
    assert_eq!(unique.len(), total, "no id handed out twice");
    assert_eq!(
        unique.into_iter().collect::<Vec<_>>(),
        (1..=total as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    // The store agrees, message by message.
    let reader = db.open().await;
    let mut stored = Vec::new();
    let mut since = 0;
    loop {
        let page = reader.after(&room("r"), since, 200).await.unwrap();
        let Some(last) = page.last() else { break };
        since = last.id;
        stored.extend(page);
    }
    acked.sort_by_key(|m| m.id);
    assert_eq!(stored, acked);
    assert_eq!(reader.last_id(&room("r")).await.unwrap(), total as u64);
}

async fn concurrent_batches_over_shared_rooms_all_commit_gaplessly(db: Database) {
    // Each node's batches name the same rooms in a different order: a store that locked rooms in
    // batch order could deadlock here, and a deadlock victim's posts would fail.
    let orders = [["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]];
    const ROUNDS: usize = 30;
    let mut tasks = JoinSet::new();
    for (node, order) in orders.into_iter().enumerate() {
        let store = db.open().await;
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let batch: Vec<NewMessage> = order
                    .iter()
                    .map(|r| message(r, &format!("n{node}-{round}")))
                    .collect();
                store.append(&batch).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let store = db.open().await;
    for name in ["a", "b", "c"] {
        let stored = store.after(&room(name), 0, 1000).await.unwrap();
        assert_eq!(
            ids(&stored),
            (1..=(orders.len() * ROUNDS) as u64).collect::<Vec<_>>(),
            "room {name}"
        );
    }
}

/// A message as an export carries it: room, id, ts, sender and text all given.
fn exported(room_name: &str, id: u64, text: &str) -> StoredMessage {
    StoredMessage {
        room: RoomName::parse(room_name).unwrap(),
        id,
        ts: 1_600_000_000_000 + id as i64,
        from: format!("user{}", id % 3),
        text: text.to_owned(),
        author: None,
        reply_to: None,
        attachment: None,
    }
}

/// `count` exported messages of `room_name` with ids `first..`, texts `{prefix}{id}`.
fn exported_run(room_name: &str, first: u64, count: u64, prefix: &str) -> Vec<StoredMessage> {
    (first..first + count)
        .map(|id| exported(room_name, id, &format!("{prefix}{id}")))
        .collect()
}

async fn an_import_keeps_ids_ts_senders_and_texts_exactly(db: Database) {
    let store = db.open().await;
    let texts = [
        "NUL \u{0} inside",
        "emoji 🦀👩‍👩‍👧 and Ünïcödé",
        "עברית RTL \u{202e}override",
        "quotes ' \" \\ ; --",
    ];
    let mut batch: Vec<StoredMessage> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| exported("a", i as u64 + 1, text))
        .collect();
    batch.extend(exported_run("b", 1, 2, "b"));
    let outcome = store.import(&batch).await.unwrap();
    assert_eq!((outcome.stored, outcome.skipped), (6, 0));
    assert_eq!(store.after(&room("a"), 0, 100).await.unwrap(), batch[..4]);
    assert_eq!(store.after(&room("b"), 0, 100).await.unwrap(), batch[4..]);
    let rooms: Vec<(String, u64)> = store
        .rooms()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.room, r.last_id))
        .collect();
    assert_eq!(rooms, [("a".to_owned(), 4), ("b".to_owned(), 2)]);
}

async fn the_next_post_after_an_import_continues_at_the_newest_imported_id(db: Database) {
    let store = db.open().await;
    store.import(&exported_run("r", 1, 7, "m")).await.unwrap();
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 7);
    assert_eq!(store.append(&[message("r", "new")]).await.unwrap()[0].id, 8);
    drop(store);
    let again = db.open().await;
    assert_eq!(
        again
            .append(&[message("r", "after a restart")])
            .await
            .unwrap()[0]
            .id,
        9
    );
}

async fn an_import_continues_a_room_after_the_history_it_holds(db: Database) {
    let store = db.open().await;
    store.import(&exported_run("r", 1, 3, "m")).await.unwrap();
    let outcome = store.import(&exported_run("r", 4, 3, "m")).await.unwrap();
    assert_eq!((outcome.stored, outcome.skipped), (3, 0));
    assert_eq!(
        ids(&store.after(&room("r"), 0, 100).await.unwrap()),
        [1, 2, 3, 4, 5, 6]
    );
}

async fn importing_what_is_already_stored_identically_skips_it(db: Database) {
    let store = db.open().await;
    store.import(&exported_run("r", 1, 5, "m")).await.unwrap();
    // An interrupted run repeated from the start: 1-5 are there, 6-8 are not.
    let outcome = store.import(&exported_run("r", 1, 8, "m")).await.unwrap();
    assert_eq!((outcome.stored, outcome.skipped), (3, 5));
    let again = store.import(&exported_run("r", 1, 8, "m")).await.unwrap();
    assert_eq!((again.stored, again.skipped), (0, 8));
    assert_eq!(
        store.after(&room("r"), 0, 100).await.unwrap(),
        exported_run("r", 1, 8, "m")
    );
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 8);
}

async fn an_import_that_would_leave_a_gap_is_refused_whole(db: Database) {
    let store = db.open().await;
    store.import(&exported_run("r", 1, 2, "m")).await.unwrap();
    // One batch: a room that is fine, then a gap in another.
    let mut batch = exported_run("fine", 1, 2, "f");
    batch.extend(exported_run("r", 4, 2, "m"));
    match store.import(&batch).await {
        Err(StoreError::Import(ImportConflict::Gap { room, id, next })) => {
            assert_eq!((room.as_str(), id, next), ("r", 4, 3));
        }
        other => panic!("expected a gap refusal, got {other:?}"),
    }
    assert!(
        store.after(&room("fine"), 0, 10).await.unwrap().is_empty(),
        "nothing of the refused batch was stored"
    );
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 2);
    assert_eq!(
        store.append(&[message("r", "next")]).await.unwrap()[0].id,
        3
    );
}

async fn an_import_over_a_different_message_is_refused_whole(db: Database) {
    let store = db.open().await;
    // The target already took posts of its own in this room.
    store.append(&messages("r", "local", 2)).await.unwrap();
    match store.import(&exported_run("r", 1, 3, "m")).await {
        Err(StoreError::Import(ImportConflict::Differs { room, id })) => {
            assert_eq!((room.as_str(), id), ("r", 1));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        texts(&store.after(&room("r"), 0, 10).await.unwrap()),
        ["local0", "local1"],
        "never overwritten"
    );
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 2);
}

async fn an_import_with_ids_out_of_order_is_refused(db: Database) {
    let store = db.open().await;
    let batch = [exported("r", 1, "one"), exported("r", 1, "one again")];
    match store.import(&batch).await {
        Err(StoreError::Import(ImportConflict::OutOfOrder { id: 1, .. })) => {}
        other => panic!("expected an out-of-order refusal, got {other:?}"),
    }
    assert_eq!(store.last_id(&room("r")).await.unwrap(), 0);
    assert!(store.rooms().await.unwrap().is_empty());
}

// PostgreSQL only: the schema's life cycle and the lock a commit waits on.

/// A fresh PostgreSQL schema, or `None` with a note when no server is configured.
async fn postgres_url(test: &str) -> Option<PostgresUrl> {
    match Database::postgres(test).await? {
        Database::Postgres { url } => Some(url),
        Database::Sqlite { .. } => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_nodes_starting_at_once_migrate_one_schema_once() {
    let Some(url) = postgres_url("postgres_nodes_starting_at_once_migrate_one_schema_once").await
    else {
        return;
    };
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.spawn(async move { PostgresStore::migrate(&url).await });
    }
    let mut versions = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        versions.insert(done.unwrap().expect("every concurrent migrate succeeds"));
    }
    assert_eq!(versions.len(), 1, "all report the same version");
    let store = PostgresStore::open(
        &url,
        BUSY_TIMEOUT,
        Durability::Machine,
        SchemaAtOpen::RequireCurrent,
    )
    .await
    .expect("the schema is current");
    assert_eq!(store.append(&[message("r", "m")]).await.unwrap()[0].id, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_no_migrate_refuses_a_schema_that_lacks_migrations() {
    let Some(url) =
        postgres_url("postgres_no_migrate_refuses_a_schema_that_lacks_migrations").await
    else {
        return;
    };
    let refused = PostgresStore::open(
        &url,
        BUSY_TIMEOUT,
        Durability::Machine,
        SchemaAtOpen::RequireCurrent,
    )
    .await;
    match refused {
        Err(StoreError::SchemaBehind { missing }) => assert!(!missing.is_empty()),
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
    PostgresStore::migrate(&url).await.unwrap();
    PostgresStore::open(
        &url,
        BUSY_TIMEOUT,
        Durability::Machine,
        SchemaAtOpen::RequireCurrent,
    )
    .await
    .expect("opens once migrated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_room_locked_elsewhere_fails_the_batch_after_the_busy_timeout_using_no_ids() {
    use sqlx::{Connection, PgConnection};
    let Some(url) = postgres_url("postgres_a_room_locked_elsewhere_fails_the_batch").await else {
        return;
    };
    let store = PostgresStore::open(
        &url,
        Duration::from_millis(200),
        Durability::Machine,
        SchemaAtOpen::Migrate,
    )
    .await
    .unwrap();
    assert_eq!(store.append(&[message("r", "one")]).await.unwrap()[0].id, 1);

    // Another node's (or an operator's) transaction holds the room's counter row.
    let mut other = PgConnection::connect(url.expose()).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT last_id FROM rooms WHERE name = 'r' FOR UPDATE")
        .execute(&mut other)
        .await
        .unwrap();
    let failed = store.append(&[message("r", "lost")]).await;
    assert!(
        failed.is_err(),
        "the batch fails instead of waiting forever"
    );
    // Other rooms are not held up.
    assert_eq!(
        store.append(&[message("s", "free")]).await.unwrap()[0].id,
        1
    );
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    assert_eq!(
        store.append(&[message("r", "two")]).await.unwrap()[0].id,
        2,
        "the failed batch used no id"
    );
    let stored = store.after(&room("r"), 0, 10).await.unwrap();
    assert_eq!(texts(&stored), ["one", "two"]);
}
