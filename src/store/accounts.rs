//! Accounts, password hashes, sign-in sessions and invites (issue 19): the records behind
//! `crate::accounts`. Only hashes are stored: a password's (argon2, made by the caller) and a
//! session token's or invite code's (so a copy of the database opens nobody's session).

use async_trait::async_trait;

use super::StoreError;

/// Accounts and their sessions, as SQLite and PostgreSQL keep them. Every method is one
/// statement or one transaction, so two servers (or the operator CLI beside a server) sharing
/// the database see each other's changes at once.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account; `Ok(None)` when its `name_key` is taken (by any account, disabled or
    /// not), which sign-up answers with `name_taken`.
    async fn create_account(&self, account: &NewAccount) -> Result<Option<Account>, StoreError>;

    /// The accounts whose case-folded names are among `name_keys`, in no particular order (a
    /// key no account has is left out): one query for the token sign-ins of a whole batch of
    /// connections (store/batch.rs).
    async fn accounts_by_keys(&self, name_keys: &[String]) -> Result<Vec<Account>, StoreError>;

    /// The account whose case-folded name is `name_key`, if any.
    async fn account_by_key(&self, name_key: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts_by_keys(&[name_key.to_owned()]).await?.pop())
    }

    /// The account with this id, if it still exists.
    async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, StoreError>;

    /// Every account, by name key: the operator's `hubbub user list`.
    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError>;

    /// The id and name key of every account with an id above `after`, by id: how each node
    /// keeps its in-memory set of reserved names current ([`super::AccountNames`]) without a
    /// read per guest connection.
    async fn name_keys_after(
        &self,
        after: AccountId,
    ) -> Result<Vec<(AccountId, String)>, StoreError>;

    /// Replaces the account's password hash (`None` = no password sign-in) and, in the same
    /// transaction, deletes all its sessions except `keep` (the session that changed it, if
    /// any): a new password ends every other sign-in. Returns whether the account exists.
    async fn set_password(
        &self,
        id: AccountId,
        password_hash: Option<&str>,
        keep: Option<&TokenHash>,
    ) -> Result<bool, StoreError>;

    /// Disables or enables the account. Disabling also deletes its sessions in the same
    /// transaction (a disabled account's cookie is dead even if it is enabled again). Returns
    /// whether the account exists.
    async fn set_disabled(&self, id: AccountId, disabled: bool) -> Result<bool, StoreError>;

    /// Grants or withdraws operator rights. Returns whether the account exists.
    async fn set_admin(&self, id: AccountId, admin: bool) -> Result<bool, StoreError>;

    /// Of `ids`, those whose account is disabled or gone: how a server notices an operator's
    /// `hubbub user disable` made beside it and closes those accounts' connections.
    async fn disabled_among(&self, ids: &[AccountId]) -> Result<Vec<AccountId>, StoreError>;

    /// Stores a new sign-in session.
    async fn create_session(&self, session: &NewSession) -> Result<(), StoreError>;

    /// Of the sessions whose tokens hash to `token_hashes`, the live ones (not expired at
    /// `now_ms`, of an account that is not disabled), each with its hash and account, in no
    /// particular order: one query for the cookies of a whole batch of requests and
    /// connections (store/batch.rs).
    async fn sessions(
        &self,
        token_hashes: &[TokenHash],
        now_ms: i64,
    ) -> Result<Vec<(TokenHash, Session, Account)>, StoreError>;

    /// The live session whose token hashes to `token_hash`, with its account, if the session
    /// exists, has not expired at `now_ms`, and its account is not disabled. Otherwise `None`:
    /// callers treat every such case as "not signed in".
    async fn session(
        &self,
        token_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<(Session, Account)>, StoreError> {
        let found = self
            .sessions(std::slice::from_ref(token_hash), now_ms)
            .await?;
        Ok(found
            .into_iter()
            .next()
            .map(|(_, session, account)| (session, account)))
    }

    /// Records a use of the session and moves its expiry (sliding expiry). Callers do this at
    /// most once a minute per session, not on every request.
    async fn touch_session(
        &self,
        token_hash: &TokenHash,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// Deletes one session (sign-out). Returns whether it existed.
    async fn delete_session(&self, token_hash: &TokenHash) -> Result<bool, StoreError>;

    /// Deletes every session of the account (sign out everywhere); returns how many there were.
    async fn delete_sessions(&self, account: AccountId) -> Result<u64, StoreError>;

    /// Deletes sessions that expired before `now_ms`; returns how many.
    async fn purge_expired_sessions(&self, now_ms: i64) -> Result<u64, StoreError>;

    /// Stores a new invite.
    async fn create_invite(&self, invite: &Invite) -> Result<(), StoreError>;

    /// Spends one use of the invite whose code hashes to `code_hash`, if it exists, has uses left
    /// and has not expired at `now_ms`: one atomic statement, so two sign-ups racing for the last
    /// use cannot both win. Returns the invite as it was before the use.
    async fn redeem_invite(
        &self,
        code_hash: &TokenHash,
        now_ms: i64,
    ) -> Result<Option<Invite>, StoreError>;
}

/// An account's id: the stable key every other record (sessions, room roles, read markers,
/// bans, audit entries) refers to, so an account keeps them across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);

/// SHA-256 of a session token or invite code: what the store keeps instead of the secret.
pub type TokenHash = [u8; 32];

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The stable id.
    pub id: AccountId,
    /// The name as shown (passed `protocol::display_name`).
    pub name: String,
    /// The case-folded name: the unique key guests and sign-ups are checked against.
    pub name_key: String,
    /// The argon2id PHC string; `None` = this account cannot sign in with a password.
    pub password_hash: Option<String>,
    /// Operator: moderator rights in every room and the whole audit log.
    pub admin: bool,
    /// On the operator's block list: cannot sign in, sessions refused.
    pub disabled: bool,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
}

/// What [`AccountStore::create_account`] needs.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The name as shown.
    pub name: String,
    /// Its case-folded key.
    pub name_key: String,
    /// The argon2id PHC string, or `None` for no password sign-in.
    pub password_hash: Option<String>,
    /// Operator rights from the start.
    pub admin: bool,
    /// Unix milliseconds.
    pub created_ms: i64,
}

/// A sign-in session as stored (the token itself is only in the browser's cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Whose session it is.
    pub account: AccountId,
    /// The CSRF token state-changing requests made with this session's cookie must echo.
    pub csrf: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Last recorded use, Unix milliseconds.
    pub last_seen_ms: i64,
    /// After this the session is dead, Unix milliseconds.
    pub expires_ms: i64,
}

/// What [`AccountStore::create_session`] stores.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the cookie's token.
    pub token_hash: TokenHash,
    /// Whose session it is.
    pub account: AccountId,
    /// The session's CSRF token.
    pub csrf: String,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds.
    pub expires_ms: i64,
}

/// An invite: lets its holder sign up when sign-up is by invitation, and (with `room`) joins
/// them to that private room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// SHA-256 of the code in the invite link.
    pub code_hash: TokenHash,
    /// Who made it (`None` = the operator CLI, or an account since deleted).
    pub created_by: Option<AccountId>,
    /// The private room it admits to, if any.
    pub room: Option<String>,
    /// After this it is refused, Unix milliseconds.
    pub expires_ms: i64,
    /// How many more sign-ups it admits.
    pub uses_left: i64,
}
