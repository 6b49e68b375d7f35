//! The shared store: history in PostgreSQL, so several hubbub nodes can serve one chat. It keeps
//! [`SqliteStore`](super::SqliteStore)'s behaviour exactly: one transaction per batch, per-room
//! ids strictly increasing, gapless and never reused.
//!
//! Ids come from a per-room counter row (`rooms.last_id`), bumped with `INSERT ... ON CONFLICT DO
//! UPDATE` inside the batch's transaction. The bump holds the room's row lock until commit, so
//! nodes appending to one room at once take turns on that row: the second sees the first's
//! committed counter, or the old one if the first rolled back. A batch bumps its rooms in byte
//! order of their names, so two nodes whose batches share rooms lock them in the same order and
//! queue rather than deadlock. Whatever the batch size, an append is four round trips: begin,
//! bump every room of the batch, insert every message, commit.
//!
//! As with SQLite, commits use a pool of one connection (the hub commits one batch at a time) and
//! reads their own pool, so history never waits behind a commit.

mod accounts;
mod changes;
mod directory;
mod moderation;
mod search;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Row};
use tracing::info;

use super::{
    ImportOutcome, NewMessage, Page, RoomSummary, Store, StoreError, StoredMessage, import,
    room_from_row,
};
use crate::config::{Durability, PostgresUrl};
use crate::protocol::RoomName;

/// The PostgreSQL schema, versioned beside SQLite's (migrations/postgres).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long start-up waits for the server to answer before it gives up with a clear error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the read pool may open: replays, history pages and room lists run in parallel.
const READ_CONNECTIONS: u32 = 4;

/// What [`PostgresStore::open`] does with the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaAtOpen {
    /// Apply pending migrations (what `serve` does by default).
    Migrate,
    /// Only check that every migration is applied, and refuse to open otherwise
    /// (`serve --no-migrate`, when `hubbub migrate` is a separate deployment step).
    RequireCurrent,
}

/// PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
}

impl PostgresStore {
    /// Connects to `url`, brings the schema up to date or checks it (`schema`), and opens the
    /// pools.
    ///
    /// `busy_timeout` bounds how long a commit waits for a room's counter row held by another
    /// node's transaction (`lock_timeout`) or for its connection: after it the batch fails and
    /// its posters get `store_unavailable`. `durability` picks `synchronous_commit`: `on` for
    /// `machine` (an ack waits for the server's WAL flush), `off` for `process` (the server
    /// flushes within a fraction of a second; a crash of hubbub loses nothing, a crash of the
    /// database server may lose the last moments).
    pub async fn open(
        url: &PostgresUrl,
        busy_timeout: Duration,
        durability: Durability,
        schema: SchemaAtOpen,
    ) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        match schema {
            SchemaAtOpen::Migrate => migrate_with(url, &options).await?,
            SchemaAtOpen::RequireCurrent => require_current(url, &options).await?,
        }
        let synchronous_commit = match durability {
            Durability::Machine => "on",
            Durability::Process => "off",
        };
        let lock_timeout_ms = busy_timeout.as_millis().max(1);
        let writer_options = options.clone().options([
            ("synchronous_commit", synchronous_commit.to_owned()),
            ("lock_timeout", format!("{lock_timeout_ms}ms")),
        ]);
        // Both pools open all their connections now and keep them: start-up fails here, with
        // the cause, if the server refuses them, the first reads pay no connection set-up, and
        // the node holds a fixed number of connections (README, "PostgreSQL").
        let connect_error = |source| StoreError::Connect {
            url: url.redacted(),
            source,
        };
        let writer = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .acquire_timeout(busy_timeout.max(Duration::from_millis(100)))
            .connect_with(writer_options)
            .await
            .map_err(connect_error)?;
        let reader = PgPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .min_connections(READ_CONNECTIONS)
            .idle_timeout(None)
            .acquire_timeout(busy_timeout.max(Duration::from_secs(1)))
            .connect_with(options)
            .await
            .map_err(connect_error)?;
        Ok(Self { writer, reader })
    }

    /// Applies every pending migration and returns the schema's version afterwards: what
    /// `hubbub migrate` runs. Safe when several nodes start at once: sqlx's migrator holds a
    /// PostgreSQL advisory lock (`pg_advisory_lock`, keyed by the database's name) while it
    /// checks and applies, so the others wait and then find nothing left to do. It runs on a
    /// connection of its own, closed afterwards, so a failure cannot leave the session lock held
    /// by a pooled connection.
    pub async fn migrate(url: &PostgresUrl) -> Result<i64, StoreError> {
        let options = connect_options(url)?;
        migrate_with(url, &options).await?;
        Ok(latest_version())
    }
}

/// The URL as sqlx options; a malformed URL is a start-up error that names it (redacted).
fn connect_options(url: &PostgresUrl) -> Result<PgConnectOptions, StoreError> {
    let options =
        PgConnectOptions::from_str(url.expose()).map_err(|source| StoreError::Connect {
            url: url.redacted(),
            source,
        })?;
    // Statements are logged at debug level only: a busy server commits hundreds per second.
    Ok(options
        .application_name("hubbub")
        .log_statements(tracing::log::LevelFilter::Debug))
}

/// A pool of one connection, of its own, for migrating or checking the schema at start; closed
/// afterwards, so a failure cannot leave the migrator's session lock held by a connection that
/// lives on. A first direct connection reports why the server cannot be reached (refused,
/// unknown host, authentication) rather than a pool's time-out.
async fn connect_once(url: &PostgresUrl, options: &PgConnectOptions) -> Result<PgPool, StoreError> {
    let connect_error = |source| StoreError::Connect {
        url: url.redacted(),
        source,
    };
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| {
            connect_error(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            )))
        })?
        .map_err(connect_error)?;
    probe.close().await.map_err(connect_error)?;
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await
        .map_err(connect_error)
}

async fn migrate_with(url: &PostgresUrl, options: &PgConnectOptions) -> Result<(), StoreError> {
    let pool = connect_once(url, options).await?;
    let migrated = MIGRATOR.run(&pool).await;
    pool.close().await;
    migrated?;
    info!(database = %url, version = latest_version(), "database schema up to date");
    Ok(())
}

async fn require_current(url: &PostgresUrl, options: &PgConnectOptions) -> Result<(), StoreError> {
    let pool = connect_once(url, options).await?;
    let applied = applied_versions(&pool).await;
    pool.close().await;
    let applied = applied?;
    let missing: Vec<i64> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .filter(|version| !applied.contains(version))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::SchemaBehind { missing })
    }
}

/// Versions of the migrations the database has applied; none for a database never migrated.
async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    // `to_regclass` is NULL when the table does not exist.
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if table.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
}

/// The newest version among the embedded migrations.
fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Saturates ids beyond `i64::MAX` (no stored id is that large) instead of wrapping.
fn id_param(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn row_to_message(row: &PgRow, room: &RoomName) -> Result<StoredMessage, sqlx::Error> {
    let body: Vec<u8> = row.try_get("body")?;
    let text = String::from_utf8(body).map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
    Ok(StoredMessage {
        room: room.clone(),
        id: row.try_get::<i64, _>("id")? as u64,
        ts: row.try_get("ts")?,
        from: row.try_get("sender")?,
        text,
        author: row
            .try_get::<Option<i64>, _>("author_id")?
            .map(crate::store::accounts::AccountId),
        reply_to: row
            .try_get::<Option<i64>, _>("reply_to")?
            .map(|id| id as u64),
        attachment: crate::store::attachment_from_column(row.try_get("attachment")?)?,
    })
}

/// The messages already stored in each room's id range (first, newest), by room, each room's by
/// id: one query for the whole batch.
async fn held_messages(
    conn: &mut PgConnection,
    ranges: &[(&str, (u64, u64))],
) -> Result<HashMap<String, Vec<StoredMessage>>, sqlx::Error> {
    let mut held: HashMap<String, Vec<StoredMessage>> = HashMap::new();
    if ranges.is_empty() {
        return Ok(held);
    }
    let rooms: Vec<&str> = ranges.iter().map(|(room, _)| *room).collect();
    let firsts: Vec<i64> = ranges
        .iter()
        .map(|(_, (first, _))| id_param(*first))
        .collect();
    let newests: Vec<i64> = ranges
        .iter()
        .map(|(_, (_, newest))| id_param(*newest))
        .collect();
    let rows = sqlx::query(
        "SELECT m.room, m.id, m.ts, m.sender, m.body, m.author_id, m.reply_to, m.attachment \
         FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS wanted (room, first, newest) \
         JOIN messages m ON m.room = wanted.room AND m.id BETWEEN wanted.first AND wanted.newest \
         ORDER BY m.room, m.id",
    )
    .bind(&rooms)
    .bind(&firsts)
    .bind(&newests)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let room: String = row.try_get("room")?;
        let message = row_to_message(row, &room_from_row(&room)?)?;
        held.entry(room).or_default().push(message);
    }
    Ok(held)
}

/// Inserts messages under the ids they already have, in one statement.
async fn insert_with_ids(
    conn: &mut PgConnection,
    messages: &[&StoredMessage],
) -> Result<(), sqlx::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let rooms: Vec<&str> = messages.iter().map(|m| m.room.as_str()).collect();
    let ids: Vec<i64> = messages.iter().map(|m| id_param(m.id)).collect();
    let stamps: Vec<i64> = messages.iter().map(|m| m.ts).collect();
    let senders: Vec<&str> = messages.iter().map(|m| m.from.as_str()).collect();
    let bodies: Vec<&[u8]> = messages.iter().map(|m| m.text.as_bytes()).collect();
    let authors: Vec<Option<i64>> = messages
        .iter()
        .map(|m| m.author.map(|author| author.0))
        .collect();
    let replies: Vec<Option<i64>> = messages.iter().map(|m| m.reply_to.map(id_param)).collect();
    let attachments: Vec<Option<String>> = messages
        .iter()
        .map(|m| crate::store::attachment_column(m.attachment.as_deref()))
        .collect();
    sqlx::query(
        "INSERT INTO messages (room, id, ts, sender, body, author_id, reply_to, attachment) \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[], \
         $6::bigint[], $7::bigint[], $8::text[])",
    )
    .bind(&rooms)
    .bind(&ids)
    .bind(&stamps)
    .bind(&senders)
    .bind(&bodies)
    .bind(&authors)
    .bind(&replies)
    .bind(&attachments)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Messages per room, in byte order of the names (the lock order, see the module doc).
        let mut per_room: BTreeMap<&str, i64> = BTreeMap::new();
        for message in batch {
            *per_room.entry(message.room.as_str()).or_default() += 1;
        }
        let names: Vec<&str> = per_room.keys().copied().collect();
        let counts: Vec<i64> = per_room.values().copied().collect();

        let mut tx = self.writer.begin().await?;
        let bumped: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO rooms (name, last_id) \
             SELECT name, n FROM UNNEST($1::text[], $2::bigint[]) AS batch (name, n) \
             ORDER BY name COLLATE \"C\" \
             ON CONFLICT (name) DO UPDATE SET last_id = rooms.last_id + EXCLUDED.last_id \
             RETURNING name, last_id",
        )
        .bind(&names)
        .bind(&counts)
        .fetch_all(&mut *tx)
        .await?;
        // The next id of each room: the counter before this batch, plus one. (RETURNING rows
        // come in no promised order, hence the look-up by name.)
        let mut next: HashMap<String, i64> = HashMap::with_capacity(bumped.len());
        for (name, last_id) in bumped {
            let count = per_room.get(name.as_str()).copied().unwrap_or_default();
            next.insert(name, last_id - count + 1);
        }

        let mut stored = Vec::with_capacity(batch.len());
        for message in batch {
            let room = message.room.as_str();
            let id = next.get_mut(room).ok_or_else(|| {
                StoreError::Unavailable(format!("room {room:?} missing from the id allocation"))
            })?;
            stored.push(StoredMessage {
                room: message.room.clone(),
                id: *id as u64,
                ts: message.ts,
                from: message.from.clone(),
                text: message.text.clone(),
                author: message.author,
                reply_to: message.reply_to,
                attachment: message.attachment.clone(),
            });
            *id += 1;
        }
        let rows: Vec<&StoredMessage> = stored.iter().collect();
        insert_with_ids(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// At most six round trips whatever the batch: begin; lock every room's counter (in byte order, as
    /// `append` does, creating it at 0 for a new room) and read it; read the messages already
    /// held in the batch's id ranges (skipped when every id is new, as in a first copy); insert
    /// the new messages and raise the counters; commit.
    async fn import(&self, batch: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(ImportOutcome::default());
        }
        let parts = import::by_room(batch);
        let names: Vec<&str> = parts.keys().copied().collect();
        let mut tx = self.writer.begin().await?;
        let counters: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO rooms (name, last_id) \
             SELECT name, 0 FROM UNNEST($1::text[]) AS batch (name) ORDER BY name COLLATE \"C\" \
             ON CONFLICT (name) DO UPDATE SET last_id = rooms.last_id \
             RETURNING name, last_id",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let counters: HashMap<String, u64> = counters
            .into_iter()
            .map(|(name, last)| (name, last as u64))
            .collect();
        let last_of = |room: &str| counters.get(room).copied().unwrap_or_default();
        let ranges: Vec<(&str, (u64, u64))> = parts
            .iter()
            .filter_map(|(room, part)| Some((*room, import::held_range(part, last_of(room))?)))
            .collect();
        let mut held = held_messages(&mut tx, &ranges).await?;

        let mut outcome = ImportOutcome::default();
        let mut fresh = Vec::with_capacity(batch.len());
        let mut newest: Vec<(&str, i64)> = Vec::new();
        for (room, part) in &parts {
            let held = held.remove(*room).unwrap_or_default();
            let (new, skipped) = import::plan_room(room, last_of(room), part, &held)?;
            if let Some(last) = new.last() {
                newest.push((room, id_param(last.id)));
            }
            outcome.add(ImportOutcome {
                stored: new.len() as u64,
                skipped,
            });
            fresh.extend(new);
        }
        insert_with_ids(&mut tx, &fresh).await?;
        let (rooms, lasts): (Vec<&str>, Vec<i64>) = newest.into_iter().unzip();
        sqlx::query(
            "UPDATE rooms SET last_id = raised.last_id \
             FROM UNNEST($1::text[], $2::bigint[]) AS raised (name, last_id) \
             WHERE rooms.name = raised.name",
        )
        .bind(&rooms)
        .bind(&lasts)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn after(
        &self,
        room: &RoomName,
        since: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = $1 AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(room.as_str())
        .bind(id_param(since))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row_to_message(row, room))
            .collect::<Result<_, _>>()?)
    }

    async fn before(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let before = before.map_or(i64::MAX, id_param);
        // One extra row tells whether there is more without a second query.
        let rows = sqlx::query(
            "SELECT id, ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(room.as_str())
        .bind(before)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let newest_first = rows
            .iter()
            .map(|row| row_to_message(row, room))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_newest_first(newest_first, limit))
    }

    async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT last_id FROM rooms WHERE name = $1")
            .bind(room.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, last_id FROM rooms ORDER BY name")
                .fetch_all(&self.reader)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(room, last_id)| RoomSummary {
                room,
                last_id: last_id as u64,
            })
            .collect())
    }

    /// Ends both pools' connections cleanly (a Terminate message each), so the server does not
    /// log them as lost.
    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    /// `ANALYZE` of the whole schema: seconds for a million messages, once per bulk load.
    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE").execute(&self.writer).await?;
        Ok(())
    }
}
