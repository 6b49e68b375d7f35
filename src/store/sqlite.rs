//! The embedded default store: one SQLite file in WAL mode. Writes go through a single-connection
//! pool (SQLite has one writer anyway, and the hub batches posts into one transaction per group
//! commit); reads use their own pool so history never waits behind a commit.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{NewMessage, Page, RoomSummary, Store, StoreError, StoredMessage};
use crate::config::Durability;
use crate::protocol::RoomName;

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// `busy_timeout` is how long a commit waits for a lock held by another process (a backup, an
    /// operator's `sqlite3` shell) before the batch fails and its posters get `store_unavailable`.
    /// While it waits, every post queues behind it, so it bounds how long a post can hang.
    ///
    /// `durability` picks `synchronous = FULL` (fsync per commit) or `NORMAL` (fsync at WAL
    /// checkpoints; a commit still survives a crash of the process).
    pub async fn open(
        path: &Path,
        busy_timeout: Duration,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        let synchronous = match durability {
            Durability::Machine => SqliteSynchronous::Full,
            Durability::Process => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(busy_timeout);
        Self::open_with(options).await
    }

    async fn open_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

fn row_to_message(row: &sqlx::sqlite::SqliteRow, room: &str) -> Result<StoredMessage, sqlx::Error> {
    Ok(StoredMessage {
        room: room.to_owned(),
        id: row.try_get::<i64, _>("id")? as u64,
        ts: row.try_get("ts")?,
        from: row.try_get("sender")?,
        text: row.try_get("body")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut stored = Vec::with_capacity(batch.len());
        for message in batch {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO rooms (name, last_id) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
            )
            .bind(message.room.as_str())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO messages (room, id, ts, sender, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(message.room.as_str())
            .bind(id)
            .bind(message.ts)
            .bind(&message.from)
            .bind(&message.text)
            .execute(&mut *tx)
            .await?;
            stored.push(StoredMessage {
                room: message.room.as_str().to_owned(),
                id: id as u64,
                ts: message.ts,
                from: message.from.clone(),
                text: message.text.clone(),
            });
        }
        tx.commit().await?;
        Ok(stored)
    }

    async fn after(
        &self,
        room: &RoomName,
        since: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, sender, body FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .bind(room.as_str())
        .bind(i64::try_from(since).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row_to_message(row, room.as_str()))
            .collect::<Result<_, _>>()?)
    }

    async fn before(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        // One extra row tells whether there is more without a second query.
        let rows = sqlx::query(
            "SELECT id, ts, sender, body FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )
        .bind(room.as_str())
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let has_more = rows.len() > limit as usize;
        let mut messages = rows
            .iter()
            .take(limit as usize)
            .map(|row| row_to_message(row, room.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        messages.reverse();
        Ok(Page { messages, has_more })
    }

    async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT last_id FROM rooms WHERE name = ?1")
            .bind(room.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let rows = sqlx::query("SELECT name, last_id FROM rooms ORDER BY name")
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RoomSummary {
                    room: row.try_get("name")?,
                    last_id: row.try_get::<i64, _>("last_id")? as u64,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
