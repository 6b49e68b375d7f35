//! [`RoomDirectory`] on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::directory::RoomDirectory;

#[async_trait]
impl RoomDirectory for SqliteStore {}
