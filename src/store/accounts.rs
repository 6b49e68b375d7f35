//! Accounts, password hashes, sign-in sessions and invites (issue 19): the records behind
//! `crate::accounts`. Only hashes are stored: a password's (argon2, made by the caller) and a
//! session token's or invite code's (so a copy of the database opens nobody's session).

use async_trait::async_trait;

/// Accounts and their sessions, as SQLite and PostgreSQL keep them.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {}

/// An account's id: the stable key every other record (sessions, room roles, read markers,
/// bans, audit entries) refers to, so an account keeps them across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);
