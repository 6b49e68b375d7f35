//! Moderation records (issue 19): bans, mutes and slow mode per room, tombstones of deleted
//! messages, and the audit log of every moderation action.
//!
//! Every change here writes its audit row in the same transaction as the change itself, so the
//! log can neither miss an action nor record one that did not happen. Tables (migration 0004):
//! `bans` and `mutes` (one row per room and account, `until_ms` NULL = until lifted), `slow_mode`
//! (a row only while a room has it on), `audit`, and `messages.deleted_ms`.
//!
//! A deleted message keeps its row (ids are never reused and `since` stays valid) but loses its
//! text: the body becomes empty and `deleted_ms` records when. A stored message's text is
//! otherwise never empty (posts of empty text are refused by `protocol::message_text`), so an
//! empty text is how history, replay and SSE readers recognise a tombstone
//! ([`super::StoredMessage::is_deleted`]) without a column of their own.

use async_trait::async_trait;

use super::accounts::AccountId;
use super::{StoreError, StoredMessage};

/// The two per-account restrictions a room can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restriction {
    /// May not join (and is removed from the room when banned).
    Ban,
    /// May join and read, but not post.
    Mute,
}

impl Restriction {
    /// The restriction's table.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Restriction::Ban => "bans",
            Restriction::Mute => "mutes",
        }
    }
}

/// One account's ban or mute in one room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    /// Who is restricted.
    pub account: AccountId,
    /// Until when, ms since the Unix epoch; `None` until lifted.
    pub until_ms: Option<i64>,
    /// The moderator who imposed it (`None`: an operator through the CLI).
    pub by: Option<AccountId>,
    /// When it was imposed, ms since the Unix epoch.
    pub created_ms: i64,
}

impl Restricted {
    /// Whether the restriction still holds at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|until| until > now_ms)
    }
}

/// A room's moderation state as the hub caches it: what every join and post is checked
/// against without reading the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomModeration {
    /// Bans in force (expired ones are left out).
    pub bans: Vec<Restricted>,
    /// Mutes in force (expired ones are left out).
    pub mutes: Vec<Restricted>,
    /// Slow mode: seconds a member must wait between posts; 0 = off.
    pub slow_seconds: u32,
}

impl RoomModeration {
    /// The account's restriction of this kind in force at `now_ms`, if any.
    pub fn restricted(
        &self,
        kind: Restriction,
        account: AccountId,
        now_ms: i64,
    ) -> Option<&Restricted> {
        let list = match kind {
            Restriction::Ban => &self.bans,
            Restriction::Mute => &self.mutes,
        };
        list.iter()
            .find(|entry| entry.account == account && entry.active_at(now_ms))
    }
}

/// What one audit row says happened. The caller fills it; the store adds the id and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who did it: an account's name, or `operator` for the CLI.
    pub actor: String,
    /// What: `delete`, `kick`, `ban`, `unban`, `mute`, `unmute`, `slow`, `disable`, `enable`,
    /// `role`, ...
    pub action: String,
    /// Where, for room actions.
    pub room: Option<String>,
    /// To whom or what: an account's name, or `#ID` for a message.
    pub target: Option<String>,
    /// Anything else worth keeping (a duration, the new slow-mode interval, a role). Never a
    /// deleted message's text: that is gone.
    pub detail: Option<String>,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Increasing with time: the log's order and its paging key.
    pub id: i64,
    /// When, ms since the Unix epoch.
    pub ts_ms: i64,
    /// What happened.
    pub record: AuditRecord,
}

/// Which part of the audit log to read, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these rooms' rows (`None`: every row, rooms' and operator-wide ones). An empty list
    /// reads nothing.
    pub rooms: Option<Vec<String>>,
    /// Only rows older than this id (paging); `None` from the newest.
    pub before: Option<i64>,
    /// At most this many rows.
    pub limit: u32,
}

/// How a [`ModerationStore::delete_message`] went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// The text is gone; the tombstone (empty text) is what readers now get.
    Deleted(StoredMessage),
    /// It was deleted before: nothing changed, no audit row.
    AlreadyDeleted,
    /// The room has no message with that id.
    Missing,
}

/// Milliseconds since the Unix epoch, for the records' `*_ms` columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Moderation state and its audit log, as SQLite and PostgreSQL keep them. Methods are ordered
/// create/update, read, delete; each change writes `audit` in its own transaction.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    /// Clears a message's text and marks it deleted (`deleted_ms`), with its audit row.
    async fn delete_message(
        &self,
        room: &str,
        id: u64,
        audit: &AuditRecord,
    ) -> Result<Deletion, StoreError>;

    /// Bans or mutes the account in the room until `until_ms` (`None`: until lifted), replacing
    /// a restriction of the same kind it had there; with its audit row.
    async fn restrict(
        &self,
        kind: Restriction,
        room: &str,
        restricted: &Restricted,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// Sets the room's slow mode (`0` turns it off), with its audit row.
    async fn set_slow_mode(
        &self,
        room: &str,
        seconds: u32,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// Writes one audit row for an action stored elsewhere (a kick, which stores nothing; an
    /// account disabled; a role changed). Returns its id.
    async fn record_audit(&self, audit: &AuditRecord) -> Result<i64, StoreError>;

    /// The room's bans and mutes in force at `now_ms` and its slow mode: what the hub caches in
    /// the room's policy.
    async fn room_moderation(&self, room: &str, now_ms: i64) -> Result<RoomModeration, StoreError>;

    /// Audit rows, newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    /// Lifts the account's ban or mute in the room, with its audit row; `false` (and no row)
    /// when it had none in force.
    async fn lift(
        &self,
        kind: Restriction,
        room: &str,
        account: AccountId,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError>;
}
