//! Durable history. The hub reaches storage only through [`Store`], so a PostgreSQL store can be
//! added beside SQLite without touching the hub or any transport. A store allocates the per-room
//! ids (it is the only thing that can make them survive restarts) and knows nothing of members,
//! sockets or the broker.

mod account_names;
pub mod accounts;
pub(crate) mod batch;
pub mod changes;
mod coalesce;
pub mod copy;
pub mod directory;
mod import;
pub mod moderation;
mod people;
mod postgres;
pub(crate) mod rows;
pub mod search;
mod sqlite;

use async_trait::async_trait;

use crate::protocol::{Attachment, MessageView, RoomName};
use accounts::AccountId;

pub use account_names::AccountNames;
pub use accounts::AccountStore;
pub use changes::ChangeStore;
pub(crate) use coalesce::Coalescing;
pub use directory::RoomDirectory;
pub use import::{ImportConflict, ImportOutcome};
pub use moderation::ModerationStore;
pub use people::{ConnectReads, People};
pub use postgres::{PostgresStore, SchemaAtOpen};
pub use search::MessageSearch;
pub use sqlite::SqliteStore;

/// A message the hub wants stored; the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Where it was posted.
    pub room: RoomName,
    /// The sender's display name.
    pub from: String,
    /// The text, already checked against the size limit.
    pub text: String,
    /// Server time of the post, ms since the Unix epoch.
    pub ts: i64,
    /// The signed-in account that posted it; `None` for a guest (issue 19).
    pub author: Option<AccountId>,
    /// The id of the message (in the same room) this one answers (issue 20); the hub checked
    /// that it exists.
    pub reply_to: Option<u64>,
    /// The stored file attached to it (issue 20), type and size read from the file by the hub.
    pub attachment: Option<Box<Attachment>>,
}

/// A committed message: what replay, history and broadcast all send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room it belongs to: the same checked type as [`NewMessage::room`], so a message read
    /// back from a database or a broker has passed the room rule like one a client posted.
    pub room: RoomName,
    /// Per-room id: strictly increasing, never reused.
    pub id: u64,
    /// Server time of the post, ms since the Unix epoch.
    pub ts: i64,
    /// The sender's display name.
    pub from: String,
    /// The text.
    pub text: String,
    /// The signed-in account that posted it; `None` for a guest, and for every message stored
    /// before accounts existed (migration 0005 adds the column empty).
    pub author: Option<AccountId>,
    /// The id of the message (in the same room) this one answers (issue 20), if any.
    pub reply_to: Option<u64>,
    /// The file attached to it (issue 20), if any; a deletion drops it (the file stays).
    pub attachment: Option<Box<Attachment>>,
}

impl StoredMessage {
    /// The wire view, with `"guest": true` when `mark_guests` (the server has accounts) and
    /// no account posted it: a guest's name is not an account's, and readers are told.
    pub(crate) fn view_marking(&self, mark_guests: bool) -> MessageView<'_> {
        MessageView {
            room: self.room.as_str(),
            id: self.id,
            ts: self.ts,
            from: &self.from,
            data: &self.text,
            deleted: self.is_deleted(),
            guest: mark_guests && self.author.is_none(),
            reply_to: self.reply_to,
            attachment: self.attachment.as_deref(),
        }
    }

    /// Whether a moderator deleted it: its text is gone and readers get a tombstone. Posts of
    /// empty text are refused unless they carry an attachment, and a deletion drops both, so
    /// only a deletion leaves a message with neither (store/moderation.rs).
    pub fn is_deleted(&self) -> bool {
        self.text.is_empty() && self.attachment.is_none()
    }
}

/// One page of history, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
    /// Whether older messages exist before the first one.
    pub has_more: bool,
}

impl Page {
    /// A page from up to `limit + 1` messages read newest first: the extra one only tells that
    /// there is more (one query instead of two), and the page is turned oldest first.
    pub(crate) fn from_newest_first(mut newest_first: Vec<StoredMessage>, limit: u32) -> Page {
        let has_more = newest_first.len() > limit as usize;
        newest_first.truncate(limit as usize);
        newest_first.reverse();
        Page {
            messages: newest_first,
            has_more,
        }
    }
}

/// A room the store knows, for the room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room's name.
    pub room: String,
    /// Its newest message id.
    pub last_id: u64,
}

/// What can go wrong in a store. Posters see all of these as `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed (locked, read-only, disk full, connection lost ...).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The batch this post was part of failed, or a read shared with other readers did; the
    /// cause's text is shared by every poster or reader in it. For the log only: clients are
    /// told [`STORE_UNAVAILABLE`].
    #[error("{0}")]
    Unavailable(String),
    /// The database refused for a reason an operator or user can act on (disk full, read-only,
    /// files deleted ...). `reason` is plain words with no path, SQL or driver text, and is what
    /// clients are told; `detail` is what the driver or the file system said, for the log.
    #[error("{reason} ({detail})")]
    Refused {
        /// The plain-words reason clients see.
        reason: &'static str,
        /// The driver's or file system's own text, logged with the reason.
        detail: String,
    },
    /// The schema could not be brought up to date at start-up.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database server could not be reached or refused us at start-up. `url` is the
    /// redacted URL (no password), so the message can be shown and logged as it is.
    #[error("could not connect to {url}")]
    Connect {
        /// The database's URL without its password.
        url: String,
        /// What the driver reported.
        #[source]
        source: sqlx::Error,
    },
    /// Started with `--no-migrate` against a schema that lacks migrations this build needs:
    /// serving on it would fail at the first query, so the server refuses to start instead.
    #[error(
        "the database schema lacks migration(s) {missing:?} this hubbub needs: run `hubbub migrate` \
         first, or start without --no-migrate"
    )]
    SchemaBehind {
        /// Versions of the embedded migrations the database has not applied.
        missing: Vec<i64>,
    },
    /// An import batch would have overwritten, duplicated or left a gap in a room's history
    /// (`hubbub import`/`copy`): it was refused and nothing of it was stored.
    #[error(transparent)]
    Import(#[from] ImportConflict),
}

/// A room name read from a database that breaks the room rule (a database edited by hand or by
/// another program): the read fails with it instead of handing the hub a name no client could
/// have posted to.
#[derive(Debug, thiserror::Error)]
#[error("a stored room name breaks the room rule ({reason}): {name:?}")]
pub(crate) struct BadStoredRoom {
    /// The name as the database holds it.
    name: String,
    /// Which part of the rule it breaks.
    reason: String,
}

/// The room name of a row read from a database, checked against the room rule: a name that
/// breaks it is a decode error of the read ([`BadStoredRoom`], a [`StoreError::Database`] for
/// the caller), never a panic.
pub(crate) fn room_from_row(name: &str) -> Result<RoomName, sqlx::Error> {
    RoomName::parse(name).map_err(|reason| {
        sqlx::Error::Decode(Box::new(BadStoredRoom {
            name: name.to_owned(),
            reason,
        }))
    })
}

/// The `attachment` column's value for a message (migration 0009): the attachment as the JSON
/// object clients get, or NULL, so a message without one costs a NULL and both databases keep
/// it in one column.
pub(crate) fn attachment_column(attachment: Option<&Attachment>) -> Option<String> {
    attachment.and_then(|attachment| serde_json::to_string(attachment).ok())
}

/// The attachment of a row read from a database; a value that is not an attachment's JSON is
/// a decode error of the read, never a panic.
pub(crate) fn attachment_from_column(
    column: Option<String>,
) -> Result<Option<Box<Attachment>>, sqlx::Error> {
    column
        .map(|json| {
            serde_json::from_str::<Attachment>(&json)
                .map(Box::new)
                .map_err(|err| sqlx::Error::Decode(Box::new(err)))
        })
        .transpose()
}

/// What a client is told when the store failed for a reason that is not a [`StoreError::Refused`]:
/// a driver's message can name files, tables, SQL or the database host, so it goes to the log
/// and never to a client.
pub(crate) const STORE_UNAVAILABLE: &str = "the message store is unavailable; try again shortly";

impl StoreError {
    /// The text a client may see for this error: the plain-words reason of a
    /// [`StoreError::Refused`], else the fixed [`STORE_UNAVAILABLE`]. Never the driver's text.
    pub(crate) fn client_message(&self) -> &'static str {
        match self {
            Self::Refused { reason, .. } => reason,
            _ => STORE_UNAVAILABLE,
        }
    }

    /// A copy of this error for each poster of a failed batch or reader of a shared query (the
    /// driver's error is not `Clone`): a refusal keeps its plain reason, anything else keeps its
    /// text for the log.
    pub(crate) fn shared(&self) -> StoreError {
        match self {
            Self::Refused { reason, detail } => Self::Refused {
                reason,
                detail: detail.clone(),
            },
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Durable, ordered history of every room. Methods are ordered create, read.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a batch in one transaction and returns the messages with their ids, in batch
    /// order. All or nothing: on error no message of the batch is stored, so none may be acked.
    async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError>;

    /// Stores messages that already have ids (`hubbub import` and `hubbub copy` moving a history
    /// from another database) in one transaction, and raises each room's counter to the newest
    /// id stored, so the room's next post continues after it and clients' `since` stays valid.
    /// A room's ids must continue its history without a gap; an id the room already holds is
    /// skipped when the stored message is identical (so an interrupted run can be repeated) and
    /// otherwise refuses the whole batch with [`StoreError::Import`] (the rule is in
    /// store/import.rs). All or nothing, like [`Store::append`].
    ///
    /// SQLite and PostgreSQL implement it (tests/store_contract.rs); the default refuses, so a
    /// store that only wraps another for a test need not.
    async fn import(&self, batch: &[StoredMessage]) -> Result<ImportOutcome, StoreError> {
        Err(StoreError::Unavailable(format!(
            "this store cannot import history ({} messages refused)",
            batch.len()
        )))
    }

    /// Up to `limit` messages with id greater than `since`, oldest first: the resume path, and
    /// how a node that saw a later id before an earlier one (messages from other nodes) fills
    /// the gap from the shared store.
    async fn after(
        &self,
        room: &RoomName,
        since: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` messages with id less than `before` (the newest when `None`), oldest first:
    /// the history path and the replay of a join without `since`.
    async fn before(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError>;

    /// The room's newest id, 0 when it has no messages.
    async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError>;

    /// Every room that has messages.
    async fn rooms(&self) -> Result<Vec<RoomSummary>, StoreError>;

    /// Answers once the database answers a trivial query: what `/readyz` asks, so a load
    /// balancer stops sending clients to a node whose database is out of reach.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the store once nothing will post to it again (the committer calls it after its
    /// last batch). SQLite checkpoints and removes its WAL here: a WAL left beside a database
    /// file that is later deleted or replaced would be applied to whatever file is there next.
    /// The default does nothing.
    async fn close(&self) {}

    /// Brings the planner's statistics up to date after a bulk load (`hubbub import`/`copy`):
    /// PostgreSQL plans search (and every read) from them, and until autovacuum gets round to
    /// a freshly filled table it guesses, which for full-text search picks plans a hundred times
    /// slower (docs/benchmarks.md "Search"). The default does nothing: SQLite's plans here do
    /// not depend on statistics.
    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_error_shows_clients_only_the_fixed_message() {
        let err = StoreError::Database(sqlx::Error::Protocol(
            "syntax error near SELECT in /srv/hub.db".to_owned(),
        ));
        assert_eq!(err.client_message(), STORE_UNAVAILABLE);
        assert_eq!(err.shared().client_message(), STORE_UNAVAILABLE);
        assert!(
            err.shared().to_string().contains("/srv/hub.db"),
            "kept for the log"
        );
    }

    #[test]
    fn a_refusal_shows_clients_its_plain_reason_and_keeps_it_when_shared() {
        let err = StoreError::Refused {
            reason: "the disk holding the database is full",
            detail: "(code: 13) database or disk is full".to_owned(),
        };
        assert_eq!(
            err.client_message(),
            "the disk holding the database is full"
        );
        assert_eq!(err.shared().client_message(), err.client_message());
        assert!(
            err.to_string().contains("code: 13"),
            "the log has the driver's text"
        );
    }
}
