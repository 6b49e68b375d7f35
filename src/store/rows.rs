//! Every table a node serves from besides the message history itself (accounts, sessions,
//! invites, rooms' settings, members, read markers, moderation, the audit log, reactions, the
//! change feed, and the edit/tombstone state of messages), moved row by row with keys unchanged
//! by `hubbub copy`, `export` and `import` (store/copy.rs drives it; docs/deploy.md has the
//! rules). Messages themselves keep their own path (store/import.rs), which allocates ids.
//!
//! A table is described once ([`Table`]) and read and written through plain SQL on either
//! database, so SQLite and PostgreSQL apply the same rule to the same row. Rows are read in key
//! order, [`BATCH`](super::copy::BATCH) at a time, and each batch is applied in one transaction:
//! a row the target lacks is inserted, an identical one skipped, and a different one either
//! refused ([`Rule::Immutable`], or a row whose identity columns differ: another row under the
//! same key) or brought up to the source's state ([`Rule::SourceWins`], [`Rule::NewerWins`]).
//!
//! Derived data is not carried: the search index (SQLite's FTS5 rows, PostgreSQL's generated
//! column) follows the target's own triggers, and `directory_changes` (the CLI's notice to
//! running nodes, kept a day) starts empty on a target no node serves yet.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::{Map, Value as Json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{PgPool, Row, SqlitePool};

use crate::config::Database;

/// The type of a column, as both databases store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A 64-bit integer, NOT NULL.
    Int,
    /// A 64-bit integer or NULL.
    OptInt,
    /// A 32-bit integer, NOT NULL (INTEGER in PostgreSQL).
    Int32,
    /// Text, NOT NULL.
    Text,
    /// Text or NULL.
    OptText,
    /// A flag: INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL.
    Bool,
    /// Bytes (a token or code hash): BLOB / BYTEA, hex in a file.
    Bytes,
    /// A message body: TEXT in SQLite, BYTEA of UTF-8 in PostgreSQL (which may hold U+0000).
    Body,
}

/// One column's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Value {
    /// SQL NULL.
    Null,
    /// Any integer column.
    Int(i64),
    /// Text, and a message body.
    Text(String),
    /// A flag.
    Bool(bool),
    /// A hash.
    Bytes(Vec<u8>),
}

/// One row, its values in [`Table::columns`] order.
pub(crate) type Rows = Vec<Vec<Value>>;

/// What happens to a row the target holds under the same key with other values (once the
/// identity columns matched).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rule {
    /// Never changes once written (the audit log, the change feed, reactions): refused.
    Immutable,
    /// Changes in place on the source (a password, a role, a ban's end, a topic): the target
    /// takes the source's values, which is what a second pass is for.
    SourceWins,
    /// Moves forward only (a read marker, a session's last use, a message's edit or deletion):
    /// the target takes the source's values when the largest of these columns is larger there,
    /// and keeps its own otherwise.
    NewerWins(&'static [&'static str]),
}

/// A table as copied.
#[derive(Debug)]
pub(crate) struct Table {
    /// The table in both schemas.
    pub name: &'static str,
    /// The record's key in an export line (`{"<record>":{...}}`).
    pub record: &'static str,
    /// Every column carried; the first `key` are the primary key.
    pub columns: &'static [(&'static str, Kind)],
    /// How many leading columns make the key.
    pub key: usize,
    /// Non-key columns that say which row this is: a difference there is another row under the
    /// same key, refused whatever the rule.
    pub identity: &'static [&'static str],
    /// What a difference in the other columns does.
    pub rule: Rule,
    /// Only rows the target already holds are updated; others are left to another path
    /// (messages are stored by store/import.rs).
    pub update_only: bool,
    /// Source rows read (SQL condition), `None` for all.
    pub filter: Option<&'static str>,
    /// The PostgreSQL identity column whose sequence must continue past copied ids.
    pub pg_identity: Option<&'static str>,
    /// The source deletes rows of this table (a session ended, a ban lifted, a reaction taken
    /// back ...): after a complete pass, target rows the source no longer has are deleted.
    pub prune: bool,
}

use Kind::*;

const ACCOUNTS: Table = Table {
    name: "accounts",
    record: "account",
    columns: &[
        ("id", Int),
        ("name", Text),
        ("name_key", Text),
        ("password_hash", OptText),
        ("admin", Bool),
        ("disabled", Bool),
        ("created_ms", Int),
    ],
    key: 1,
    identity: &["name_key", "created_ms"],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: Some("id"),
    prune: false,
};

const SESSIONS: Table = Table {
    name: "sessions",
    record: "session",
    columns: &[
        ("token_hash", Bytes),
        ("account_id", Int),
        ("csrf", Text),
        ("created_ms", Int),
        ("last_seen_ms", Int),
        ("expires_ms", Int),
    ],
    key: 1,
    identity: &["account_id", "csrf", "created_ms"],
    rule: Rule::NewerWins(&["last_seen_ms", "expires_ms"]),
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const INVITES: Table = Table {
    name: "invites",
    record: "invite",
    columns: &[
        ("code_hash", Bytes),
        ("created_by", OptInt),
        ("room", OptText),
        ("expires_ms", Int),
        ("uses_left", Int),
    ],
    key: 1,
    identity: &["created_by", "room", "expires_ms"],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const ROOM_SETTINGS: Table = Table {
    name: "room_settings",
    record: "room_settings",
    columns: &[
        ("name", Text),
        ("kind", Text),
        ("title", OptText),
        ("topic", OptText),
        ("created_by", OptInt),
        ("created_ms", Int),
    ],
    key: 1,
    identity: &["created_ms"],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: false,
};

const ROOM_MEMBERS: Table = Table {
    name: "room_members",
    record: "member",
    columns: &[
        ("room", Text),
        ("account_id", Int),
        ("role", Text),
        ("added_ms", Int),
    ],
    key: 2,
    identity: &[],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const READ_MARKERS: Table = Table {
    name: "read_markers",
    record: "read_marker",
    columns: &[
        ("account_id", Int),
        ("room", Text),
        ("last_read", Int),
        ("updated_ms", Int),
    ],
    key: 2,
    identity: &[],
    rule: Rule::NewerWins(&["last_read"]),
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: false,
};

const BANS: Table = Table {
    name: "bans",
    record: "ban",
    columns: &[
        ("room", Text),
        ("account_id", Int),
        ("until_ms", OptInt),
        ("by_account", OptInt),
        ("created_ms", Int),
    ],
    key: 2,
    identity: &[],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const MUTES: Table = Table {
    name: "mutes",
    record: "mute",
    ..BANS
};

const SLOW_MODE: Table = Table {
    name: "slow_mode",
    record: "slow_mode",
    columns: &[("room", Text), ("seconds", Int32)],
    key: 1,
    identity: &[],
    rule: Rule::SourceWins,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const AUDIT: Table = Table {
    name: "audit",
    record: "audit",
    columns: &[
        ("id", Int),
        ("ts_ms", Int),
        ("actor", Text),
        ("action", Text),
        ("room", OptText),
        ("target", OptText),
        ("detail", OptText),
    ],
    key: 1,
    identity: &[],
    rule: Rule::Immutable,
    update_only: false,
    filter: None,
    pg_identity: Some("id"),
    prune: false,
};

/// The edit mark, tombstone and current text of messages that were edited or deleted: applied
/// to messages the target holds (before the messages, so a message edited since an earlier
/// pass compares identical; and after them, to mark the ones just stored).
pub(crate) const MESSAGE_STATE: Table = Table {
    name: "messages",
    record: "message_state",
    columns: &[
        ("room", Text),
        ("id", Int),
        ("ts", Int),
        ("sender", Text),
        ("body", Body),
        ("attachment", OptText),
        ("edited_ms", OptInt),
        ("deleted_ms", OptInt),
    ],
    key: 2,
    identity: &["ts", "sender"],
    rule: Rule::NewerWins(&["edited_ms", "deleted_ms"]),
    update_only: true,
    filter: Some("edited_ms IS NOT NULL OR deleted_ms IS NOT NULL"),
    pg_identity: None,
    prune: false,
};

const REACTIONS: Table = Table {
    name: "reactions",
    record: "reaction",
    columns: &[
        ("room", Text),
        ("message_id", Int),
        ("emoji", Text),
        ("account_id", Int),
        ("name", Text),
        ("created_ms", Int),
        ("ord", Int),
    ],
    key: 4,
    identity: &[],
    rule: Rule::Immutable,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: true,
};

const MESSAGE_CHANGES: Table = Table {
    name: "message_changes",
    record: "change",
    columns: &[
        ("room", Text),
        ("seq", Int),
        ("message_id", Int),
        ("kind", Text),
        ("payload", Text),
        ("ts_ms", Int),
    ],
    key: 2,
    identity: &[],
    rule: Rule::Immutable,
    update_only: false,
    filter: None,
    pg_identity: None,
    prune: false,
};

/// The tables carried before the messages, in an order that satisfies every foreign key
/// (accounts first), ending with the message state that lets held messages compare identical.
pub(crate) const BEFORE_MESSAGES: [&Table; 11] = [
    &ACCOUNTS,
    &SESSIONS,
    &INVITES,
    &ROOM_SETTINGS,
    &ROOM_MEMBERS,
    &READ_MARKERS,
    &BANS,
    &MUTES,
    &SLOW_MODE,
    &AUDIT,
    &MESSAGE_STATE,
];

/// The tables carried after the messages (their rows name messages).
pub(crate) const AFTER_MESSAGES: [&Table; 3] = [&MESSAGE_STATE, &REACTIONS, &MESSAGE_CHANGES];

/// The tables whose rows the source deletes, pruned from the target after a complete pass.
pub(crate) fn pruned() -> impl Iterator<Item = &'static Table> {
    BEFORE_MESSAGES
        .iter()
        .chain(AFTER_MESSAGES.iter())
        .copied()
        .filter(|table| table.prune)
}

/// The table an export record names.
pub(crate) fn table_of_record(record: &str) -> Option<&'static Table> {
    BEFORE_MESSAGES
        .iter()
        .chain(AFTER_MESSAGES.iter())
        .copied()
        .find(|table| table.record == record)
}

/// Why a batch of rows was not applied.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// The target holds another row under the key, or a different row a rule cannot reconcile.
    #[error("{table} {key}: {why}; a copy never overwrites it")]
    Conflict {
        /// The table.
        table: &'static str,
        /// The row's key, as `col=value` pairs.
        key: String,
        /// What differs.
        why: String,
    },
    /// The database failed.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    /// Rows inserted or brought up to the source's state.
    pub written: u64,
    /// Rows the target held identically, or newer (read markers...), or lacked (update-only).
    pub kept: u64,
}

impl Applied {
    pub(crate) fn add(&mut self, other: Applied) {
        self.written += other.written;
        self.kept += other.kept;
    }
}

/// A database opened for row copies: one connection of its own beside the [`super::Store`].
#[derive(Debug, Clone)]
pub(crate) enum RowDb {
    /// A SQLite file.
    Sqlite(SqlitePool),
    /// A PostgreSQL schema.
    Postgres(PgPool),
}

impl RowDb {
    /// Opens `db`, whose schema the caller has already checked or migrated; `read_only` for a
    /// source (a SQLite file is then never written).
    pub(crate) async fn open(
        db: &Database,
        read_only: bool,
        busy: std::time::Duration,
    ) -> Result<Self, sqlx::Error> {
        Ok(match db {
            Database::Sqlite(path) => {
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(busy)
                    .read_only(read_only);
                // One connection, kept for the whole run: the keys a pass has seen live in a
                // temporary table of this connection (see [`RowDb::start_pass`]).
                RowDb::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .connect_with(options)
                        .await?,
                )
            }
            Database::Postgres(url) => {
                let options = PgConnectOptions::from_str(url.expose())?;
                RowDb::Postgres(
                    PgPoolOptions::new()
                        .max_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .connect_with(options)
                        .await?,
                )
            }
        })
    }

    /// Closes the connection.
    pub(crate) async fn close(&self) {
        match self {
            RowDb::Sqlite(pool) => pool.close().await,
            RowDb::Postgres(pool) => pool.close().await,
        }
    }

    fn placeholder(&self, n: usize) -> String {
        match self {
            RowDb::Sqlite(_) => "?".to_owned(),
            RowDb::Postgres(_) => format!("${n}"),
        }
    }

    /// The next `limit` rows of `table` after key `after` (from the start for `None`), in key
    /// order.
    pub(crate) async fn read(
        &self,
        table: &Table,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<Rows, sqlx::Error> {
        let columns = column_list(table);
        let keys = key_list(table);
        let mut conditions = Vec::new();
        if let Some(filter) = table.filter {
            conditions.push(format!("({filter})"));
        }
        if after.is_some() {
            let marks: Vec<String> = (1..=table.key).map(|n| self.placeholder(n)).collect();
            conditions.push(format!("({keys}) > ({})", marks.join(", ")));
        }
        let mut sql = format!("SELECT {columns} FROM {}", table.name);
        if !conditions.is_empty() {
            let _ = write!(sql, " WHERE {}", conditions.join(" AND "));
        }
        let _ = write!(sql, " ORDER BY {keys} LIMIT {limit}");
        let key_values = after.unwrap_or_default();
        match self {
            RowDb::Sqlite(pool) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (value, (_, kind)) in key_values.iter().zip(table.columns) {
                    query = bind_sqlite(query, value, *kind);
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter().map(|row| sqlite_row(table, row)).collect()
            }
            RowDb::Postgres(pool) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (value, (_, kind)) in key_values.iter().zip(table.columns) {
                    query = bind_pg(query, value, *kind);
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter().map(|row| pg_row(table, row)).collect()
            }
        }
    }

    /// Applies `rows` of `table` in one transaction (see the module's rule): one query reads
    /// what the target holds under the batch's keys, one inserts the rows it lacks, and each
    /// row brought up to date is one update (rare: rows changed in place between passes).
    pub(crate) async fn apply(&self, table: &Table, rows: &Rows) -> Result<Applied, RowError> {
        if rows.is_empty() {
            return Ok(Applied::default());
        }
        let mut tx = match self {
            RowDb::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            RowDb::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        };
        let keys: Vec<&[Value]> = rows.iter().map(|row| &row[..table.key]).collect();
        if table.prune {
            tx.execute(
                self.insert_rows(&seen_table(table), key_list(table), table.key, keys.len()),
                table,
                keys.iter().flat_map(|key| key.iter().enumerate()),
            )
            .await?;
        }
        let held: HashMap<Vec<Value>, Vec<Value>> = tx
            .fetch(
                self.select_by_keys(table, keys.len()),
                table,
                keys.iter().flat_map(|key| key.iter().enumerate()),
            )
            .await?
            .into_iter()
            .map(|row| (row[..table.key].to_vec(), row))
            .collect();
        let mut applied = Applied::default();
        let mut fresh: Vec<&Vec<Value>> = Vec::new();
        let update = self.update(table);
        for row in rows {
            match decide(table, row, held.get(&row[..table.key]).map(Vec::as_slice))? {
                Decision::Keep => applied.kept += 1,
                Decision::Insert => fresh.push(row),
                Decision::Update => {
                    let order = write_order(table, true);
                    tx.execute(update.clone(), table, order.iter().map(|&i| (i, &row[i])))
                        .await?;
                    applied.written += 1;
                }
            }
        }
        if !fresh.is_empty() {
            let overriding = match (self, table.pg_identity) {
                (RowDb::Postgres(_), Some(_)) => " OVERRIDING SYSTEM VALUE",
                _ => "",
            };
            let sql = self
                .insert_rows(
                    table.name,
                    column_list(table),
                    table.columns.len(),
                    fresh.len(),
                )
                .replacen(" VALUES ", &format!("{overriding} VALUES "), 1);
            tx.execute(
                sql,
                table,
                fresh.iter().flat_map(|row| row.iter().enumerate()),
            )
            .await?;
            applied.written += fresh.len() as u64;
        }
        if let (Tx::Postgres(_), Some(column)) = (&tx, table.pg_identity) {
            // Explicit ids do not move an identity's sequence: set it past the largest, so
            // the next sign-up (or audit row) on the target takes the next id.
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{name}', '{column}'), \
                 GREATEST((SELECT MAX({column}) FROM {name}), 1))",
                name = table.name
            );
            tx.execute(sql, table, std::iter::empty()).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// `(?, ?), (?, ?), ...`: `count` tuples of `width` placeholders, numbered on through them.
    fn placeholder_tuples(&self, count: usize, width: usize) -> String {
        let mut n = 0;
        let tuples: Vec<String> = (0..count)
            .map(|_| {
                let marks: Vec<String> = (0..width)
                    .map(|_| {
                        n += 1;
                        self.placeholder(n)
                    })
                    .collect();
                format!("({})", marks.join(", "))
            })
            .collect();
        tuples.join(", ")
    }

    /// `INSERT INTO {into} ({columns}) VALUES (...), ...` for `rows` rows of `width` values.
    fn insert_rows(&self, into: &str, columns: String, width: usize, rows: usize) -> String {
        let values = self.placeholder_tuples(rows, width);
        format!("INSERT INTO {into} ({columns}) VALUES {values}")
    }

    /// The rows of `table` under any of `count` keys (bound key after key).
    fn select_by_keys(&self, table: &Table, count: usize) -> String {
        format!(
            "SELECT {} FROM {} WHERE ({}) IN (VALUES {})",
            column_list(table),
            table.name,
            key_list(table),
            self.placeholder_tuples(count, table.key)
        )
    }

    /// Starts a pass that may prune: an empty temporary table per pruned table, on this
    /// connection, to hold the keys the pass brings (as the table's own key columns, so types
    /// and collations match).
    pub(crate) async fn start_pass(&self) -> Result<(), sqlx::Error> {
        for table in pruned() {
            let drop = format!("DROP TABLE IF EXISTS {}", seen_table(table));
            let create = format!(
                "CREATE TEMP TABLE {} AS SELECT {} FROM {} LIMIT 0",
                seen_table(table),
                key_list(table),
                table.name
            );
            self.execute(drop).await?;
            self.execute(create).await?;
        }
        Ok(())
    }

    /// Ends a complete pass: deletes the target rows of every pruned table whose key the pass
    /// did not bring (the source deleted them since an earlier pass), one transaction per table.
    pub(crate) async fn prune(&self) -> Result<u64, sqlx::Error> {
        let mut removed = 0;
        for table in pruned() {
            let matches: Vec<String> = table.columns[..table.key]
                .iter()
                .map(|(name, _)| format!("s.{name} = t.{name}"))
                .collect();
            let sql = format!(
                "DELETE FROM {name} AS t WHERE NOT EXISTS (SELECT 1 FROM {seen} AS s WHERE {on})",
                name = table.name,
                seen = seen_table(table),
                on = matches.join(" AND ")
            );
            let gone = self.execute(sql).await?;
            if gone > 0 {
                tracing::info!(
                    table = table.name,
                    removed = gone,
                    "removed rows the source no longer has"
                );
            }
            removed += gone;
        }
        Ok(removed)
    }

    async fn execute(&self, sql: String) -> Result<u64, sqlx::Error> {
        Ok(match self {
            RowDb::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await?
                .rows_affected(),
            RowDb::Postgres(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(pool)
                .await?
                .rows_affected(),
        })
    }

    /// An UPDATE of the non-key columns, binding them first and then the key.
    fn update(&self, table: &Table) -> String {
        let mut n = 0;
        let sets: Vec<String> = table.columns[table.key..]
            .iter()
            .map(|(name, _)| {
                n += 1;
                format!("{name} = {}", self.placeholder(n))
            })
            .collect();
        let condition: Vec<String> = table.columns[..table.key]
            .iter()
            .map(|(name, _)| {
                n += 1;
                format!("{name} = {}", self.placeholder(n))
            })
            .collect();
        format!(
            "UPDATE {} SET {} WHERE {}",
            table.name,
            sets.join(", "),
            condition.join(" AND ")
        )
    }
}

/// A transaction on either database, so the rule is written once.
enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    /// Runs `sql` with `values` bound in order (each with its column index in `table`, for its
    /// type); returns the rows it changed.
    async fn execute<'v>(
        &mut self,
        sql: String,
        table: &Table,
        values: impl Iterator<Item = (usize, &'v Value)>,
    ) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (index, value) in values {
                    query = bind_sqlite(query, value, table.columns[index].1);
                }
                query.execute(&mut **tx).await?.rows_affected()
            }
            Tx::Postgres(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (index, value) in values {
                    query = bind_pg(query, value, table.columns[index].1);
                }
                query.execute(&mut **tx).await?.rows_affected()
            }
        })
    }

    /// Runs `sql`, which selects every column of `table`, with `values` bound in order.
    async fn fetch<'v>(
        &mut self,
        sql: String,
        table: &Table,
        values: impl Iterator<Item = (usize, &'v Value)>,
    ) -> Result<Rows, sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (index, value) in values {
                    query = bind_sqlite(query, value, table.columns[index].1);
                }
                let rows = query.fetch_all(&mut **tx).await?;
                rows.iter().map(|row| sqlite_row(table, row)).collect()
            }
            Tx::Postgres(tx) => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (index, value) in values {
                    query = bind_pg(query, value, table.columns[index].1);
                }
                let rows = query.fetch_all(&mut **tx).await?;
                rows.iter().map(|row| pg_row(table, row)).collect()
            }
        }
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }
}

/// Column indexes in bind order: all in order for an insert, non-key then key for an update.
fn write_order(table: &Table, update: bool) -> Vec<usize> {
    let all = 0..table.columns.len();
    if update {
        (table.key..table.columns.len())
            .chain(0..table.key)
            .collect()
    } else {
        all.collect()
    }
}

fn seen_table(table: &Table) -> String {
    format!("hubbub_copy_seen_{}", table.name)
}

fn column_list(table: &Table) -> String {
    let names: Vec<&str> = table.columns.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

fn key_list(table: &Table) -> String {
    let names: Vec<&str> = table.columns[..table.key]
        .iter()
        .map(|(name, _)| *name)
        .collect();
    names.join(", ")
}

enum Decision {
    Insert,
    Update,
    Keep,
}

/// The rule: what to do with `row` when the target holds `held` under its key.
fn decide(table: &Table, row: &[Value], held: Option<&[Value]>) -> Result<Decision, RowError> {
    let Some(held) = held else {
        return Ok(if table.update_only {
            Decision::Keep
        } else {
            Decision::Insert
        });
    };
    if held == row {
        return Ok(Decision::Keep);
    }
    let conflict = |why: String| RowError::Conflict {
        table: table.name,
        key: describe_key(table, row),
        why,
    };
    for name in table.identity {
        let index = column_index(table, name);
        if held[index] != row[index] {
            return Err(conflict(format!(
                "the target holds another row under this key ({name} is {} there, {} in the \
                 source)",
                show(&held[index]),
                show(&row[index])
            )));
        }
    }
    match table.rule {
        Rule::Immutable => Err(conflict(
            "the target holds it with different values".to_owned(),
        )),
        Rule::SourceWins => Ok(Decision::Update),
        Rule::NewerWins(columns) => {
            if stamp(table, columns, row) > stamp(table, columns, held) {
                Ok(Decision::Update)
            } else {
                Ok(Decision::Keep)
            }
        }
    }
}

/// The largest of `columns` in `row` (NULL counts as never).
fn stamp(table: &Table, columns: &[&str], row: &[Value]) -> i64 {
    columns
        .iter()
        .map(|name| match &row[column_index(table, name)] {
            Value::Int(value) => *value,
            _ => i64::MIN,
        })
        .max()
        .unwrap_or(i64::MIN)
}

fn column_index(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|(column, _)| *column == name)
        .unwrap_or_else(|| panic!("{} has no column {name}", table.name))
}

/// The key of `row` as `col=value` pairs, for errors.
pub(crate) fn describe_key(table: &Table, row: &[Value]) -> String {
    let pairs: Vec<String> = table.columns[..table.key]
        .iter()
        .zip(row)
        .map(|((name, _), value)| format!("{name}={}", show(value)))
        .collect();
    pairs.join(" ")
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_owned(),
        Value::Int(v) => v.to_string(),
        Value::Text(v) => format!("{v:?}"),
        Value::Bool(v) => v.to_string(),
        // Hashes of secrets: enough to tell rows apart, not the whole hash.
        Value::Bytes(v) => format!("{}…", hex(&v[..v.len().min(4)])),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_sqlite<'q>(query: SqliteQuery<'q>, value: &Value, kind: Kind) -> SqliteQuery<'q> {
    match value {
        Value::Null => match kind {
            Bytes => query.bind(None::<Vec<u8>>),
            Text | OptText | Body => query.bind(None::<String>),
            _ => query.bind(None::<i64>),
        },
        Value::Int(v) => query.bind(*v),
        Value::Text(v) => query.bind(v.clone()),
        Value::Bool(v) => query.bind(i64::from(*v)),
        Value::Bytes(v) => query.bind(v.clone()),
    }
}

fn bind_pg<'q>(query: PgQuery<'q>, value: &Value, kind: Kind) -> PgQuery<'q> {
    match (value, kind) {
        (Value::Null, Bytes | Body) => query.bind(None::<Vec<u8>>),
        (Value::Null, Text | OptText) => query.bind(None::<String>),
        (Value::Null, Bool) => query.bind(None::<bool>),
        (Value::Null, _) => query.bind(None::<i64>),
        (Value::Text(v), Body) => query.bind(v.clone().into_bytes()),
        (Value::Int(v), Int32) => query.bind(i32::try_from(*v).unwrap_or(i32::MAX)),
        (Value::Int(v), _) => query.bind(*v),
        (Value::Text(v), _) => query.bind(v.clone()),
        (Value::Bool(v), _) => query.bind(*v),
        (Value::Bytes(v), _) => query.bind(v.clone()),
    }
}

fn sqlite_row(table: &Table, row: &SqliteRow) -> Result<Vec<Value>, sqlx::Error> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Int | OptInt | Int32 => row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Int),
                Text | OptText | Body => row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text),
                Bool => Value::Bool(row.try_get::<i64, _>(i)? != 0),
                Bytes => row
                    .try_get::<Option<Vec<u8>>, _>(i)?
                    .map_or(Value::Null, Value::Bytes),
            })
        })
        .collect()
}

fn pg_row(table: &Table, row: &PgRow) -> Result<Vec<Value>, sqlx::Error> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            Ok(match kind {
                Int | OptInt => row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Int),
                Int32 => Value::Int(i64::from(row.try_get::<i32, _>(i)?)),
                Text | OptText => row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text),
                Body => {
                    let bytes: Vec<u8> = row.try_get(i)?;
                    Value::Text(String::from_utf8(bytes).map_err(|err| {
                        sqlx::Error::ColumnDecode {
                            index: (*name).to_owned(),
                            source: Box::new(err),
                        }
                    })?)
                }
                Bool => Value::Bool(row.try_get::<bool, _>(i)?),
                Bytes => row
                    .try_get::<Option<Vec<u8>>, _>(i)?
                    .map_or(Value::Null, Value::Bytes),
            })
        })
        .collect()
}

/// `row` as the object of an export line: column names to JSON values, bytes as hex.
pub(crate) fn to_json(table: &Table, row: &[Value]) -> Json {
    let mut object = Map::new();
    for ((name, _), value) in table.columns.iter().zip(row) {
        let json = match value {
            Value::Null => Json::Null,
            Value::Int(v) => Json::from(*v),
            Value::Text(v) => Json::from(v.as_str()),
            Value::Bool(v) => Json::from(*v),
            Value::Bytes(v) => Json::from(hex(v)),
        };
        object.insert((*name).to_owned(), json);
    }
    Json::Object(object)
}

/// An export line's object read back as a row of `table`: every column present with its type,
/// nothing else.
pub(crate) fn from_json(table: &Table, object: &Map<String, Json>) -> Result<Vec<Value>, String> {
    if let Some(unknown) = object
        .keys()
        .find(|key| !table.columns.iter().any(|(name, _)| name == key))
    {
        return Err(format!("{} has no column `{unknown}`", table.record));
    }
    table
        .columns
        .iter()
        .map(|(name, kind)| {
            let json = object
                .get(*name)
                .ok_or_else(|| format!("the {} has no `{name}`", table.record))?;
            let wrong = || format!("`{}.{name}` is not a {kind:?}", table.record);
            Ok(match (kind, json) {
                (OptInt | OptText, Json::Null) => Value::Null,
                (Int32, Json::Number(n)) => Value::Int(
                    n.as_i64()
                        .filter(|v| i32::try_from(*v).is_ok())
                        .ok_or_else(wrong)?,
                ),
                (Int | OptInt, Json::Number(n)) => Value::Int(n.as_i64().ok_or_else(wrong)?),
                (Text | OptText | Body, Json::String(s)) => Value::Text(s.clone()),
                (Bool, Json::Bool(b)) => Value::Bool(*b),
                (Bytes, Json::String(s)) => Value::Bytes(unhex(s).ok_or_else(wrong)?),
                _ => return Err(wrong()),
            })
        })
        .collect()
}

/// The key of `row` (its first `table.key` values), to read on after it.
pub(crate) fn key_of(table: &Table, row: &[Value]) -> Vec<Value> {
    row[..table.key].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_survives_its_export_line() {
        let row = vec![
            Value::Bytes(vec![0, 1, 0xfe]),
            Value::Int(3),
            Value::Text("csrf".to_owned()),
            Value::Int(1),
            Value::Int(2),
            Value::Int(9),
        ];
        let Json::Object(object) = to_json(&SESSIONS, &row) else {
            panic!("not an object");
        };
        assert_eq!(from_json(&SESSIONS, &object), Ok(row));
    }

    #[test]
    fn a_read_marker_that_moved_on_in_the_target_is_kept() {
        let held = [
            Value::Int(1),
            Value::Text("r".into()),
            Value::Int(9),
            Value::Int(5),
        ];
        let source = [
            Value::Int(1),
            Value::Text("r".into()),
            Value::Int(4),
            Value::Int(6),
        ];
        assert!(matches!(
            decide(&READ_MARKERS, &source, Some(&held)),
            Ok(Decision::Keep)
        ));
        assert!(matches!(
            decide(&READ_MARKERS, &held, Some(&source)),
            Ok(Decision::Update)
        ));
    }

    #[test]
    fn another_account_under_the_same_id_is_refused() {
        let mine = [
            Value::Int(1),
            Value::Text("Ann".into()),
            Value::Text("ann".into()),
            Value::Null,
            Value::Bool(false),
            Value::Bool(false),
            Value::Int(5),
        ];
        let mut theirs = mine.clone();
        theirs[2] = Value::Text("bob".into());
        assert!(matches!(
            decide(&ACCOUNTS, &theirs, Some(&mine)),
            Err(RowError::Conflict { .. })
        ));
        let mut new_password = mine.clone();
        new_password[3] = Value::Text("$argon2id$...".into());
        assert!(matches!(
            decide(&ACCOUNTS, &new_password, Some(&mine)),
            Ok(Decision::Update)
        ));
    }

    #[test]
    fn a_different_change_row_is_refused() {
        let held = [
            Value::Text("r".into()),
            Value::Int(1),
            Value::Int(1),
            Value::Text("edit".into()),
            Value::Text("{}".into()),
            Value::Int(5),
        ];
        let mut other = held.clone();
        other[4] = Value::Text("{\"x\":1}".into());
        assert!(matches!(
            decide(&MESSAGE_CHANGES, &other, Some(&held)),
            Err(RowError::Conflict { .. })
        ));
    }
}
