//! The operator CLI (`hubbub user|room|audit|invite`, issue 19) run as the real binary on a
//! scratch database (SQLite, or a fresh PostgreSQL schema on the test script's PostgreSQL pass),
//! its effects read back through the CLI itself or the store's own API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::cli::{failed_saying, run_hubbub, stdout, succeeded};
use common::{Binary, free_port, pg, scratch};
use hubbub::config::Durability;
use hubbub::store::{People, PostgresStore, SchemaAtOpen, SqliteStore};

/// A scratch database the CLI and the test both open: `--data DIR` plus, on a PostgreSQL run,
/// `--db URL` of a fresh schema.
struct Database {
    _dir: tempfile::TempDir,
    data: PathBuf,
    args: Vec<String>,
}

impl Database {
    async fn new() -> Database {
        let (dir, data) = scratch();
        let mut args = vec!["--data".to_owned(), data.display().to_string()];
        args.extend(pg::binary_db_args(&data, &[]).await);
        Database {
            _dir: dir,
            data,
            args,
        }
    }

    /// Runs `hubbub COMMAND... --data ... [--db ...]` with stdin from `input`.
    fn run(&self, command: &[&str], input: Option<&Path>) -> std::process::Output {
        let mut args: Vec<&str> = command.to_vec();
        args.extend(self.args.iter().map(String::as_str));
        run_hubbub(&args, input)
    }

    /// Runs a command that must succeed; returns what it printed.
    fn ok(&self, command: &[&str]) -> String {
        let output = self.run(command, None);
        succeeded(&output);
        stdout(&output)
    }

    /// A file holding `password` and a newline, for `--password-stdin`.
    fn password_file(&self, password: &str) -> PathBuf {
        let path = self.data.join("password.txt");
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path
    }

    /// The store's people side, opened as the server would.
    async fn people(&self) -> People {
        match self.args.iter().position(|arg| arg == "--db") {
            Some(at) => {
                let url = hubbub::config::PostgresUrl::new(self.args[at + 1].clone());
                let store = PostgresStore::open(
                    &url,
                    Duration::from_secs(5),
                    Durability::Process,
                    SchemaAtOpen::Migrate,
                )
                .await
                .unwrap();
                People::of(Arc::new(store))
            }
            None => {
                let path = self.data.join("hubbub.db");
                let store = SqliteStore::open(&path, Duration::from_secs(5), Durability::Process)
                    .await
                    .unwrap();
                People::of(Arc::new(store))
            }
        }
    }
}

/// The row of `name` in a tab-separated listing whose second column is the name.
fn row<'a>(listing: &'a str, name: &str) -> Vec<&'a str> {
    listing
        .lines()
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|columns| columns.get(1) == Some(&name) || columns.first() == Some(&name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{listing}"))
}

#[tokio::test]
async fn user_add_creates_an_account_that_user_list_shows() {
    let db = Database::new().await;
    let password = db.password_file("correct horse battery");
    let output = db.run(
        &["user", "add", "alice", "--admin", "--password-stdin"],
        Some(&password),
    );
    succeeded(&output);
    assert!(stdout(&output).contains("added account alice"));
    db.ok(&["user", "add", "bob"]);

    let listing = db.ok(&["user", "list"]);
    // ID NAME ADMIN DISABLED PASSWORD CREATED
    assert_eq!(row(&listing, "alice")[2..5], ["yes", "no", "yes"]);
    assert_eq!(row(&listing, "bob")[2..5], ["no", "no", "no"]);
}

#[tokio::test]
async fn user_add_stores_an_argon2_hash_of_the_password_from_stdin() {
    let db = Database::new().await;
    let password = db.password_file("correct horse battery");
    succeeded(&db.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(&password),
    ));

    let people = db.people().await;
    let alice = people.accounts.account_by_key("alice").await.unwrap();
    let hash = alice.unwrap().password_hash.expect("a password hash");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(hubbub::accounts::password::verify_blocking(
        &hash,
        "correct horse battery"
    ));
}

#[tokio::test]
async fn user_add_refuses_a_name_an_account_has_in_another_case() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);
    let output = db.run(&["user", "add", "ALICE"], None);
    failed_saying(&output, "taken");
}

#[tokio::test]
async fn user_add_refuses_a_password_shorter_than_the_rule() {
    let db = Database::new().await;
    let password = db.password_file("short");
    let output = db.run(
        &["user", "add", "alice", "--password-stdin"],
        Some(&password),
    );
    assert!(!output.status.success());
    let listing = db.ok(&["user", "list"]);
    assert!(!listing.contains("alice"), "nothing was stored: {listing}");
}

#[tokio::test]
async fn user_disable_blocks_the_account_and_user_enable_lifts_it() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);

    db.ok(&["user", "disable", "Alice"]);
    assert_eq!(row(&db.ok(&["user", "list"]), "alice")[3], "yes");
    db.ok(&["user", "enable", "alice"]);
    assert_eq!(row(&db.ok(&["user", "list"]), "alice")[3], "no");
}

#[tokio::test]
async fn user_commands_on_an_unknown_name_fail_saying_so() {
    let db = Database::new().await;
    failed_saying(&db.run(&["user", "disable", "nobody"], None), "no account");
    failed_saying(
        &db.run(&["user", "reset-password", "nobody"], None),
        "no account",
    );
}

#[tokio::test]
async fn reset_password_without_stdin_prints_a_made_up_password_that_verifies() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);

    let printed = db.ok(&["user", "reset-password", "alice"]);
    let password = printed
        .lines()
        .find_map(|line| line.strip_prefix("new password: "))
        .unwrap_or_else(|| panic!("no password in {printed:?}"));
    assert_eq!(password.len(), 20);

    let people = db.people().await;
    let alice = people.accounts.account_by_key("alice").await.unwrap();
    let hash = alice.unwrap().password_hash.expect("a password hash");
    assert!(hubbub::accounts::password::verify_blocking(&hash, password));
}

#[tokio::test]
async fn every_operator_change_is_in_the_audit_log_with_the_actor_operator() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);
    db.ok(&["user", "disable", "alice"]);
    db.ok(&["user", "enable", "alice"]);

    let log = db.ok(&["audit"]);
    let actions: Vec<(&str, &str)> = log
        .lines()
        .skip(1)
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            (columns[2], columns[3])
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("operator", "enable"),
            ("operator", "disable"),
            ("operator", "add_account")
        ],
        "newest first"
    );
}

#[tokio::test]
async fn room_create_private_makes_a_server_named_room_owned_by_the_account() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);

    let created = db.ok(&[
        "room",
        "create",
        "--title",
        "Design",
        "--private",
        "--owner",
        "alice",
    ]);
    let room = created.trim();
    assert!(room.starts_with("p-") && room.len() == 18, "{room}");

    let listing = db.ok(&["room", "list"]);
    // ROOM KIND MEMBERS TITLE TOPIC
    assert_eq!(row(&listing, room)[1..4], ["private", "1", "Design"]);
    let people = db.people().await;
    let alice = people
        .accounts
        .account_by_key("alice")
        .await
        .unwrap()
        .unwrap();
    let role = people.directory.role(room, alice.id).await.unwrap();
    assert_eq!(role, Some(hubbub::store::directory::Role::Owner));
}

#[tokio::test]
async fn room_create_refuses_a_public_name_in_the_reserved_namespaces() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);
    let output = db.run(
        &[
            "room", "create", "--title", "T", "--name", "p-mine", "--owner", "alice",
        ],
        None,
    );
    failed_saying(&output, "made by the server");
}

#[tokio::test]
async fn room_add_member_adds_the_account_with_its_role() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);
    db.ok(&["user", "add", "bob"]);
    let room = db.ok(&[
        "room",
        "create",
        "--title",
        "Ops",
        "--private",
        "--owner",
        "alice",
    ]);
    let room = room.trim();

    db.ok(&["room", "add-member", room, "bob", "--role", "moderator"]);

    let people = db.people().await;
    let bob = people
        .accounts
        .account_by_key("bob")
        .await
        .unwrap()
        .unwrap();
    let role = people.directory.role(room, bob.id).await.unwrap();
    assert_eq!(role, Some(hubbub::store::directory::Role::Moderator));
    assert_eq!(row(&db.ok(&["room", "list"]), room)[2], "2");
}

#[tokio::test]
async fn room_add_member_to_a_room_without_a_record_fails_saying_so() {
    let db = Database::new().await;
    db.ok(&["user", "add", "bob"]);
    let output = db.run(&["room", "add-member", "p-0000000000000000", "bob"], None);
    failed_saying(&output, "no room");
}

#[tokio::test]
async fn room_set_topic_sets_the_topic_of_a_public_room() {
    let db = Database::new().await;
    db.ok(&["room", "set-topic", "lobby", "Welcome, all"]);
    let listing = db.ok(&["room", "list"]);
    assert_eq!(row(&listing, "lobby")[1], "public");
    assert_eq!(row(&listing, "lobby")[4], "Welcome, all");
}

#[tokio::test]
async fn audit_with_room_shows_only_that_rooms_entries() {
    let db = Database::new().await;
    db.ok(&["user", "add", "alice"]);
    db.ok(&["room", "set-topic", "lobby", "one"]);
    db.ok(&["room", "set-topic", "ops", "two"]);

    let log = db.ok(&["audit", "--room", "ops"]);
    let rows: Vec<&str> = log.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{log}");
    assert!(rows[0].contains("\ttopic\tops\t"), "{log}");
}

#[tokio::test]
async fn invite_prints_a_code_the_store_redeems_once() {
    let db = Database::new().await;
    let code = db.ok(&["invite", "--uses", "1"]);
    let code = code.trim();
    assert!(code.len() >= 40, "{code}");

    let people = db.people().await;
    let hash = hubbub::accounts::secret::hash_token(code);
    let now = hubbub::accounts::now_ms();
    assert!(
        people
            .accounts
            .redeem_invite(&hash, now)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        people
            .accounts
            .redeem_invite(&hash, now)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn user_add_works_while_a_server_runs_on_the_same_database() {
    let db = Database::new().await;
    let server = Binary::start(&db.data, free_port(), &[]).await;
    let mut client = server.client("name=watcher").await;
    client.join("lobby").await;

    db.ok(&["user", "add", "alice"]);

    assert!(db.ok(&["user", "list"]).contains("alice"));
    client.post("lobby", "still serving").await;
}

#[tokio::test]
async fn a_name_user_add_gives_while_a_server_runs_is_refused_to_guests_within_seconds() {
    let db = Database::new().await;
    let server = Binary::start(&db.data, free_port(), &[]).await;
    let path = "/ws?name=Alice";
    drop(
        common::try_connect(server.addr, path, &[], None)
            .await
            .unwrap(),
    );

    db.ok(&["user", "add", "alice"]);

    // Each node reads new accounts into its in-memory name set every 2 s
    // (store/account_names.rs); that read is observable only by asking, so ask until the
    // guest is refused, within a deadline of several ticks.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match common::try_connect(server.addr, path, &[], None).await {
            Ok(guest) => drop(guest),
            refused => {
                assert_eq!(common::refusal(refused), (409, "name_taken".to_owned()));
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "guests could still take the name 10 s after `user add`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An account with `name` and [`common::accounts::PASSWORD`], added by the CLI.
fn add_user_with_password(db: &Database, name: &str) {
    let password = db.password_file(common::accounts::PASSWORD);
    succeeded(&db.run(&["user", "add", name, "--password-stdin"], Some(&password)));
}

#[tokio::test]
async fn a_member_the_cli_adds_to_a_private_room_may_join_it_on_a_running_server() {
    let db = Database::new().await;
    add_user_with_password(&db, "alice");
    add_user_with_password(&db, "bob");
    let created = db.ok(&[
        "room",
        "create",
        "--title",
        "Plans",
        "--private",
        "--owner",
        "alice",
    ]);
    let room = created.trim();
    let server = Binary::start(&db.data, free_port(), &[]).await;
    // Alice in the room: the server has its policy cached, without Bob.
    let alice = common::accounts::sign_in(server.addr, "alice", common::accounts::PASSWORD).await;
    let (mut alice_socket, _) = alice.connect(server.addr, "").await;
    alice_socket.join(room).await;
    let bob = common::accounts::sign_in(server.addr, "bob", common::accounts::PASSWORD).await;
    let (mut bob_socket, _) = bob.connect(server.addr, "").await;
    bob_socket
        .send(serde_json::json!({"type": "join", "room": room, "ref": "before"}))
        .await;
    bob_socket
        .expect_error("not_found", serde_json::json!("before"))
        .await;

    db.ok(&["room", "add-member", room, "bob"]);

    // The server tells Bob the room is his (its `room` entry) once it has read the change.
    let entry = bob_socket.recv_type("room").await;
    assert_eq!(entry["data"]["room"], room, "{entry}");
    assert_eq!(entry["data"]["role"], "member", "{entry}");
    bob_socket.join(room).await;
}

#[tokio::test]
async fn a_topic_the_cli_sets_reaches_the_rooms_joined_members_on_a_running_server() {
    let db = Database::new().await;
    let server = Binary::start(&db.data, free_port(), &[]).await;
    let mut client = server.client("name=watcher").await;
    client.join("lobby").await;

    db.ok(&["room", "set-topic", "lobby", "release on Friday"]);

    let topic = client.recv_type("topic").await;
    assert_eq!(
        topic["data"],
        serde_json::json!({"room": "lobby", "topic": "release on Friday"})
    );
}
