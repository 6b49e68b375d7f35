//! Changes to messages over HTTP (issue 20; docs/protocol.md "HTTP API"): what the WebSocket
//! frames `edit`, `delete` and `react` do, for callers that speak HTTP.
//!
//! - `PATCH  /api/rooms/{room}/messages/{id}` `{"text": T}`: edit one's own message;
//! - `DELETE /api/rooms/{room}/messages/{id}`: delete one's own message, or any as a moderator;
//! - `POST   /api/rooms/{room}/messages/{id}/reactions` `{"emoji": E}`: react;
//! - `DELETE /api/rooms/{room}/messages/{id}/reactions` `{"emoji": E}` or `?emoji=E`: take back.
//!
//! Each answers 204 once the change is stored (members get the `change` frame as for a frame).
//! There is no second implementation: the request is admitted like every API request (rate
//! limit, caller, room grant, 404 for a room the caller may not see; CSRF for cookie requests
//! is the router's layer), then the body's fields are put into the very frame a WebSocket
//! client would send, decoded by the protocol's parser and handled by a request-scoped hub
//! session ([`crate::hub::Hub::request_session`]) exactly as a WebSocket frame is: its `ack` is
//! the 204, its `error` the HTTP error with the same code.
//! Only signed-in callers (a session cookie, or a token naming an account) change messages: 401
//! otherwise.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::admission::{Door, Entry};
use super::auth::Caller;
use super::outbox::Outbox;
use super::{ApiError, AppState};
use crate::protocol::{ErrorCode, Limits, parse_client_frame};

/// The `ref` a route's frame carries, so its answer is told from anything else.
const REQUEST_REF: &str = "http";

/// Query of the reaction removal route.
#[derive(Debug, Deserialize)]
pub struct EmojiQuery {
    /// The reaction to take back (else the body's `emoji`).
    emoji: Option<String>,
}

/// `PATCH /api/rooms/{room}/messages/{id}` `{"text": T}`.
pub async fn edit(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path((room, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (caller, id) = admit(&state, &door, &room, &id).await?;
    let text = body_field(&body, "text")?;
    let frame = json!({"type": "edit", "data": {"room": room, "id": id, "text": text}});
    run(&state, &caller, frame).await
}

/// `DELETE /api/rooms/{room}/messages/{id}`.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path((room, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (caller, id) = admit(&state, &door, &room, &id).await?;
    let frame = json!({"type": "delete", "data": {"room": room, "id": id}});
    run(&state, &caller, frame).await
}

/// `POST /api/rooms/{room}/messages/{id}/reactions` `{"emoji": E}`.
pub async fn react(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path((room, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (caller, id) = admit(&state, &door, &room, &id).await?;
    let emoji = body_field(&body, "emoji")?;
    let frame = json!({"type": "react", "data": {"room": room, "id": id, "emoji": emoji}});
    run(&state, &caller, frame).await
}

/// `DELETE /api/rooms/{room}/messages/{id}/reactions` with `?emoji=E` or `{"emoji": E}`.
pub async fn unreact(
    State(state): State<Arc<AppState>>,
    door: Door,
    Path((room, id)): Path<(String, String)>,
    Query(query): Query<EmojiQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (caller, id) = admit(&state, &door, &room, &id).await?;
    let emoji = match query.emoji {
        Some(emoji) => Value::String(emoji),
        None => body_field(&body, "emoji")?,
    };
    let frame = json!({"type": "react",
                       "data": {"room": room, "id": id, "emoji": emoji, "remove": true}});
    run(&state, &caller, frame).await
}

/// The admission every change route shares: the API door for the path's room (rate limit,
/// caller, room grant and visibility), a signed-in caller (401 otherwise), and a message id.
async fn admit(
    state: &AppState,
    door: &Door,
    room: &str,
    id: &str,
) -> Result<(Caller, u64), ApiError> {
    let admitted = door.admit(state, Entry::Api { room: Some(room) }).await?;
    let caller = admitted.caller;
    if caller.access().account.is_none() {
        return Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "sign in to change messages: guests cannot",
        ));
    }
    let id = id
        .parse::<u64>()
        .map_err(|_| ApiError::new(ErrorCode::BadJson, "the message id must be a number"))?;
    Ok((caller, id))
}

/// One field of a JSON object body (`null` when absent: the frame's decoder says what is
/// missing, in the words a WebSocket client gets).
fn body_field(body: &[u8], field: &str) -> Result<Value, ApiError> {
    let mut object: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(ErrorCode::BadJson, "the body must be a JSON object"))?;
    Ok(object.remove(field).unwrap_or(Value::Null))
}

/// The `error` frame as the session answers it.
#[derive(Deserialize)]
struct ErrorFrame {
    data: ErrorData,
}

#[derive(Deserialize)]
struct ErrorData {
    code: ErrorCode,
    message: String,
}

/// Decodes `frame` as the WebSocket parser does, handles it in a request-scoped session of
/// `caller`, and turns its answer into the response: `ack` → 204, `error` → its code's status.
async fn run(state: &AppState, caller: &Caller, mut frame: Value) -> Result<Response, ApiError> {
    frame["ref"] = Value::from(REQUEST_REF);
    let limits = Limits {
        max_message_bytes: state.config.max_message_bytes,
    };
    let request = parse_client_frame(&frame.to_string(), limits)?;
    let name = caller.name(None)?.unwrap_or_default();
    let (outbox, receiver) = Outbox::new(8);
    let mut session = state.hub.request_session(name, caller.access(), outbox);
    session.handle(request).await;
    session.disconnect().await;
    while let Some(answer) = receiver.try_recv() {
        let Ok(value) = serde_json::from_slice::<Value>(&answer.json) else {
            continue;
        };
        if value["ref"] != REQUEST_REF {
            continue;
        }
        if value["type"] == "ack" {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        if let Ok(ErrorFrame { data }) = serde_json::from_value::<ErrorFrame>(value) {
            return Err(ApiError::new(data.code, data.message));
        }
    }
    Err(ApiError::new(
        ErrorCode::StoreUnavailable,
        "the change was not answered; try again",
    ))
}
