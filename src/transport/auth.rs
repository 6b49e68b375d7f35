//! Who a request acts for ([`Caller`]), the caller step of the admission path
//! (transport/admission.rs). Today's one credential is a token, found in `Authorization: Bearer`
//! or the `token` query parameter (the only way a browser WebSocket or EventSource can send one)
//! and checked here: 401 before any upgrade when auth is on and it does not pass.
//! [`Caller::resolve`] is the one place another credential kind is added. What the caller may do
//! afterwards is decided by the hub session ([`Access`]) or by the API handlers.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use serde::Deserialize;
use tracing::debug;

use super::{ApiError, AppState};
use crate::hub::Access;
use crate::protocol::{ErrorCode, RoomName, display_name};
use crate::token::{Identity, verify};

/// Who a request acts for, resolved once per request by [`Caller::resolve`] (the admission
/// path's caller step, transport/admission.rs).
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credential, and none required (auth off): a guest, who may pick any valid name.
    /// `/echo`, which acts for no one, admits every connection as one.
    Guest,
    /// A token that passed: its identity fixes the name and the rooms.
    Token(Identity),
}

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
        Caller::resolve(state, &parts.headers, &parts.uri).await
    }
}

impl Caller {
    /// Who the request with `headers` and `uri` acts for: each credential kind is tried in turn,
    /// and the first one the request presents decides (a credential that fails is refused, 401,
    /// never skipped for the next). With none, a guest when auth is off, else 401.
    ///
    /// Credential kinds, in order:
    /// 1. a token (`Authorization: Bearer` or `?token=`), when `--auth-secret` is set;
    ///
    /// A new kind (a signed-in account's session cookie, issue 19) is one more step here: its
    /// own `fn ..._credential(state, headers) -> Option<Result<Caller, ApiError>>` tried in this
    /// list, and a `Caller` variant whose `access`, `name`, `deadline`, `check_room` and
    /// `may_see` arms say what it allows.
    pub async fn resolve(
        state: &AppState,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Caller, ApiError> {
        if let Some(caller) = token_credential(state, headers, uri) {
            return caller;
        }
        match &state.config.auth_secret {
            None => Ok(Caller::Guest),
            Some(_) => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "a token is required (Authorization: Bearer or ?token=)",
            )),
        }
    }

    /// What the hub session of this caller may do.
    pub fn access(&self) -> Access {
        match self {
            Caller::Guest => Access::open(),
            Caller::Token(identity) => Access::token(identity.grant.clone()),
        }
    }

    /// The display name a connection gets: with a token, its `sub`, and a requested `name` must
    /// be the same (403 `unauthorized` otherwise); without, the requested name as validated.
    pub fn name(&self, requested: Option<&str>) -> Result<Option<String>, ApiError> {
        let requested = requested
            .map(display_name)
            .transpose()
            .map_err(|m| ApiError::new(ErrorCode::BadName, m))?;
        match (self, requested) {
            (Caller::Guest, requested) => Ok(requested),
            (Caller::Token(identity), None) => Ok(Some(identity.name.clone())),
            (Caller::Token(identity), Some(name)) if name == identity.name => Ok(Some(name)),
            (Caller::Token(_), Some(_)) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the name is fixed by your token",
            )),
        }
    }

    /// When the caller's token expires, as a deadline for its connection (`None`: no token).
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        match self {
            Caller::Guest => None,
            Caller::Token(identity) => Some(tokio::time::Instant::now() + identity.remaining()),
        }
    }

    /// 403 `unauthorized` unless the token allows `room`.
    pub fn check_room(&self, room: &RoomName) -> Result<(), ApiError> {
        match self {
            Caller::Token(identity) if !identity.grant.allows(room) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("your token does not allow room {room}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `room` may be listed to this caller.
    pub fn may_see(&self, room: &str) -> bool {
        match (self, RoomName::parse(room)) {
            (Caller::Guest, _) => true,
            (Caller::Token(identity), Ok(room)) => identity.grant.allows(&room),
            (Caller::Token(_), Err(_)) => false,
        }
    }
}

/// The token credential: `None` when auth is off or the request presents no token; else the
/// caller its token names, or 401 when it fails.
fn token_credential(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<Result<Caller, ApiError>> {
    let secret = state.config.auth_secret.as_ref()?;
    let token = presented_token(headers, uri)?;
    Some(match verify(secret, &token) {
        Ok(identity) => Ok(Caller::Token(identity)),
        Err(err) => {
            debug!(cause = %err, "token refused");
            Err(ApiError::new(ErrorCode::Unauthenticated, err.to_string()))
        }
    })
}

/// The token a request presents: `Authorization: Bearer`, else the `token` query parameter.
fn presented_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    bearer.or_else(|| {
        Query::<TokenQuery>::try_from_uri(uri)
            .ok()
            .and_then(|Query(q)| q.token)
    })
}
