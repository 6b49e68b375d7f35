//! The moderation side of the HTTP API (issue 19; docs/protocol.md "Moderation"):
//! `GET /api/audit` (the audit log: admins all of it, owners and moderators their rooms'
//! rows) and the operator block list, `POST /api/admin/accounts/{name}/disable` and `.../enable`
//! (admins only). The frames that moderate a room live in the hub (hub/moderation.rs); these
//! are what an operator's tools and the web client's admin view read and do over HTTP.
//!
//! Every route needs a signed-in caller (a session cookie or a token naming an account): 401
//! otherwise. Rights are read from the store on every request (an admin whose rights were
//! withdrawn loses them at once). State-changing routes are subject to the CSRF rule of cookie
//! requests, which the caller resolution enforces (docs/security.md).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::auth::Caller;
use super::client::ClientAddr;
use super::{ApiError, AppState};
use crate::broker::AccountClosed;
use crate::protocol::{ErrorCode, display_name, room_name};
use crate::store::accounts::{Account, AccountId};
use crate::store::moderation::{AuditEntry, AuditQuery, AuditRecord};

/// Default and largest page of `GET /api/audit`.
const DEFAULT_AUDIT_LIMIT: u32 = 50;
/// See [`DEFAULT_AUDIT_LIMIT`].
const MAX_AUDIT_LIMIT: u32 = 500;

/// Query of `GET /api/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    /// Only this room's rows.
    room: Option<String>,
    /// Rows older than this id (the previous page's last `id`).
    before: Option<i64>,
    /// Rows per page, 1 to 500 (default 50).
    limit: Option<u32>,
}

/// One audit row on the wire.
#[derive(Debug, Serialize)]
struct AuditRow {
    id: i64,
    ts: i64,
    actor: String,
    action: String,
    room: Option<String>,
    target: Option<String>,
    detail: Option<String>,
}

impl From<AuditEntry> for AuditRow {
    fn from(entry: AuditEntry) -> Self {
        AuditRow {
            id: entry.id,
            ts: entry.ts_ms,
            actor: entry.record.actor,
            action: entry.record.action,
            room: entry.record.room,
            target: entry.record.target,
            detail: entry.record.detail,
        }
    }
}

/// The signed-in account behind a request: 401 for a guest or a caller without an account.
async fn signed_in(state: &AppState, caller: &Caller) -> Result<Account, ApiError> {
    let unauthenticated = || ApiError::new(ErrorCode::Unauthenticated, "sign in first");
    let id = caller.access().account.ok_or_else(unauthenticated)?;
    let account = state.hub.people().accounts.account_by_id(id).await?;
    account
        .filter(|account| !account.disabled)
        .ok_or_else(unauthenticated)
}

/// `GET /api/audit?room=&before=&limit=`: audit rows, newest first, as `{"entries": [...]}`.
/// Admins read every row (or one room's); owners and moderators their rooms' rows only. A room
/// the caller may not see is 404, one it sees but does not moderate 403.
pub async fn audit(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    caller: Result<Caller, ApiError>,
    query: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    state.charge_api(client)?;
    let caller = caller?;
    let account = signed_in(&state, &caller).await?;
    let Query(params) = query.map_err(|_| {
        ApiError::new(
            ErrorCode::BadJson,
            "room must be a room name, before and limit non-negative integers",
        )
    })?;
    let rooms = match &params.room {
        Some(raw) => {
            let room = room_name(raw)?;
            if !account.admin {
                may_read_room_audit(&state, &caller, account.id, room.as_str()).await?;
            }
            Some(vec![room.as_str().to_owned()])
        }
        None if account.admin => None,
        None => Some(moderated_rooms(&state, account.id).await?),
    };
    let query = AuditQuery {
        rooms,
        before: params.before,
        limit: params
            .limit
            .unwrap_or(DEFAULT_AUDIT_LIMIT)
            .clamp(1, MAX_AUDIT_LIMIT),
    };
    let entries = state.hub.people().moderation.audit(&query).await?;
    let rows: Vec<AuditRow> = entries.into_iter().map(AuditRow::from).collect();
    Ok(Json(serde_json::json!({ "entries": rows })).into_response())
}

/// Whether a non-admin may read `room`'s audit rows: 404 for a room it may not see, 403 for one
/// it does not moderate.
async fn may_read_room_audit(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    room: &str,
) -> Result<(), ApiError> {
    let policy = state.hub.policy(room).await?;
    if !caller.may_see(room) || !policy.visible_to(Some(account)) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such room"));
    }
    if !policy.can_moderate(Some(account)) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the room's owners and moderators read its audit log",
        ));
    }
    Ok(())
}

/// The rooms the account owns or moderates.
async fn moderated_rooms(state: &AppState, account: AccountId) -> Result<Vec<String>, ApiError> {
    let sidebar = state.hub.people().directory.sidebar(account).await?;
    Ok(sidebar
        .into_iter()
        .filter(|entry| entry.role.is_some_and(|role| role.can_moderate()))
        .map(|entry| entry.settings.room)
        .collect())
}

/// `POST /api/admin/accounts/{name}/disable`: puts the account on the block list (admins only).
/// Its sessions are revoked, its sign-in refused, and every open connection of it, on every
/// node, is closed with 1008.
pub async fn disable(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    caller: Result<Caller, ApiError>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, client, caller, &name, true).await
}

/// `POST /api/admin/accounts/{name}/enable`: takes the account off the block list (admins only).
pub async fn enable(
    State(state): State<Arc<AppState>>,
    ClientAddr(client): ClientAddr,
    caller: Result<Caller, ApiError>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_disabled(&state, client, caller, &name, false).await
}

async fn set_disabled(
    state: &AppState,
    client: std::net::IpAddr,
    caller: Result<Caller, ApiError>,
    name: &str,
    disabled: bool,
) -> Result<Response, ApiError> {
    state.charge_api(client)?;
    let caller = caller?;
    let admin = signed_in(state, &caller).await?;
    if !admin.admin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only operators manage the block list",
        ));
    }
    let name = display_name(name).map_err(|m| ApiError::new(ErrorCode::BadName, m))?;
    let accounts = &state.hub.people().accounts;
    let no_such = || ApiError::new(ErrorCode::NotFound, "no such account");
    let target = accounts
        .account_by_key(&crate::accounts::name_key(&name))
        .await?
        .ok_or_else(no_such)?;
    if target.id == admin.id {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "an operator cannot block themselves",
        ));
    }
    if !accounts.set_disabled(target.id, disabled).await? {
        return Err(no_such());
    }
    let action = if disabled { "disable" } else { "enable" };
    let record = AuditRecord {
        actor: admin.name.clone(),
        action: action.to_owned(),
        room: None,
        target: Some(target.name.clone()),
        detail: None,
    };
    state.hub.people().moderation.record_audit(&record).await?;
    info!(target = %target.name, by = %admin.name, action, "block list changed");
    if disabled {
        state
            .hub
            .close_account(target.id, AccountClosed::Disabled)
            .await;
    }
    Ok(Json(serde_json::json!({"name": target.name, "disabled": disabled})).into_response())
}
