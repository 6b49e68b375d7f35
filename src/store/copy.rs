//! Moving a history between databases with ids unchanged: `hubbub export` (JSON Lines on
//! stdout), `hubbub import` (the same on stdin) and `hubbub copy` (store to store, no file).
//! A team that started on one node's SQLite file moves to PostgreSQL this way without breaking
//! any client's `since` (docs/deploy.md, "From one node on SQLite to PostgreSQL").
//!
//! Everything streams in batches of [`BATCH`] messages of one room (or rows of one table): a
//! database is never held in memory, and each batch is one transaction ([`Store::import`] for
//! messages, which stores, skips what the target already holds identically, or refuses, see
//! store/import.rs; `RowDb::apply` for every other table, see store/rows.rs). A room is read
//! up to the newest id it has when its turn comes, so reading while a node still posts to the
//! source gives every room a gapless prefix of its history.
//!
//! The file format, version 2 (version 1 had the message and end lines only, and still
//! imports):
//!
//! ```text
//! {"format":"hubbub-history","version":2}
//! {"account":{"id":1,"name":"alice",...}}
//! ...                                      (sessions, invites, rooms, members, moderation ...)
//! {"room":"lobby","id":1,"ts":1700000000000,"from":"alice","text":"hi"}
//! ...
//! {"reaction":{...}}  {"change":{...}}
//! {"end":{"rooms":2,"messages":1234,"rows":{"account":3,...}}}
//! ```
//!
//! The end line tells a complete export from one cut short: an import of a file without it
//! stores what the file holds and then fails saying so (and prunes nothing).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::rows::{self, Applied, RowDb, RowError, Rows, Table};
use super::{
    ImportConflict, ImportOutcome, PostgresStore, SchemaAtOpen, SqliteStore, Store, StoreError,
    StoredMessage,
};
use crate::config::{Database, Durability};
use crate::protocol::{Attachment, RoomName};

/// Messages per read and per import transaction: large enough that a copy costs few round
/// trips, small enough that a batch of long texts stays a few megabytes.
pub const BATCH: usize = 500;

/// The `format` a header line names.
pub(crate) const FORMAT: &str = "hubbub-history";

/// The format version this hubbub writes: 2 carries every table (typed lines, see
/// store/rows.rs); version 1 files (messages only) still import.
pub(crate) const VERSION: u32 = 2;

/// The oldest version an import reads.
const OLDEST_VERSION: u32 = 1;

/// Longest line an import reads: far above any message a server accepts (a 64 KiB text of
/// escaped control characters is about 400 KiB of JSON), so only a file that is not an export
/// reaches it.
const MAX_LINE_BYTES: u64 = 16 * 1024 * 1024;

/// How long a batch waits on a lock held by a running node before it fails (as
/// `--db-busy-timeout-ms` does for posts).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an export, import or copy stopped. Batches stored before the failure stay stored; running
/// the same import or copy again skips them.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A database could not be opened (unreachable, refused, schema not current ...).
    #[error("could not open the {side} database {database}")]
    Open {
        /// `source` or `target`.
        side: &'static str,
        /// The database as logs may show it (no password).
        database: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The source SQLite file does not exist: copying from it would create an empty one.
    #[error("the source database {0} does not exist")]
    NoSource(String),
    /// Reading from or writing to a database failed, or a batch was refused.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A batch of rows (accounts, members, reactions, changes ...) was refused or failed.
    #[error("{0}")]
    Rows(#[from] RowError),
    /// A line of the input is not what the format allows, or the target refused its message.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number in the input.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The input ended before its end line (an export cut short).
    #[error(
        "the input ends after line {lines} without its end line: the export was cut short; what it \
         held was imported (a gapless prefix of each room); export again and import the new \
         file (messages already imported are skipped)"
    )]
    Truncated {
        /// Lines read.
        lines: u64,
    },
    /// Reading the input failed.
    #[error("reading the input failed: {0}")]
    Read(#[source] std::io::Error),
    /// Writing the output failed.
    #[error("writing the output failed: {0}")]
    Write(#[source] std::io::Error),
}

/// What an import or copy did, for its closing line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Transferred {
    /// Rooms that had messages in the input.
    pub rooms: u64,
    /// Messages stored in the target.
    pub stored: u64,
    /// Messages the target already held, identical, and kept as they were.
    pub skipped: u64,
    /// Other rows (accounts, members, reactions, changes ...) inserted or brought up to date.
    pub rows_written: u64,
    /// Other rows the target already held (identical, or newer by the table's rule).
    pub rows_kept: u64,
    /// Target rows deleted because the source deleted them since an earlier pass (sessions
    /// ended, bans lifted, reactions taken back ...).
    pub rows_removed: u64,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Exported {
    /// Rooms written.
    pub rooms: u64,
    /// Messages written.
    pub messages: u64,
    /// Rows of every other kind written, by record name (version 2).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rows: BTreeMap<String, u64>,
}

/// The first line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
}

/// One message line as written.
#[derive(Debug, Serialize)]
struct MessageLine<'a> {
    room: &'a str,
    id: u64,
    ts: i64,
    from: &'a str,
    text: &'a str,
    /// The posting account's id (issue 19); absent for a guest's message, so an export of a
    /// history without accounts reads as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    author_id: Option<i64>,
    /// The message it answers (issue 20); absent when none, so older exports read the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    /// The attached file (issue 20); absent when none, so older exports read the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    attachment: Option<&'a Attachment>,
}

/// Any line after the header as read: a message (every message field) or the end line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    room: Option<String>,
    id: Option<u64>,
    ts: Option<i64>,
    from: Option<String>,
    text: Option<String>,
    author_id: Option<i64>,
    reply_to: Option<u64>,
    attachment: Option<Attachment>,
    end: Option<Exported>,
}

/// The database `--db` names, or the default SQLite file in `data` (as `serve` uses).
pub(crate) fn database_or_default(db: Option<&Database>, data: &Path) -> Database {
    db.cloned()
        .unwrap_or_else(|| Database::Sqlite(data.join("hubbub.db")))
}

/// The database as logs and errors may show it: the SQLite path, or the URL without password.
pub fn display(db: &Database) -> String {
    match db {
        Database::Sqlite(path) => format!("sqlite://{}", path.display()),
        Database::Postgres(url) => url.redacted(),
    }
}

/// Opens a database to read from. A SQLite file must exist; either database's schema must be
/// current (it is only checked, never migrated: the source may be a serving node's).
pub(crate) async fn open_source(db: &Database) -> Result<Arc<dyn Store>, TransferError> {
    let opened: Result<Arc<dyn Store>, StoreError> = match db {
        Database::Sqlite(path) => {
            if !path.is_file() {
                return Err(TransferError::NoSource(display(db)));
            }
            SqliteStore::open_existing(path, BUSY_TIMEOUT)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>)
        }
        Database::Postgres(url) => PostgresStore::open(
            url,
            BUSY_TIMEOUT,
            Durability::Machine,
            SchemaAtOpen::RequireCurrent,
        )
        .await
        .map(|store| Arc::new(store) as Arc<dyn Store>),
    };
    opened.map_err(|source| TransferError::Open {
        side: "source",
        database: display(db),
        source,
    })
}

/// Opens a database to write to, as `serve` would: a SQLite file is created and migrated, a
/// PostgreSQL schema migrated (under sqlx's advisory lock, so nodes starting meanwhile are safe).
pub(crate) async fn open_target(db: &Database) -> Result<Arc<dyn Store>, TransferError> {
    let opened: Result<Arc<dyn Store>, StoreError> = match db {
        Database::Sqlite(path) => {
            create_parent(path).map_err(|err| TransferError::Open {
                side: "target",
                database: display(db),
                source: StoreError::Unavailable(format!("cannot create its directory: {err}")),
            })?;
            SqliteStore::open(path, BUSY_TIMEOUT, Durability::Machine)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>)
        }
        Database::Postgres(url) => PostgresStore::open(
            url,
            BUSY_TIMEOUT,
            Durability::Machine,
            SchemaAtOpen::Migrate,
        )
        .await
        .map(|store| Arc::new(store) as Arc<dyn Store>),
    };
    opened.map_err(|source| TransferError::Open {
        side: "target",
        database: display(db),
        source,
    })
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent),
        _ => Ok(()),
    }
}

/// Reads a store's history room by room, one batch at a time, each room up to the newest id it
/// had when its turn came.
struct HistoryReader<'a> {
    source: &'a dyn Store,
    rooms: VecDeque<String>,
    /// The room being read, the last id read from it and the newest id to read.
    current: Option<(RoomName, u64, u64)>,
    rooms_read: u64,
}

impl<'a> HistoryReader<'a> {
    async fn new(source: &'a dyn Store) -> Result<Self, StoreError> {
        let rooms = source.rooms().await?.into_iter().map(|r| r.room).collect();
        Ok(Self {
            source,
            rooms,
            current: None,
            rooms_read: 0,
        })
    }

    /// The next batch of one room, oldest first; `None` once every room is read.
    async fn next_batch(&mut self) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        loop {
            if let Some((room, since, newest)) = &mut self.current {
                let limit = BATCH.min((*newest - *since) as usize) as u32;
                let mut batch = if limit == 0 {
                    Vec::new()
                } else {
                    self.source.after(room, *since, limit).await?
                };
                batch.retain(|m| m.id <= *newest);
                if let Some(last) = batch.last() {
                    *since = last.id;
                    return Ok(Some(batch));
                }
                self.current = None;
            }
            let Some(name) = self.rooms.pop_front() else {
                return Ok(None);
            };
            let room = RoomName::parse(&name).map_err(|reason| {
                StoreError::Unavailable(format!("the source holds a room named {name:?}: {reason}"))
            })?;
            let newest = self.source.last_id(&room).await?;
            info!(room = %room, newest, "reading a room up to its newest message");
            self.rooms_read += 1;
            self.current = Some((room, 0, newest));
        }
    }
}

/// Writes `source`'s whole history to `out` in the export format and flushes it.
pub(crate) async fn export(
    source: &dyn Store,
    rows: &RowDb,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<Exported, TransferError> {
    let mut exported = Exported::default();
    let header = Header {
        format: FORMAT.to_owned(),
        version: VERSION,
    };
    write_line(out, &header).await?;
    for table in rows::BEFORE_MESSAGES {
        export_table(rows, table, out, &mut exported).await?;
    }
    let mut reader = HistoryReader::new(source).await?;
    while let Some(batch) = reader.next_batch().await? {
        let mut lines = Vec::with_capacity(batch.len() * 128);
        for message in &batch {
            let line = MessageLine {
                room: message.room.as_str(),
                id: message.id,
                ts: message.ts,
                from: &message.from,
                text: &message.text,
                author_id: message.author.map(|author| author.0),
                reply_to: message.reply_to,
                attachment: message.attachment.as_deref(),
            };
            serde_json::to_writer(&mut lines, &line)
                .map_err(std::io::Error::from)
                .map_err(TransferError::Write)?;
            lines.push(b'\n');
        }
        out.write_all(&lines).await.map_err(TransferError::Write)?;
        exported.messages += batch.len() as u64;
        if let Some(last) = batch.last() {
            debug!(room = %last.room, through = last.id, "exported");
        }
    }
    exported.rooms = reader.rooms_read;
    for table in rows::AFTER_MESSAGES {
        export_table(rows, table, out, &mut exported).await?;
    }
    write_line(out, &serde_json::json!({ "end": exported })).await?;
    out.flush().await.map_err(TransferError::Write)?;
    Ok(exported)
}

/// Writes every row of `table` as `{"<record>":{...}}` lines, a batch at a time.
async fn export_table(
    rows: &RowDb,
    table: &'static Table,
    out: &mut (impl AsyncWrite + Unpin),
    exported: &mut Exported,
) -> Result<(), TransferError> {
    let mut after = None;
    loop {
        let batch = rows
            .read(table, after.as_deref(), BATCH)
            .await
            .map_err(StoreError::from)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = Some(rows::key_of(table, last));
        let mut lines = Vec::with_capacity(batch.len() * 128);
        for row in &batch {
            let line = serde_json::json!({ table.record: rows::to_json(table, row) });
            serde_json::to_writer(&mut lines, &line)
                .map_err(std::io::Error::from)
                .map_err(TransferError::Write)?;
            lines.push(b'\n');
        }
        out.write_all(&lines).await.map_err(TransferError::Write)?;
        *exported.rows.entry(table.record.to_owned()).or_default() += batch.len() as u64;
    }
}

/// Copies every row of `table` from `source` to `target`, one transaction per batch.
async fn copy_table(
    source: &RowDb,
    target: &RowDb,
    table: &'static Table,
    done: &mut Applied,
) -> Result<(), TransferError> {
    let mut after = None;
    loop {
        let batch = source
            .read(table, after.as_deref(), BATCH)
            .await
            .map_err(StoreError::from)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = Some(rows::key_of(table, last));
        let applied = target.apply(table, &batch).await?;
        debug!(
            table = table.name,
            written = applied.written,
            kept = applied.kept,
            "copied rows"
        );
        done.add(applied);
    }
}

async fn write_line(
    out: &mut (impl AsyncWrite + Unpin),
    value: &impl Serialize,
) -> Result<(), TransferError> {
    let mut line = serde_json::to_vec(value)
        .map_err(std::io::Error::from)
        .map_err(TransferError::Write)?;
    line.push(b'\n');
    out.write_all(&line).await.map_err(TransferError::Write)
}

/// Copies `source`'s whole history into `target`, one [`Store::import`] batch at a time.
pub(crate) async fn copy(
    source: &dyn Store,
    target: &dyn Store,
    source_rows: &RowDb,
    target_rows: &RowDb,
) -> Result<Transferred, TransferError> {
    let mut applied = Applied::default();
    target_rows.start_pass().await.map_err(StoreError::from)?;
    for table in rows::BEFORE_MESSAGES {
        copy_table(source_rows, target_rows, table, &mut applied).await?;
    }
    let mut reader = HistoryReader::new(source).await?;
    let mut done = ImportOutcome::default();
    while let Some(batch) = reader.next_batch().await? {
        let outcome = target.import(&batch).await?;
        if let Some(last) = batch.last() {
            debug!(room = %last.room, through = last.id, stored = outcome.stored, skipped = outcome.skipped, "copied");
        }
        done.add(outcome);
    }
    for table in rows::AFTER_MESSAGES {
        copy_table(source_rows, target_rows, table, &mut applied).await?;
    }
    let removed = target_rows.prune().await.map_err(StoreError::from)?;
    Ok(Transferred {
        rooms: reader.rooms_read,
        stored: done.stored,
        skipped: done.skipped,
        rows_written: applied.written,
        rows_kept: applied.kept,
        rows_removed: removed,
    })
}

/// Reads an export from `input` into `target`, one [`Store::import`] batch at a time. Besides
/// what the target refuses, the input itself is checked line by line: the header and its
/// version, every field of every message, each room's ids increasing by one through the file,
/// and the end line's counts.
pub(crate) async fn import(
    input: &mut (impl AsyncBufRead + Unpin),
    target: &dyn Store,
    rows: &RowDb,
) -> Result<Transferred, TransferError> {
    let mut lines = Lines::new(input);
    let version = read_header(&mut lines).await?;
    if version >= 2 {
        // A version 2 file holds every row of the source: once all of it is read, the target's
        // rows it does not hold are pruned (never for a version 1 file, which holds messages
        // only, nor for a file cut short).
        rows.start_pass().await.map_err(StoreError::from)?;
    }
    let mut pending = Pending::default();
    let mut pending_rows = PendingRows::default();
    let mut row_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut applied = Applied::default();
    let mut sequence = Sequence::default();
    let mut done = ImportOutcome::default();
    let end = loop {
        let Some(line) = lines.next().await? else {
            pending.flush(target, &mut done).await?;
            pending_rows.flush(rows, &mut applied).await?;
            return Err(TransferError::Truncated {
                lines: lines.number,
            });
        };
        match parse_record(&line).map_err(|reason| lines.error(reason))? {
            Parsed::End(end) => break end,
            Parsed::Row(table, row) => {
                if version < 2 {
                    return Err(lines.error(format!(
                        "a `{}` line in a version {version} file (only version 2 carries them)",
                        table.record
                    )));
                }
                pending.flush(target, &mut done).await?;
                if pending_rows
                    .table
                    .is_some_and(|held| !std::ptr::eq(held, table))
                {
                    pending_rows.flush(rows, &mut applied).await?;
                }
                pending_rows.table = Some(table);
                pending_rows.rows.push(row);
                pending_rows.lines.push(lines.number);
                *row_counts.entry(table.record.to_owned()).or_default() += 1;
                if pending_rows.rows.len() >= BATCH {
                    pending_rows.flush(rows, &mut applied).await?;
                }
            }
            Parsed::Message(message) => {
                pending_rows.flush(rows, &mut applied).await?;
                sequence
                    .check(&message)
                    .map_err(|reason| lines.error(reason))?;
                pending.push(message, lines.number);
                if pending.messages.len() >= BATCH {
                    pending.flush(target, &mut done).await?;
                }
            }
        }
    };
    pending.flush(target, &mut done).await?;
    pending_rows.flush(rows, &mut applied).await?;
    let read = Exported {
        rooms: sequence.last.len() as u64,
        messages: sequence.messages,
        rows: row_counts,
    };
    if end != read {
        let mut reason = format!(
            "the end line counts {} rooms and {} messages, the file holds {} and {}",
            end.rooms, end.messages, read.rooms, read.messages
        );
        if end.rows != read.rows {
            reason += &format!(
                "; it counts rows {:?}, the file holds {:?}",
                end.rows, read.rows
            );
        }
        return Err(lines.error(reason));
    }
    if lines.next().await?.is_some() {
        return Err(lines.error("nothing may follow the end line".to_owned()));
    }
    let removed = if version >= 2 {
        rows.prune().await.map_err(StoreError::from)?
    } else {
        0
    };
    Ok(Transferred {
        rooms: read.rooms,
        stored: done.stored,
        skipped: done.skipped,
        rows_written: applied.written,
        rows_kept: applied.kept,
        rows_removed: removed,
    })
}

/// Rows of one table read but not yet applied, with their line numbers.
#[derive(Default)]
struct PendingRows {
    table: Option<&'static Table>,
    rows: Rows,
    lines: Vec<u64>,
}

impl PendingRows {
    /// Applies the pending rows in one transaction; a refusal names the line of its row.
    async fn flush(&mut self, target: &RowDb, done: &mut Applied) -> Result<(), TransferError> {
        let Some(of) = self.table else {
            return Ok(());
        };
        if self.rows.is_empty() {
            return Ok(());
        }
        match target.apply(of, &self.rows).await {
            Ok(applied) => {
                done.add(applied);
                self.rows.clear();
                self.lines.clear();
                Ok(())
            }
            Err(RowError::Conflict { table, key, why }) => {
                let line = self
                    .rows
                    .iter()
                    .position(|row| rows::describe_key(of, row) == key)
                    .map_or(self.lines[0], |at| self.lines[at]);
                Err(TransferError::Line {
                    line,
                    reason: format!(
                        "{} (nothing from line {} on was stored)",
                        RowError::Conflict { table, key, why },
                        self.lines[0]
                    ),
                })
            }
            Err(other) => Err(other.into()),
        }
    }
}

async fn read_header(
    lines: &mut Lines<'_, impl AsyncBufRead + Unpin>,
) -> Result<u32, TransferError> {
    let Some(line) = lines.next().await? else {
        return Err(TransferError::Line {
            line: 1,
            reason: format!("the input is empty: expected a {FORMAT} export"),
        });
    };
    let header: Header = serde_json::from_slice(&line).map_err(|err| {
        lines.error(format!(
            "not a {FORMAT} header ({{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}): {err}"
        ))
    })?;
    if header.format != FORMAT {
        return Err(lines.error(format!("the format is {:?}, not {FORMAT:?}", header.format)));
    }
    if !(OLDEST_VERSION..=VERSION).contains(&header.version) {
        return Err(lines.error(format!(
            "unknown format version {}: this hubbub reads versions {OLDEST_VERSION} to {VERSION}",
            header.version
        )));
    }
    Ok(header.version)
}

/// A line after the header, checked.
enum Parsed {
    Message(StoredMessage),
    Row(&'static Table, Vec<rows::Value>),
    End(Exported),
}

/// A version 2 row line, `{"<record>":{...}}`: its table and fields.
fn typed_row(
    value: &serde_json::Value,
) -> Option<(&'static Table, &serde_json::Map<String, serde_json::Value>)> {
    let object = value.as_object().filter(|object| object.len() == 1)?;
    let (record, fields) = object.iter().next()?;
    Some((rows::table_of_record(record)?, fields.as_object()?))
}

fn parse_record(line: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|err| format!("not a valid line: {err}"))?;
    if let Some((table, fields)) = typed_row(&value) {
        return Ok(Parsed::Row(table, rows::from_json(table, fields)?));
    }
    let record: Record =
        serde_json::from_value(value).map_err(|err| format!("not a valid line: {err}"))?;
    let Record {
        room,
        id,
        ts,
        from,
        text,
        author_id,
        reply_to,
        attachment,
        end,
    } = record;
    if let Some(end) = end {
        let message_field = room.is_some() || id.is_some() || ts.is_some() || from.is_some();
        if message_field
            || text.is_some()
            || author_id.is_some()
            || reply_to.is_some()
            || attachment.is_some()
        {
            return Err("the end line has message fields".to_owned());
        }
        return Ok(Parsed::End(end));
    }
    let missing = |field: &str| format!("the message has no `{field}`");
    let room = room.ok_or_else(|| missing("room"))?;
    let room = RoomName::parse(&room).map_err(|reason| format!("room {room:?}: {reason}"))?;
    let id = id.ok_or_else(|| missing("id"))?;
    let from = from.ok_or_else(|| missing("from"))?;
    if from.is_empty() || from.contains('\0') {
        return Err("`from` must be a non-empty name without U+0000".to_owned());
    }
    Ok(Parsed::Message(StoredMessage {
        room,
        id,
        ts: ts.ok_or_else(|| missing("ts"))?,
        from,
        text: text.ok_or_else(|| missing("text"))?,
        author: author_id.map(crate::store::accounts::AccountId),
        reply_to,
        attachment: attachment.map(checked_attachment).transpose()?,
    }))
}

/// An imported attachment, held to the rules a post's is: a hash that can name a file and a
/// name that is no path (its type and size are taken as exported).
fn checked_attachment(attachment: Attachment) -> Result<Box<Attachment>, String> {
    if !crate::protocol::attachment::is_file_hash(&attachment.hash) {
        return Err("`attachment.hash` must be 64 lower-case hex digits".to_owned());
    }
    crate::protocol::attachment::attachment_name(&attachment.name)
        .map_err(|rejection| rejection.message)?;
    Ok(Box::new(attachment))
}

/// Each room's last id in the input so far: every next one must be one more.
#[derive(Default)]
struct Sequence {
    last: HashMap<RoomName, u64>,
    messages: u64,
}

impl Sequence {
    fn check(&mut self, message: &StoredMessage) -> Result<(), String> {
        if message.id == 0 || message.id > i64::MAX as u64 {
            return Err(format!(
                "room {:?}: {} is not a valid id",
                message.room, message.id
            ));
        }
        if let Some(last) = self.last.get_mut(&message.room) {
            if message.id != *last + 1 {
                return Err(format!(
                    "room {:?}: id {} follows {last}: ids must increase by one (out of order or a gap)",
                    message.room, message.id
                ));
            }
            *last = message.id;
        } else {
            self.last.insert(message.room.clone(), message.id);
        }
        self.messages += 1;
        Ok(())
    }
}

/// Messages read but not yet imported, with their line numbers.
#[derive(Default)]
struct Pending {
    messages: Vec<StoredMessage>,
    lines: Vec<u64>,
}

impl Pending {
    fn push(&mut self, message: StoredMessage, line: u64) {
        self.messages.push(message);
        self.lines.push(line);
    }

    /// Imports the pending messages in one transaction; a refusal names the line of the message
    /// it is about.
    async fn flush(
        &mut self,
        target: &dyn Store,
        done: &mut ImportOutcome,
    ) -> Result<(), TransferError> {
        if self.messages.is_empty() {
            return Ok(());
        }
        match target.import(&self.messages).await {
            Ok(outcome) => {
                if let Some(last) = self.messages.last() {
                    debug!(room = %last.room, through = last.id, stored = outcome.stored, skipped = outcome.skipped, "imported");
                }
                done.add(outcome);
                self.messages.clear();
                self.lines.clear();
                Ok(())
            }
            Err(StoreError::Import(conflict)) => Err(TransferError::Line {
                line: self.line_of(&conflict),
                reason: format!(
                    "{conflict} (nothing from line {} on was stored)",
                    self.lines[0]
                ),
            }),
            Err(other) => Err(other.into()),
        }
    }

    fn line_of(&self, conflict: &ImportConflict) -> u64 {
        let (room, id) = conflict.message();
        self.messages
            .iter()
            .position(|m| m.room == room && m.id == id)
            .map_or(self.lines[0], |at| self.lines[at])
    }
}

/// The input's lines, numbered, each bounded by [`MAX_LINE_BYTES`]; blank lines are skipped.
struct Lines<'a, R> {
    input: &'a mut R,
    number: u64,
}

impl<'a, R: AsyncBufRead + Unpin> Lines<'a, R> {
    fn new(input: &'a mut R) -> Self {
        Self { input, number: 0 }
    }

    async fn next(&mut self) -> Result<Option<Vec<u8>>, TransferError> {
        loop {
            let mut line = Vec::new();
            let read = (&mut *self.input)
                .take(MAX_LINE_BYTES + 1)
                .read_until(b'\n', &mut line)
                .await
                .map_err(TransferError::Read)?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            if line.len() as u64 > MAX_LINE_BYTES {
                return Err(self.error(format!("longer than {MAX_LINE_BYTES} bytes")));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                return Ok(Some(line));
            }
        }
    }

    fn error(&self, reason: String) -> TransferError {
        TransferError::Line {
            line: self.number,
            reason,
        }
    }
}

/// `hubbub export`: the history of `db` to stdout; returns the closing line for the log.
pub(crate) async fn export_to_stdout(db: &Database) -> Result<String, TransferError> {
    let source = open_source(db).await?;
    let rows = match open_rows(db, "source").await {
        Ok(rows) => rows,
        Err(err) => {
            source.close().await;
            return Err(err);
        }
    };
    let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
    let exported = export(&*source, &rows, &mut out).await;
    rows.close().await;
    source.close().await;
    let exported = exported?;
    Ok(format!(
        "{}: exported {} messages in {} rooms, and {} other rows",
        display(db),
        exported.messages,
        exported.rooms,
        exported.rows.values().sum::<u64>()
    ))
}

/// `hubbub import`: an export from stdin into `db` (migrated first); returns the closing line.
pub(crate) async fn import_from_stdin(db: &Database) -> Result<String, TransferError> {
    let target = open_target(db).await?;
    let rows = match open_rows(db, "target").await {
        Ok(rows) => rows,
        Err(err) => {
            target.close().await;
            return Err(err);
        }
    };
    let mut input = tokio::io::BufReader::new(tokio::io::stdin());
    let imported = import(&mut input, &*target, &rows).await;
    rows.close().await;
    refresh_statistics(&*target, imported.as_ref().ok()).await;
    target.close().await;
    Ok(format!("{}: {}", display(db), imported?))
}

/// `hubbub copy`: every room of `from` into `to` (migrated first); returns the closing line.
pub(crate) async fn copy_between(from: &Database, to: &Database) -> Result<String, TransferError> {
    let source = open_source(from).await?;
    let target = match open_target(to).await {
        Ok(target) => target,
        Err(err) => {
            source.close().await;
            return Err(err);
        }
    };
    let copied = copy_with_rows(from, to, &*source, &*target).await;
    refresh_statistics(&*target, copied.as_ref().ok()).await;
    source.close().await;
    target.close().await;
    Ok(format!("{} -> {}: {}", display(from), display(to), copied?))
}

/// After a run that stored anything, the target's planner statistics are brought up to date
/// ([`Store::refresh_statistics`]); a failure there is logged, not fatal: the data is stored,
/// and autovacuum analyzes it later.
async fn refresh_statistics(target: &dyn Store, transferred: Option<&Transferred>) {
    if transferred.is_some_and(|done| done.stored > 0)
        && let Err(err) = target.refresh_statistics().await
    {
        warn!(cause = %err, "the target's planner statistics were not refreshed (ANALYZE); autovacuum will");
    }
}

/// [`copy`] with the row connections of both sides opened and closed around it.
async fn copy_with_rows(
    from: &Database,
    to: &Database,
    source: &dyn Store,
    target: &dyn Store,
) -> Result<Transferred, TransferError> {
    let source_rows = open_rows(from, "source").await?;
    let target_rows = match open_rows(to, "target").await {
        Ok(rows) => rows,
        Err(err) => {
            source_rows.close().await;
            return Err(err);
        }
    };
    let copied = copy(source, target, &source_rows, &target_rows).await;
    source_rows.close().await;
    target_rows.close().await;
    copied
}

/// Opens the connection rows are copied through, beside the [`Store`] already opened (and so
/// checked or migrated) on the same database.
async fn open_rows(db: &Database, side: &'static str) -> Result<RowDb, TransferError> {
    RowDb::open(db, side == "source", BUSY_TIMEOUT)
        .await
        .map_err(|err| TransferError::Open {
            side,
            database: display(db),
            source: StoreError::from(err),
        })
}

impl std::fmt::Display for Transferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stored {} messages in {} rooms ({} already there, skipped); {} other rows written \
             ({} already there, kept; {} the source no longer has, removed)",
            self.stored,
            self.rooms,
            self.skipped,
            self.rows_written,
            self.rows_kept,
            self.rows_removed
        )
    }
}
