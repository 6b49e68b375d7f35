//! The store contract suites' database: one fresh database of one implementation (a SQLite
//! file, or a PostgreSQL schema of its own), opened once and seen through every store trait, as
//! `serve` opens one backend for all of them. Each suite adds its own helpers in an `impl Db`
//! of its own (the suites are one crate with this module).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hubbub::config::{Durability, PostgresUrl};
use hubbub::store::accounts::{AccountId, AccountStore};
use hubbub::store::changes::ChangeStore;
use hubbub::store::directory::RoomDirectory;
use hubbub::store::moderation::ModerationStore;
use hubbub::store::{PostgresStore, SchemaAtOpen, SqliteStore, Store};
use sqlx::Connection;
use tempfile::TempDir;

/// How long a store call waits for a locked SQLite file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One fresh database, as every store trait.
pub struct Db {
    pub store: Arc<dyn Store>,
    pub directory: Arc<dyn RoomDirectory>,
    pub moderation: Arc<dyn ModerationStore>,
    pub changes: Arc<dyn ChangeStore>,
    pub accounts: Arc<dyn AccountStore>,
    /// Where [`Db::account`] inserts with plain SQL.
    raw: RawSql,
    _dir: Option<TempDir>,
}

/// The database's address for plain SQL.
enum RawSql {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    /// A fresh SQLite file in a scratch directory.
    pub async fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contract.db");
        let store = Arc::new(
            SqliteStore::open(&path, BUSY_TIMEOUT, Durability::Process)
                .await
                .unwrap(),
        );
        Db {
            store: store.clone(),
            directory: store.clone(),
            moderation: store.clone(),
            changes: store.clone(),
            accounts: store,
            raw: RawSql::Sqlite(path),
            _dir: Some(dir),
        }
    }

    /// A fresh schema on the suite's PostgreSQL server; `None` (the test is skipped, saying so)
    /// when there is none.
    pub async fn postgres(test: &str) -> Option<Db> {
        let Some(base) = super::postgres_server() else {
            eprintln!("skipped: {test} on PostgreSQL: set HUBBUB_TEST_POSTGRES to a server URL");
            return None;
        };
        let url = super::pg::fresh_schema_url(&base).await;
        let store = Arc::new(
            PostgresStore::open(
                &PostgresUrl::new(url.clone()),
                BUSY_TIMEOUT,
                Durability::Process,
                SchemaAtOpen::Migrate,
            )
            .await
            .unwrap(),
        );
        Some(Db {
            store: store.clone(),
            directory: store.clone(),
            moderation: store.clone(),
            changes: store.clone(),
            accounts: store,
            raw: RawSql::Postgres(url),
            _dir: None,
        })
    }

    /// A new account with this name, inserted with plain SQL into the `accounts` table the spec
    /// fixes (migration 0002), so a suite that uses it depends on the table, not on the accounts
    /// service.
    pub async fn account(&self, name: &str) -> AccountId {
        let insert = "INSERT INTO accounts (name, name_key, admin, disabled, created_ms) \
                      VALUES ($1, $2, $3, $4, $5) RETURNING id";
        let id: i64 = match &self.raw {
            RawSql::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                let id = sqlx::query_scalar(insert)
                    .bind(name)
                    .bind(name.to_lowercase())
                    .bind(false)
                    .bind(false)
                    .bind(0_i64)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                id
            }
            RawSql::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let id = sqlx::query_scalar(insert)
                    .bind(name)
                    .bind(name.to_lowercase())
                    .bind(false)
                    .bind(false)
                    .bind(0_i64)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                id
            }
        };
        AccountId(id)
    }
}
