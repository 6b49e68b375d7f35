//! `--db` and `hubbub migrate`, through the real binary: which database a URL selects, how start
//! fails when PostgreSQL cannot be reached (naming the URL, never its password), and migrations
//! applied by `hubbub migrate` versus at start. The PostgreSQL cases need a server
//! (`HUBBUB_TEST_POSTGRES` or `HUBBUB_TEST_DB`) and say so when skipped.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use common::cli::{UnreachablePostgres, run_hubbub, stderr};
use common::pg::fresh_schema_or_skip;
use common::{Binary, api_post, free_port, scratch};

fn hubbub(args: &[&str]) -> Output {
    run_hubbub(args, None)
}

#[test]
fn an_unreachable_postgres_fails_start_naming_the_url_without_its_password() {
    let postgres = UnreachablePostgres::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let output = hubbub(&["serve", "--addr", &addr, "--db", &postgres.url]);
    postgres.assert_refused_naming_it(&output, "could not connect to");
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
    let Some(url) = fresh_schema_or_skip("migrate_then_serve_no_migrate_serves_on_postgres").await
    else {
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
    let Some(url) =
        fresh_schema_or_skip("serve_no_migrate_refuses_an_unmigrated_postgres_schema").await
    else {
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
    let Some(url) =
        fresh_schema_or_skip("serve_applies_migrations_at_start_by_default_on_postgres").await
    else {
        return;
    };
    let (_dir, data) = scratch();
    let server = Binary::start(&data, free_port(), &["--db", &url]).await;
    assert_eq!(api_post(server.addr, "r", "a", "one").await, 1);
}
