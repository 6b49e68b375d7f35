//! [`RoomDirectory`] on PostgreSQL. Writes use the store's writer pool in transactions, reads
//! the read pool. Message bodies are `BYTEA` (see migrations/postgres/0001), so mention
//! candidates are found by the `@` byte and decoded here.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{PostgresStore, id_param};
use crate::protocol::people::{DIRECT_PREFIX, PRIVATE_PREFIX};
use crate::store::StoreError;
use crate::store::accounts::AccountId;
use crate::store::directory::{
    AfterMarker, Created, DirectoryChange, MENTION_SCAN_FACTOR, NewRoom, ReadMarker, Role,
    RoomDirectory, RoomKind, RoomMember, RoomSettings, SidebarRoom, Unread, UnreadAsk, counted,
    now_ms, sort_members,
};

/// The sidebars of the accounts in $1 (an array of ids): the rooms each is a member of (with
/// its role), then the public rooms each only has a read marker in; each with the room's newest
/// id and the account's marker; by account, then by room name.
const SIDEBAR_SQL: &str = "\
    WITH wanted(account_id) AS (SELECT unnest($1::bigint[])) \
    SELECT m.account_id AS account_id, s.name, s.kind, s.title, s.topic, s.created_by, \
           s.created_ms, m.role, \
           coalesce(r.last_id, 0) AS last_id, coalesce(k.last_read, 0) AS last_read \
    FROM wanted w JOIN room_members m ON m.account_id = w.account_id \
    JOIN room_settings s ON s.name = m.room \
    LEFT JOIN rooms r ON r.name = m.room \
    LEFT JOIN read_markers k ON k.account_id = m.account_id AND k.room = m.room \
    UNION ALL \
    SELECT k.account_id, k.room, coalesce(s.kind, 'public'), s.title, s.topic, s.created_by, \
           coalesce(s.created_ms, 0), NULL::text, coalesce(r.last_id, 0), k.last_read \
    FROM wanted w JOIN read_markers k ON k.account_id = w.account_id \
    LEFT JOIN room_settings s ON s.name = k.room \
    LEFT JOIN rooms r ON r.name = k.room \
    WHERE coalesce(s.kind, 'public') = 'public' \
      AND NOT EXISTS \
        (SELECT 1 FROM room_members m WHERE m.room = k.room AND m.account_id = k.account_id) \
    ORDER BY 1, 2";

/// The columns [`settings_from`] reads, in a `SELECT` from `room_settings`.
const SETTINGS_COLUMNS: &str = "name, kind, title, topic, created_by, created_ms";

fn settings_from(row: &PgRow) -> Result<RoomSettings, sqlx::Error> {
    Ok(RoomSettings {
        room: row.try_get("name")?,
        kind: RoomKind::parse(row.try_get::<&str, _>("kind")?),
        title: row.try_get("title")?,
        topic: row.try_get("topic")?,
        created_by: row.try_get::<Option<i64>, _>("created_by")?.map(AccountId),
        created_ms: row.try_get("created_ms")?,
    })
}

/// A member row; `None` for a role this version does not know (read as no membership).
fn member_from(row: &PgRow) -> Result<Option<RoomMember>, sqlx::Error> {
    let Some(role) = Role::parse(row.try_get("role")?) else {
        return Ok(None);
    };
    Ok(Some(RoomMember {
        account: AccountId(row.try_get("account_id")?),
        name: row.try_get("name")?,
        role,
    }))
}

/// Gives a room without a record a public one, so members and topics can hang on it.
async fn ensure_record(
    conn: &mut PgConnection,
    room: &str,
    by: Option<AccountId>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO room_settings (name, kind, created_by, created_ms) \
         VALUES ($1, 'public', $2, $3) ON CONFLICT (name) DO NOTHING",
    )
    .bind(room)
    .bind(by.map(|a| a.0))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_member(
    conn: &mut PgConnection,
    room: &str,
    account: AccountId,
    role: Role,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO room_members (room, account_id, role, added_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (room, account_id) DO NOTHING",
    )
    .bind(room)
    .bind(account.0)
    .bind(role.as_str())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[async_trait]
impl RoomDirectory for PostgresStore {
    async fn create_room(&self, room: &NewRoom) -> Result<Created, StoreError> {
        let settings = &room.settings;
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO room_settings (name, kind, title, topic, created_by, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&settings.room)
        .bind(settings.kind.as_str())
        .bind(&settings.title)
        .bind(&settings.topic)
        .bind(settings.created_by.map(|a| a.0))
        .bind(settings.created_ms)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Created::Existed);
        }
        for (account, role) in &room.members {
            insert_member(&mut tx, &settings.room, *account, *role).await?;
        }
        tx.commit().await?;
        Ok(Created::New)
    }

    async fn public_rooms_with_records(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM (SELECT name FROM room_settings UNION SELECT room FROM room_members \
             UNION SELECT room FROM bans UNION SELECT room FROM mutes \
             UNION SELECT room FROM slow_mode) AS recorded \
             WHERE name NOT LIKE $1 AND name NOT LIKE $2",
        )
        .bind(format!("{PRIVATE_PREFIX}%"))
        .bind(format!("{DIRECT_PREFIX}%"))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows)
    }

    async fn settings(&self, room: &str) -> Result<Option<RoomSettings>, StoreError> {
        let sql = format!("SELECT {SETTINGS_COLUMNS} FROM room_settings WHERE name = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(room)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.as_ref().map(settings_from).transpose()?)
    }

    async fn members(&self, room: &str) -> Result<Vec<RoomMember>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.account_id, a.name, m.role FROM room_members m \
             JOIN accounts a ON a.id = m.account_id WHERE m.room = $1",
        )
        .bind(room)
        .fetch_all(&self.reader)
        .await?;
        let mut members = rows
            .iter()
            .filter_map(|row| member_from(row).transpose())
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        sort_members(&mut members);
        Ok(members)
    }

    async fn role(&self, room: &str, account: AccountId) -> Result<Option<Role>, StoreError> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM room_members WHERE room = $1 AND account_id = $2")
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
            .bind(&ids)
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
        let mut tx = self.writer.begin().await?;
        ensure_record(&mut tx, room, by).await?;
        sqlx::query("UPDATE room_settings SET topic = $2 WHERE name = $1")
            .bind(room)
            .bind(topic)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn add_member(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        ensure_record(&mut tx, room, None).await?;
        let added = insert_member(&mut tx, room, account, role).await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn set_role(
        &self,
        room: &str,
        account: AccountId,
        role: Role,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE room_members SET role = $3 WHERE room = $1 AND account_id = $2")
                .bind(room)
                .bind(account.0)
                .bind(role.as_str())
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn remove_member(&self, room: &str, account: AccountId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_members WHERE room = $1 AND account_id = $2")
            .bind(room)
            .bind(account.0)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One statement for the whole batch (`UNNEST`), so a flush is one round trip.
    async fn save_read_markers(&self, markers: &[ReadMarker]) -> Result<(), StoreError> {
        if markers.is_empty() {
            return Ok(());
        }
        // One row per (account, room): ON CONFLICT may not touch a row twice in one statement.
        let mut newest: std::collections::BTreeMap<(i64, &str), i64> = Default::default();
        for marker in markers {
            let entry = newest
                .entry((marker.account.0, marker.room.as_str()))
                .or_default();
            *entry = (*entry).max(id_param(marker.last_read));
        }
        let mut accounts = Vec::with_capacity(newest.len());
        let mut rooms = Vec::with_capacity(newest.len());
        let mut lasts = Vec::with_capacity(newest.len());
        for ((account, room), last) in newest {
            accounts.push(account);
            rooms.push(room);
            lasts.push(last);
        }
        sqlx::query(
            "INSERT INTO read_markers (account_id, room, last_read, updated_ms) \
             SELECT account_id, room, last_read, $4 \
             FROM UNNEST($1::bigint[], $2::text[], $3::bigint[]) AS m (account_id, room, last_read) \
             ON CONFLICT (account_id, room) DO UPDATE SET \
             last_read = greatest(read_markers.last_read, excluded.last_read), \
             updated_ms = excluded.updated_ms",
        )
        .bind(&accounts)
        .bind(&rooms)
        .bind(&lasts)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn read_marker(&self, account: AccountId, room: &str) -> Result<u64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT last_read FROM read_markers WHERE account_id = $1 AND room = $2",
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
                 WHERE room = $1 AND id > $2 AND deleted_ms IS NULL ORDER BY id LIMIT $3) \
             SELECT sender, count(*) AS n, NULL::bytea AS body FROM after GROUP BY sender \
             UNION ALL \
             SELECT sender, 0::bigint, body FROM after \
                 WHERE position('\\x40'::bytea IN body) > 0",
        )
        .bind(room)
        .bind(id_param(last_read))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        let mut after = AfterMarker::default();
        for row in &rows {
            let body: Option<Vec<u8>> = row.try_get("body")?;
            // A text that is not UTF-8 cannot mention anyone: its row then adds a count of 0.
            let text = body.and_then(|body| String::from_utf8(body).ok());
            after.add_row(row.try_get("sender")?, row.try_get("n")?, text);
        }
        Ok(after)
    }

    async fn unread_each(&self, asks: &[UnreadAsk], cap: u32) -> Result<Vec<Unread>, StoreError> {
        let rooms: Vec<&str> = asks.iter().map(|ask| ask.room.as_str()).collect();
        let sinces: Vec<i64> = asks.iter().map(|ask| id_param(ask.last_read)).collect();
        let names: Vec<&str> = asks.iter().map(|ask| ask.name.as_str()).collect();
        // Per ask one count and the bodies that may mention the name, each with its own LIMIT.
        let rows = sqlx::query(
            "SELECT w.k, \
               (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.room = w.room \
                  AND m.id > w.since AND m.sender <> w.name AND m.deleted_ms IS NULL \
                  LIMIT $4) AS u) AS unread, \
               ARRAY(SELECT m.body FROM messages m WHERE m.room = w.room AND m.id > w.since \
                  AND m.sender <> w.name AND position('\\x40'::bytea IN m.body) > 0 \
                  ORDER BY m.id LIMIT $5) AS candidates \
             FROM unnest($1::text[], $2::bigint[], $3::text[]) WITH ORDINALITY \
                  AS w(room, since, name, k) \
             ORDER BY w.k",
        )
        .bind(&rooms)
        .bind(&sinces)
        .bind(&names)
        .bind(i64::from(cap))
        .bind(i64::from(cap).saturating_mul(MENTION_SCAN_FACTOR))
        .fetch_all(&self.reader)
        .await?;
        asks.iter()
            .zip(&rows)
            .map(|(ask, row)| {
                let unread: i64 = row.try_get("unread")?;
                let candidates: Vec<Vec<u8>> = row.try_get("candidates")?;
                let texts = candidates
                    .iter()
                    .filter_map(|body| std::str::from_utf8(body).ok());
                Ok(counted(unread, texts, &ask.name, cap))
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
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM directory_changes WHERE changed_ms < $1")
            .bind(oldest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO directory_changes (room, account_id, changed_ms) VALUES ($1, $2, $3)",
        )
        .bind(room)
        .bind(account.map(|account| account.0))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn directory_changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<DirectoryChange>, StoreError> {
        let rows: Vec<(i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, room, account_id FROM directory_changes WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, room, account)| DirectoryChange {
                id,
                room,
                account: account.map(AccountId),
            })
            .collect())
    }

    async fn last_directory_change(&self) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM directory_changes")
            .fetch_one(&self.reader)
            .await?;
        Ok(last.unwrap_or(0))
    }
}
