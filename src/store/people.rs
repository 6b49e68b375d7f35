//! What the store keeps about people, beside history (issue 19): accounts and sessions
//! ([`AccountStore`]), rooms' settings, members, roles, direct messages and read markers
//! ([`RoomDirectory`]), and moderation with its audit log ([`ModerationStore`]). Each is its own
//! trait so each concern has one owner; [`People`] carries the three as one cloneable handle.
//! SQLite and PostgreSQL implement all three (in `sqlite/` and `postgres/`, one file per trait),
//! and the same contract tests run against both.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt;

use super::StoreError;
use super::account_names::AccountNames;
use super::accounts::{Account, AccountId, AccountStore, Session, TokenHash};
use super::batch::Batcher;
use super::changes::ChangeStore;
use super::directory::{RoomDirectory, SidebarRoom, Unread, UnreadAsk};
use super::moderation::ModerationStore;
use super::search::MessageSearch;

/// The store's people side as one handle: what the hub and the accounts service hold. Built
/// from the backend itself, not from the [`super::Coalescing`] wrapper, which only shares
/// history reads.
#[derive(Clone)]
pub struct People {
    /// Accounts, password hashes, sessions and invites.
    pub accounts: Arc<dyn AccountStore>,
    /// Rooms' settings, members and roles, direct messages, read markers and unread counts.
    pub directory: Arc<dyn RoomDirectory>,
    /// Bans, mutes, slow mode, tombstones and the audit log.
    pub moderation: Arc<dyn ModerationStore>,
    /// Edits, deletes and reactions of messages, and the change feed (issue 20).
    pub changes: Arc<dyn ChangeStore>,
    /// The accounts' name keys in memory, so a guest's name is checked without a store read.
    pub names: Arc<AccountNames>,
    /// Full-text search over history (issue 20): beside the people side because what a search
    /// may return depends on the directory's members.
    pub search: Arc<dyn MessageSearch>,
    /// The reads every signed-in connection makes as it connects, batched across connections.
    pub connecting: Arc<ConnectReads>,
}

/// The reads each signed-in connection makes when it connects (a token's account or a
/// cookie's session, then the sidebar) and when it joins a room it has unread messages in (the
/// counts), each batched across the connections and requests asking at the same time
/// (store/batch.rs): a reconnect storm or a filling room costs a query per batch, not per
/// connection. Fresh like direct reads: each is answered by a query that started after it was
/// asked.
pub struct ConnectReads {
    accounts: Batcher<String, Account>,
    sessions: Batcher<TokenHash, (Session, Account)>,
    sidebars: Batcher<AccountId, Vec<SidebarRoom>>,
    unread: Batcher<(UnreadAsk, u32), Unread>,
}

impl ConnectReads {
    fn new(accounts: Arc<dyn AccountStore>, directory: Arc<dyn RoomDirectory>) -> ConnectReads {
        let by_token = accounts.clone();
        ConnectReads {
            sessions: Batcher::new(Arc::new(move |hashes: Vec<TokenHash>| {
                let store = by_token.clone();
                async move {
                    // Expiry as of the query, which starts after every request in the batch.
                    let now = super::directory::now_ms();
                    let found = store.sessions(&hashes, now).await?;
                    Ok(found
                        .into_iter()
                        .map(|(hash, session, account)| (hash, (session, account)))
                        .collect())
                }
                .boxed()
            })),
            accounts: Batcher::new(Arc::new(move |keys: Vec<String>| {
                let accounts = accounts.clone();
                async move {
                    let found = accounts.accounts_by_keys(&keys).await?;
                    Ok(found
                        .into_iter()
                        .map(|account| (account.name_key.clone(), account))
                        .collect())
                }
                .boxed()
            })),
            unread: Batcher::new(Arc::new({
                let directory = directory.clone();
                move |asks: Vec<(UnreadAsk, u32)>| {
                    let directory = directory.clone();
                    async move { unread_by_cap(directory.as_ref(), asks).await }.boxed()
                }
            })),
            sidebars: Batcher::new(Arc::new(move |ids: Vec<AccountId>| {
                let directory = directory.clone();
                async move {
                    let mut sidebars: HashMap<AccountId, Vec<SidebarRoom>> = HashMap::new();
                    for (account, room) in directory.sidebars(&ids).await? {
                        sidebars.entry(account).or_default().push(room);
                    }
                    Ok(sidebars)
                }
                .boxed()
            })),
        }
    }

    /// [`AccountStore::account_by_key`], batched.
    pub async fn account_by_key(&self, name_key: &str) -> Result<Option<Account>, StoreError> {
        self.accounts.load(name_key.to_owned()).await
    }

    /// [`AccountStore::session`] as of now, batched.
    pub async fn session(
        &self,
        token_hash: TokenHash,
    ) -> Result<Option<(Session, Account)>, StoreError> {
        self.sessions.load(token_hash).await
    }

    /// [`RoomDirectory::unread`], batched.
    pub async fn unread(&self, ask: UnreadAsk, cap: u32) -> Result<Unread, StoreError> {
        Ok(self.unread.load((ask, cap)).await?.unwrap_or_default())
    }

    /// [`RoomDirectory::sidebar`], batched.
    pub async fn sidebar(&self, account: AccountId) -> Result<Vec<SidebarRoom>, StoreError> {
        Ok(self.sidebars.load(account).await?.unwrap_or_default())
    }
}

impl People {
    /// The people side of one backend that implements all three traits.
    pub fn of<S>(store: Arc<S>) -> People
    where
        S: AccountStore + RoomDirectory + ModerationStore + ChangeStore + MessageSearch,
    {
        People {
            names: Arc::new(AccountNames::new(store.clone())),
            connecting: Arc::new(ConnectReads::new(store.clone(), store.clone())),
            accounts: store.clone(),
            directory: store.clone(),
            moderation: store.clone(),
            changes: store.clone(),
            search: store,
        }
    }
}

/// One `unread_many` query per cap among `asks` (every caller asks with the same cap, so one).
async fn unread_by_cap(
    directory: &dyn RoomDirectory,
    asks: Vec<(UnreadAsk, u32)>,
) -> Result<HashMap<(UnreadAsk, u32), Unread>, StoreError> {
    let mut by_cap: HashMap<u32, Vec<UnreadAsk>> = HashMap::new();
    for (ask, cap) in asks {
        by_cap.entry(cap).or_default().push(ask);
    }
    let mut counted = HashMap::new();
    for (cap, asks) in by_cap {
        let counts = directory.unread_many(&asks, cap).await?;
        counted.extend(asks.into_iter().map(|ask| (ask, cap)).zip(counts));
    }
    Ok(counted)
}

#[cfg(test)]
impl People {
    /// The people side of a fresh SQLite file in `dir`, for unit tests whose hub stores history
    /// in a wrapper of their own.
    pub(crate) async fn sqlite_in(dir: &std::path::Path) -> People {
        let store = super::SqliteStore::open(
            &dir.join("people.db"),
            std::time::Duration::from_secs(5),
            crate::config::Durability::Process,
        )
        .await
        .expect("people store");
        People::of(Arc::new(store))
    }
}
