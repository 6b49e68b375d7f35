//! `GET /api/search` (issue 20): full-text search over the rooms the caller may read.
//!
//! Admission as every API request (rate limit, caller, and for `room=` the room checks: 404 for
//! a private room or DM the caller is not in). The store returns only hits from rooms the
//! caller's account may see; a token limited to some rooms additionally drops hits outside its
//! grant here, reading further pages until this one is full or [`MAX_ROUNDS`] store pages were
//! read (then the page is shorter, and `next` still continues where the reading stopped).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::admission::{Door, Entry};
use super::{ApiError, AppState};
use crate::protocol::ErrorCode;
use crate::store::search::{SearchHit, SearchQuery, SearchTerms};

/// Hits per page when the request names no `limit`.
pub const DEFAULT_SEARCH_LIMIT: u32 = 20;
/// Most hits per page.
pub const MAX_SEARCH_LIMIT: u32 = 50;
/// Store pages one request reads at most while a token's grant drops hits.
const MAX_ROUNDS: usize = 4;

/// Query of `GET /api/search`.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    q: Option<String>,
    room: Option<String>,
    before: Option<u64>,
    limit: Option<u64>,
}

/// One hit as the API sends it.
#[derive(Debug, Serialize)]
struct HitView<'a> {
    room: &'a str,
    id: u64,
    ts: i64,
    from: &'a str,
    snippet: &'a str,
    seq: u64,
}

impl<'a> From<&'a SearchHit> for HitView<'a> {
    fn from(hit: &'a SearchHit) -> Self {
        HitView {
            room: hit.room.as_str(),
            id: hit.id,
            ts: hit.ts,
            from: &hit.from,
            snippet: &hit.snippet,
            seq: hit.seq,
        }
    }
}

/// The answer: hits newest first, and the `before` of the next page (`null` at the end).
#[derive(Debug, Serialize)]
struct SearchPage<'a> {
    results: Vec<HitView<'a>>,
    next: Option<u64>,
}

/// `GET /api/search?q=TERMS&room=ROOM&before=SEQ&limit=N`.
pub async fn search(
    State(state): State<Arc<AppState>>,
    door: Door,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::BadQuery, e.body_text()))?;
    let entry = Entry::Api {
        room: params.room.as_deref(),
    };
    let admitted = door.admit(&state, entry).await?;
    let terms = SearchTerms::parse(params.q.as_deref().unwrap_or(""))
        .map_err(|err| ApiError::new(ErrorCode::BadQuery, err.to_string()))?;
    let limit = params.limit.map_or(DEFAULT_SEARCH_LIMIT, |n| {
        n.clamp(1, u64::from(MAX_SEARCH_LIMIT)) as u32
    });
    let mut query = SearchQuery {
        terms,
        account: admitted.caller.access().account,
        room: admitted.room,
        before: params.before,
        limit: limit + 1,
    };
    let search = &state.hub.people().search;
    let mut hits: Vec<SearchHit> = Vec::new();
    let mut next = None;
    for _ in 0..MAX_ROUNDS {
        let batch = search.search(&query).await?;
        let store_has_more = batch.len() == query.limit as usize;
        let mut unread = batch.into_iter();
        for hit in unread.by_ref() {
            next = Some(hit.seq);
            if admitted.caller.may_see(hit.room.as_str()) {
                hits.push(hit);
            }
            if hits.len() == limit as usize {
                break;
            }
        }
        if unread.len() == 0 && !store_has_more {
            next = None;
            break;
        }
        if hits.len() == limit as usize {
            break;
        }
        query.before = next;
    }
    let results = hits.iter().map(HitView::from).collect();
    Ok(Json(SearchPage { results, next }).into_response())
}
