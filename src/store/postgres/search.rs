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
//! asks the GIN index for at most [`FEW`] matches in any order, in every room (counting them
//! in the searched room alone made the index read every match of a common word): fewer than
//! that means the words are rare, and the page is chosen among exactly those rows; as many
//! means they are common, and the page comes from the walk, which stops early: of every room's
//! rows by `search_seq`, or of the searched room's by `(room, search_seq)` (migration 0010).
//! The walk's match is written so that the planner cannot swap it for the index (see
//! [`SEARCH_SQL`]); `hubbub import`/`copy` run `ANALYZE` after a bulk load so the first pass
//! is planned from real statistics too.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PostgresStore, id_param};
use crate::protocol::RoomName;
use crate::store::search::{MATCH_END, MATCH_START, MessageSearch, SearchHit, SearchQuery};
use crate::store::{StoreError, room_from_row};

/// How many matches make the words "common" (see the module doc).
const FEW: i64 = 2_000;

/// Up to `$3` matches of `$1` stored before `$2`, in any order (no `ORDER BY`: the GIN index).
const FEW_SQL: &str = "\
    SELECT m.search_seq FROM messages m \
    WHERE m.search @@ plainto_tsquery('simple'::regconfig, $1) AND m.search_seq < $2 \
    LIMIT $3";

/// Matches newest first among the rows `$from` names `m`, in rooms the searcher (`$2`, NULL
/// for a guest) may see, optionally one room (`$3`), stored before `$4`; `$5` rows; `$6` the
/// `ts_headline` options; `$cond` one more condition on `m`.
macro_rules! search_sql {
    ($from:literal, $cond:literal) => {
        concat!(
            "WITH q AS (SELECT plainto_tsquery('simple'::regconfig, $1) AS q) \
             SELECT h.search_seq, h.room, h.id, h.ts, h.sender, \
                    ts_headline('simple'::regconfig, replace(hubbub_search_text(h.body), '<', U&'\\E002'), q.q, $6) \
                    AS snippet \
             FROM (SELECT m.search_seq, m.room, m.id, m.ts, m.sender, m.body \
                   FROM ",
            $from,
            ", q \
                   WHERE m.search @@ q.q AND m.search_seq < $4 ",
            $cond,
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

/// Rare words: only among `$7`, the matches [`FEW_SQL`] found.
const SEARCH_AMONG_SQL: &str = search_sql!("messages m", "AND m.search_seq = ANY($7::bigint[])");

/// Common words: one window of the walk, the newest `$7` rows of every room before `$4`, in
/// `search_seq` order, matched one by one until the page is full. The window is a subquery
/// with its own `LIMIT` so that the plan is the index walk whatever the planner guesses of the
/// match: it cannot see the word through a prepared statement's parameter, and guessing it
/// rare it took the GIN index (or a whole room's rows) and sorted every match, about a second
/// for a word in one message of twenty.
const WALK_SQL: &str = search_sql!(
    "(SELECT w.search_seq, w.room, w.id, w.ts, w.sender, w.body, w.search, w.deleted_ms \
       FROM messages w WHERE w.search_seq < $4 \
       ORDER BY w.search_seq DESC LIMIT $7) m",
    ""
);

/// [`WALK_SQL`] in one room: its rows only (`messages_room_search_seq`, PostgreSQL migration
/// 0010), not every room's.
const WALK_IN_ROOM_SQL: &str = search_sql!(
    "(SELECT w.search_seq, w.room, w.id, w.ts, w.sender, w.body, w.search, w.deleted_ms \
       FROM messages w WHERE w.search_seq < $4 AND w.room = $3::text \
       ORDER BY w.search_seq DESC LIMIT $7) m",
    ""
);

/// Where a window of `$2` rows before `$1` ends: its last row's `search_seq` (none when fewer
/// rows are left), the `before` of the next window.
const WINDOW_END_SQL: &str = "\
    SELECT search_seq FROM messages WHERE search_seq < $1 \
    ORDER BY search_seq DESC OFFSET $2 - 1 LIMIT 1";

/// [`WINDOW_END_SQL`] in the room `$3`.
const WINDOW_END_IN_ROOM_SQL: &str = "\
    SELECT search_seq FROM messages WHERE search_seq < $1 AND room = $3 \
    ORDER BY search_seq DESC OFFSET $2 - 1 LIMIT 1";

/// The walk's first window, doubled for each next one up to [`LAST_WINDOW`]: a common word
/// fills its page within the first, a word common elsewhere but rare in the searched room
/// needs few windows to cross the room.
const FIRST_WINDOW: i64 = 1_000;
const LAST_WINDOW: i64 = 64_000;

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
        if i64::try_from(few.len()).unwrap_or(FEW) < FEW {
            let rows = search_page(SEARCH_AMONG_SQL, query, before, i64::from(query.limit))
                .bind(few)
                .fetch_all(&self.reader)
                .await?;
            return Ok(rows.iter().map(hit_from).collect::<Result<_, _>>()?);
        }
        self.walk(query, before).await
    }
}

/// The page query `sql` with its first six parameters bound.
fn search_page<'q>(
    sql: &'static str,
    query: &'q SearchQuery,
    before: i64,
    limit: i64,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(query.terms.plain())
        .bind(query.account.map(|account| account.0))
        .bind(query.room.as_ref().map(RoomName::as_str))
        .bind(before)
        .bind(limit)
        .bind(headline_options())
}

impl PostgresStore {
    /// Common words: windows of the walk, newest first, until the page is full or the rows
    /// (of the room, or of every room) run out.
    async fn walk(&self, query: &SearchQuery, before: i64) -> Result<Vec<SearchHit>, StoreError> {
        let (walk_sql, end_sql) = if query.room.is_some() {
            (WALK_IN_ROOM_SQL, WINDOW_END_IN_ROOM_SQL)
        } else {
            (WALK_SQL, WINDOW_END_SQL)
        };
        let limit = usize::try_from(query.limit).unwrap_or(usize::MAX);
        let mut hits = Vec::new();
        let mut before = before;
        let mut window = FIRST_WINDOW;
        loop {
            let wanted = i64::try_from(limit - hits.len()).unwrap_or(i64::MAX);
            let rows = search_page(walk_sql, query, before, wanted)
                .bind(window)
                .fetch_all(&self.reader)
                .await?;
            for row in &rows {
                hits.push(hit_from(row)?);
            }
            if hits.len() >= limit {
                return Ok(hits);
            }
            let mut window_end = sqlx::query_scalar(end_sql).bind(before).bind(window);
            if let Some(room) = &query.room {
                window_end = window_end.bind(room.as_str());
            }
            let end: Option<i64> = window_end.fetch_optional(&self.reader).await?;
            match end {
                Some(end) => before = end,
                None => return Ok(hits),
            }
            window = (window * 2).min(LAST_WINDOW);
        }
    }
}
