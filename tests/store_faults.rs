//! Faults of the store's files under the real binary: the disk filling up, the database file
//! deleted, replaced or made read-only while the server runs, and `kill -9` at random moments many
//! times in a row. (The store failing through a lock another process holds is in faults.rs; one
//! `kill -9` and SIGTERM during a burst are in durability.rs.)
//!
//! How each fault is made real, given that tests run as root (and root ignores file permissions):
//!
//! - **Disk full**: the data directory is a small tmpfs mounted for the test (`mount -t tmpfs`),
//!   nearly filled by a filler file, so SQLite's own writes meet ENOSPC; deleting the filler frees
//!   the space again. Where mounting is not allowed (not root, no CAP_SYS_ADMIN) the test prints
//!   `SKIPPED` with the reason and passes.
//! - **Read-only**: `chattr +i` on the database file and its WAL. A read-only remount (of a tmpfs
//!   or a bind mount) is refused with EBUSY while any file on it is open for writing, which a
//!   running SQLite always has; and tmpfs lets a descriptor opened before `chattr +i` go on
//!   writing. ext4, xfs and btrfs refuse those writes (EPERM), so the test runs where the scratch
//!   directory's file system does, and otherwise prints `SKIPPED`. The `-shm` file is left alone:
//!   SQLite writes it through a shared memory mapping, and a write fault on an immutable file's
//!   page kills any process with SIGBUS, which no server can survive.
//! - **Deleted / replaced**: `rm` of the database file, and a consistent copy renamed over it.
//! - **kill -9**: `kill -KILL` by PID, at a moment drawn from a seeded schedule. The seed is
//!   printed; `HUBBUB_FAULT_SEED=<seed>` replays a run, `HUBBUB_KILL_ROUNDS=<n>` changes its length.
//!
//! On a PostgreSQL run (`HUBBUB_TEST_DB`, tests/common/pg.rs) only the kill -9 test applies; the
//! others print why they are skipped.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Binary, Client, answer, api_post, free_port, get_json, history, http, scratch};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// The database file the binary keeps in its data directory.
const DB_FILE: &str = "hubbub.db";

// ---------------------------------------------------------------------------------------------
// Disk full
// ---------------------------------------------------------------------------------------------

/// Size of the test's file system: room for the database and the filler.
const DISK_SIZE: &str = "16m";
/// Free space left beside the filler: a few dozen posts fit, the burst below does not.
const SLACK_BYTES: u64 = 256 * 1024;
/// Posts in the burst that fills the disk, and the size of each text.
const FILL_BURST: usize = 300;
const FILL_TEXT_BYTES: usize = 2000;

#[tokio::test]
async fn a_full_disk_refuses_posts_keeps_reads_and_recovers_once_space_is_freed() {
    if common::pg::skip_on_postgres(
        "a_full_disk_refuses_posts_keeps_reads_and_recovers_once_space_is_freed",
        "fills the file system under the SQLite file",
    ) {
        return;
    }
    let Some(disk) = Tmpfs::mount(DISK_SIZE) else {
        return;
    };
    let (_logs, log_dir) = scratch();
    let log = log_dir.join("hubbub.log");
    let port = free_port();
    let server = Binary::start_logging_to(disk.path(), port, &[], &log).await;
    let mut watcher = server.client("name=watcher").await;
    watcher.join("r").await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    // A room nobody is in: joining it later replays from the store, not from memory.
    for text in ["q1", "q2", "q3"] {
        api_post(server.addr, "quiet", "api", text).await;
    }
    let mut acked = BTreeMap::new();
    let first = poster.post("r", "before").await;
    acked.insert(first["id"].as_u64().unwrap(), "before".to_owned());

    let filler = fill_leaving(disk.path(), SLACK_BYTES);

    // A pipelined burst, several posts per commit, that fills the disk and goes on past it,
    // while HTTP posts race it.
    let texts: Vec<String> = (0..FILL_BURST)
        .map(|i| format!("{i:04}-{}", "x".repeat(FILL_TEXT_BYTES)))
        .collect();
    let api = tokio::spawn(api_posts_until(server.addr, "r", 40));
    for (i, text) in texts.iter().enumerate() {
        poster
            .send(json!({"type": "msg", "room": "r", "data": text, "ref": i}))
            .await;
    }
    let mut refused = BTreeSet::new();
    while acked.len() - 1 + refused.len() < FILL_BURST {
        let frame = answer(&mut poster).await;
        let i = frame["ref"].as_u64().unwrap() as usize;
        if frame["type"] == "ack" {
            let id = frame["id"].as_u64().unwrap();
            assert!(
                acked.insert(id, texts[i].clone()).is_none(),
                "id {id} acked twice"
            );
        } else {
            assert_eq!(frame["data"]["code"], "store_unavailable", "{frame}");
            refused.insert(texts[i].clone());
        }
    }
    let (api_acked, api_refused) = api.await.unwrap();
    for (id, text) in api_acked {
        assert!(acked.insert(id, text).is_none(), "id {id} acked twice");
    }
    refused.extend(api_refused);
    assert!(!refused.is_empty(), "the disk filled up during the burst");
    eprintln!(
        "{} acked, {} refused while the disk filled",
        acked.len(),
        refused.len()
    );

    // While the disk is full: exactly the acked posts are stored, and reads keep working.
    let stored = history(server.addr, "r").await;
    assert!(
        stored == acked,
        "exactly the acked posts are stored, under their ids: stored {:?}, acked {:?}",
        labels(&stored),
        labels(&acked)
    );
    let mut joiner = server.client("name=joiner").await;
    joiner.join("quiet").await;
    for text in ["q1", "q2", "q3"] {
        assert_eq!(
            joiner.recv_msg().await["data"],
            text,
            "a join replays from the store"
        );
    }
    let rooms = get_json(format!("http://{}/api/rooms", server.addr)).await;
    assert!(
        rooms
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room"] == "quiet")
    );

    // Nothing that was not stored was broadcast: the watcher got the acked posts, no more.
    let mut broadcast = BTreeMap::new();
    assert_eq!(watcher.recv_msg().await["data"], "before");
    broadcast.insert(1, "before".to_owned());
    while broadcast.len() < acked.len() {
        let msg = watcher.recv_msg().await;
        broadcast.insert(
            msg["id"].as_u64().unwrap(),
            msg["data"].as_str().unwrap().to_owned(),
        );
    }
    watcher.assert_no("msg", Duration::from_millis(300)).await;
    assert!(
        broadcast == acked,
        "the watcher saw exactly the acked posts: saw {:?}, acked {:?}",
        labels(&broadcast),
        labels(&acked)
    );
    assert!(is_alive(server.pid()), "the server is still running");

    // Space comes back: posting resumes without a restart, with the next id (a failed batch
    // uses up no ids).
    std::fs::remove_file(&filler).unwrap();
    let newest = *acked.keys().last().unwrap();
    let after = poster.post("r", "after").await;
    assert_eq!(after["id"], newest + 1);
    acked.insert(newest + 1, "after".to_owned());
    assert_eq!(watcher.recv_msg().await["data"], "after");
    assert_eq!(integrity_check(&disk.path().join(DB_FILE)).await, "ok");

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("the disk holding the database is full"),
        "{log_text}"
    );
    assert!(log_text.contains("store unavailable: posts are refused"));
    assert!(log_text.contains("store recovered"));

    // And everything acked is still there after a restart on the same disk.
    server.signal("TERM");
    assert!(server.wait().await.success(), "exit status 0");
    let server = Binary::start(disk.path(), free_port(), &[]).await;
    let stored = history(server.addr, "r").await;
    assert!(
        stored == acked,
        "after a restart: stored {:?}, acked {:?}",
        labels(&stored),
        labels(&acked)
    );
    assert_eq!(integrity_check(&disk.path().join(DB_FILE)).await, "ok");
    server.signal("TERM");
    assert!(server.wait().await.success());
}

/// Messages by id with each text cut to its label ("0042", "api-007", "before"), so a failed
/// comparison prints something readable rather than kilobytes of filler.
fn labels(messages: &BTreeMap<u64, String>) -> BTreeMap<u64, &str> {
    messages
        .iter()
        .map(|(id, text)| (*id, text.trim_end_matches(['x', 'y']).trim_end_matches('-')))
        .collect()
}

/// A tmpfs of a given size mounted on a fresh directory for one test. Dropping it unmounts it
/// (lazily if something still holds it) before the directory is removed, also when the test
/// fails; declare it before the server so the server is gone first.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts the tmpfs, or prints why the test is skipped and returns `None`.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let outcome = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match outcome {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                skip(&format!(
                    "cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                None
            }
            Err(err) => {
                skip(&format!("cannot run mount: {err}"));
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Fills the file system under `dir` with a file until ENOSPC, then gives `slack` bytes back.
/// Returns the filler's path.
fn fill_leaving(dir: &Path, slack: u64) -> PathBuf {
    const ENOSPC: i32 = 28;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(ENOSPC) => break,
            Err(err) => panic!("filling the disk: {err}"),
        }
    }
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(slack)).unwrap();
    path
}

/// Posts numbered texts through the HTTP API until `count` were answered; returns what was
/// acked (id, text) and what was refused with 503 `store_unavailable`.
async fn api_posts_until(
    addr: SocketAddr,
    room: &str,
    count: usize,
) -> (Vec<(u64, String)>, Vec<String>) {
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for i in 0..count {
        let text = format!("api-{i:03}-{}", "y".repeat(FILL_TEXT_BYTES));
        let response = http()
            .post(format!("http://{addr}/api/rooms/{room}/messages"))
            .json(&json!({"from": "api", "data": text}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        match status {
            201 => acked.push((body["id"].as_u64().unwrap(), text)),
            503 => {
                assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
                refused.push(text);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    (acked, refused)
}

// ---------------------------------------------------------------------------------------------
// The database file deleted, replaced or made read-only
// ---------------------------------------------------------------------------------------------

/// Text the server logs when the database's files are no longer the ones it opened.
const GONE_IN_LOG: &str = "DATABASE FILE DELETED OR REPLACED";

#[tokio::test]
async fn a_deleted_database_file_is_reported_and_no_post_is_acked_after_it() {
    if common::pg::skip_on_postgres(
        "a_deleted_database_file_is_reported_and_no_post_is_acked_after_it",
        "deletes the SQLite file",
    ) {
        return;
    }
    let (_dir, data) = scratch();
    let (_logs, log_dir) = scratch();
    let log = log_dir.join("hubbub.log");
    let port = free_port();
    let server = Binary::start_logging_to(&data, port, &[], &log).await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    assert_eq!(poster.post("r", "kept").await["id"], 1);

    // SQLite would go on committing into the unlinked file, which dies with the process.
    std::fs::remove_file(data.join(DB_FILE)).unwrap();

    // The node is no longer ready (a load balancer stops sending it clients); the probe sees the
    // loss first here, and the writer must still report it and empty its WAL as before.
    let ready = http()
        .get(format!("http://{}/readyz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "unavailable", "{body}");

    let refusals = refused_burst(&mut poster, "r", 20).await;
    assert!(
        refusals[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("deleted or replaced"),
        "the poster is told why: {}",
        refusals[0]
    );
    let response = http()
        .post(format!("http://{}/api/rooms/r/messages", server.addr))
        .json(&json!({"from": "api", "data": "lost"}))
        .send()
        .await
        .unwrap();
    common::assert_api_error(response, 503, "store_unavailable").await;
    assert_eq!(count_in_log(&log, GONE_IN_LOG), 1, "reported once, loudly");
    assert!(is_alive(server.pid()), "no crash");
    let health = http()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A clean stop, and a restart on whatever is at the path now: a new, empty database (the
    // deleted history went with its file), served normally.
    server.signal("TERM");
    assert!(server.wait().await.success(), "exit status 0");
    let server = Binary::start(&data, free_port(), &[]).await;
    assert!(history(server.addr, "r").await.is_empty());
    assert_eq!(api_post(server.addr, "r", "a", "fresh").await, 1);
    assert_eq!(integrity_check(&data.join(DB_FILE)).await, "ok");
}

#[tokio::test]
async fn a_replaced_database_file_is_reported_and_a_restart_serves_the_replacement() {
    if common::pg::skip_on_postgres(
        "a_replaced_database_file_is_reported_and_a_restart_serves_the_replacement",
        "replaces the SQLite file",
    ) {
        return;
    }
    let (_dir, data) = scratch();
    let (_logs, log_dir) = scratch();
    let log = log_dir.join("hubbub.log");
    let port = free_port();
    let server = Binary::start_logging_to(&data, port, &[], &log).await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    assert_eq!(poster.post("r", "one").await["id"], 1);
    assert_eq!(poster.post("r", "two").await["id"], 2);

    // The operator restores a backup (here: a consistent copy of everything acked so far) by
    // renaming it over the database file while the server runs.
    let db = data.join(DB_FILE);
    let copy = data.join("restored.db");
    vacuum_into(&db, &copy).await;
    std::fs::rename(&copy, &db).unwrap();

    refused_burst(&mut poster, "r", 10).await;
    assert_eq!(count_in_log(&log, GONE_IN_LOG), 1);
    assert!(is_alive(server.pid()));

    // Restarted, the server uses the replacement, which holds every acked message.
    server.signal("TERM");
    assert!(server.wait().await.success(), "exit status 0");
    let server = Binary::start(&data, free_port(), &[]).await;
    let stored = history(server.addr, "r").await;
    assert_eq!(
        stored.values().map(String::as_str).collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(api_post(server.addr, "r", "a", "three").await, 3);
    assert_eq!(integrity_check(&db).await, "ok");
}

#[tokio::test]
async fn read_only_database_files_refuse_posts_keep_reads_and_recover_once_writable() {
    if common::pg::skip_on_postgres(
        "read_only_database_files_refuse_posts_keep_reads_and_recover_once_writable",
        "makes the SQLite files immutable",
    ) {
        return;
    }
    let (_dir, data) = scratch();
    if let Err(why) = immutable_stops_open_writers(&data) {
        return skip(&why);
    }
    let (_logs, log_dir) = scratch();
    let log = log_dir.join("hubbub.log");
    let server = Binary::start_logging_to(&data, free_port(), &[], &log).await;
    let mut watcher = server.client("name=watcher").await;
    watcher.join("r").await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    api_post(server.addr, "quiet", "api", "q1").await;
    assert_eq!(poster.post("r", "before").await["id"], 1);
    assert_eq!(watcher.recv_msg().await["data"], "before");

    let db = data.join(DB_FILE);
    let wal = data.join(format!("{DB_FILE}-wal"));
    let read_only = Immutable::set(&[&db, &wal]);

    let refusals = refused_burst(&mut poster, "r", 10).await;
    assert!(
        refusals[0]["data"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be written"),
        "{}",
        refusals[0]
    );
    let response = http()
        .post(format!("http://{}/api/rooms/r/messages", server.addr))
        .json(&json!({"from": "api", "data": "lost"}))
        .send()
        .await
        .unwrap();
    common::assert_api_error(response, 503, "store_unavailable").await;
    watcher.assert_no("msg", Duration::from_millis(300)).await;
    // Reads keep working: history, and a join that replays from the store.
    assert_eq!(history(server.addr, "r").await.len(), 1);
    let mut joiner = server.client("name=joiner").await;
    joiner.join("quiet").await;
    assert_eq!(joiner.recv_msg().await["data"], "q1");
    assert!(is_alive(server.pid()));

    drop(read_only);
    let after = poster.post("r", "after").await;
    assert_eq!(after["id"], 2, "posting resumes with the next id");
    assert_eq!(watcher.recv_msg().await["data"], "after");
    let stored = history(server.addr, "r").await;
    assert_eq!(
        stored.values().map(String::as_str).collect::<Vec<_>>(),
        ["before", "after"]
    );
    assert_eq!(integrity_check(&db).await, "ok");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("could not be written"), "{log_text}");
    assert!(log_text.contains("store recovered"));
}

/// Posts in the read-only-file test, in bursts: together about 24 MB of text, well past the size
/// at which the server looks into a growing WAL (16 MiB). Large texts (under a raised
/// `--max-message-bytes`) so that takes few posts.
const WAL_BURSTS: usize = 8;
const WAL_BURST: usize = 50;
const WAL_TEXT_BYTES: usize = 60_000;

#[tokio::test]
async fn a_read_only_database_file_beside_a_writable_wal_keeps_every_ack_and_is_reported() {
    if common::pg::skip_on_postgres(
        "a_read_only_database_file_beside_a_writable_wal_keeps_every_ack_and_is_reported",
        "makes the SQLite file immutable beside its WAL",
    ) {
        return;
    }
    let (_dir, data) = scratch();
    if let Err(why) = immutable_stops_open_writers(&data) {
        return skip(&why);
    }
    let (_logs, log_dir) = scratch();
    let log = log_dir.join("hubbub.log");
    let port = free_port();
    let flags = ["--max-message-bytes", "65536"];
    let server = Binary::start_logging_to(&data, port, &flags, &log).await;
    let mut poster = server.client("name=poster").await;
    poster.join("r").await;
    assert_eq!(poster.post("r", "before").await["id"], 1);

    // Commits append to the WAL, which stays writable, so they succeed and are durable; only
    // the checkpoints into the database file fail, which SQLite does not report.
    let db = data.join(DB_FILE);
    let read_only = Immutable::set(&[&db]);
    let filler = "z".repeat(WAL_TEXT_BYTES);
    for burst in 0..WAL_BURSTS {
        for i in 0..WAL_BURST {
            poster
                .send(json!({"type": "msg", "room": "r", "data": format!("{burst}-{i}-{filler}")}))
                .await;
        }
        for _ in 0..WAL_BURST {
            let frame = answer(&mut poster).await;
            assert_eq!(frame["type"], "ack", "every post is stored: {frame}");
        }
    }
    assert!(
        count_in_log(&log, "WAL CHECKPOINT FAILED") >= 1,
        "the failing checkpoints are reported"
    );
    assert!(is_alive(server.pid()));

    // Writable again: a clean stop checkpoints the WAL into the file, and every ack is there.
    drop(read_only);
    server.signal("TERM");
    assert!(server.wait().await.success(), "exit status 0");
    assert!(
        !data.join(format!("{DB_FILE}-wal")).exists(),
        "the WAL was checkpointed and removed at the clean stop"
    );
    let server = Binary::start(&data, free_port(), &[]).await;
    let stored = history(server.addr, "r").await;
    assert_eq!(stored.len(), 1 + WAL_BURSTS * WAL_BURST);
    assert_eq!(stored.keys().last().copied(), Some(stored.len() as u64));
    assert_eq!(integrity_check(&db).await, "ok");
}

/// Files made immutable (`chattr +i`) for a test; made mutable again on drop, also when the test
/// fails, so the scratch directory can be removed.
struct Immutable {
    files: Vec<PathBuf>,
}

impl Immutable {
    fn set(files: &[&Path]) -> Immutable {
        let guard = Immutable {
            files: files.iter().map(|f| f.to_path_buf()).collect(),
        };
        for file in &guard.files {
            assert!(chattr("+i", file), "chattr +i {}", file.display());
        }
        guard
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.files {
            chattr("-i", file);
        }
    }
}

fn chattr(flag: &str, file: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(file)
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `chattr +i` in `dir` stops writes through a descriptor opened before it, which is what
/// makes a file read-only under a running server. `Err` says why not.
fn immutable_stops_open_writers(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let probe = dir.join("immutable-probe");
    let file = std::fs::File::create(&probe).map_err(|e| e.to_string())?;
    if !chattr("+i", &probe) {
        return Err(format!(
            "chattr +i does not work in {} (needs root and a file system with the immutable flag)",
            dir.display()
        ));
    }
    let written = file.write_at(b"x", 0);
    chattr("-i", &probe);
    drop(file);
    let _ = std::fs::remove_file(&probe);
    match written {
        Err(_) => Ok(()),
        Ok(_) => Err(format!(
            "the file system of {} (tmpfs?) lets an open file be written after chattr +i",
            dir.display()
        )),
    }
}

/// Sends `count` posts without waiting and asserts that every one is refused with
/// `store_unavailable` and its `ref` (none acked); returns the refusals.
async fn refused_burst(poster: &mut Client, room: &str, count: usize) -> Vec<Value> {
    for i in 0..count {
        poster
            .send(json!({"type": "msg", "room": room, "data": format!("refused-{i}"), "ref": i}))
            .await;
    }
    let mut refusals = Vec::new();
    for i in 0..count {
        let frame = answer(poster).await;
        assert_eq!(frame["type"], "error", "no post is acked: {frame}");
        assert_eq!(frame["data"]["code"], "store_unavailable", "{frame}");
        assert_eq!(frame["ref"], i);
        refusals.push(frame);
    }
    refusals
}

/// A consistent copy of the database at `db` in a new file, as a backup tool would make it.
async fn vacuum_into(db: &Path, copy: &Path) {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .connect()
        .await
        .unwrap();
    sqlx::query("VACUUM INTO ?1")
        .bind(copy.to_str().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

fn count_in_log(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .matches(needle)
        .count()
}

// ---------------------------------------------------------------------------------------------
// kill -9 at random moments
// ---------------------------------------------------------------------------------------------

/// Rounds of start, traffic, `kill -9` (`HUBBUB_KILL_ROUNDS` overrides): about 10 s on SQLite.
const KILL_ROUNDS: usize = 30;
/// The same on a PostgreSQL run, where each start costs more (the pools connect, the schema is
/// checked): about 20 s.
const KILL_ROUNDS_ON_POSTGRES: usize = 15;
/// The rooms the traffic uses.
const ROOMS: [&str; 3] = ["a", "b", "c"];
/// Pipelined posts a WebSocket poster sends before reading their answers.
const POST_BURST: usize = 16;

#[tokio::test]
async fn acked_messages_survive_kill_9_at_random_moments_many_times_in_a_row() {
    let seed = std::env::var("HUBBUB_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let rounds = std::env::var("HUBBUB_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if common::pg::on_postgres() {
            KILL_ROUNDS_ON_POSTGRES
        } else {
            KILL_ROUNDS
        });
    eprintln!("kill -9 schedule: seed {seed}, {rounds} rounds (replay: HUBBUB_FAULT_SEED={seed})");
    let mut schedule = Schedule(seed);
    let (_dir, data) = scratch();
    let db = data.join(DB_FILE);
    let mut ledger = Ledger::default();
    for round in 0..rounds {
        // Either durability mode: both promise that an ack survives any crash of the process.
        let flags: &[&str] = if schedule.below(2) == 0 {
            &[]
        } else {
            &["--durability", "process"]
        };
        let server = Binary::start(&data, free_port(), flags).await;
        ledger.verify(&server, &db, round).await;

        let traffic = Traffic::start(&server, round).await;
        // The moment: after a random number of acks (0: before the first commit), plus a random
        // few milliseconds so it does not always fall just after an ack.
        let acks = schedule.below(200) as usize;
        let extra = Duration::from_millis(schedule.below(20));
        traffic.wait_for_acks(acks).await;
        tokio::time::sleep(extra).await;
        server.signal("KILL");
        assert!(!server.wait().await.success(), "killed");
        let acked = traffic.finish().await;
        eprintln!(
            "round {round}: killed after {acks}+ acks and {extra:?} ({} acked, flags {flags:?})",
            acked.len()
        );
        ledger.record(acked, round);
    }
    let server = Binary::start(&data, free_port(), &[]).await;
    ledger.verify(&server, &db, rounds).await;
    eprintln!(
        "{} acked messages survived {rounds} kills",
        ledger.acked.len()
    );
}

/// splitmix64: a small, stable generator, so a seed replays the same schedule on any build.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One acked message: room, id, text.
type Acked = (String, u64, String);

/// Everything acked over all rounds.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<(String, u64), String>,
}

impl Ledger {
    /// Adds a round's acks; an id acked in an earlier round and again now was reused.
    fn record(&mut self, acked: Vec<Acked>, round: usize) {
        for (room, id, text) in acked {
            let before = self.acked.insert((room.clone(), id), text);
            assert!(
                before.is_none(),
                "round {round}: {room}/{id} acked twice (an id was reused after a restart)"
            );
        }
    }

    /// After a restart: the database is intact, its history holds every acked message with its
    /// id and text (and nothing nobody sent), and each room's next id continues above them all.
    async fn verify(&mut self, server: &Binary, db: &Path, round: usize) {
        // On a PostgreSQL run (tests/common/pg.rs) there is no SQLite file to check.
        if !common::pg::on_postgres() {
            assert_eq!(integrity_check(db).await, "ok", "round {round}");
        }
        for room in ROOMS {
            let stored = history(server.addr, room).await;
            for ((acked_room, id), text) in self.acked.range((room.to_owned(), 0)..) {
                if acked_room != room {
                    break;
                }
                assert_eq!(
                    stored.get(id),
                    Some(text),
                    "round {round}: acked {room}/{id} is in the history with its text"
                );
            }
            let texts: BTreeSet<&String> = stored.values().collect();
            assert_eq!(
                texts.len(),
                stored.len(),
                "round {round}: nothing stored twice"
            );
            assert!(
                stored.values().all(|t| t.starts_with('k')),
                "round {round}: only sent messages are stored"
            );
            let newest = stored.keys().last().copied().unwrap_or(0);
            let text = format!("k{round}-check-{room}");
            let id = api_post(server.addr, room, "check", &text).await;
            assert_eq!(id, newest + 1, "round {round}: ids continue in {room}");
            self.record(vec![(room.to_owned(), id, text)], round);
        }
    }
}

/// Mixed traffic against one server until it dies: WebSocket posters sending pipelined bursts to
/// all rooms, an HTTP poster, and a reader that joins with `since`, leaves and reads history.
struct Traffic {
    progress: watch::Sender<usize>,
    posters: Vec<tokio::task::JoinHandle<Vec<Acked>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Traffic {
    async fn start(server: &Binary, round: usize) -> Traffic {
        let progress = watch::Sender::new(0);
        let mut posters = Vec::new();
        for poster in 0..3 {
            let mut client = server.client(&format!("name=ws{poster}")).await;
            for room in ROOMS {
                client.join(room).await;
            }
            posters.push(tokio::spawn(ws_poster(
                client,
                format!("k{round}-ws{poster}"),
                progress.clone(),
            )));
        }
        posters.push(tokio::spawn(api_poster(
            server.addr,
            format!("k{round}-api"),
            progress.clone(),
        )));
        let reader = tokio::spawn(reader(server.client("name=reader").await, server.addr));
        Traffic {
            progress,
            posters,
            reader,
        }
    }

    /// Waits until `n` posts were acked across all posters.
    async fn wait_for_acks(&self, n: usize) {
        let mut acks = self.progress.subscribe();
        let reached = tokio::time::timeout(common::WAIT, acks.wait_for(|acks| *acks >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "only {} acks arrived",
            *self.progress.borrow()
        );
    }

    /// Everything acked before the server died (each task ends when its connection does).
    async fn finish(self) -> Vec<Acked> {
        let mut acked = Vec::new();
        for poster in self.posters {
            acked.extend(poster.await.unwrap());
        }
        self.reader.await.unwrap();
        acked
    }
}

/// Posts bursts of `POST_BURST` to the rooms in turn, reading every answer, until the connection
/// ends; returns what was acked.
async fn ws_poster(mut client: Client, tag: String, progress: watch::Sender<usize>) -> Vec<Acked> {
    let mut acked = Vec::new();
    let mut sent: BTreeMap<String, (String, String)> = BTreeMap::new();
    for burst in 0.. {
        for i in 0..POST_BURST {
            let room = ROOMS[(burst + i) % ROOMS.len()];
            let text = format!("{tag}-{burst}-{i}");
            sent.insert(text.clone(), (room.to_owned(), text.clone()));
            if client.send_post(room, &text).await.is_err() {
                return acked;
            }
        }
        let mut answered = 0;
        while answered < POST_BURST {
            let Some(frame) = next_frame(&mut client).await else {
                return acked;
            };
            match frame["type"].as_str() {
                Some("ack") => {
                    let reference = frame["ref"].as_str().unwrap();
                    let (room, text) = sent.remove(reference).unwrap();
                    assert_eq!(frame["room"], room.as_str());
                    acked.push((room, frame["id"].as_u64().unwrap(), text));
                    progress.send_modify(|acks| *acks += 1);
                    answered += 1;
                }
                Some("error") => panic!("{tag}: a post was refused: {frame}"),
                _ => {}
            }
        }
    }
    acked
}

/// Posts through the HTTP API until a request fails; returns what was acked (201).
async fn api_poster(addr: SocketAddr, tag: String, progress: watch::Sender<usize>) -> Vec<Acked> {
    let client = http();
    let mut acked = Vec::new();
    for i in 0.. {
        let room = ROOMS[i % ROOMS.len()];
        let text = format!("{tag}-{i}");
        let Ok(response) = client
            .post(format!("http://{addr}/api/rooms/{room}/messages"))
            .json(&json!({"from": "api", "data": text}))
            .send()
            .await
        else {
            return acked;
        };
        assert_eq!(response.status(), 201, "{tag}: a post was refused");
        let Ok(body) = response.json::<Value>().await else {
            return acked;
        };
        acked.push((room.to_owned(), body["id"].as_u64().unwrap(), text));
        progress.send_modify(|acks| *acks += 1);
    }
    acked
}

/// Joins each room with a `since` a little below the newest id it saw there (a replay of up to
/// 50 messages, from memory or the store), leaves it, reads a page of history, until the
/// connection ends.
async fn reader(mut client: Client, addr: SocketAddr) {
    let history = http();
    let mut newest = [0_u64; ROOMS.len()];
    for turn in 0_usize.. {
        let slot = turn % ROOMS.len();
        let room = ROOMS[slot];
        let since = newest[slot].saturating_sub((turn % 50) as u64);
        let join = json!({"type": "join", "room": room, "data": {"since": since}});
        if client
            .ws
            .send(Message::text(join.to_string()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            match next_frame(&mut client).await {
                None => return,
                Some(frame) if frame["type"] == "joined" => {
                    newest[slot] = frame["data"]["last_id"].as_u64().unwrap_or(0);
                    break;
                }
                Some(_) => {}
            }
        }
        let leave = json!({"type": "leave", "room": room});
        if client
            .ws
            .send(Message::text(leave.to_string()))
            .await
            .is_err()
        {
            return;
        }
        let url = format!("http://{addr}/api/rooms/{room}/messages?limit=50");
        if history.get(url).send().await.is_err() {
            return;
        }
    }
}

/// The next text frame, or `None` once the connection is gone (the server was killed).
async fn next_frame(client: &mut Client) -> Option<Value> {
    loop {
        match tokio::time::timeout(common::WAIT, client.ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return Some(serde_json::from_str(text.as_str()).unwrap());
            }
            Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the server neither answered nor went away"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared
// ---------------------------------------------------------------------------------------------

/// Prints why a test did not run; the test then passes without asserting anything.
fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
}

/// Whether the process `pid` is running: not gone, and not a zombie waiting to be reaped.
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

/// `PRAGMA integrity_check` of the database at `db`, through a read-only connection of this
/// process ("ok" when intact). Safe beside the running server: a read-only connection never
/// checkpoints or removes the WAL.
async fn integrity_check(db: &Path) -> String {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    rows.join("; ")
}
