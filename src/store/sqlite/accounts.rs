//! [`AccountStore`] on SQLite.

use async_trait::async_trait;

use super::SqliteStore;
use crate::store::accounts::AccountStore;

#[async_trait]
impl AccountStore for SqliteStore {}
