//! Moderation records (issue 19): bans, mutes and slow mode per room, tombstones of deleted
//! messages, and the audit log of every moderation action.

use async_trait::async_trait;

/// Moderation state and its audit log, as SQLite and PostgreSQL keep them.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {}
