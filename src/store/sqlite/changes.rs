//! [`ChangeStore`] on SQLite. Each change runs on the store's one writer connection in a
//! transaction of its own with its feed row, whose `seq` is the room's `MAX(seq) + 1`: the one
//! writer makes that safe. Reads use the read pool.

use async_trait::async_trait;
use sqlx::{Row, SqliteConnection};

use super::moderation::insert_audit;
use super::{SqliteStore, explain};
use crate::store::accounts::AccountId;
use crate::store::changes::{
    Change, ChangeBody, ChangeOutcome, ChangeStore, Deleter, MessageState, Reaction, kind, payload,
    states,
};
use crate::store::moderation::now_ms;
use crate::store::{StoreError, StoredMessage, room_from_row};

/// Runs `$body` (which may use `?` on sqlx errors) with `$conn`, the writer connection, inside
/// one `BEGIN IMMEDIATE` ... `COMMIT`, cleaned up like a commit's transaction when it fails
/// (as sqlite/moderation.rs does).
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

fn id_param(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// The message as the change found it.
struct Found {
    message: StoredMessage,
}

async fn find(
    conn: &mut SqliteConnection,
    room: &str,
    id: u64,
) -> Result<Option<Found>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT ts, sender, body, author_id, reply_to, attachment FROM messages WHERE room = ?1 AND id = ?2",
    )
    .bind(room)
    .bind(id_param(id))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Found {
        message: StoredMessage {
            room: room_from_row(room)?,
            id,
            ts: row.try_get("ts")?,
            from: row.try_get("sender")?,
            text: row.try_get("body")?,
            author: row.try_get::<Option<i64>, _>("author_id")?.map(AccountId),
            reply_to: row
                .try_get::<Option<i64>, _>("reply_to")?
                .map(|id| id as u64),
            attachment: crate::store::attachment_from_column(row.try_get("attachment")?)?,
        },
    }))
}

/// Writes the room's next feed row for a change to message `id`.
async fn append_change(
    conn: &mut SqliteConnection,
    room: &str,
    id: u64,
    body: &ChangeBody<'_>,
) -> Result<Change, sqlx::Error> {
    let last: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM message_changes WHERE room = ?1")
            .bind(room)
            .fetch_one(&mut *conn)
            .await?;
    let seq = last as u64 + 1;
    let payload = payload(seq, id, body);
    sqlx::query(
        "INSERT INTO message_changes (room, seq, message_id, kind, payload, ts_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(room)
    .bind(id_param(seq))
    .bind(id_param(id))
    .bind(kind(body))
    .bind(&payload)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(Change {
        room: room.to_owned(),
        seq,
        message_id: id,
        payload,
    })
}

async fn edit_in(
    conn: &mut SqliteConnection,
    room: &str,
    id: u64,
    author: AccountId,
    text: &str,
    edited_ms: i64,
) -> Result<ChangeOutcome, sqlx::Error> {
    let Some(Found { mut message }) = find(conn, room, id).await? else {
        return Ok(ChangeOutcome::Missing);
    };
    if message.is_deleted() {
        return Ok(ChangeOutcome::Gone);
    }
    if message.author != Some(author) {
        return Ok(ChangeOutcome::NotYours);
    }
    sqlx::query("UPDATE messages SET body = ?3, edited_ms = ?4 WHERE room = ?1 AND id = ?2")
        .bind(room)
        .bind(id_param(id))
        .bind(text)
        .bind(edited_ms)
        .execute(&mut *conn)
        .await?;
    let change = append_change(conn, room, id, &ChangeBody::Edit { text, edited_ms }).await?;
    message.text = text.to_owned();
    Ok(ChangeOutcome::Changed {
        change,
        message: Some(message),
    })
}

async fn delete_in(
    conn: &mut SqliteConnection,
    room: &str,
    id: u64,
    by: Deleter<'_>,
) -> Result<ChangeOutcome, sqlx::Error> {
    let Some(Found { mut message }) = find(conn, room, id).await? else {
        return Ok(ChangeOutcome::Missing);
    };
    if let Deleter::Author(author) = by
        && message.author != Some(author)
    {
        return Ok(ChangeOutcome::NotYours);
    }
    if message.is_deleted() {
        return Ok(ChangeOutcome::Unchanged);
    }
    let now = now_ms();
    sqlx::query("UPDATE messages SET body = '', attachment = NULL, deleted_ms = ?3 WHERE room = ?1 AND id = ?2")
        .bind(room)
        .bind(id_param(id))
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let who = match by {
        Deleter::Author(_) => "author",
        Deleter::Moderator(audit) => {
            insert_audit(conn, audit, now).await?;
            "moderator"
        }
    };
    let change = append_change(conn, room, id, &ChangeBody::Delete { by: who }).await?;
    message.text.clear();
    message.attachment = None;
    Ok(ChangeOutcome::Changed {
        change,
        message: Some(message),
    })
}

async fn react_in(
    conn: &mut SqliteConnection,
    room: &str,
    id: u64,
    reaction: &Reaction<'_>,
) -> Result<ChangeOutcome, sqlx::Error> {
    let Some(Found { message }) = find(conn, room, id).await? else {
        return Ok(ChangeOutcome::Missing);
    };
    if message.is_deleted() {
        return Ok(ChangeOutcome::Gone);
    }
    let done = if reaction.on {
        sqlx::query(
            "INSERT INTO reactions (room, message_id, emoji, account_id, name, created_ms, ord) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, \
             (SELECT COALESCE(MAX(ord), 0) + 1 FROM reactions WHERE room = ?1 AND message_id = ?2)) \
             ON CONFLICT DO NOTHING",
        )
        .bind(room)
        .bind(id_param(id))
        .bind(reaction.emoji)
        .bind(reaction.account.0)
        .bind(reaction.name)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(
            "DELETE FROM reactions \
             WHERE room = ?1 AND message_id = ?2 AND emoji = ?3 AND account_id = ?4",
        )
        .bind(room)
        .bind(id_param(id))
        .bind(reaction.emoji)
        .bind(reaction.account.0)
        .execute(&mut *conn)
        .await?
    };
    if done.rows_affected() == 0 {
        return Ok(ChangeOutcome::Unchanged);
    }
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM reactions WHERE room = ?1 AND message_id = ?2 AND emoji = ?3",
    )
    .bind(room)
    .bind(id_param(id))
    .bind(reaction.emoji)
    .fetch_one(&mut *conn)
    .await?;
    let body = ChangeBody::React {
        emoji: reaction.emoji,
        name: reaction.name,
        on: reaction.on,
        count: count as u64,
    };
    let change = append_change(conn, room, id, &body).await?;
    Ok(ChangeOutcome::Changed {
        change,
        message: None,
    })
}

#[async_trait]
impl ChangeStore for SqliteStore {
    async fn edit_message(
        &self,
        room: &str,
        id: u64,
        author: AccountId,
        text: &str,
        edited_ms: i64,
    ) -> Result<ChangeOutcome, StoreError> {
        in_transaction!(self, conn => edit_in(conn, room, id, author, text, edited_ms).await?)
    }

    async fn delete_message(
        &self,
        room: &str,
        id: u64,
        by: Deleter<'_>,
    ) -> Result<ChangeOutcome, StoreError> {
        in_transaction!(self, conn => delete_in(conn, room, id, by).await?)
    }

    async fn react(
        &self,
        room: &str,
        id: u64,
        reaction: &Reaction<'_>,
    ) -> Result<ChangeOutcome, StoreError> {
        in_transaction!(self, conn => react_in(conn, room, id, reaction).await?)
    }

    async fn changes_after(
        &self,
        room: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, message_id, payload FROM message_changes \
             WHERE room = ?1 AND seq > ?2 ORDER BY seq LIMIT CAST(?3 AS INTEGER)",
        )
        .bind(room)
        .bind(id_param(after))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        let changes = rows
            .iter()
            .map(|row| {
                Ok(Change {
                    room: room.to_owned(),
                    seq: row.try_get::<i64, _>("seq")? as u64,
                    message_id: row.try_get::<i64, _>("message_id")? as u64,
                    payload: row.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(changes)
    }

    async fn last_change(&self, room: &str) -> Result<u64, StoreError> {
        let last: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM message_changes WHERE room = ?1")
                .bind(room)
                .fetch_one(&self.reader)
                .await?;
        Ok(last as u64)
    }

    async fn message_exists(&self, room: &str, id: u64) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM messages WHERE room = ?1 AND id = ?2")
                .bind(room)
                .bind(id_param(id))
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    async fn message_states(
        &self,
        room: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<MessageState>, StoreError> {
        let edited: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, edited_ms FROM messages \
             WHERE room = ?1 AND id BETWEEN ?2 AND ?3 AND edited_ms IS NOT NULL AND body <> ''",
        )
        .bind(room)
        .bind(id_param(first))
        .bind(id_param(last))
        .fetch_all(&self.reader)
        .await?;
        let reactions: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT message_id, emoji, name FROM reactions \
             WHERE room = ?1 AND message_id BETWEEN ?2 AND ?3 \
             ORDER BY message_id, ord, account_id",
        )
        .bind(room)
        .bind(id_param(first))
        .bind(id_param(last))
        .fetch_all(&self.reader)
        .await?;
        Ok(states(
            edited.into_iter().map(|(id, ms)| (id as u64, ms)).collect(),
            reactions
                .into_iter()
                .map(|(id, emoji, name)| (id as u64, emoji, name))
                .collect(),
        ))
    }
}
