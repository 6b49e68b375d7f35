//! Token auth at the HTTP edge: finds the token a request presents (`Authorization: Bearer` or
//! the `token` query parameter, the only way a browser WebSocket or EventSource can send one),
//! checks it, and answers 401 before any upgrade when auth is on and it does not pass. What the
//! token allows afterwards is decided by the hub session ([`Access`]) or by the API handlers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::header;
use axum::http::request::Parts;
use serde::Deserialize;
use tracing::debug;

use super::{ApiError, AppState};
use crate::hub::Access;
use crate::protocol::{ErrorCode, RoomName, display_name};
use crate::token::{Identity, verify};

/// The caller of a request: `Some(identity)` when auth is on and the token passed, `None` when
/// auth is off. Extracting it refuses the request (401) when auth is on and the token fails.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Identity>);

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = &state.config.auth_secret else {
            return Ok(Caller(None));
        };
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            });
        let token = match bearer {
            Some(token) => Some(token),
            None => Query::<TokenQuery>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|Query(q)| q.token),
        };
        let Some(token) = token else {
            return Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "a token is required (Authorization: Bearer or ?token=)",
            ));
        };
        match verify(secret, &token) {
            Ok(identity) => Ok(Caller(Some(identity))),
            Err(err) => {
                debug!(cause = %err, "token refused");
                Err(ApiError::new(ErrorCode::Unauthenticated, err.to_string()))
            }
        }
    }
}

impl Caller {
    /// What the hub session of this caller may do.
    pub fn access(&self) -> Access {
        match &self.0 {
            None => Access::open(),
            Some(identity) => Access::token(identity.grant.clone()),
        }
    }

    /// The display name a connection gets: with a token, its `sub`, and a requested `name` must
    /// be the same (403 `unauthorized` otherwise); without, the requested name as validated.
    pub fn name(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        let requested = requested
            .map(display_name)
            .transpose()
            .map_err(|m| ApiError::new(ErrorCode::BadName, m))?;
        match (&self.0, requested) {
            (None, requested) => Ok(requested),
            (Some(identity), None) => Ok(Some(identity.name.clone())),
            (Some(identity), Some(name)) if name == identity.name => Ok(Some(name)),
            (Some(_), Some(_)) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the name is fixed by your token",
            )),
        }
    }

    /// When the caller's token expires, as a deadline for its connection (`None`: no token).
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.0
            .as_ref()
            .map(|identity| tokio::time::Instant::now() + identity.remaining())
    }

    /// 403 `unauthorized` unless the token allows `room`.
    pub fn check_room(&self, room: &RoomName) -> Result<(), ApiError> {
        match &self.0 {
            Some(identity) if !identity.grant.allows(room) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("your token does not allow room {room}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `room` may be listed to this caller.
    pub fn may_see(&self, room: &str) -> bool {
        match (&self.0, RoomName::parse(room)) {
            (None, _) => true,
            (Some(identity), Ok(room)) => identity.grant.allows(&room),
            (Some(_), Err(_)) => false,
        }
    }
}
