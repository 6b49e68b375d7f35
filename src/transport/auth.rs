//! Who a request acts for ([`Caller`]), the caller step of the admission path
//! (transport/admission.rs). Today's one credential is a token, found in `Authorization: Bearer`
//! or the `token` query parameter (the only way a browser WebSocket or EventSource can send one)
//! and checked here: 401 before any upgrade when auth is on and it does not pass.
//! [`Caller::resolve`] is the one place another credential kind is added. What the caller may do
//! afterwards is decided by the hub session ([`Access`]) or by the API handlers.
//!
//! Issue 19 adds signed-in accounts: a token's `sub` names an account (made, without a password,
//! the first time a valid token names it), and a browser's `hubbub_session` cookie
//! (transport/account_routes.rs) is a credential of its own. `--guests=false` refuses callers
//! with neither (401); with `--auth-secret` and no `--guests`, guests stay refused as before.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri, header};
use serde::Deserialize;
use tracing::debug;

use super::account_routes::{api_error, cookie_session};
use super::{ApiError, AppState};
use crate::accounts::{AccountError, ActiveSession, name_key};
use crate::hub::Access;
use crate::protocol::{ErrorCode, RoomGrant, RoomName, WelcomeAccount, display_name};
use crate::store::accounts::AccountId;
use crate::token::{Identity, verify};

/// Who a request acts for, resolved once per request by [`Caller::resolve`] (the admission
/// path's caller step, transport/admission.rs).
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credential, and none required (auth off): a guest, who may pick any valid name.
    /// `/echo`, which acts for no one, admits every connection as one.
    Guest,
    /// A token that passed: its identity fixes the name and the rooms; its `sub`'s account
    /// (`None` only for a `sub` that is not a valid account name).
    Token(Identity, Option<AccountId>),
    /// A browser signed in to an account (a live `hubbub_session` cookie): the account fixes
    /// the name; every public room is open to it, private ones by membership.
    Session(Box<ActiveSession>),
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
    /// 1. a token (`Authorization: Bearer` or `?token=`), when `--auth-secret` is set; its
    ///    `sub`'s account is looked up (and made on first use); a disabled account is 401;
    /// 2. a live session cookie, unless the request has an `Authorization` header (a cookie
    ///    that is unknown, expired or revoked counts as none);
    ///
    /// and with none, a guest when guests are allowed ([`crate::config::Config::guests_allowed`]).
    ///
    /// A new kind is one more step here: its own `fn ..._credential(state, headers) ->
    /// Option<Result<Caller, ApiError>>` tried in this list, and a `Caller` variant whose
    /// `access`, `name`, `deadline`, `check_room` and `may_see` arms say what it allows.
    pub async fn resolve(
        state: &AppState,
        headers: &HeaderMap,
        uri: &Uri,
    ) -> Result<Caller, ApiError> {
        if let Some(identity) = token_credential(state, headers, uri) {
            let identity = identity?;
            let account = token_account(state, &identity).await?;
            return Ok(Caller::Token(identity, account));
        }
        if !headers.contains_key(header::AUTHORIZATION)
            && let Some(session) = cookie_session(state, headers).await?
        {
            return Ok(Caller::Session(Box::new(session)));
        }
        if state.config.guests_allowed() {
            return Ok(Caller::Guest);
        }
        let message = match &state.config.auth_secret {
            Some(_) => "a token is required (Authorization: Bearer or ?token=)",
            None => "guests are not allowed here: sign in first",
        };
        Err(ApiError::new(ErrorCode::Unauthenticated, message))
    }

    /// What the hub session of this caller may do.
    pub fn access(&self) -> Access {
        match self {
            Caller::Guest => Access::open(),
            Caller::Token(identity, account) => Access {
                account: *account,
                ..Access::token(identity.grant.clone())
            },
            Caller::Session(session) => Access {
                fixed_name: true,
                grant: RoomGrant::all(),
                account: Some(session.account.id),
                welcome_account: Some(WelcomeAccount {
                    name: session.account.name.clone(),
                    admin: session.account.admin,
                }),
            },
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
            (Caller::Token(identity, _), None) => Ok(Some(identity.name.clone())),
            (Caller::Token(identity, _), Some(name)) if name == identity.name => Ok(Some(name)),
            (Caller::Token(..), Some(_)) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the name is fixed by your token",
            )),
            (Caller::Session(session), None) => Ok(Some(session.account.name.clone())),
            (Caller::Session(session), Some(name))
                if name_key(&name) == session.account.name_key =>
            {
                Ok(Some(session.account.name.clone()))
            }
            (Caller::Session(_), Some(_)) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the name is fixed by your account",
            )),
        }
    }

    /// When the caller's token expires, as a deadline for its connection (`None`: no token).
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        match self {
            Caller::Guest | Caller::Session(_) => None,
            Caller::Token(identity, _) => Some(tokio::time::Instant::now() + identity.remaining()),
        }
    }

    /// 403 `unauthorized` unless the token allows `room`.
    pub fn check_room(&self, room: &RoomName) -> Result<(), ApiError> {
        match self {
            Caller::Token(identity, _) if !identity.grant.allows(room) => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!("your token does not allow room {room}"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `room` may be listed to this caller.
    pub fn may_see(&self, room: &str) -> bool {
        match (self, RoomName::parse(room)) {
            (Caller::Guest | Caller::Session(_), _) => true,
            (Caller::Token(identity, _), Ok(room)) => identity.grant.allows(&room),
            (Caller::Token(..), Err(_)) => false,
        }
    }
}

/// The account a token's `sub` names, made on first use: 401 when it is disabled; `None` for a
/// `sub` that breaks the name rule (such a token still works, as a caller without an account).
async fn token_account(
    state: &AppState,
    identity: &Identity,
) -> Result<Option<AccountId>, ApiError> {
    match state.accounts.for_token_subject(&identity.name).await {
        Ok(account) => Ok(Some(account.id)),
        Err(AccountError::BadName(_)) => Ok(None),
        Err(AccountError::Disabled) => Err(ApiError::new(
            ErrorCode::Unauthenticated,
            "this account is disabled",
        )),
        Err(err) => Err(api_error(err)),
    }
}

/// The token credential: `None` when auth is off or the request presents no token; else the
/// identity its token names, or 401 when it fails.
fn token_credential(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<Result<Identity, ApiError>> {
    let secret = state.config.auth_secret.as_ref()?;
    let token = presented_token(headers, uri)?;
    Some(match verify(secret, &token) {
        Ok(identity) => Ok(identity),
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
