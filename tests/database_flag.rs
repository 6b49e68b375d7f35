//! `--db` and `hubbub migrate`, through the real binary: which database a URL selects, how start
//! fails when PostgreSQL cannot be reached (naming the URL, never its password), and migrations
//! applied by `hubbub migrate` versus at start. The PostgreSQL cases need a server
//! (`HUBBUB_TEST_POSTGRES` or `HUBBUB_TEST_DB`) and say so when skipped.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::{Binary, api_post, free_port, scratch};

fn hubbub(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .env("HUBBUB_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env_remove("HUBBUB_DB")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A PostgreSQL server to test against, in a schema of its own; `None` (with a note) without one.
async fn postgres(test: &str) -> Option<String> {
    let base = std::env::var("HUBBUB_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(common::pg::test_db);
    match base {
        Some(base) => Some(common::pg::fresh_schema_url(&base).await),
        None => {
            eprintln!("skipped: {test}: set HUBBUB_TEST_POSTGRES to a server URL");
            None
        }
    }
}

#[test]
fn an_unreachable_postgres_fails_start_naming_the_url_without_its_password() {
    // Nothing listens on a port just released.
    let port = free_port();
    let url = format!("postgres://hub:hunter2@127.0.0.1:{port}/chat");
    let addr = format!("127.0.0.1:{}", free_port());
    let output = hubbub(&["serve", "--addr", &addr, "--db", &url]);
    let log = stderr(&output);
    assert!(!output.status.success());
    assert!(
        log.contains(&format!(
            "could not connect to postgres://hub:***@127.0.0.1:{port}/chat"
        )),
        "{log}"
    );
    assert!(
        log.contains("Connection refused"),
        "the cause is shown: {log}"
    );
    assert!(
        !log.contains("hunter2"),
        "the password never appears: {log}"
    );
}

#[test]
fn an_unsupported_database_scheme_is_refused_without_echoing_the_url() {
    let output = hubbub(&["serve", "--db", "mysql://hub:hunter2@db/chat"]);
    let log = stderr(&output);
    assert!(!output.status.success());
    assert!(
        log.contains("unsupported database scheme \"mysql\""),
        "{log}"
    );
    assert!(!log.contains("hunter2"), "{log}");
}

#[test]
fn migrate_creates_a_sqlite_database_at_the_given_path() {
    let (_dir, data) = scratch();
    let db = data.join("sub-dir-free.db");
    let url = format!("sqlite://{}", db.display());
    let output = hubbub(&["migrate", "--db", &url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(db.exists(), "the file was created");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("schema up to date"), "{said}");
}

#[tokio::test]
async fn migrate_then_serve_no_migrate_serves_on_postgres() {
    let Some(url) = postgres("migrate_then_serve_no_migrate_serves_on_postgres").await else {
        return;
    };
    let output = hubbub(&["migrate", "--db", &url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("schema up to date (version"));

    let (_dir, data) = scratch();
    let server = Binary::start(&data, free_port(), &["--db", &url, "--no-migrate"]).await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
    assert_eq!(api_post(server.addr, "r", "a", "two").await, 2);
    assert!(
        !data.join("hubbub.db").exists(),
        "no SQLite file beside a PostgreSQL database"
    );
}

#[tokio::test]
async fn serve_no_migrate_refuses_an_unmigrated_postgres_schema() {
    let Some(url) = postgres("serve_no_migrate_refuses_an_unmigrated_postgres_schema").await else {
        return;
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let output = hubbub(&["serve", "--addr", &addr, "--db", &url, "--no-migrate"]);
    let log = stderr(&output);
    assert!(!output.status.success());
    assert!(log.contains("run `hubbub migrate`"), "{log}");
}

#[tokio::test]
async fn serve_applies_migrations_at_start_by_default_on_postgres() {
    let Some(url) = postgres("serve_applies_migrations_at_start_by_default_on_postgres").await
    else {
        return;
    };
    let (_dir, data) = scratch();
    let server = Binary::start(&data, free_port(), &["--db", &url]).await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
}
