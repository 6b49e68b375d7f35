//! The embedded default store: one SQLite file in WAL mode. Writes go through one dedicated
//! connection (SQLite has one writer anyway, and the hub batches posts into one transaction per
//! group commit); reads use their own pool so history never waits behind a commit.
//!
//! Three faults of the file system under a running server are handled here rather than left to
//! SQLite, because SQLite alone would acknowledge posts that are then lost, or say nothing:
//!
//! - **A failed commit can leave the connection inside a transaction.** When a commit meets a
//!   full disk or a file it may not write, SQLite sometimes rolls the transaction back itself and
//!   sometimes leaves it open. sqlx's `Transaction` counts nesting depth on its own; once SQLite
//!   and that count disagree, sqlx opens every later "transaction" as a `SAVEPOINT` inside a
//!   transaction that is never committed, and every later post is acknowledged without ever
//!   reaching the file. So the writer runs `BEGIN IMMEDIATE` / `COMMIT` itself and, after any
//!   failure, proves no transaction is left open before it writes again (`Writer::recover`).
//! - **The file can be deleted or replaced under the server.** SQLite keeps writing to the inode
//!   it opened: after `rm hubbub.db` (or a backup restored by renaming a file over it) commits
//!   succeed into a file nobody will ever open again. So every commit checks, before it writes and
//!   again after it committed and before anything is acknowledged, that the database file and its
//!   WAL at their paths are still the files this server opened (device and inode). If not, the
//!   batch fails with `store_unavailable` and an error is logged; the server does not reopen the
//!   path by itself, because a new empty file there would reuse ids from 1. A restart by the
//!   operator opens whatever is at the path then.
//! - **Only the database file can become read-only** (its WAL still writable): commits succeed
//!   into the WAL and are durable, but SQLite's checkpoints fail without a word and the WAL grows
//!   for ever. The writer notices a WAL far past its normal size and logs why
//!   (`Writer::watch_wal`).
//!
//! Every `LIMIT` bound from a parameter is written `LIMIT CAST(?n AS INTEGER)`, never the bare
//! parameter: the bundled SQLite plans a bare bound `LIMIT` for the value bound at prepare time
//! and marks the statement expired whenever that parameter is bound again, so each execution
//! re-parsed and re-planned its SQL (found with a probe on `sqlite3Reprepare`: every history
//! page, unread count and change read). Behind a cast the limit is read at run time and the
//! cached statement is reused.
//!
//! The server never opens the database files itself besides through SQLite: closing any other
//! descriptor of the file would drop SQLite's POSIX locks on it (only `stat` is used here).

mod accounts;
mod changes;
mod directory;
mod moderation;
mod search;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;
use tracing::{error, info, warn};

use super::{
    ImportOutcome, NewMessage, Page, RoomSummary, SchemaAtOpen, Store, StoreError, StoredMessage,
    import, room_from_row,
};
use crate::config::Durability;
use crate::protocol::RoomName;

/// The SQLite schema (migrations/sqlite).
static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Refuses a database that lacks migrations this build needs, changing nothing.
async fn require_current(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let applied: Vec<i64> = match table {
        Some(_) => {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&mut *conn)
                .await?
        }
        None => Vec::new(),
    };
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

/// SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Writer>>,
    reader: SqlitePool,
    files: Arc<DatabaseFiles>,
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
        Self::open_with(path, options, SchemaAtOpen::Migrate).await
    }

    /// Opens an existing database to read its history (`hubbub export` and `hubbub copy` read
    /// their source this way), neither creating nor migrating it: the file of a node that is
    /// still serving stays as that node wants it. Refuses a schema that lacks migrations this
    /// build needs (`hubbub migrate` brings it up to date), as PostgreSQL sources are refused.
    pub async fn open_existing(path: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        // No journal mode either: setting one would write to a file that is not in it already.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .busy_timeout(busy_timeout);
        Self::open_with(path, options, SchemaAtOpen::RequireCurrent).await
    }

    async fn open_with(
        path: &Path,
        options: SqliteConnectOptions,
        schema: SchemaAtOpen,
    ) -> Result<Self, StoreError> {
        refuse_orphaned_wal(path)?;
        let mut conn = options.connect().await?;
        match schema {
            SchemaAtOpen::Migrate => MIGRATOR.run_direct(None, &mut conn, false).await?,
            SchemaAtOpen::RequireCurrent => require_current(&mut conn).await?,
        }
        // The writer connection stays open for the server's life, so SQLite never deletes and
        // recreates the WAL under it and the WAL's identity taken below stays the right one.
        let files = DatabaseFiles::identify(path)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        let writer = Writer {
            conn: Some(conn),
            options,
            in_doubt: false,
            wal_alarm: WAL_ALARM_BYTES,
        };
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader,
            files: Arc::new(files),
        })
    }
}

/// The one connection every commit goes through, and whether its last transaction may still be
/// open.
#[derive(Debug)]
struct Writer {
    /// `None` once the store is closed.
    conn: Option<SqliteConnection>,
    options: SqliteConnectOptions,
    /// Set before `BEGIN`, cleared once the transaction is known to be over: a commit that failed,
    /// or was abandoned half-way, is cleaned up before the next one starts.
    in_doubt: bool,
    /// WAL size at which [`Writer::watch_wal`] next looks into why the WAL keeps growing.
    wal_alarm: u64,
}

/// WAL size past which the writer checks that checkpoints still work. SQLite checkpoints after a
/// commit once the WAL holds 1000 pages (about 4 MiB) and then reuses the file from its start, so
/// a healthy WAL stays near that size. One that grows past this has its checkpoints failing (the
/// database file is not writable while its WAL is) or blocked, and SQLite says nothing of either.
const WAL_ALARM_BYTES: u64 = 16 * 1024 * 1024;

impl Writer {
    /// Stores the batch in one transaction of our own (`BEGIN IMMEDIATE` ... `COMMIT`), never
    /// through sqlx's `Transaction` (see the module doc). A failure is cleaned up at once, so the
    /// write lock is not held while the store is down.
    async fn commit(&mut self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, sqlx::Error> {
        self.start().await;
        let outcome = match self.conn.as_mut() {
            Some(conn) => append_transaction(conn, batch).await,
            None => Err(sqlx::Error::PoolClosed),
        };
        self.finish(outcome.is_ok()).await;
        outcome
    }

    /// Stores messages that already have ids ([`Store::import`]) in one transaction, cleaned up
    /// like [`Writer::commit`]'s, a refused batch included.
    async fn import(&mut self, batch: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
        self.start().await;
        let outcome = match self.conn.as_mut() {
            Some(conn) => import_transaction(conn, batch).await,
            None => Err(StoreError::Database(sqlx::Error::PoolClosed)),
        };
        self.finish(outcome.is_ok()).await;
        outcome
    }

    /// Before a transaction: ends whatever the last one left open, and marks the new one as in
    /// doubt until [`Writer::finish`] knows it is over.
    async fn start(&mut self) {
        if self.in_doubt {
            self.recover().await;
        }
        self.in_doubt = true;
    }

    /// After a transaction: a committed one is over; a failed one is rolled back now.
    async fn finish(&mut self, committed: bool) {
        if committed {
            self.in_doubt = false;
        } else {
            self.recover().await;
        }
    }

    /// Once the WAL has grown past the alarm size, runs a checkpoint to learn why and logs it;
    /// the next look is when the WAL has doubled again. Commits that reach the WAL are durable,
    /// so this loses nothing: it makes a silent, unbounded growth visible.
    async fn watch_wal(&mut self, wal_bytes: u64) {
        if wal_bytes < self.wal_alarm {
            return;
        }
        self.wal_alarm = wal_bytes.saturating_mul(2);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let checkpoint = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut *conn)
            .await;
        match checkpoint {
            Err(err) => error!(
                wal_bytes,
                cause = %explain(err),
                "WAL CHECKPOINT FAILED: the database file cannot be written (read-only?) while its \
                 WAL can; commits go on into the WAL and nothing acked is lost, but the WAL grows \
                 until the file is writable again"
            ),
            Ok((busy, frames, checkpointed)) => warn!(
                wal_bytes,
                busy,
                frames,
                checkpointed,
                "the WAL has grown large: checkpoints are blocked or were failing"
            ),
        }
    }

    /// Ends whatever a failed commit left behind. SQLite may already have rolled the transaction
    /// back (then `ROLLBACK` fails harmlessly) or may have left it open (then `ROLLBACK` ends it).
    /// A plain `BEGIN` succeeds only outside a transaction, so it proves which; if a transaction
    /// is still open after all, the connection is replaced, and closing it rolls the rest back.
    async fn recover(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        let clean = sqlx::raw_sql("BEGIN").execute(&mut *conn).await.is_ok()
            && sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_ok();
        if clean {
            self.in_doubt = false;
            return;
        }
        warn!("the store's writer connection is stuck in a transaction; opening a new one");
        // The new connection is opened before the old one closes, so the old one is never the
        // database's last connection (which would delete the WAL and change its identity).
        // Never created anew: a database file deleted meanwhile must not come back empty.
        match self
            .options
            .clone()
            .create_if_missing(false)
            .connect()
            .await
        {
            Ok(fresh) => {
                if let Some(stuck) = self.conn.replace(fresh)
                    && let Err(err) = stuck.close().await
                {
                    warn!(cause = %err, "closing the stuck writer connection failed");
                }
                self.in_doubt = false;
            }
            // Still in doubt: the next commit tries again, and fails loudly until it can.
            Err(err) => error!(cause = %err, "could not open a new writer connection"),
        }
    }
}

/// `BEGIN IMMEDIATE`, the batch, `COMMIT`: an append's transaction.
async fn append_transaction(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let stored = insert_all(conn, batch).await?;
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    Ok(stored)
}

/// An import's transaction: per room, the counter and the messages already held in the batch's
/// range are read under the write lock `BEGIN IMMEDIATE` takes, checked by
/// [`import::plan_room`], and the new messages stored with the counter raised to the newest.
async fn import_transaction(
    conn: &mut SqliteConnection,
    batch: &[StoredMessage],
) -> Result<ImportOutcome, StoreError> {
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(explain)?;
    let mut outcome = ImportOutcome::default();
    for (room, part) in import::by_room(batch) {
        let last: Option<i64> = sqlx::query_scalar("SELECT last_id FROM rooms WHERE name = ?1")
            .bind(room)
            .fetch_optional(&mut *conn)
            .await?;
        let last = last.unwrap_or(0) as u64;
        let held = match import::held_range(&part, last) {
            Some((first, newest)) => held_messages(conn, room, first, newest).await?,
            None => Vec::new(),
        };
        let (fresh, skipped) = import::plan_room(room, last, &part, &held)?;
        for message in &fresh {
            insert_with_id(conn, message).await.map_err(explain)?;
        }
        if let Some(newest) = fresh.last() {
            sqlx::query(
                "INSERT INTO rooms (name, last_id) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
            )
            .bind(room)
            .bind(newest.id as i64)
            .execute(&mut *conn)
            .await
            .map_err(explain)?;
        }
        outcome.add(ImportOutcome {
            stored: fresh.len() as u64,
            skipped,
        });
    }
    sqlx::raw_sql("COMMIT")
        .execute(&mut *conn)
        .await
        .map_err(explain)?;
    Ok(outcome)
}

/// The room's stored messages with ids from `first` to `newest`, by id.
async fn held_messages(
    conn: &mut SqliteConnection,
    room: &str,
    first: u64,
    newest: u64,
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = ?1 AND id BETWEEN ?2 AND ?3 \
         ORDER BY id",
    )
    .bind(room)
    .bind(first as i64)
    .bind(newest as i64)
    .fetch_all(&mut *conn)
    .await?;
    let room = room_from_row(room)?;
    rows.iter().map(|row| row_to_message(row, &room)).collect()
}

/// Inserts one message under the id it already has.
async fn insert_with_id(
    conn: &mut SqliteConnection,
    message: &StoredMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (room, id, ts, sender, body, author_id, reply_to, attachment) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(message.room.as_str())
    .bind(message.id as i64)
    .bind(message.ts)
    .bind(&message.from)
    .bind(&message.text)
    .bind(message.author.map(|author| author.0))
    .bind(message.reply_to.map(|id| id as i64))
    .bind(crate::store::attachment_column(
        message.attachment.as_deref(),
    ))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts each message, allocating its per-room id in the same transaction.
async fn insert_all(
    conn: &mut SqliteConnection,
    batch: &[NewMessage],
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    let mut stored = Vec::with_capacity(batch.len());
    for message in batch {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rooms (name, last_id) VALUES (?1, 1) \
             ON CONFLICT (name) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
        )
        .bind(message.room.as_str())
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO messages (room, id, ts, sender, body, author_id, reply_to, attachment) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(message.room.as_str())
        .bind(id)
        .bind(message.ts)
        .bind(&message.from)
        .bind(&message.text)
        .bind(message.author.map(|author| author.0))
        .bind(message.reply_to.map(|id| id as i64))
        .bind(crate::store::attachment_column(
            message.attachment.as_deref(),
        ))
        .execute(&mut *conn)
        .await?;
        stored.push(StoredMessage {
            room: message.room.clone(),
            id: id as u64,
            ts: message.ts,
            from: message.from.clone(),
            text: message.text.clone(),
            author: message.author,
            reply_to: message.reply_to,
            attachment: message.attachment.clone(),
        });
    }
    Ok(stored)
}

/// Which file a path names: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path` now (symlinks followed, as SQLite follows them).
    fn at(path: &Path) -> std::io::Result<FileId> {
        std::fs::metadata(path).map(|meta| FileId::of(&meta))
    }

    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The database file and its WAL as this server opened them.
#[derive(Debug)]
struct DatabaseFiles {
    db: PathBuf,
    wal: PathBuf,
    db_id: FileId,
    wal_id: FileId,
    /// Whether the loss of the files has been logged (once per loss, not once per batch).
    reported: AtomicBool,
}

/// What a poster is told when the files are gone (the log line has the paths).
const FILES_GONE: &str = "the database file was deleted or replaced while hubbub was running; \
                          the message was not stored, and posts are refused until hubbub is \
                          restarted";

/// The refusal of a commit or read once the files are gone.
fn files_gone() -> StoreError {
    StoreError::Refused {
        reason: FILES_GONE,
        detail: "the open database's files are no longer at its path".to_owned(),
    }
}

impl DatabaseFiles {
    /// Takes the identity of the open database's files. SQLite names the WAL after the database's
    /// resolved path, so the WAL is looked for there.
    fn identify(path: &Path) -> Result<Self, StoreError> {
        let unavailable = |what: &str, err: std::io::Error| {
            StoreError::Unavailable(format!("cannot stat the {what}: {err}"))
        };
        let resolved = std::fs::canonicalize(path).map_err(|e| unavailable("database file", e))?;
        let mut wal = resolved.into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        Ok(Self {
            db_id: FileId::at(path).map_err(|e| unavailable("database file", e))?,
            wal_id: FileId::at(&wal).map_err(|e| unavailable("database's WAL", e))?,
            db: path.to_owned(),
            wal,
            reported: AtomicBool::new(false),
        })
    }

    /// Whether the paths still name the files this server writes to, without logging or
    /// changing what [`DatabaseFiles::check`] reports (the writer's first `Lost` empties the WAL,
    /// so a probe must not be the one to see the loss first).
    fn intact(&self) -> bool {
        matches!(FileId::at(&self.db), Ok(id) if id == self.db_id)
            && matches!(FileId::at(&self.wal), Ok(id) if id == self.wal_id)
    }

    /// Whether the paths still name the files this server writes to. Called before a commit
    /// (so nothing is written to a lost file) and after it, before any ack: a commit that went to
    /// a file deleted meanwhile is refused like one that failed.
    /// Returns the WAL's size when they do.
    fn check(&self) -> Result<u64, Lost> {
        let db = FileId::at(&self.db);
        let wal_meta = std::fs::metadata(&self.wal);
        let wal = wal_meta.as_ref().map(FileId::of);
        let intact = matches!(&db, Ok(id) if *id == self.db_id)
            && matches!(&wal, Ok(id) if *id == self.wal_id);
        if intact {
            if self.reported.swap(false, Ordering::Relaxed) {
                info!(path = %self.db.display(), "the database files are back; posts are stored again");
            }
            return Ok(wal_meta.map_or(0, |meta| meta.len()));
        }
        let first = !self.reported.swap(true, Ordering::Relaxed);
        if first {
            error!(
                path = %self.db.display(),
                opened = ?self.db_id,
                now = ?db,
                wal_opened = ?self.wal_id,
                wal_now = ?wal,
                "DATABASE FILE DELETED OR REPLACED under the running server: SQLite would go on \
                 writing to the unlinked file and every ack would be lost, so every post is \
                 refused with store_unavailable until hubbub is restarted"
            );
        }
        Err(Lost { first })
    }
}

/// The database's files are not the ones this server opened; `first` the first time this is
/// seen since they last were.
#[derive(Debug)]
struct Lost {
    first: bool,
}

/// Says in plain words why SQLite refused a commit: the reason for the posters, the driver's text
/// (with its code) beside it for the log.
fn explain(err: sqlx::Error) -> StoreError {
    let code = err
        .as_database_error()
        .and_then(|db| db.code())
        .and_then(|code| code.parse::<i32>().ok());
    // Primary result codes (the low byte of the extended code): https://sqlite.org/rescode.html
    let reason = match code.map(|code| code & 0xff) {
        Some(5 | 6) => "the database is locked by another process; the message was not stored",
        Some(8) => "the database is read-only; the message was not stored",
        Some(10) => {
            "the database files could not be written (read-only, failing or full storage); the \
             message was not stored"
        }
        Some(11 | 26) => {
            "the database file is damaged or not a database; the message was not stored"
        }
        Some(13) => "the disk holding the database is full; the message was not stored",
        Some(14) => "the database file could not be opened; the message was not stored",
        _ => return StoreError::Database(err),
    };
    StoreError::Refused {
        reason,
        detail: err.to_string(),
    }
}

impl SqliteStore {
    /// [`DatabaseFiles::check`]; the first time it fails, the writer also empties its WAL into
    /// the lost file (`wal_checkpoint(TRUNCATE)`). The WAL at the path is still this server's
    /// when only the database file went, and left full it would be applied to whatever database
    /// file is at the path at the next start, even after a `kill -9`.
    async fn check_files(&self, writer: &mut Writer) -> Result<u64, StoreError> {
        let outcome = self.files.check();
        if let Err(Lost { first: true }) = outcome
            && let Some(conn) = writer.conn.as_mut()
        {
            match sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut *conn)
                .await
            {
                Ok(_) => info!("this server's WAL was checkpointed into the lost file and emptied"),
                Err(err) => warn!(cause = %err, "could not empty this server's WAL"),
            }
        }
        outcome.map_err(|_| files_gone())
    }
}

/// Refuses to open a database whose file is missing while a non-empty WAL for it exists: that
/// WAL belongs to a database that was deleted (the server was killed before it could remove it),
/// and SQLite would apply its pages to the new, empty file.
fn refuse_orphaned_wal(path: &Path) -> Result<(), StoreError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let wal_len = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
    if wal_len > 0 && !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "{} exists but {} does not: the WAL belongs to a database file that was deleted, and \
             SQLite would apply it to a new empty database; restore the database file, or move \
             the WAL (and its -shm) away to start empty",
            wal.display(),
            path.display()
        )));
    }
    Ok(())
}

fn row_to_message(
    row: &sqlx::sqlite::SqliteRow,
    room: &RoomName,
) -> Result<StoredMessage, sqlx::Error> {
    Ok(StoredMessage {
        room: room.clone(),
        id: row.try_get::<i64, _>("id")? as u64,
        ts: row.try_get("ts")?,
        from: row.try_get("sender")?,
        text: row.try_get("body")?,
        author: row
            .try_get::<Option<i64>, _>("author_id")?
            .map(crate::store::accounts::AccountId),
        reply_to: row
            .try_get::<Option<i64>, _>("reply_to")?
            .map(|id| id as u64),
        attachment: crate::store::attachment_from_column(row.try_get("attachment")?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
        let mut writer = self.writer.lock().await;
        self.check_files(&mut writer).await?;
        let stored = writer.commit(batch).await.map_err(explain)?;
        let wal_bytes = self.check_files(&mut writer).await?;
        writer.watch_wal(wal_bytes).await;
        Ok(stored)
    }

    async fn import(&self, batch: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
        let mut writer = self.writer.lock().await;
        self.check_files(&mut writer).await?;
        let outcome = writer.import(batch).await?;
        let wal_bytes = self.check_files(&mut writer).await?;
        writer.watch_wal(wal_bytes).await;
        Ok(outcome)
    }

    async fn after(
        &self,
        room: &RoomName,
        since: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = ?1 AND id > ?2 ORDER BY id LIMIT CAST(?3 AS INTEGER)",
        )
        .bind(room.as_str())
        .bind(i64::try_from(since).unwrap_or(i64::MAX))
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
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        // One extra row tells whether there is more without a second query.
        let rows = sqlx::query(
            "SELECT id, ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = ?1 AND id < ?2 ORDER BY id DESC LIMIT CAST(?3 AS INTEGER)",
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
        let last: Option<i64> = sqlx::query_scalar("SELECT last_id FROM rooms WHERE name = ?1")
            .bind(room.as_str())
            .fetch_optional(&self.reader)
            .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    /// Reads the schema (not `SELECT 1`, which never touches the file) and checks that the
    /// files at the path are still the ones this server writes to: a deleted or replaced
    /// database refuses every post, so the node is not ready.
    async fn ping(&self) -> Result<(), StoreError> {
        if !self.files.intact() {
            return Err(files_gone());
        }
        sqlx::query("SELECT 1 FROM rooms LIMIT 1")
            .execute(&self.reader)
            .await?;
        Ok(())
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

    /// Closes the readers, then the writer: the last connection to close checkpoints the WAL into
    /// the database file and removes the WAL and its `-shm`.
    async fn close(&self) {
        self.reader.close().await;
        let mut writer = self.writer.lock().await;
        if let Some(conn) = writer.conn.take()
            && let Err(err) = conn.close().await
        {
            warn!(cause = %err, "closing the database failed");
        }
    }
}

#[cfg(test)]
mod tests {
    /// The SQL of every SQLite module: a bare parameter as a `LIMIT` would re-prepare its statement
    /// at every execution (the module docs say why).
    const SOURCES: [(&str, &str); 6] = [
        ("sqlite.rs", include_str!("sqlite.rs")),
        ("sqlite/accounts.rs", include_str!("sqlite/accounts.rs")),
        ("sqlite/changes.rs", include_str!("sqlite/changes.rs")),
        ("sqlite/directory.rs", include_str!("sqlite/directory.rs")),
        ("sqlite/moderation.rs", include_str!("sqlite/moderation.rs")),
        ("sqlite/search.rs", include_str!("sqlite/search.rs")),
    ];

    #[test]
    fn no_statement_binds_a_bare_limit() {
        let bare = ["LIMIT ", "?"].concat();
        for (file, source) in SOURCES {
            assert!(
                !source.contains(&bare),
                "{file}: write `LIMIT CAST(?n AS INTEGER)`"
            );
        }
    }
}
