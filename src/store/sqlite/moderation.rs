//! [`ModerationStore`] on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::moderation::ModerationStore;

#[async_trait]
impl ModerationStore for SqliteStore {}
