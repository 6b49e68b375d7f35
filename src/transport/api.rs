//! The REST routes. Posts go through the same [`Hub::post`](crate::hub::Hub::post) as WebSocket
//! messages: same ids, same broadcast, same ack-after-commit.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::admission::{Admitted, Door, Entry};
use super::{ApiError, AppState};
use crate::hub::{PostRefusal, Poster};
use crate::protocol::{
    ErrorCode, HistoryPage, Limits, attachment_ref, history_limit, post_text, reply_to,
};

/// Body of `POST /api/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
pub struct PostBody {
    /// The sender's name: required without auth; with auth, optional and, if given, must be the
    /// token's `sub`.
    from: Option<String>,
    data: String,
    /// The id of the message (in the same room) this post answers (issue 20).
    reply_to: Option<serde_json::Value>,
    /// A stored file to attach, `{"hash", "name"}` (issue 20).
    attachment: Option<serde_json::Value>,
}

/// Query of the history route.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    before: Option<u64>,
    limit: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RoomRow {
    room: String,
    members: usize,
    last_id: u64,
}

/// `POST /api/rooms/{room}/messages`: store, broadcast, answer 201 once committed. The same
/// rules as a WebSocket post: per-IP rate limit (429), token and room grant (401/403).
pub async fn post_message(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path(room): Path<String>,
    body: Result<Json<PostBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let entry = Entry::Api { room: Some(&room) };
    let mut admitted = door.admit(&state, entry).await?;
    let room = admitted.named_room();
    let Admitted { client, caller, .. } = admitted;
    let Json(body) = body.map_err(json_error)?;
    let from = caller
        .name(body.from.as_deref())?
        .ok_or_else(|| ApiError::new(ErrorCode::BadName, "\"from\" is required"))?;
    if matches!(caller, super::auth::Caller::Guest) {
        super::admission::reserved_for_accounts(&state, &from).await?;
    }
    let limits = Limits {
        max_message_bytes: state.config.max_message_bytes,
    };
    let wanted = attachment_ref(body.attachment.as_ref())?;
    let text = post_text(&body.data, wanted.is_some(), limits)?;
    let reply_to = reply_to(body.reply_to.as_ref())?.map(std::num::NonZeroU64::get);
    if let Some(id) = reply_to
        && !state.hub.message_exists(&room, id).await?
    {
        let message = format!("no message {id} in {room} to reply to");
        return Err(ApiError::new(ErrorCode::NotFound, message));
    }
    let attachment = match wanted {
        Some(wanted) => Some(
            state
                .hub
                .attachment(wanted)
                .await
                .map_err(|err| ApiError::new(err.code(), err.client_message()))?,
        ),
        None => None,
    };
    // A muted account's post, or one faster than slow mode, is refused and not stored.
    let account = caller.access().account;
    let poster = account.map_or(Poster::Address(client), Poster::Account);
    if let Err(refusal) = state.hub.check_post(&room, account, poster).await {
        return Err(match refusal {
            PostRefusal::Store(err) => err.into(),
            refusal => ApiError::new(refusal.code(), refusal.message(&room)),
        });
    }
    let stored = state
        .hub
        .post_reply(room, from, text, account, reply_to, attachment)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": stored.id, "room": stored.room.as_str()})),
    )
        .into_response())
}

/// A body that is not the expected JSON is 400 `bad_json`; one over `--max-body-bytes` keeps
/// its 413 (code `too_long`).
fn json_error(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: ErrorCode::TooLong,
            message: bounded(rejection.body_text()),
        };
    }
    ApiError::new(ErrorCode::BadJson, bounded(rejection.body_text()))
}

/// `GET /api/rooms/{room}/messages?before=ID&limit=N`: one page, oldest first.
pub async fn history(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path(room): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let entry = Entry::Api { room: Some(&room) };
    let room = door.admit(&state, entry).await?.named_room();
    let Query(query) =
        query.map_err(|e| ApiError::new(ErrorCode::BadJson, bounded(e.body_text())))?;
    // The change cursor before the page: see `Hub::change_cursor`.
    let changes = state.hub.change_cursor(&room).await?;
    let page = state
        .hub
        .history(&room, query.before, history_limit(query.limit))
        .await?;
    let message_state = state.hub.page_state(&room, &page.messages).await?;
    let body = HistoryPage {
        messages: state.hub.views(&page.messages),
        has_more: page.has_more,
        state: message_state,
        changes: Some(changes),
    };
    Ok(Json(body).into_response())
}

/// `GET /api/rooms`: rooms with members or messages; with auth, only those the token allows.
pub async fn rooms(State(state): State<Arc<AppState>>, door: Door) -> Result<Response, ApiError> {
    let caller = door.admit(&state, Entry::Api { room: None }).await?.caller;
    let rooms = state.hub.rooms().await?;
    let account = caller.access().account;
    let mut rows: Vec<RoomRow> = Vec::with_capacity(rooms.len());
    for r in rooms {
        // Private rooms and DMs are listed to their members only (issue 19).
        if caller.may_see(&r.room) && state.hub.can_see(&r.room, account).await? {
            rows.push(RoomRow {
                room: r.room,
                members: r.members,
                last_id: r.last_id,
            });
        }
    }
    Ok(Json(rows).into_response())
}

/// Longest rejection text the API sends back, in characters.
const MAX_REJECTION_CHARS: usize = 200;

/// Cuts a rejection text down to size. axum's JSON and query rejections quote serde's message,
/// which repeats an offending string in full: without this, a 60 KB body of one JSON string came
/// back as a 60 KB error.
fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_REJECTION_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}
