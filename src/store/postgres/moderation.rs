//! [`ModerationStore`] on PostgreSQL.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::moderation::ModerationStore;

#[async_trait]
impl ModerationStore for PostgresStore {}
