//! [`ModerationStore`] on SQLite. Every change runs on the store's one writer connection in a
//! transaction of its own (`BEGIN IMMEDIATE` ... `COMMIT`, cleaned up after a failure as a
//! commit's are) together with its audit row; reads use the read pool.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{SqliteStore, explain};
use crate::store::StoreError;
use crate::store::StoredMessage;
use crate::store::accounts::AccountId;
use crate::store::moderation::{
    AuditEntry, AuditQuery, AuditRecord, Deletion, ModerationStore, Restricted, Restriction,
    RoomModeration, now_ms,
};

/// Runs `$body` (which may use `?` on sqlx errors) with `$conn`, the writer connection, inside
/// one `BEGIN IMMEDIATE` ... `COMMIT`, cleaned up like a commit's transaction when it fails.
macro_rules! in_transaction {
    ($store:expr, $conn:ident => $body:expr) => {{
        let mut writer = $store.writer.lock().await;
        $store.check_files(&mut writer).await?;
        writer.start().await;
        let outcome: Result<_, sqlx::Error> = match writer.conn.as_mut() {
            Some($conn) => {
                async {
                    sqlx::raw_sql("BEGIN IMMEDIATE")
                        .execute(&mut *$conn)
                        .await?;
                    let value = $body;
                    sqlx::raw_sql("COMMIT").execute(&mut *$conn).await?;
                    Ok(value)
                }
                .await
            }
            None => Err(sqlx::Error::PoolClosed),
        };
        writer.finish(outcome.is_ok()).await;
        outcome.map_err(explain)
    }};
}

/// Appends one audit row at `ts_ms`; returns its id.
pub(super) async fn insert_audit(
    conn: &mut SqliteConnection,
    audit: &AuditRecord,
    ts_ms: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit (ts_ms, actor, action, room, target, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
    )
    .bind(ts_ms)
    .bind(&audit.actor)
    .bind(&audit.action)
    .bind(&audit.room)
    .bind(&audit.target)
    .bind(&audit.detail)
    .fetch_one(&mut *conn)
    .await
}

fn restricted_from(row: &SqliteRow) -> Result<Restricted, sqlx::Error> {
    Ok(Restricted {
        account: AccountId(row.try_get("account_id")?),
        until_ms: row.try_get("until_ms")?,
        by: row.try_get::<Option<i64>, _>("by_account")?.map(AccountId),
        created_ms: row.try_get("created_ms")?,
    })
}

fn audit_from(row: &SqliteRow) -> Result<AuditEntry, sqlx::Error> {
    Ok(AuditEntry {
        id: row.try_get("id")?,
        ts_ms: row.try_get("ts_ms")?,
        record: AuditRecord {
            actor: row.try_get("actor")?,
            action: row.try_get("action")?,
            room: row.try_get("room")?,
            target: row.try_get("target")?,
            detail: row.try_get("detail")?,
        },
    })
}

impl SqliteStore {
    /// The room's restrictions of one kind in force at `now`.
    async fn restrictions(
        &self,
        kind: Restriction,
        room: &str,
        now: i64,
    ) -> Result<Vec<Restricted>, sqlx::Error> {
        let sql = format!(
            "SELECT account_id, until_ms, by_account, created_ms FROM {} \
             WHERE room = ?1 AND (until_ms IS NULL OR until_ms > ?2) ORDER BY account_id",
            kind.table()
        );
        // The table name comes from `Restriction::table`, never from input.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .bind(now)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(restricted_from).collect()
    }
}

#[async_trait]
impl ModerationStore for SqliteStore {
    async fn delete_message(
        &self,
        room: &str,
        id: u64,
        audit: &AuditRecord,
    ) -> Result<Deletion, StoreError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let now = now_ms();
        in_transaction!(self, conn => {
            let row = sqlx::query(
                "UPDATE messages SET body = '', attachment = NULL, deleted_ms = ?3 \
                 WHERE room = ?1 AND id = ?2 AND deleted_ms IS NULL RETURNING ts, sender, author_id, reply_to",
            )
            .bind(room)
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                Some(row) => {
                    insert_audit(conn, audit, now).await?;
                    Deletion::Deleted(StoredMessage {
                        room: crate::store::room_from_row(room)?,
                        id: id as u64,
                        ts: row.try_get("ts")?,
                        from: row.try_get("sender")?,
                        text: String::new(),
                        author: row
                            .try_get::<Option<i64>, _>("author_id")?
                            .map(crate::store::accounts::AccountId),
                        reply_to: row
                            .try_get::<Option<i64>, _>("reply_to")?
                            .map(|id| id as u64),
                        attachment: None,
                    })
                }
                None => {
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM messages WHERE room = ?1 AND id = ?2")
                            .bind(room)
                            .bind(id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if exists.is_some() {
                        Deletion::AlreadyDeleted
                    } else {
                        Deletion::Missing
                    }
                }
            }
        })
    }

    async fn restrict(
        &self,
        kind: Restriction,
        room: &str,
        restricted: &Restricted,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {} (room, account_id, until_ms, by_account, created_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (room, account_id) DO UPDATE SET \
             until_ms = excluded.until_ms, by_account = excluded.by_account, \
             created_ms = excluded.created_ms",
            kind.table()
        );
        in_transaction!(self, conn => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(room)
                .bind(restricted.account.0)
                .bind(restricted.until_ms)
                .bind(restricted.by.map(|by| by.0))
                .bind(restricted.created_ms)
                .execute(&mut *conn)
                .await?;
            insert_audit(conn, audit, now_ms()).await?;
        })
    }

    async fn set_slow_mode(
        &self,
        room: &str,
        seconds: u32,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        in_transaction!(self, conn => {
            if seconds == 0 {
                sqlx::query("DELETE FROM slow_mode WHERE room = ?1")
                    .bind(room)
                    .execute(&mut *conn)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO slow_mode (room, seconds) VALUES (?1, ?2) \
                     ON CONFLICT (room) DO UPDATE SET seconds = excluded.seconds",
                )
                .bind(room)
                .bind(i64::from(seconds))
                .execute(&mut *conn)
                .await?;
            }
            insert_audit(conn, audit, now_ms()).await?;
        })
    }

    async fn record_audit(&self, audit: &AuditRecord) -> Result<i64, StoreError> {
        in_transaction!(self, conn => insert_audit(conn, audit, now_ms()).await?)
    }

    async fn room_moderation(&self, room: &str, now_ms: i64) -> Result<RoomModeration, StoreError> {
        let bans = self.restrictions(Restriction::Ban, room, now_ms).await?;
        let mutes = self.restrictions(Restriction::Mute, room, now_ms).await?;
        let seconds: Option<i64> =
            sqlx::query_scalar("SELECT seconds FROM slow_mode WHERE room = ?1")
                .bind(room)
                .fetch_optional(&self.reader)
                .await?;
        Ok(RoomModeration {
            bans,
            mutes,
            slow_seconds: seconds.map_or(0, |s| u32::try_from(s).unwrap_or(u32::MAX)),
        })
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        // The room filter travels as one JSON array, so the statement stays the same for any
        // number of rooms.
        let rooms = query
            .rooms
            .as_ref()
            .map(|rooms| serde_json::Value::from(rooms.clone()).to_string());
        let rows = sqlx::query(
            "SELECT id, ts_ms, actor, action, room, target, detail FROM audit \
             WHERE (?1 IS NULL OR room IN (SELECT value FROM json_each(?1))) AND id < ?2 \
             ORDER BY id DESC LIMIT CAST(?3 AS INTEGER)",
        )
        .bind(rooms)
        .bind(query.before.unwrap_or(i64::MAX))
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .iter()
            .map(audit_from)
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn lift(
        &self,
        kind: Restriction,
        room: &str,
        account: AccountId,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE room = ?1 AND account_id = ?2 RETURNING until_ms",
            kind.table()
        );
        let now = now_ms();
        in_transaction!(self, conn => {
            let removed: Option<Option<i64>> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(room)
                .bind(account.0)
                .fetch_optional(&mut *conn)
                .await?;
            // An expired row is removed too, but lifting it changes nothing: no audit row.
            let in_force = removed.is_some_and(|until| until.is_none_or(|until| until > now));
            if in_force {
                insert_audit(conn, audit, now).await?;
            }
            in_force
        })
    }
}
