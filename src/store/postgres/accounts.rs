//! [`AccountStore`] on PostgreSQL.

use async_trait::async_trait;

use super::PostgresStore;
use crate::store::accounts::AccountStore;

#[async_trait]
impl AccountStore for PostgresStore {}
