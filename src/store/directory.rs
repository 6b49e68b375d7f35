//! Rooms as a directory (issue 19): a room's kind (public, private, direct), topic, members and
//! their roles, and each account's read marker per room with the unread and mention counts
//! derived from it.

use async_trait::async_trait;

/// Rooms' settings, members, roles and read markers, as SQLite and PostgreSQL keep them.
#[async_trait]
pub trait RoomDirectory: Send + Sync + 'static {}
