//! The `AccountStore` contract (issue 19): accounts, sessions and invites, one test body per
//! behaviour, run against SQLite always and PostgreSQL when `HUBBUB_TEST_POSTGRES` (or
//! `HUBBUB_TEST_DB`) names a server (each test in a schema of its own), as
//! tests/store_contract.rs does for history.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::contract::Db;

use hubbub::store::accounts::{AccountId, Invite, NewAccount, NewSession, TokenHash};

impl Db {
    /// A new account `name` (key: its lowercase) with password hash `hash`.
    async fn signed_up(&self, name: &str, hash: Option<&str>) -> AccountId {
        self.accounts
            .create_account(&new_account(name, hash))
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// A session for `account` with token hash `[byte; 32]`, expiring at `expires_ms`.
    async fn session(&self, account: AccountId, byte: u8, expires_ms: i64) -> TokenHash {
        let token_hash = [byte; 32];
        self.accounts
            .create_session(&NewSession {
                token_hash,
                account,
                csrf: format!("csrf-{byte}"),
                created_ms: 10,
                expires_ms,
            })
            .await
            .unwrap();
        token_hash
    }
}

fn new_account(name: &str, hash: Option<&str>) -> NewAccount {
    NewAccount {
        name: name.to_owned(),
        name_key: name.to_lowercase(),
        password_hash: hash.map(str::to_owned),
        admin: false,
        created_ms: 7,
    }
}

contract!(
    a_created_account_reads_back_by_key_and_by_id,
    a_second_account_with_a_taken_name_key_is_refused,
    accounts_read_by_a_batch_of_keys_are_those_that_exist,
    accounts_are_listed_by_name_key,
    a_password_change_ends_every_session_but_the_kept_one,
    disabling_an_account_ends_its_sessions_and_hides_it_from_session_lookups,
    disabled_among_names_disabled_and_missing_accounts,
    admin_rights_can_be_granted,
    a_session_reads_back_with_its_account_until_it_expires,
    an_unknown_session_token_reads_as_none,
    sessions_read_by_a_batch_of_hashes_are_the_live_ones,
    touching_a_session_moves_its_expiry,
    deleting_a_session_ends_only_that_session,
    deleting_all_sessions_of_an_account_leaves_others_alone,
    purging_removes_only_expired_sessions,
    an_invite_is_spent_one_use_at_a_time,
    an_expired_invite_is_refused,
);

async fn a_created_account_reads_back_by_key_and_by_id(db: Db) {
    let created = db
        .accounts
        .create_account(&new_account("Alice", Some("$argon2id$x")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(created.name, "Alice");
    assert_eq!(created.name_key, "alice");
    assert_eq!(created.password_hash.as_deref(), Some("$argon2id$x"));
    assert!(!created.admin && !created.disabled);
    assert_eq!(created.created_ms, 7);
    let by_key = db.accounts.account_by_key("alice").await.unwrap();
    assert_eq!(by_key.as_ref(), Some(&created));
    let by_id = db.accounts.account_by_id(created.id).await.unwrap();
    assert_eq!(by_id, Some(created));
    assert_eq!(db.accounts.account_by_key("bob").await.unwrap(), None);
}

async fn accounts_read_by_a_batch_of_keys_are_those_that_exist(db: Db) {
    let alice = db.signed_up("Alice", None).await;
    let bob = db.signed_up("Bob", None).await;
    db.signed_up("Carol", None).await;
    let keys = ["bob", "nobody", "alice", "bob"].map(String::from);
    let found = db.accounts.accounts_by_keys(&keys).await.unwrap();
    let mut named: Vec<(AccountId, &str)> = found
        .iter()
        .map(|account| (account.id, account.name.as_str()))
        .collect();
    named.sort();
    assert_eq!(named, vec![(alice, "Alice"), (bob, "Bob")]);
    assert!(db.accounts.accounts_by_keys(&[]).await.unwrap().is_empty());
}

async fn a_second_account_with_a_taken_name_key_is_refused(db: Db) {
    db.signed_up("Alice", None).await;
    let again = NewAccount {
        name: "ALICE".to_owned(),
        ..new_account("alice", Some("h"))
    };
    assert_eq!(db.accounts.create_account(&again).await.unwrap(), None);
    let kept = db.accounts.account_by_key("alice").await.unwrap().unwrap();
    assert_eq!(kept.name, "Alice");
    assert_eq!(kept.password_hash, None);
}

async fn accounts_are_listed_by_name_key(db: Db) {
    db.signed_up("carol", None).await;
    db.signed_up("Alice", None).await;
    db.signed_up("bob", None).await;
    let names: Vec<String> = db
        .accounts
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["Alice", "bob", "carol"]);
}

async fn a_password_change_ends_every_session_but_the_kept_one(db: Db) {
    let alice = db.signed_up("alice", Some("old")).await;
    let kept = db.session(alice, 1, i64::MAX).await;
    let other = db.session(alice, 2, i64::MAX).await;
    let found = db
        .accounts
        .set_password(alice, Some("new"), Some(&kept))
        .await
        .unwrap();
    assert!(found);
    let account = db.accounts.account_by_id(alice).await.unwrap().unwrap();
    assert_eq!(account.password_hash.as_deref(), Some("new"));
    assert!(db.accounts.session(&kept, 100).await.unwrap().is_some());
    assert!(db.accounts.session(&other, 100).await.unwrap().is_none());
    db.accounts.set_password(alice, None, None).await.unwrap();
    assert!(db.accounts.session(&kept, 100).await.unwrap().is_none());
}

async fn disabling_an_account_ends_its_sessions_and_hides_it_from_session_lookups(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let token = db.session(alice, 1, i64::MAX).await;
    assert!(db.accounts.set_disabled(alice, true).await.unwrap());
    assert!(db.accounts.session(&token, 100).await.unwrap().is_none());
    let account = db.accounts.account_by_id(alice).await.unwrap().unwrap();
    assert!(account.disabled);
    assert!(db.accounts.set_disabled(alice, false).await.unwrap());
    assert!(db.accounts.session(&token, 100).await.unwrap().is_none());
    assert!(
        !db.accounts
            .set_disabled(AccountId(9999), true)
            .await
            .unwrap()
    );
}

async fn disabled_among_names_disabled_and_missing_accounts(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let bob = db.signed_up("bob", None).await;
    db.accounts.set_disabled(bob, true).await.unwrap();
    let gone = AccountId(9999);
    let refused = db
        .accounts
        .disabled_among(&[alice, bob, gone])
        .await
        .unwrap();
    assert_eq!(refused, [bob, gone]);
}

async fn admin_rights_can_be_granted(db: Db) {
    let alice = db.signed_up("alice", None).await;
    assert!(db.accounts.set_admin(alice, true).await.unwrap());
    assert!(
        db.accounts
            .account_by_id(alice)
            .await
            .unwrap()
            .unwrap()
            .admin
    );
}

async fn a_session_reads_back_with_its_account_until_it_expires(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let token = db.session(alice, 1, 1_000).await;
    let (session, account) = db.accounts.session(&token, 999).await.unwrap().unwrap();
    assert_eq!(session.account, alice);
    assert_eq!(session.csrf, "csrf-1");
    assert_eq!(session.created_ms, 10);
    assert_eq!(session.last_seen_ms, 10);
    assert_eq!(session.expires_ms, 1_000);
    assert_eq!(account.name, "alice");
    assert!(db.accounts.session(&token, 1_000).await.unwrap().is_none());
}

async fn an_unknown_session_token_reads_as_none(db: Db) {
    let alice = db.signed_up("alice", None).await;
    db.session(alice, 1, i64::MAX).await;
    assert!(db.accounts.session(&[2; 32], 0).await.unwrap().is_none());
}

async fn sessions_read_by_a_batch_of_hashes_are_the_live_ones(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let bob = db.signed_up("bob", None).await;
    let carol = db.signed_up("carol", None).await;
    let live = db.session(alice, 1, 1_000).await;
    let expired = db.session(alice, 2, 500).await;
    let bobs = db.session(bob, 3, 1_000).await;
    let disabled = db.session(carol, 4, 1_000).await;
    db.accounts.set_disabled(carol, true).await.unwrap();
    let asked = [bobs, [9; 32], expired, live, disabled, live];
    let found = db.accounts.sessions(&asked, 600).await.unwrap();
    let mut rows: Vec<(TokenHash, AccountId, String)> = found
        .into_iter()
        .map(|(hash, session, account)| (hash, session.account, account.name))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        vec![(live, alice, "alice".into()), (bobs, bob, "bob".into())],
        "the expired, the unknown and the disabled account's are left out"
    );
}

async fn touching_a_session_moves_its_expiry(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let token = db.session(alice, 1, 1_000).await;
    db.accounts.touch_session(&token, 900, 5_000).await.unwrap();
    let (session, _) = db.accounts.session(&token, 2_000).await.unwrap().unwrap();
    assert_eq!(session.last_seen_ms, 900);
    assert_eq!(session.expires_ms, 5_000);
}

async fn deleting_a_session_ends_only_that_session(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let one = db.session(alice, 1, i64::MAX).await;
    let two = db.session(alice, 2, i64::MAX).await;
    assert!(db.accounts.delete_session(&one).await.unwrap());
    assert!(!db.accounts.delete_session(&one).await.unwrap());
    assert!(db.accounts.session(&one, 0).await.unwrap().is_none());
    assert!(db.accounts.session(&two, 0).await.unwrap().is_some());
}

async fn deleting_all_sessions_of_an_account_leaves_others_alone(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let bob = db.signed_up("bob", None).await;
    db.session(alice, 1, i64::MAX).await;
    db.session(alice, 2, i64::MAX).await;
    let bobs = db.session(bob, 3, i64::MAX).await;
    assert_eq!(db.accounts.delete_sessions(alice).await.unwrap(), 2);
    assert!(db.accounts.session(&bobs, 0).await.unwrap().is_some());
}

async fn purging_removes_only_expired_sessions(db: Db) {
    let alice = db.signed_up("alice", None).await;
    db.session(alice, 1, 100).await;
    let live = db.session(alice, 2, 10_000).await;
    assert_eq!(db.accounts.purge_expired_sessions(500).await.unwrap(), 1);
    assert!(db.accounts.session(&live, 500).await.unwrap().is_some());
}

async fn an_invite_is_spent_one_use_at_a_time(db: Db) {
    let alice = db.signed_up("alice", None).await;
    let invite = Invite {
        code_hash: [5; 32],
        created_by: Some(alice),
        room: Some("p-0123456789abcdef".to_owned()),
        expires_ms: 10_000,
        uses_left: 2,
    };
    db.accounts.create_invite(&invite).await.unwrap();
    let first = db.accounts.redeem_invite(&[5; 32], 0).await.unwrap();
    assert_eq!(first.as_ref(), Some(&invite));
    let second = db
        .accounts
        .redeem_invite(&[5; 32], 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.uses_left, 1);
    assert_eq!(db.accounts.redeem_invite(&[5; 32], 0).await.unwrap(), None);
    assert_eq!(db.accounts.redeem_invite(&[6; 32], 0).await.unwrap(), None);
}

async fn an_expired_invite_is_refused(db: Db) {
    let invite = Invite {
        code_hash: [5; 32],
        created_by: None,
        room: None,
        expires_ms: 1_000,
        uses_left: 1,
    };
    db.accounts.create_invite(&invite).await.unwrap();
    assert_eq!(
        db.accounts.redeem_invite(&[5; 32], 1_000).await.unwrap(),
        None
    );
}
