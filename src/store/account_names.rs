//! The accounts' name keys, held in memory by every node (issue 19): a guest may never take an
//! account's name, and asking the database that on every guest connection put a store read
//! (and the read pool's connections, each with its own page cache) on the path of every
//! `/ws?name=` and `/events?name=`: the connect cost and the idle memory per connection of the
//! benchmark plan both grew with it (docs/benchmarks.md, round 12).
//!
//! **How the set stays current.** Accounts are only ever added (never renamed or deleted), so
//! the set grows by the ids above the highest one seen:
//! - an account made through this node's accounts service is added at once, and on the other
//!   nodes as soon as its `AccountAdded` control event arrives (broker/control.rs);
//! - every node reads the accounts above its highest id every couple of seconds (the hub's
//!   re-validation tick), which brings in those made by other nodes and by the operator CLI;
//! - ids from a sequence can commit out of order on PostgreSQL (a lower id committed after a
//!   higher one was read), so each read starts [`REREAD_IDS`] below the highest id seen, and
//!   a full re-read every [`FULL_REREAD_EVERY`] closes any gap that overlap did not.
//!
//! So an account made elsewhere is reserved here within milliseconds (the event), one tick at
//! the latest (an account the CLI made, or an event lost while Redis was away). A guest that took the name
//! before that keeps it for its connection, as a guest connected before the sign-up always
//! did; the next connection with that name is refused.
//!
//! Until the first read, the set is not trusted and each check asks the store, as before.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use super::StoreError;
use super::accounts::{AccountId, AccountStore};

/// How far below the highest id seen each incremental read starts (see the module doc).
const REREAD_IDS: i64 = 64;
/// How often the whole set is read again (see the module doc).
const FULL_REREAD_EVERY: Duration = Duration::from_secs(600);

/// Every account's name key, kept in memory so a guest's name is checked without the store.
pub struct AccountNames {
    store: Arc<dyn AccountStore>,
    known: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    /// `false` until the first read: checks ask the store meanwhile.
    loaded: bool,
    keys: HashSet<Box<str>>,
    highest: i64,
    last_full: Option<Instant>,
}

impl AccountNames {
    /// An empty, not yet loaded set over `store`.
    pub fn new(store: Arc<dyn AccountStore>) -> AccountNames {
        AccountNames {
            store,
            known: RwLock::default(),
        }
    }

    /// Whether the name key `key` (see `accounts::name_key`) belongs to no account: what a
    /// guest asking for that name needs. Reads the store only before the first load.
    pub async fn is_free(&self, key: &str) -> Result<bool, StoreError> {
        {
            let known = self.read();
            if known.loaded {
                return Ok(!known.keys.contains(key));
            }
        }
        Ok(self.store.account_by_key(key).await?.is_none())
    }

    /// Whether any account exists, as far as this node has read.
    pub fn any(&self) -> bool {
        !self.read().keys.is_empty()
    }

    /// Notes an account this node just made, so it is reserved here before the next read.
    pub fn insert(&self, id: AccountId, key: &str) {
        let mut known = self.write();
        known.keys.insert(key.into());
        known.highest = known.highest.max(id.0);
    }

    /// Reads the accounts made since the last read (all of them on the first read and every
    /// [`FULL_REREAD_EVERY`]) into the set.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let (full, after) = {
            let known = self.read();
            let full = known
                .last_full
                .is_none_or(|at| at.elapsed() >= FULL_REREAD_EVERY);
            let after = if full {
                0
            } else {
                known.highest.saturating_sub(REREAD_IDS)
            };
            (full, after)
        };
        let started = Instant::now();
        let found = self.store.name_keys_after(AccountId(after)).await?;
        let mut known = self.write();
        for (id, key) in found {
            known.highest = known.highest.max(id.0);
            known.keys.insert(key.into_boxed_str());
        }
        known.loaded = true;
        if full {
            known.last_full = Some(started);
        }
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, Known> {
        // Plain data, each write complete: a panic elsewhere leaves nothing half-done.
        self.known
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Known> {
        self.known
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::accounts::NewAccount;

    async fn store() -> (Arc<crate::store::SqliteStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SqliteStore::open(
            &dir.path().join("names.db"),
            Duration::from_secs(5),
            crate::config::Durability::Process,
        )
        .await
        .expect("store");
        (Arc::new(store), dir)
    }

    async fn add(store: &crate::store::SqliteStore, key: &str) -> AccountId {
        let made = store
            .create_account(&NewAccount {
                name: key.to_owned(),
                name_key: key.to_owned(),
                password_hash: None,
                admin: false,
                created_ms: 0,
            })
            .await
            .expect("create")
            .expect("free name");
        made.id
    }

    #[tokio::test]
    async fn before_the_first_read_the_store_answers() {
        let (store, _dir) = store().await;
        add(&store, "ann").await;
        let names = AccountNames::new(store);
        assert!(!names.is_free("ann").await.expect("check"));
        assert!(names.is_free("bob").await.expect("check"));
    }

    #[tokio::test]
    async fn a_refresh_brings_in_accounts_made_elsewhere() {
        let (store, _dir) = store().await;
        let names = AccountNames::new(store.clone());
        names.refresh().await.expect("first read");
        assert!(!names.any());
        add(&store, "ann").await;
        assert!(names.is_free("ann").await.expect("not read yet"));
        names.refresh().await.expect("second read");
        assert!(!names.is_free("ann").await.expect("check"));
        assert!(names.any());
    }

    #[tokio::test]
    async fn an_account_made_here_is_reserved_at_once() {
        let (store, _dir) = store().await;
        let names = AccountNames::new(store.clone());
        names.refresh().await.expect("first read");
        let id = add(&store, "ann").await;
        names.insert(id, "ann");
        assert!(!names.is_free("ann").await.expect("check"));
    }

    #[tokio::test]
    async fn a_lower_id_committed_late_is_still_read() {
        let (store, _dir) = store().await;
        let names = AccountNames::new(store.clone());
        add(&store, "ann").await;
        names.refresh().await.expect("first read");
        // As if a higher id had been seen before a lower one committed (PostgreSQL sequences).
        let late = add(&store, "bob").await;
        names.insert(AccountId(late.0 + 10), "carl");
        names.refresh().await.expect("overlapping read");
        assert!(!names.is_free("bob").await.expect("check"));
    }
}
