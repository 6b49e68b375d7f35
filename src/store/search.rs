//! Full-text search over message bodies (issue 20): [`MessageSearch`], which SQLite (FTS5, in
//! `sqlite/search.rs`) and PostgreSQL (a `tsvector` with a GIN index, in `postgres/search.rs`)
//! both implement, and the plain-terms query both take. Migration 0008 of each backend builds
//! the index and keeps it current on every insert, edit and deletion.
//!
//! Visibility lives in the query itself: a hit is returned only from a room the searcher may
//! see (any room outside the reserved `p-`/`dm-` namespaces; a reserved one only with a
//! directory record listing the searcher as a member: the rule of `Hub::can_see`), so a page
//! never holds, and its size never betrays, another person's private room or DM.

use async_trait::async_trait;

use super::StoreError;
use super::accounts::AccountId;
use crate::protocol::RoomName;

/// Marks the start of a match in a [`SearchHit::snippet`]. A private-use character that the
/// indexed text never holds (migration 0008 replaces it with U+FFFD there), so a client can
/// split on it without ambiguity and never needs to parse markup.
pub const MATCH_START: char = '\u{E000}';
/// Marks the end of a match in a [`SearchHit::snippet`] (see [`MATCH_START`]).
pub const MATCH_END: char = '\u{E001}';

/// Longest query accepted, in characters: a search box, not a document.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most terms a query may hold: each is one more doclist to intersect.
pub const MAX_QUERY_TERMS: usize = 16;

/// A query as plain terms: what the user typed, split on anything that is not a letter, digit
/// or one of `'`, `_`, and with no search syntax at all (no operators, columns, prefixes or
/// phrases), so no input can be a malformed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerms {
    terms: Vec<String>,
}

/// Why a query was refused (the API answers 400 `bad_query`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    /// Nothing to search for: empty, or only punctuation and spaces.
    #[error("the query has no words to search for")]
    Empty,
    /// Longer than [`MAX_QUERY_CHARS`].
    #[error("the query is longer than {MAX_QUERY_CHARS} characters")]
    TooLong,
    /// More than [`MAX_QUERY_TERMS`] words.
    #[error("the query has more than {MAX_QUERY_TERMS} words")]
    TooManyTerms,
}

impl SearchTerms {
    /// Splits `raw` into terms; refuses an empty, over-long or over-wordy query.
    pub fn parse(raw: &str) -> Result<SearchTerms, BadQuery> {
        if raw.chars().count() > MAX_QUERY_CHARS {
            return Err(BadQuery::TooLong);
        }
        let terms: Vec<String> = raw
            .split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '_'))
            .map(|term| term.trim_matches('\''))
            .filter(|term| !term.is_empty())
            .map(str::to_owned)
            .collect();
        if terms.is_empty() {
            return Err(BadQuery::Empty);
        }
        if terms.len() > MAX_QUERY_TERMS {
            return Err(BadQuery::TooManyTerms);
        }
        Ok(SearchTerms { terms })
    }

    /// The terms, in the order typed.
    pub fn terms(&self) -> &[String] {
        &self.terms
    }

    /// The FTS5 query: every term as a quoted string (`"` doubled), all of them required. A
    /// quoted string is never read as an operator or column filter.
    pub fn fts5(&self) -> String {
        self.terms
            .iter()
            .map(|term| format!("\"{}\"", term.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The text PostgreSQL's `plainto_tsquery` gets: the terms joined by spaces (it ignores any
    /// syntax anyway).
    pub fn plain(&self) -> String {
        self.terms.join(" ")
    }
}

/// One search: the terms, who searches, where, and which page.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// What to find: every term must occur.
    pub terms: SearchTerms,
    /// The searcher's account; `None` for a guest, who sees public rooms only.
    pub account: Option<AccountId>,
    /// Only this room (already checked visible to the searcher by the caller), or every room
    /// the searcher may see.
    pub room: Option<RoomName>,
    /// Only hits stored before this [`SearchHit::seq`] (the previous page's `next`).
    pub before: Option<u64>,
    /// Most hits to return.
    pub limit: u32,
}

/// One message that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    /// Its room.
    pub room: RoomName,
    /// Its per-room id (to jump to it with history).
    pub id: u64,
    /// Server time of the post, ms since the Unix epoch.
    pub ts: i64,
    /// The sender's display name.
    pub from: String,
    /// Part of the text around the matches, each match between [`MATCH_START`] and
    /// [`MATCH_END`]; `…` where text was cut.
    pub snippet: String,
    /// Its place in the store's order (newest first): the paging cursor.
    pub seq: u64,
}

/// Full-text search over history. Methods read only.
#[async_trait]
pub trait MessageSearch: Send + Sync + 'static {
    /// Up to `query.limit` hits, newest first (in the order messages were stored, which is the
    /// order they were posted except for history brought in by `hubbub import`/`copy`), from
    /// rooms the searcher may see. Deleted messages never match.
    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_syntax_in_a_query_is_read_as_plain_terms() {
        let terms = SearchTerms::parse("NEAR(\"a\" b) OR body:c* -d ^e").expect("terms");
        assert_eq!(
            terms.terms(),
            ["NEAR", "a", "b", "OR", "body", "c", "d", "e"]
        );
        assert_eq!(
            terms.fts5(),
            "\"NEAR\" \"a\" \"b\" \"OR\" \"body\" \"c\" \"d\" \"e\""
        );
    }

    #[test]
    fn a_query_of_only_punctuation_is_refused_as_empty() {
        assert_eq!(SearchTerms::parse(" \"*()- "), Err(BadQuery::Empty));
    }

    #[test]
    fn an_over_long_query_is_refused() {
        let raw = "a".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(SearchTerms::parse(&raw), Err(BadQuery::TooLong));
    }

    #[test]
    fn apostrophes_stay_inside_words_only() {
        let terms = SearchTerms::parse("'don't' x").expect("terms");
        assert_eq!(terms.terms(), ["don't", "x"]);
    }
}
