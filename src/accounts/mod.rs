//! The accounts service (issue 19): sign-up, sign-in, sessions, password changes, invites and
//! name reservation, over the store's [`AccountStore`]. No HTTP here (that is
//! `transport::account_routes`); this is what the routes, the caller resolution and the
//! operator CLI call.
//!
//! Rules kept here (docs/security.md, "Accounts"):
//! - Passwords are hashed with argon2id ([`password`]); the store never sees one.
//! - A session is 32 random bytes in the browser's cookie; the store keeps only its SHA-256,
//!   with a CSRF token of its own. Sign-in always makes a new session (no fixation).
//! - Unknown names and wrong passwords fail the same way in the same time: an unknown name is
//!   verified against a dummy hash ([`password::Hasher::verify`]).
//! - Sign-in attempts are limited per name and per address, sign-ups per address ([`limits`]).
//! - A name's key is its case-folded NFKC form ([`name_key`]): `Alice` and `alice` are one
//!   account, and a guest cannot take either.

pub mod limits;
pub mod password;
pub mod secret;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use unicode_normalization::UnicodeNormalization;

use crate::broker::{Broker, Control};
use crate::protocol::display_name;
use crate::store::accounts::{
    Account, AccountId, AccountStore, Invite, NewAccount, NewSession, Session,
};
use crate::store::{AccountNames, ConnectReads, People, StoreError};
pub use limits::LimitSettings;
use limits::LoginLimits;
use password::{Hasher, check_new_password};
use secret::{hash_token, random_token};

/// How long a session lives without being used. Each use (recorded at most every
/// [`TOUCH_EVERY`]) pushes its end this far out again.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How stale a session's recorded last use may get before a use writes it again: keeps a
/// busy session from costing a write per request.
pub const TOUCH_EVERY: Duration = Duration::from_secs(600);
/// Default lifetime of an invite.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest interval between session purges, whatever the config says (a zero interval
/// would spin).
const MIN_PURGE_EVERY: Duration = Duration::from_millis(10);
/// Most uses one invite may allow.
pub const MAX_INVITE_USES: i64 = 1000;

/// Who may sign up (`--signup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Signup {
    /// Anyone.
    #[default]
    Open,
    /// Only with an invite code.
    Invite,
    /// Nobody over HTTP; operators add accounts with `hubbub user add`.
    Closed,
}

/// Why an accounts operation failed. Each maps to one HTTP answer; the messages are safe to
/// show (no driver text, nothing that tells an unknown name from a wrong password).
#[derive(Debug, Error)]
pub enum AccountError {
    /// The name breaks the name rule.
    #[error("{0}")]
    BadName(String),
    /// The new password breaks the password rule.
    #[error("{0}")]
    BadPassword(String),
    /// Another account has this name (in any case).
    #[error("that name is taken")]
    NameTaken,
    /// Unknown name, wrong password, or an account without a password: one answer for all.
    #[error("wrong name or password")]
    BadCredentials,
    /// The account is on the operator's block list.
    #[error("this account is disabled")]
    Disabled,
    /// Too many attempts; try again after the wait.
    #[error("too many attempts; try again later")]
    RateLimited {
        /// How long until the next attempt is allowed.
        retry_after: Duration,
    },
    /// Sign-up is closed, or needs a valid invite.
    #[error("{0}")]
    SignupClosed(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed (a bug or a dying runtime; never the caller's fault).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// A fresh sign-in: the cookie's token (only ever in the `Set-Cookie`), the session's CSRF
/// token and the account.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session token for the cookie.
    pub token: String,
    /// What state-changing requests with this cookie must send in `X-CSRF-Token`.
    pub csrf: String,
    /// Whose session it is.
    pub account: Account,
}

/// A valid session as a request finds it.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    /// The session record.
    pub session: Session,
    /// Its account (not disabled).
    pub account: Account,
}

/// What the service needs from the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountSettings {
    /// Who may sign up.
    pub signup: Signup,
    /// The login and sign-up limits.
    pub limits: LimitSettings,
}

/// The accounts service: one per server, shared by every request.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    /// The name keys every node holds in memory: each account made here goes in at once.
    names: Arc<AccountNames>,
    settings: AccountSettings,
    hasher: Hasher,
    limits: LoginLimits,
    /// The cluster's broker: new accounts are announced through it (see [`Accounts::with_broker`]).
    broker: Option<Arc<dyn Broker>>,
    /// A token's account is read here, batched with the other connections' (store/batch.rs).
    connecting: Arc<ConnectReads>,
}

/// The case-folded key of a display name: `Alice`, `ALICE` and `ａｌｉｃｅ` share one.
/// `name` should already have passed [`display_name`].
pub fn name_key(name: &str) -> String {
    name.nfkc().flat_map(char::to_lowercase).nfkc().collect()
}

/// Now, as Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Accounts {
    /// The service over the people side of the store.
    pub fn new(people: &People, settings: AccountSettings) -> Self {
        Accounts {
            store: people.accounts.clone(),
            names: people.names.clone(),
            hasher: Hasher::default(),
            limits: LoginLimits::new(settings.limits),
            settings,
            broker: None,
            connecting: people.connecting.clone(),
        }
    }

    /// Works with the other nodes through `broker`: the login and sign-up limits are counted on
    /// its shared buckets (a cluster's nodes together) before this node's own, and every node
    /// hears of each account made here at once (its name is reserved against guests).
    pub(crate) fn with_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.limits.share_through(broker.clone());
        self.broker = Some(broker);
        self
    }

    /// Reserves a new account's name here at once, and on every node when there is a broker.
    async fn note_new_account(&self, account: &Account) {
        self.names.insert(account.id, &account.name_key);
        if let Some(broker) = &self.broker {
            let added = Control::AccountAdded {
                account: account.id,
                key: account.name_key.clone(),
            };
            if let Err(err) = broker.publish_control(added).await {
                warn!(account = account.id.0, cause = %err, "new account not announced to other nodes");
            }
        }
    }

    /// The store it works on.
    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    /// Who may sign up here.
    pub fn signup_policy(&self) -> Signup {
        self.settings.signup
    }

    /// Signs up `name` with `password` (and `invite` when sign-up is by invitation) from
    /// `address`, and signs the new account in. The invite is spent only once the name and
    /// password pass. Returns the invite's room (if any) beside the session so the caller can
    /// add the new account to it.
    pub async fn sign_up(
        &self,
        name: &str,
        password: &str,
        invite: Option<&str>,
        address: IpAddr,
    ) -> Result<(SignedIn, Option<String>), AccountError> {
        if self.settings.signup == Signup::Closed {
            return Err(AccountError::SignupClosed(
                "sign-up is closed on this server; ask an operator for an account",
            ));
        }
        let name = display_name(name).map_err(AccountError::BadName)?;
        check_new_password(password)?;
        self.limits
            .sign_up(address)
            .await
            .map_err(|retry_after| AccountError::RateLimited { retry_after })?;
        let key = name_key(&name);
        if self.store.account_by_key(&key).await?.is_some() {
            return Err(AccountError::NameTaken);
        }
        let invite = self.spend_invite(invite).await?;
        let hash = self.hasher.hash(password).await?;
        let created = self
            .store
            .create_account(&NewAccount {
                name,
                name_key: key,
                password_hash: Some(hash),
                admin: false,
                created_ms: now_ms(),
            })
            .await?
            .ok_or(AccountError::NameTaken)?;
        self.note_new_account(&created).await;
        info!(account = created.id.0, name = %created.name, "account signed up");
        let signed_in = self.open_session(created).await?;
        Ok((signed_in, invite.and_then(|invite| invite.room)))
    }

    /// Under `--signup invite`, spends one use of `code` (refused when missing, unknown, used
    /// up or expired); otherwise spends it only when given (for its room).
    async fn spend_invite(&self, code: Option<&str>) -> Result<Option<Invite>, AccountError> {
        let refused = AccountError::SignupClosed(
            "sign-up here needs a valid invite (this one is unknown, used up or expired)",
        );
        let Some(code) = code.filter(|code| !code.is_empty()) else {
            return match self.settings.signup {
                Signup::Invite => Err(refused),
                _ => Ok(None),
            };
        };
        match self
            .store
            .redeem_invite(&hash_token(code), now_ms())
            .await?
        {
            Some(invite) => Ok(Some(invite)),
            None if self.settings.signup == Signup::Invite => Err(refused),
            None => Ok(None),
        }
    }

    /// Signs `name` in with `password` from `address`: a NEW session every time (an old
    /// session id is never reused, so a planted cookie gains nothing). Unknown names, accounts
    /// without a password and wrong passwords all answer [`AccountError::BadCredentials`] after
    /// the same argon2 work.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        address: IpAddr,
    ) -> Result<SignedIn, AccountError> {
        let key = display_name(name)
            .map(|name| name_key(&name))
            .unwrap_or_default();
        self.limits
            .sign_in(&key, address)
            .await
            .map_err(|retry_after| AccountError::RateLimited { retry_after })?;
        let account = match key.is_empty() {
            true => None,
            false => self.store.account_by_key(&key).await?,
        };
        let hash = account.as_ref().and_then(|a| a.password_hash.as_deref());
        let password = if password.len() > password::MAX_PASSWORD_BYTES {
            ""
        } else {
            password
        };
        let matched = self.hasher.verify(hash, password).await?;
        let account = match (account, matched) {
            (Some(account), true) => account,
            _ => {
                info!(%address, "sign-in refused: wrong name or password");
                return Err(AccountError::BadCredentials);
            }
        };
        if account.disabled {
            return Err(AccountError::Disabled);
        }
        info!(account = account.id.0, "signed in");
        self.open_session(account).await
    }

    async fn open_session(&self, account: Account) -> Result<SignedIn, AccountError> {
        let token = random_token();
        let csrf = random_token();
        let now = now_ms();
        self.store
            .create_session(&NewSession {
                token_hash: hash_token(&token),
                account: account.id,
                csrf: csrf.clone(),
                created_ms: now,
                expires_ms: now.saturating_add(ms(SESSION_TTL)),
            })
            .await?;
        Ok(SignedIn {
            token,
            csrf,
            account,
        })
    }

    /// The live session of a cookie's `token`, if any (expired, revoked, unknown or of a
    /// disabled account: `None`). Moves the session's expiry when its recorded use is older
    /// than [`TOUCH_EVERY`].
    pub async fn session(&self, token: &str) -> Result<Option<ActiveSession>, AccountError> {
        if token.len() > 128 {
            return Ok(None);
        }
        let hash = hash_token(token);
        // Batched with the other cookies being checked at the same time (store/batch.rs).
        let Some((session, account)) = self.connecting.session(hash).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if now.saturating_sub(session.last_seen_ms) > ms(TOUCH_EVERY) {
            let expires = now.saturating_add(ms(SESSION_TTL));
            if let Err(err) = self.store.touch_session(&hash, now, expires).await {
                warn!(cause = %err, account = account.id.0, "could not record a session's use");
            }
        }
        Ok(Some(ActiveSession { session, account }))
    }

    /// Ends the session of `token` (sign-out).
    pub async fn sign_out(&self, token: &str) -> Result<(), AccountError> {
        self.store.delete_session(&hash_token(token)).await?;
        Ok(())
    }

    /// Ends every session of `account` (sign out everywhere); returns how many there were.
    pub async fn sign_out_everywhere(&self, account: AccountId) -> Result<u64, AccountError> {
        let ended = self.store.delete_sessions(account).await?;
        info!(
            account = account.0,
            sessions = ended,
            "signed out everywhere"
        );
        Ok(ended)
    }

    /// Deletes the sessions that have expired by now; returns how many. Expired sessions
    /// already sign nobody in ([`Accounts::session`] checks the expiry): this keeps the table
    /// from growing with every abandoned browser.
    pub async fn purge_expired_sessions(&self) -> Result<u64, AccountError> {
        let purged = self.store.purge_expired_sessions(now_ms()).await?;
        if purged > 0 {
            info!(sessions = purged, "expired sessions purged");
        }
        Ok(purged)
    }

    /// Purges expired sessions at once and then every `every` until `stop` is cancelled: the
    /// server runs one of these per node (`serve`). A failed purge is logged and tried again at
    /// the next tick; nothing depends on it having run.
    pub async fn purge_sessions_until(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every.max(MIN_PURGE_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.purge_expired_sessions().await {
                warn!(cause = %err, "expired sessions not purged");
            }
        }
    }

    /// Changes the password of the account signed in with `token` after checking `old`
    /// (rate-limited like a sign-in); every other session of the account ends.
    pub async fn change_password(
        &self,
        account: &Account,
        token: &str,
        old: &str,
        new: &str,
        address: IpAddr,
    ) -> Result<(), AccountError> {
        check_new_password(new)?;
        self.limits
            .sign_in(&account.name_key, address)
            .await
            .map_err(|retry_after| AccountError::RateLimited { retry_after })?;
        let old = if old.len() > password::MAX_PASSWORD_BYTES {
            ""
        } else {
            old
        };
        if !self
            .hasher
            .verify(account.password_hash.as_deref(), old)
            .await?
        {
            return Err(AccountError::BadCredentials);
        }
        let hash = self.hasher.hash(new).await?;
        self.store
            .set_password(account.id, Some(&hash), Some(&hash_token(token)))
            .await?;
        info!(
            account = account.id.0,
            "password changed; other sessions ended"
        );
        Ok(())
    }

    /// Sets a new password for `name` (operators: `hubbub user reset-password`); every session
    /// of the account ends. `NotFound`-like: `Ok(false)` when there is no such account.
    pub async fn reset_password(&self, name: &str, new: &str) -> Result<bool, AccountError> {
        check_new_password(new)?;
        let Some(account) = self.find(name).await? else {
            return Ok(false);
        };
        let hash = self.hasher.hash(new).await?;
        Ok(self
            .store
            .set_password(account.id, Some(&hash), None)
            .await?)
    }

    /// Adds an account (operators: `hubbub user add`), with a password or without one.
    pub async fn add_account(
        &self,
        name: &str,
        password: Option<&str>,
        admin: bool,
    ) -> Result<Account, AccountError> {
        let name = display_name(name).map_err(AccountError::BadName)?;
        let hash = match password {
            Some(password) => {
                check_new_password(password)?;
                Some(self.hasher.hash(password).await?)
            }
            None => None,
        };
        let created = self
            .store
            .create_account(&NewAccount {
                name_key: name_key(&name),
                name,
                password_hash: hash,
                admin,
                created_ms: now_ms(),
            })
            .await?
            .ok_or(AccountError::NameTaken)?;
        self.note_new_account(&created).await;
        Ok(created)
    }

    /// The account `name` refers to (in any case), if any.
    pub async fn find(&self, name: &str) -> Result<Option<Account>, AccountError> {
        let Ok(name) = display_name(name) else {
            return Ok(None);
        };
        Ok(self.store.account_by_key(&name_key(&name)).await?)
    }

    /// The account of a token's `sub`: looked up by name, and made (without a password) the
    /// first time a valid token names it. A disabled account is refused. The lookup is batched
    /// with the other connections signing in at the same time: one query for a reconnect storm's
    /// worth of tokens, still read after this call (a disable made before it is seen).
    pub async fn for_token_subject(&self, subject: &str) -> Result<Account, AccountError> {
        let name = display_name(subject).map_err(AccountError::BadName)?;
        let key = name_key(&name);
        if let Some(account) = self.connecting.account_by_key(&key).await? {
            return match account.disabled {
                true => Err(AccountError::Disabled),
                false => Ok(account),
            };
        }
        let made = self
            .store
            .create_account(&NewAccount {
                name,
                name_key: key.clone(),
                password_hash: None,
                admin: false,
                created_ms: now_ms(),
            })
            .await?;
        match made {
            Some(account) => {
                self.note_new_account(&account).await;
                info!(account = account.id.0, "account made for a token's subject");
                Ok(account)
            }
            // Another request made it first.
            None => self
                .store
                .account_by_key(&key)
                .await?
                .filter(|account| !account.disabled)
                .ok_or(AccountError::Disabled),
        }
    }

    /// Whether a guest may use `name`: not when its key belongs to an account. Answered from
    /// memory once the node has read the accounts (store/account_names.rs).
    pub async fn name_is_free_for_guests(&self, name: &str) -> Result<bool, AccountError> {
        Ok(self.names.is_free(&name_key(name)).await?)
    }

    /// Makes an invite: `uses` sign-ups (1 to [`MAX_INVITE_USES`]) within `ttl`, optionally
    /// into `room`. Returns the code (only the caller ever sees it; the store keeps its hash).
    pub async fn create_invite(
        &self,
        by: Option<AccountId>,
        room: Option<String>,
        uses: i64,
        ttl: Duration,
    ) -> Result<String, AccountError> {
        let code = random_token();
        self.store
            .create_invite(&Invite {
                code_hash: hash_token(&code),
                created_by: by,
                room,
                expires_ms: now_ms().saturating_add(ms(ttl)),
                uses_left: uses.clamp(1, MAX_INVITE_USES),
            })
            .await?;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_only_in_case_or_width_share_a_key() {
        assert_eq!(name_key("Alice"), "alice");
        assert_eq!(name_key("ALICE"), name_key("alice"));
        assert_eq!(name_key("ａｌｉｃｅ"), "alice");
        assert_ne!(name_key("alice"), name_key("alicia"));
    }
}
