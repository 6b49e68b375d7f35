//! [`RoomDirectory`] on SQLite. Writes go through the store's one writer connection in
//! transactions of their own (`BEGIN IMMEDIATE` ... `COMMIT`, cleaned up after a failure as a
//! commit's are); reads use the read pool.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::{SqliteStore, explain};
use crate::protocol::people::{DIRECT_PREFIX, PRIVATE_PREFIX};
use crate::store::StoreError;
use crate::store::accounts::AccountId;
use crate::store::directory::{
    AfterMarker, Created, DirectoryChange, NewRoom, ReadMarker, Role, RoomDirectory, RoomKind,
    RoomMember, RoomSettings, SidebarRoom, Unread, UnreadAsk,
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

/// The sidebars of the accounts in ?1 (a JSON array of ids): the rooms each is a member of
/// (with its role), then the public rooms each only has a read marker in; each with the room's
/// newest id and the account's marker; by account, then by room name.
const SIDEBAR_SQL: &str = "\
    WITH wanted(account_id) AS (SELECT value FROM json_each(?1)) \
    SELECT m.account_id AS account_id, s.name, s.kind, s.title, s.topic, s.created_by, \
           s.created_ms, m.role, \
           coalesce(r.last_id, 0) AS last_id, coalesce(k.last_read, 0) AS last_read \
    FROM wanted w JOIN room_members m ON m.account_id = w.account_id \
    JOIN room_settings s ON s.name = m.room \
    LEFT JOIN rooms r ON r.name = m.room \
    LEFT JOIN read_markers k ON k.account_id = m.account_id AND k.room = m.room \
    UNION ALL \
    SELECT k.account_id, k.room, coalesce(s.kind, 'public'), s.title, s.topic, s.created_by, \
           coalesce(s.created_ms, 0), NULL, coalesce(r.last_id, 0), k.last_read \
    FROM wanted w JOIN read_markers k ON k.account_id = w.account_id \
    LEFT JOIN room_settings s ON s.name = k.room \
    LEFT JOIN rooms r ON r.name = k.room \
    WHERE coalesce(s.kind, 'public') = 'public' \
      AND NOT EXISTS \
        (SELECT 1 FROM room_members m WHERE m.room = k.room AND m.account_id = k.account_id) \
    ORDER BY 1, 2";

/// The columns [`settings_from`] reads, in a `SELECT` from `room_settings`.
const SETTINGS_COLUMNS: &str = "name, kind, title, topic, created_by, created_ms";

fn settings_from(row: &SqliteRow) -> Result<RoomSettings, sqlx::Error> {
    Ok(RoomSettings {
        room: row.try_get("name")?,
        kind: RoomKind::parse(row.try_get::<&str, _>("kind")?),
        title: row.try_get("title")?,
        topic: row.try_get("topic")?,
        created_by: row.try_get::<Option<i64>, _>("created_by")?.map(AccountId),
        created_ms: row.try_get("created_ms")?,
    })
}

/// Gives a room without a record a public one, so members and topics can hang on it.
async fn ensure_record(
    conn: &mut SqliteConnection,
    room: &str,
    by: Option<AccountId>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_settings (name, kind, created_by, created_ms) \
         VALUES (?1, 'public', ?2, ?3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(room)
    .bind(by.map(|a| a.0))
    .bind(crate::store::directory::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_member(
    conn: &mut SqliteConnection,
    room: &str,
    account: AccountId,
    role: Role,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO room_members (room, account_id, role, added_ms) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (room, account_id) DO NOTHING",
    )
    .bind(room)
    .bind(account.0)
    .bind(role.as_str())
    .bind(crate::store::directory::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl RoomDirectory for SqliteStore {
    async fn create_room(&self, room: &NewRoom) -> Result<Created, StoreError> {
        let settings = &room.settings;
        in_transaction!(self, conn => {
            let inserted = sqlx::query(
                "INSERT INTO room_settings (name, kind, title, topic, created_by, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
            )
            .bind(&settings.room)
            .bind(settings.kind.as_str())
            .bind(&settings.title)
            .bind(&settings.topic)
            .bind(settings.created_by.map(|a| a.0))
            .bind(settings.created_ms)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() == 0 {
                Created::Existed
            } else {
                for (account, role) in &room.members {
                    insert_member(conn, &settings.room, *account, *role).await?;
                }
                Created::New
            }
        })
    }

    async fn public_rooms_with_records(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM (SELECT name FROM room_settings UNION SELECT room FROM room_members \
             UNION SELECT room FROM bans UNION SELECT room FROM mutes \
             UNION SELECT room FROM slow_mode) AS recorded \
             WHERE name NOT LIKE ?1 AND name NOT LIKE ?2",
        )
        .bind(format!("{PRIVATE_PREFIX}%"))
        .bind(format!("{DIRECT_PREFIX}%"))
        .fetch_all(&self.reader)
        .await
        .map_err(explain)?;
        Ok(rows)
    }

    async fn settings(&self, room: &str) -> Result<Option<RoomSettings>, StoreError> {
        let sql = format!("SELECT {SETTINGS_COLUMNS} FROM room_settings WHERE name = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(settings_from).transpose()?)
    }

    async fn members(&self, room: &str) -> Result<Vec<RoomMember>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.account_id, a.name, m.role FROM room_members m \
             JOIN accounts a ON a.id = m.account_id WHERE m.room = ?1",
        )
        .bind(room)
        .fetch_all(&self.reader)
        .await?;
        let mut members = rows
            .iter()
            .filter_map(|row| member_from(row).transpose())
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        crate::store::directory::sort_members(&mut members);
        Ok(members)
    }

    async fn role(&self, room: &str, account: AccountId) -> Result<Option<Role>, StoreError> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM room_members WHERE room = ?1 AND account_id = ?2")
                .bind(room)
                .bind(account.0)
                .fetch_optional(&self.reader)
                .await?;
        Ok(role.as_deref().and_then(Role::parse))
    }

    async fn list_rooms(&self) -> Result<Vec<RoomSettings>, StoreError> {
        let sql = format!("SELECT {SETTINGS_COLUMNS} FROM room_settings ORDER BY name");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(settings_from)
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn sidebars(
        &self,
        accounts: &[AccountId],
    ) -> Result<Vec<(AccountId, SidebarRoom)>, StoreError> {
        let ids: Vec<i64> = accounts.iter().map(|account| account.0).collect();
        let rows = sqlx::query(SIDEBAR_SQL)
            .bind(serde_json::Value::from(ids).to_string())
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let room = SidebarRoom {
                    settings: settings_from(row)?,
                    role: row
                        .try_get::<Option<&str>, _>("role")?
                        .and_then(Role::parse),
                    last_id: row.try_get::<i64, _>("last_id")? as u64,
                    last_read: row.try_get::<i64, _>("last_read")? as u64,
                };
                Ok((AccountId(row.try_get("account_id")?), room))
            })
            .collect::<Result<_, sqlx::Error>>()?)
    }

    async fn set_topic(
        &self,
        room: &str,
        topic: Option<&str>,
        by: Option<AccountId>,
    ) -> Result<(), StoreError> {
        in_transaction!(self, conn => {
            ensure_record(conn, room, by).await?;
            sqlx::query("UPDATE room_settings SET topic = ?2 WHERE name = ?1")
                .bind(room)
                .bind(topic)
                .execute(&mut *conn)
                .await?;
        })
    }

    async fn add_member(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            ensure_record(conn, room, None).await?;
            insert_member(conn, room, account, role).await?
        })
    }

    async fn set_role(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("UPDATE room_members SET role = ?3 WHERE room = ?1 AND account_id = ?2")
                .bind(room)
                .bind(account.0)
                .bind(role.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0
        })
    }

    async fn remove_member(&self, room: &str, account: AccountId) -> Result<bool, StoreError> {
        in_transaction!(self, conn => {
            sqlx::query("DELETE FROM room_members WHERE room = ?1 AND account_id = ?2")
                .bind(room)
                .bind(account.0)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                > 0
        })
    }

    async fn save_read_markers(&self, markers: &[ReadMarker]) -> Result<(), StoreError> {
        if markers.is_empty() {
            return Ok(());
        }
        let now = crate::store::directory::now_ms();
        in_transaction!(self, conn => {
            for marker in markers {
                sqlx::query(
                    "INSERT INTO read_markers (account_id, room, last_read, updated_ms) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (account_id, room) DO UPDATE SET \
                     last_read = max(read_markers.last_read, excluded.last_read), \
                     updated_ms = excluded.updated_ms",
                )
                .bind(marker.account.0)
                .bind(&marker.room)
                .bind(i64::try_from(marker.last_read).unwrap_or(i64::MAX))
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
        })
    }

    async fn read_marker(&self, account: AccountId, room: &str) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_read FROM read_markers WHERE account_id = ?1 AND room = ?2",
        )
        .bind(account.0)
        .bind(room)
        .fetch_optional(&self.reader)
        .await?;
        Ok(last.unwrap_or(0) as u64)
    }

    async fn messages_after_marker(
        &self,
        room: &str,
        last_read: u64,
        limit: u32,
    ) -> Result<AfterMarker, StoreError> {
        // One row per sender (with its count) and one per text containing `@` (count 0).
        let rows = sqlx::query(
            "WITH after AS (SELECT sender, body FROM messages \
                 WHERE room = ?1 AND id > ?2 AND deleted_ms IS NULL ORDER BY id LIMIT CAST(?3 AS INTEGER)) \
             SELECT sender, count(*) AS n, NULL AS body FROM after GROUP BY sender \
             UNION ALL \
             SELECT sender, 0 AS n, body FROM after WHERE instr(body, '@') > 0",
        )
        .bind(room)
        .bind(i64::try_from(last_read).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        let mut after = AfterMarker::default();
        for row in &rows {
            after.add_row(
                row.try_get("sender")?,
                row.try_get("n")?,
                row.try_get("body")?,
            );
        }
        Ok(after)
    }

    async fn unread_each(&self, asks: &[UnreadAsk], cap: u32) -> Result<Vec<Unread>, StoreError> {
        // The asks go in as one JSON array of [room, since, name]; per ask one count and the
        // bodies that may mention the name (a JSON array), each bounded by its own LIMIT.
        let wanted: Vec<serde_json::Value> = asks
            .iter()
            .map(|ask| {
                let since = i64::try_from(ask.last_read).unwrap_or(i64::MAX);
                serde_json::json!([ask.room, since, ask.name])
            })
            .collect();
        let rows = sqlx::query(
            "WITH wanted AS (SELECT key AS k, json_extract(value, '$[0]') AS room, \
                    json_extract(value, '$[1]') AS since, json_extract(value, '$[2]') AS name \
                 FROM json_each(?1)) \
             SELECT w.k AS k, \
               (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.room = w.room \
                  AND m.id > w.since AND m.sender <> w.name AND m.deleted_ms IS NULL \
                  LIMIT CAST(?2 AS INTEGER))) AS unread, \
               (SELECT json_group_array(body) FROM (SELECT m.body AS body FROM messages m \
                  WHERE m.room = w.room AND m.id > w.since AND m.sender <> w.name \
                  AND instr(m.body, '@') > 0 ORDER BY m.id LIMIT CAST(?3 AS INTEGER))) AS candidates \
             FROM wanted w ORDER BY w.k",
        )
        .bind(serde_json::Value::from(wanted).to_string())
        .bind(i64::from(cap))
        .bind(i64::from(cap).saturating_mul(crate::store::directory::MENTION_SCAN_FACTOR))
        .fetch_all(&self.reader)
        .await?;
        asks.iter()
            .zip(&rows)
            .map(|(ask, row)| {
                let unread: i64 = row.try_get("unread")?;
                let candidates: String = row.try_get("candidates")?;
                let texts: Vec<String> = serde_json::from_str(&candidates)
                    .map_err(|err| sqlx::Error::Decode(Box::new(err)))?;
                let texts = texts.iter().map(String::as_str);
                Ok(crate::store::directory::counted(
                    unread, texts, &ask.name, cap,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    async fn note_directory_change(
        &self,
        room: &str,
        account: Option<AccountId>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let oldest = now_ms.saturating_sub(crate::store::directory::DIRECTORY_CHANGE_KEPT_MS);
        in_transaction!(self, conn => {
            sqlx::query("DELETE FROM directory_changes WHERE changed_ms < ?1")
                .bind(oldest)
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT INTO directory_changes (room, account_id, changed_ms) VALUES (?1, ?2, ?3)",
            )
            .bind(room)
            .bind(account.map(|account| account.0))
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        })
    }

    async fn directory_changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<DirectoryChange>, StoreError> {
        let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, room, account_id FROM directory_changes WHERE id > ?1 ORDER BY id LIMIT CAST(?2 AS INTEGER)",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(directory_change).collect())
    }

    async fn last_directory_change(&self) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM directory_changes")
            .fetch_one(&self.reader)
            .await?;
        Ok(last.unwrap_or(0))
    }
}

/// A `directory_changes` row.
fn directory_change((id, room, account): (i64, String, Option<i64>)) -> DirectoryChange {
    DirectoryChange {
        id,
        room,
        account: account.map(AccountId),
    }
}

/// A member row; `None` for a role this version does not know (read as no membership).
fn member_from(row: &SqliteRow) -> Result<Option<RoomMember>, sqlx::Error> {
    let Some(role) = Role::parse(row.try_get("role")?) else {
        return Ok(None);
    };
    Ok(Some(RoomMember {
        account: AccountId(row.try_get("account_id")?),
        name: row.try_get("name")?,
        role,
    }))
}
