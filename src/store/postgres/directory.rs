//! [`RoomDirectory`] on PostgreSQL.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::directory::RoomDirectory;

#[async_trait]
impl RoomDirectory for PostgresStore {}
