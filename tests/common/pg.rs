//! The test harness on PostgreSQL. With `HUBBUB_TEST_DB=postgres://...` (scripts/test.sh sets
//! it for its second run, pointing at the private server of scripts/pg.sh) every test server,
//! in-process or the real binary, gets a schema of its own in that database, so tests stay as
//! independent as with a fresh SQLite file each: every table hubbub uses, `_sqlx_migrations`
//! included, is unqualified and lands in the schema named by the connection's `search_path`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hubbub::config::PostgresUrl;
use sqlx::{Connection, PgConnection};

/// The variable that moves test servers onto PostgreSQL.
pub const TEST_DB_VAR: &str = "HUBBUB_TEST_DB";

/// The file in a [`super::Binary`]'s data directory that remembers its schema's URL, so a
/// restarted binary (tests/durability.rs) finds the history it left behind.
const URL_FILE: &str = "test-postgres-url";

/// The PostgreSQL URL test servers should use, if the run is a PostgreSQL one.
pub fn test_db() -> Option<String> {
    std::env::var(TEST_DB_VAR)
        .ok()
        .filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"))
}

/// Whether this run puts test servers on PostgreSQL.
pub fn on_postgres() -> bool {
    test_db().is_some()
}

/// For a test that only makes sense on SQLite: returns true (and says why on stderr) when the
/// run is on PostgreSQL, so the test can return early.
pub fn skip_on_postgres(test: &str, reason: &str) -> bool {
    if on_postgres() {
        eprintln!("skipped on PostgreSQL: {test}: {reason}");
        return true;
    }
    false
}

/// A new, empty schema in the database at `base`, and `base` extended to use it.
pub async fn fresh_schema_url(base: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!(
        "t_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    let mut conn = PgConnection::connect(base)
        .await
        .unwrap_or_else(|err| panic!("{TEST_DB_VAR} is not reachable: {err}"));
    // The name is built here from digits and a prefix, never from input.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut conn)
        .await
        .expect("create the test's schema");
    conn.close().await.expect("close");
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// On a PostgreSQL run, points an in-process server's config at a fresh schema.
pub async fn use_test_db(config: &mut hubbub::config::Config) {
    if let Some(base) = test_db() {
        config.postgres = Some(PostgresUrl::new(fresh_schema_url(&base).await));
    }
}

/// On a PostgreSQL run, the `--db` flag for a binary whose data directory is `data`: a fresh
/// schema the first time, the same one when the binary is started again on that directory.
/// Nothing when the test passes its own `--db` in `extra`.
pub async fn binary_db_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let Some(base) = test_db() else {
        return Vec::new();
    };
    if extra.contains(&"--db") {
        return Vec::new();
    }
    let remembered = data.join(URL_FILE);
    let url = match std::fs::read_to_string(&remembered) {
        Ok(url) => url,
        Err(_) => {
            let url = fresh_schema_url(&base).await;
            std::fs::create_dir_all(data).expect("data directory");
            std::fs::write(&remembered, &url).expect("remember the schema");
            url
        }
    };
    vec!["--db".to_owned(), url]
}

/// How long a started binary may take to open its store and answer.
const STORE_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until a binary that accepts connections also serves them. The binary binds its port
/// before it opens the store, and opening PostgreSQL (migrations, the pools' connections) takes
/// long enough to be seen: a request queued on the port is answered once it is done.
pub async fn until_serving(addr: SocketAddr) {
    if let Err(cause) = serving(addr).await {
        panic!("{cause}");
    }
}

/// [`until_serving`], answering why not instead of panicking (so the caller can add what it
/// knows: the binary's exit status and log).
pub async fn serving(addr: SocketAddr) -> Result<(), String> {
    // Not the suites' 10 s client: opening the store is migrations and fsyncs, which other
    // tests' fsyncs (the kill -9 and disk-fault suites run beside) can slow well past that.
    let client = reqwest::Client::builder()
        .timeout(STORE_OPEN_WAIT)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map_err(|err| {
            // The error's sources say whether it timed out, was refused or was reset.
            let mut cause = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(inner) = source {
                cause.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            format!("hubbub on {addr} accepted but did not serve: {cause}")
        })?;
    match response.status().is_success() {
        true => Ok(()),
        false => Err(format!("/healthz: {}", response.status())),
    }
}

/// The variable naming a PostgreSQL server for the tests that need one whatever the run
/// (scripts/test.sh sets it to the server scripts/pg.sh started).
pub const TEST_SERVER_VAR: &str = "HUBBUB_TEST_POSTGRES";

/// The PostgreSQL server of this run: [`TEST_SERVER_VAR`] if set and not empty, else
/// [`TEST_DB_VAR`] on a PostgreSQL run.
pub fn test_server() -> Option<String> {
    std::env::var(TEST_SERVER_VAR)
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(test_db)
}

/// A fresh schema on the PostgreSQL server of this run ([`test_server`]), or `None` after
/// saying why `test` is skipped: for the tests that pass a PostgreSQL `--db` of their own
/// (tests/copy.rs, tests/database_flag.rs).
pub async fn fresh_schema_or_skip(test: &str) -> Option<String> {
    match test_server() {
        Some(base) => Some(fresh_schema_url(&base).await),
        None => {
            eprintln!("skipped: {test}: set HUBBUB_TEST_POSTGRES to a server URL");
            None
        }
    }
}
