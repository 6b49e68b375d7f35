//! [`MessageSearch`] on PostgreSQL: the `search` tsvector column of migration 0008 and its GIN
//! index, read from the read pool. The page is chosen first (newest first by `search_seq`) and
//! `ts_headline` runs only on the rows of that page, as it re-parses each text. ts_headline
//! drops whatever its parser reads as an HTML tag, so `<` is replaced by [`LESS_THAN`] (a
//! private-use character migration 0008 keeps out of the text) for it and put back here.
//!
//! **Two passes, because one plan cannot fit every word.** `ORDER BY search_seq DESC LIMIT n`
//! over a common word is fastest as a walk of the `search_seq` index newest first that stops
//! after n matches; over a rare word that walk reads the whole table (0.6 s over a million
//! messages), and the GIN index is the way. The planner picks from its estimate of how many
//! rows match, which for any word outside the statistics' most common ones is the same guess,
//! so it picks the walk for rare words too (docs/benchmarks.md "Search"). So a search first
//! asks the GIN index for at most [`FEW`] matches in any order: fewer than that means the
//! words are rare, and the page is chosen among exactly those rows; as many means they are
//! common, and the page comes from the walk, which stops early.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PostgresStore, id_param};
use crate::protocol::RoomName;
use crate::store::search::{MATCH_END, MATCH_START, MessageSearch, SearchHit, SearchQuery};
use crate::store::{StoreError, room_from_row};

/// How many matches make the words "common" (see the module doc).
const FEW: i64 = 500;

/// Up to `$3` matches of `$1` stored before `$2`, in any order (no `ORDER BY`: the GIN index).
const FEW_SQL: &str = "\
    SELECT m.search_seq FROM messages m \
    WHERE m.search @@ plainto_tsquery('simple'::regconfig, $1) AND m.search_seq < $2 \
    LIMIT $3";

/// Matches newest first, in rooms the searcher (`$2`, NULL for a guest) may see, optionally one
/// room (`$3`), stored before `$4`; `$5` rows; `$6` the `ts_headline` options; `$extra` one more
/// condition on the row `m`.
macro_rules! search_sql {
    ($extra:literal) => {
        concat!(
            "WITH q AS (SELECT plainto_tsquery('simple'::regconfig, $1) AS q) \
             SELECT h.search_seq, h.room, h.id, h.ts, h.sender, \
                    ts_headline('simple'::regconfig, replace(hubbub_search_text(h.body), '<', U&'\\E002'), q.q, $6) \
                    AS snippet \
             FROM (SELECT m.search_seq, m.room, m.id, m.ts, m.sender, m.body \
                   FROM messages m, q \
                   WHERE m.search @@ q.q AND m.search_seq < $4 ",
            $extra,
            " AND ($3::text IS NULL OR m.room = $3::text) \
                     AND m.deleted_ms IS NULL \
                     AND ((left(m.room, 2) <> 'p-' AND left(m.room, 3) <> 'dm-') \
                          OR EXISTS (SELECT 1 FROM room_settings rs \
                                     JOIN room_members rm ON rm.room = rs.name \
                                     WHERE rs.name = m.room AND rm.account_id = $2::bigint)) \
                   ORDER BY m.search_seq DESC \
                   LIMIT $5) h, q \
             ORDER BY h.search_seq DESC"
        )
    };
}

/// Common words: the walk of `search_seq` newest first.
const SEARCH_SQL: &str = search_sql!("");

/// Rare words: only among `$7`, the matches [`FEW_SQL`] found.
const SEARCH_AMONG_SQL: &str = search_sql!("AND m.search_seq = ANY($7::bigint[])");

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
        let before = query.before.map_or(i64::MAX, id_param);
        let few: Vec<i64> = sqlx::query_scalar(FEW_SQL)
            .bind(query.terms.plain())
            .bind(before)
            .bind(FEW)
            .fetch_all(&self.reader)
            .await?;
        let rare = i64::try_from(few.len()).unwrap_or(FEW) < FEW;
        let sql = if rare { SEARCH_AMONG_SQL } else { SEARCH_SQL };
        let mut search = sqlx::query(sql)
            .bind(query.terms.plain())
            .bind(query.account.map(|account| account.0))
            .bind(query.room.as_ref().map(RoomName::as_str))
            .bind(before)
            .bind(i64::from(query.limit))
            .bind(headline_options());
        if rare {
            search = search.bind(few);
        }
        let rows = search.fetch_all(&self.reader).await?;
        Ok(rows.iter().map(hit_from).collect::<Result<_, _>>()?)
    }
}
