//! [`MessageSearch`] on PostgreSQL: the `search` tsvector column of migration 0008 and its GIN
//! index, read from the read pool. The page is chosen first (newest first by `search_seq`) and
//! `ts_headline` runs only on the rows of that page, as it re-parses each text. ts_headline
//! drops whatever its parser reads as an HTML tag, so `<` is replaced by [`LESS_THAN`] (a
//! private-use character migration 0008 keeps out of the text) for it and put back here.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PostgresStore, id_param};
use crate::protocol::RoomName;
use crate::store::search::{MATCH_END, MATCH_START, MessageSearch, SearchHit, SearchQuery};
use crate::store::{StoreError, room_from_row};

/// Matches newest first, in rooms the searcher (`$2`, NULL for a guest) may see, optionally one
/// room (`$3`), stored before `$4`; `$5` rows; `$6` the `ts_headline` options.
const SEARCH_SQL: &str = "\
    WITH q AS (SELECT plainto_tsquery('simple'::regconfig, $1) AS q) \
    SELECT h.search_seq, h.room, h.id, h.ts, h.sender, \
           ts_headline('simple'::regconfig, replace(hubbub_search_text(h.body), '<', U&'\\E002'), q.q, $6) \
           AS snippet \
    FROM (SELECT m.search_seq, m.room, m.id, m.ts, m.sender, m.body \
          FROM messages m, q \
          WHERE m.search @@ q.q AND m.search_seq < $4 \
            AND ($3::text IS NULL OR m.room = $3::text) \
            AND m.deleted_ms IS NULL \
            AND ((left(m.room, 2) <> 'p-' AND left(m.room, 3) <> 'dm-') \
                 OR EXISTS (SELECT 1 FROM room_settings rs \
                            JOIN room_members rm ON rm.room = rs.name \
                            WHERE rs.name = m.room AND rm.account_id = $2::bigint)) \
          ORDER BY m.search_seq DESC \
          LIMIT $5) h, q \
    ORDER BY h.search_seq DESC";

/// The `ts_headline` options: the match markers of [`MATCH_START`]/[`MATCH_END`], and about as
/// much text around them as SQLite's snippet gives.
fn headline_options() -> String {
    format!(
        "StartSel={MATCH_START}, StopSel={MATCH_END}, MaxWords=24, MinWords=8, \
         MaxFragments=2, FragmentDelimiter=\"…\""
    )
}

/// Stands in for `<` inside ts_headline (module doc).
const LESS_THAN: char = '\u{E002}';

fn hit_from(row: &PgRow) -> Result<SearchHit, sqlx::Error> {
    let room: String = row.try_get("room")?;
    Ok(SearchHit {
        room: room_from_row(&room)?,
        id: u64::try_from(row.try_get::<i64, _>("id")?).unwrap_or(0),
        ts: row.try_get("ts")?,
        from: row.try_get("sender")?,
        snippet: row.try_get::<String, _>("snippet")?.replace(LESS_THAN, "<"),
        seq: u64::try_from(row.try_get::<i64, _>("search_seq")?).unwrap_or(0),
    })
}

#[async_trait]
impl MessageSearch for PostgresStore {
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let rows = sqlx::query(SEARCH_SQL)
            .bind(query.terms.plain())
            .bind(query.account.map(|account| account.0))
            .bind(query.room.as_ref().map(RoomName::as_str))
            .bind(query.before.map_or(i64::MAX, id_param))
            .bind(i64::from(query.limit))
            .bind(headline_options())
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.iter().map(hit_from).collect::<Result<_, _>>()?)
    }
}
