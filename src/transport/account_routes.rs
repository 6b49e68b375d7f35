//! The accounts side of the HTTP API (issue 19; docs/protocol.md "Accounts and rooms",
//! docs/security.md "Accounts"): sign-up, sign-in, sign-out (here and everywhere), password
//! change, `GET /api/me` and invites, over [`crate::accounts::Accounts`].
//!
//! The session travels in the `hubbub_session` cookie: `HttpOnly` (scripts cannot read it),
//! `SameSite=Lax` (other sites' subrequests do not carry it), `Path=/`, and `Secure` when the
//! request came over https (directly, or as a trusted proxy says) or `--secure-cookies` is set.
//!
//! CSRF ([`csrf_guard`], a layer over every route): a state-changing request (not GET, HEAD or
//! OPTIONS) that carries a live session cookie and no `Authorization` header must send the
//! session's CSRF token in `X-CSRF-Token` and pass the Origin rule; sign-in and sign-up, which
//! act with no session's authority, must pass the Origin rule (against login CSRF). Requests
//! with a bearer token carry no ambient credential and need neither.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::{error, info};

use super::client::{ClientAddr, TrustedProxies};
use super::guard::{check_origin, client_key};
use super::{ApiError, AppState};
use crate::accounts::secret::same_secret;
use crate::accounts::{AccountError, ActiveSession, DEFAULT_INVITE_TTL, SESSION_TTL, SignedIn};
use crate::broker::AccountClosed;
use crate::protocol::{ErrorCode, room_name};
use crate::store::directory::Role;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "hubbub_session";
/// The header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Longest invite lifetime a request may ask for.
const MAX_INVITE_TTL: Duration = Duration::from_secs(90 * 24 * 3600);

/// Body of `POST /api/auth/signup`.
#[derive(Debug, Deserialize)]
pub struct SignUpBody {
    name: String,
    password: String,
    invite: Option<String>,
}

/// Body of `POST /api/auth/signin`.
#[derive(Debug, Deserialize)]
pub struct SignInBody {
    name: String,
    password: String,
}

/// Body of `POST /api/auth/password`.
#[derive(Debug, Deserialize)]
pub struct PasswordBody {
    old: String,
    new: String,
}

/// Body of `POST /api/invites`.
#[derive(Debug, Deserialize, Default)]
pub struct InviteBody {
    room: Option<String>,
    uses: Option<i64>,
    ttl_secs: Option<u64>,
}

/// The session token a request's `Cookie` headers carry, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The live session of the request's cookie, if any.
pub async fn cookie_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<ActiveSession>, ApiError> {
    match session_cookie(headers) {
        Some(token) => state.accounts.session(token).await.map_err(api_error),
        None => Ok(None),
    }
}

/// An accounts failure as its HTTP answer (429 gets `Retry-After` in [`error_response`]).
pub fn api_error(err: AccountError) -> ApiError {
    match err {
        AccountError::BadName(message) => ApiError::new(ErrorCode::BadName, message),
        AccountError::BadPassword(message) => ApiError::new(ErrorCode::BadPassword, message),
        AccountError::NameTaken => ApiError::new(ErrorCode::NameTaken, "that name is taken"),
        AccountError::BadCredentials => {
            ApiError::new(ErrorCode::Unauthenticated, "wrong name or password")
        }
        AccountError::Disabled => ApiError::new(ErrorCode::Forbidden, "this account is disabled"),
        AccountError::RateLimited { .. } => {
            ApiError::new(ErrorCode::RateLimited, "too many attempts; try again later")
        }
        AccountError::SignupClosed(message) => ApiError::new(ErrorCode::SignupClosed, message),
        AccountError::Store(err) => err.into(),
        AccountError::Hash(cause) => {
            error!(%cause, "password hashing failed");
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: ErrorCode::StoreUnavailable,
                message: "the server could not check the password; try again".to_owned(),
            }
        }
    }
}

/// [`api_error`] as a response, with `Retry-After` (whole seconds, at least 1) on 429.
fn error_response(err: AccountError) -> Response {
    let retry = match &err {
        AccountError::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
        _ => None,
    };
    let mut response = api_error(err).into_response();
    if let Some(seconds) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn json_error(rejection: JsonRejection) -> Response {
    ApiError::new(ErrorCode::BadJson, rejection.body_text()).into_response()
}

/// Whether the request reached us over https: only a trusted proxy's word counts
/// (`X-Forwarded-Proto: https` or `Forwarded: ...proto=https`).
fn came_over_https(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> bool {
    if !TrustedProxies::new(&state.config.trusted_proxies).contains(peer) {
        return false;
    }
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split([';', ',']))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(key, value)| {
            key.trim().eq_ignore_ascii_case("proto")
                && value.trim().trim_matches('"').eq_ignore_ascii_case("https")
        });
    forwarded_proto || forwarded
}

/// The `Set-Cookie` value for `token` (or, with `None`, one that deletes the cookie).
fn session_set_cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let line = match token {
        Some(token) => format!(
            "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{secure}"),
    };
    // Tokens are base64url: always a valid header value.
    HeaderValue::from_str(&line).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The body of `GET /api/me` for a signed-in account.
fn me_body(name: &str, admin: bool, csrf: &str) -> serde_json::Value {
    json!({"name": name, "admin": admin, "guest": false, "csrf": csrf})
}

/// A fresh sign-in as a response: `status`, the cookie, and `/api/me`'s body.
fn signed_in_response(status: StatusCode, signed_in: &SignedIn, secure: bool) -> Response {
    let body = me_body(
        &signed_in.account.name,
        signed_in.account.admin,
        &signed_in.csrf,
    );
    let mut response = (status, Json(body)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_set_cookie(Some(&signed_in.token), secure),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn secure_cookie(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    state.config.secure_cookies || came_over_https(state, peer.ip(), headers)
}

/// `POST /api/auth/signup {name, password, invite?}`: 201, the session cookie and `/api/me`'s
/// body; 409 `name_taken`, 400 `bad_name`/`bad_password`, 403 `signup_closed`, 429.
pub async fn signup(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Json<SignUpBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return json_error(rejection),
    };
    let outcome = state
        .accounts
        .sign_up(
            &body.name,
            &body.password,
            body.invite.as_deref(),
            client_key(client),
        )
        .await;
    let (signed_in, room) = match outcome {
        Ok(done) => done,
        Err(err) => return error_response(err),
    };
    if let Some(room) = room {
        join_invited_room(&state, &room, &signed_in).await;
    }
    signed_in_response(
        StatusCode::CREATED,
        &signed_in,
        secure_cookie(&state, peer, &headers),
    )
}

/// Adds a new account to the private room its invite was for.
async fn join_invited_room(state: &AppState, room: &str, signed_in: &SignedIn) {
    let added = state
        .hub
        .people()
        .directory
        .add_member(room, signed_in.account.id, Role::Member)
        .await;
    match (added, room_name(room)) {
        (Ok(_), Ok(room)) => state.hub.room_changed(&room).await,
        (Ok(_), Err(_)) => {}
        (Err(err), _) => {
            error!(cause = %err, room, account = signed_in.account.id.0, "invite's room not joined")
        }
    }
}

/// `POST /api/auth/signin {name, password}`: 200, a NEW session cookie and `/api/me`'s body;
/// 401 `unauthenticated` "wrong name or password" for an unknown name and a wrong password
/// alike; 429 with `Retry-After` past the limits.
pub async fn signin(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Json<SignInBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return json_error(rejection),
    };
    // The session the browser had (if any) ends: signing in never keeps an old session id.
    if let Some(old) = session_cookie(&headers)
        && let Err(err) = state.accounts.sign_out(old).await
    {
        return error_response(err);
    }
    match state
        .accounts
        .sign_in(&body.name, &body.password, client_key(client))
        .await
    {
        Ok(signed_in) => signed_in_response(
            StatusCode::OK,
            &signed_in,
            secure_cookie(&state, peer, &headers),
        ),
        Err(err) => error_response(err),
    }
}

/// The request's live session, or 401.
async fn required_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(ActiveSession, String), ApiError> {
    let unauthenticated = || ApiError::new(ErrorCode::Unauthenticated, "sign in first");
    let token = session_cookie(headers).ok_or_else(unauthenticated)?;
    let session = state
        .accounts
        .session(token)
        .await
        .map_err(api_error)?
        .ok_or_else(unauthenticated)?;
    Ok((session, token.to_owned()))
}

/// `GET /api/me`: `{name, admin, guest: false, csrf}` for a signed-in browser, else 401.
pub async fn me(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match required_session(&state, &headers).await {
        Ok((active, _)) => {
            let body = me_body(
                &active.account.name,
                active.account.admin,
                &active.session.csrf,
            );
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => err.into_response(),
    }
}

/// `POST /api/auth/signout`: ends this session and clears the cookie (204).
pub async fn signout(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (_, token) = match required_session(&state, &headers).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = state.accounts.sign_out(&token).await {
        return error_response(err);
    }
    cleared_cookie(&state, peer, &headers)
}

fn cleared_cookie(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_set_cookie(None, secure_cookie(state, peer, headers)),
    );
    response
}

/// `POST /api/auth/signout-all`: ends every session of the account and closes its open
/// connections on every node (204).
pub async fn signout_all(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (active, _) = match required_session(&state, &headers).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    if let Err(err) = state.accounts.sign_out_everywhere(active.account.id).await {
        return error_response(err);
    }
    state
        .hub
        .close_account(active.account.id, AccountClosed::SignedOut)
        .await;
    cleared_cookie(&state, peer, &headers)
}

/// `POST /api/auth/password {old, new}`: 204; every other session of the account ends and the
/// account's open connections close (the browser that changed it reconnects with its cookie).
/// 401 for a wrong `old`, 400 `bad_password` for a `new` that breaks the rule.
pub async fn password(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Json<PasswordBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return json_error(rejection),
    };
    let (active, token) = match required_session(&state, &headers).await {
        Ok(found) => found,
        Err(err) => return err.into_response(),
    };
    let changed = state
        .accounts
        .change_password(
            &active.account,
            &token,
            &body.old,
            &body.new,
            client_key(client),
        )
        .await;
    if let Err(err) = changed {
        return error_response(err);
    }
    state
        .hub
        .close_account(active.account.id, AccountClosed::PasswordChanged)
        .await;
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /api/invites {room?, uses?, ttl_secs?}`: `{code, url}`. Sign-up invites (no room)
/// are for admins; a room invite is for that room's owners (and admins), and the room must be
/// private. 403 `forbidden` otherwise.
pub async fn create_invite(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<InviteBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return json_error(rejection),
    };
    match invite(&state, &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

async fn invite(
    state: &AppState,
    headers: &HeaderMap,
    body: InviteBody,
) -> Result<Response, ApiError> {
    let (active, _) = required_session(state, headers).await?;
    let account = &active.account;
    let forbidden = || ApiError::new(ErrorCode::Forbidden, "you may not make this invite");
    if let Some(room) = &body.room {
        let room = room_name(room)?;
        let directory = &state.hub.people().directory;
        let role = directory.role(room.as_str(), account.id).await?;
        let private = directory
            .settings(room.as_str())
            .await?
            .is_some_and(|s| s.kind == crate::store::directory::RoomKind::Private);
        if role.is_none() && !account.admin {
            return Err(ApiError::new(ErrorCode::NotFound, "no such room"));
        }
        if !private || (role != Some(Role::Owner) && !account.admin) {
            return Err(forbidden());
        }
    } else if !account.admin {
        return Err(forbidden());
    }
    let ttl = body
        .ttl_secs
        .map_or(DEFAULT_INVITE_TTL, Duration::from_secs)
        .min(MAX_INVITE_TTL);
    let code = state
        .accounts
        .create_invite(
            Some(account.id),
            body.room.clone(),
            body.uses.unwrap_or(1),
            ttl,
        )
        .await
        .map_err(api_error)?;
    info!(
        account = account.id.0,
        room = body.room.as_deref(),
        "invite made"
    );
    let url = format!("/?invite={code}");
    Ok((StatusCode::CREATED, Json(json!({"code": code, "url": url}))).into_response())
}

/// Whether `method` can change state (everything but GET, HEAD and OPTIONS).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF rule of the module doc, in front of every route.
pub async fn csrf_guard(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !changes_state(request.method()) || request.headers().contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let path = request.uri().path();
    if path == "/api/auth/signin" || path == "/api/auth/signup" {
        if let Err(err) = check_origin(headers, &state.config.allowed_origins) {
            return err.into_response();
        }
        return next.run(request).await;
    }
    let session = match cookie_session(&state, headers).await {
        Ok(session) => session,
        Err(err) => return err.into_response(),
    };
    if let Some(active) = session {
        if let Err(err) = check_origin(headers, &state.config.allowed_origins) {
            return err.into_response();
        }
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !same_secret(sent, &active.session.csrf) {
            return ApiError::new(
                ErrorCode::BadCsrf,
                "this request needs the session's X-CSRF-Token header (GET /api/me gives it)",
            )
            .into_response();
        }
    }
    next.run(request).await
}
