//! [`MessageSearch`] on SQLite: the FTS5 index of migration 0008, read from the read pool.
//!
//! The plan is forced with `CROSS JOIN` so the FTS5 table is the outer loop walking its matches
//! newest first (`ORDER BY rowid DESC`, which FTS5 serves from its doclists without sorting):
//! each match costs two primary-key lookups and a visibility check, and the walk stops once a
//! page is full. That keeps a common term as fast as a rare one.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::protocol::RoomName;
use crate::store::search::{MessageSearch, SearchHit, SearchQuery};
use crate::store::{StoreError, room_from_row};

/// Matches newest first, in rooms the searcher (`?2`, NULL for a guest) may see, optionally one
/// room (`?3`), stored before `?4`; `?5` rows. Snippets hold up to 24 tokens around the matches.
const SEARCH_SQL: &str = "\
    SELECT s.rid, s.room, s.id, m.ts, m.sender, \
           snippet(message_search, 0, char(57344), char(57345), '…', 24) AS snippet \
    FROM message_search \
    CROSS JOIN search_rows s ON s.rid = message_search.rowid \
    CROSS JOIN messages m ON m.room = s.room AND m.id = s.id \
    WHERE message_search MATCH ?1 AND message_search.rowid < ?4 \
      AND (?3 IS NULL OR s.room = ?3) \
      AND m.deleted_ms IS NULL \
      AND ((substr(s.room, 1, 2) <> 'p-' AND substr(s.room, 1, 3) <> 'dm-') \
           OR EXISTS (SELECT 1 FROM room_settings rs JOIN room_members rm ON rm.room = rs.name \
                      WHERE rs.name = s.room AND rm.account_id = ?2)) \
    ORDER BY message_search.rowid DESC \
    LIMIT CAST(?5 AS INTEGER)";

fn hit_from(row: &SqliteRow) -> Result<SearchHit, sqlx::Error> {
    let room: String = row.try_get("room")?;
    Ok(SearchHit {
        room: room_from_row(&room)?,
        id: u64::try_from(row.try_get::<i64, _>("id")?).unwrap_or(0),
        ts: row.try_get("ts")?,
        from: row.try_get("sender")?,
        snippet: row.try_get("snippet")?,
        seq: u64::try_from(row.try_get::<i64, _>("rid")?).unwrap_or(0),
    })
}

#[async_trait]
impl MessageSearch for SqliteStore {
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let before = query
            .before
            .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let rows = sqlx::query(SEARCH_SQL)
            .bind(query.terms.fts5())
            .bind(query.account.map(|account| account.0))
            .bind(query.room.as_ref().map(RoomName::as_str))
            .bind(before)
            .bind(i64::from(query.limit))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(hit_from).collect::<Result<_, _>>()?)
    }
}
