//! The `ModerationStore` contract (issue 19): tombstones, bans, mutes, slow mode and the audit
//! log, one test body per behaviour, run against SQLite always and PostgreSQL when
//! `HUBBUB_TEST_POSTGRES` (or `HUBBUB_TEST_DB`) names a server (each test in a schema of its
//! own), as tests/store_contract.rs does for history.
//!
//! Accounts are inserted with plain SQL into the `accounts` table the spec fixes (migration
//! 0002), so these tests depend on that table, not on the accounts service.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::contract::Db;

use hubbub::protocol::RoomName;
use hubbub::store::NewMessage;
use hubbub::store::accounts::AccountId;
use hubbub::store::moderation::{AuditQuery, AuditRecord, Deletion, Restricted, Restriction};

impl Db {
    /// Posts `texts` to `room` as `from`.
    async fn post(&self, room: &str, from: &str, texts: &[&str]) {
        let batch: Vec<NewMessage> = texts
            .iter()
            .map(|text| NewMessage {
                room: RoomName::parse(room).unwrap(),
                from: from.to_owned(),
                text: (*text).to_owned(),
                ts: 7,
                author: None,
                reply_to: None,
                attachment: None,
            })
            .collect();
        self.store.append(&batch).await.unwrap();
    }

    /// Every audit row, newest first.
    async fn audit_rows(&self) -> Vec<AuditRecord> {
        let query = AuditQuery {
            rooms: None,
            before: None,
            limit: 100,
        };
        let rows = self.moderation.audit(&query).await.unwrap();
        rows.into_iter().map(|entry| entry.record).collect()
    }
}

contract!(
    a_deleted_message_has_no_text_left_in_history_or_replay,
    a_deleted_message_keeps_its_id_and_the_room_continues_after_it,
    deleting_a_deleted_message_changes_nothing_and_audits_nothing,
    deleting_a_message_that_does_not_exist_reports_it_missing,
    a_ban_is_in_force_until_it_is_lifted,
    a_ban_with_an_end_is_not_in_force_after_it,
    a_second_ban_replaces_the_first,
    lifting_a_ban_that_is_not_in_force_changes_nothing_and_audits_nothing,
    a_mute_holds_in_its_room_only,
    slow_mode_is_set_changed_and_turned_off,
    every_change_writes_one_audit_row_with_who_what_where,
    the_audit_log_reads_newest_first_in_pages,
    the_audit_log_can_be_limited_to_some_rooms,
);

fn record(actor: &str, action: &str, room: Option<&str>, target: Option<&str>) -> AuditRecord {
    AuditRecord {
        actor: actor.to_owned(),
        action: action.to_owned(),
        room: room.map(str::to_owned),
        target: target.map(str::to_owned),
        detail: None,
    }
}

fn restriction(account: AccountId, until_ms: Option<i64>, by: AccountId) -> Restricted {
    Restricted {
        account,
        until_ms,
        by: Some(by),
        created_ms: 1_000,
    }
}

async fn ban(db: &Db, room: &str, target: AccountId, until_ms: Option<i64>, by: AccountId) {
    let audit = record("mod", "ban", Some(room), Some("bob"));
    db.moderation
        .restrict(
            Restriction::Ban,
            room,
            &restriction(target, until_ms, by),
            &audit,
        )
        .await
        .unwrap();
}

async fn a_deleted_message_has_no_text_left_in_history_or_replay(db: Db) {
    db.post("lobby", "ann", &["one", "secret", "three"]).await;
    let audit = record("mod", "delete", Some("lobby"), Some("#2"));
    let outcome = db
        .moderation
        .delete_message("lobby", 2, &audit)
        .await
        .unwrap();
    let Deletion::Deleted(tombstone) = outcome else {
        panic!("not deleted: {outcome:?}");
    };
    assert_eq!((tombstone.id, tombstone.from.as_str()), (2, "ann"));
    assert!(tombstone.is_deleted());
    let lobby = RoomName::lobby();
    let page = db.store.before(&lobby, None, 10).await.unwrap();
    let texts: Vec<&str> = page.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "", "three"]);
    assert!(page.messages[1].is_deleted());
    assert!(!page.messages[0].is_deleted());
    let replay = db.store.after(&lobby, 1, 10).await.unwrap();
    assert_eq!(replay[0].id, 2);
    assert!(replay[0].is_deleted());
}

async fn a_deleted_message_keeps_its_id_and_the_room_continues_after_it(db: Db) {
    db.post("lobby", "ann", &["one", "two"]).await;
    let audit = record("mod", "delete", Some("lobby"), Some("#2"));
    db.moderation
        .delete_message("lobby", 2, &audit)
        .await
        .unwrap();
    db.post("lobby", "ann", &["three"]).await;
    let lobby = RoomName::lobby();
    assert_eq!(db.store.last_id(&lobby).await.unwrap(), 3);
    let ids: Vec<u64> = db
        .store
        .after(&lobby, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

async fn deleting_a_deleted_message_changes_nothing_and_audits_nothing(db: Db) {
    db.post("lobby", "ann", &["one"]).await;
    let audit = record("mod", "delete", Some("lobby"), Some("#1"));
    let first = db
        .moderation
        .delete_message("lobby", 1, &audit)
        .await
        .unwrap();
    assert!(matches!(first, Deletion::Deleted(_)));
    let second = db
        .moderation
        .delete_message("lobby", 1, &audit)
        .await
        .unwrap();
    assert_eq!(second, Deletion::AlreadyDeleted);
    assert_eq!(db.audit_rows().await.len(), 1);
}

async fn deleting_a_message_that_does_not_exist_reports_it_missing(db: Db) {
    db.post("lobby", "ann", &["one"]).await;
    let audit = record("mod", "delete", Some("lobby"), Some("#5"));
    let in_lobby = db.moderation.delete_message("lobby", 5, &audit).await;
    assert_eq!(in_lobby.unwrap(), Deletion::Missing);
    let elsewhere = db.moderation.delete_message("other", 1, &audit).await;
    assert_eq!(elsewhere.unwrap(), Deletion::Missing);
    assert!(db.audit_rows().await.is_empty());
    let page = db.store.before(&RoomName::lobby(), None, 10).await.unwrap();
    assert_eq!(page.messages[0].text, "one");
}

async fn a_ban_is_in_force_until_it_is_lifted(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    ban(&db, "lobby", bob, None, moderator).await;
    let state = db.moderation.room_moderation("lobby", 5_000).await.unwrap();
    let held = state.restricted(Restriction::Ban, bob, 5_000).unwrap();
    assert_eq!(held, &restriction(bob, None, moderator));
    assert!(
        state
            .restricted(Restriction::Ban, moderator, 5_000)
            .is_none()
    );
    assert!(state.restricted(Restriction::Mute, bob, 5_000).is_none());

    let audit = record("mod", "unban", Some("lobby"), Some("bob"));
    let lifted = db.moderation.lift(Restriction::Ban, "lobby", bob, &audit);
    assert!(lifted.await.unwrap());
    let state = db.moderation.room_moderation("lobby", 5_000).await.unwrap();
    assert!(state.bans.is_empty());
}

async fn a_ban_with_an_end_is_not_in_force_after_it(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    ban(&db, "lobby", bob, Some(2_000), moderator).await;
    let before_end = db.moderation.room_moderation("lobby", 1_999).await.unwrap();
    assert_eq!(before_end.bans.len(), 1);
    assert!(
        before_end
            .restricted(Restriction::Ban, bob, 1_999)
            .is_some()
    );
    // The cached state also expires by itself: the same record is not in force after its end.
    assert!(
        before_end
            .restricted(Restriction::Ban, bob, 2_000)
            .is_none()
    );
    let after_end = db.moderation.room_moderation("lobby", 2_000).await.unwrap();
    assert!(after_end.bans.is_empty());
}

async fn a_second_ban_replaces_the_first(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    ban(&db, "lobby", bob, Some(2_000), moderator).await;
    ban(&db, "lobby", bob, None, moderator).await;
    let state = db.moderation.room_moderation("lobby", 9_000).await.unwrap();
    assert_eq!(state.bans, vec![restriction(bob, None, moderator)]);
}

async fn lifting_a_ban_that_is_not_in_force_changes_nothing_and_audits_nothing(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    let audit = record("mod", "unban", Some("lobby"), Some("bob"));
    let never_banned = db.moderation.lift(Restriction::Ban, "lobby", bob, &audit);
    assert!(!never_banned.await.unwrap());
    // A ban that ended long ago (ms since the epoch: 2_000 is 1970).
    ban(&db, "lobby", bob, Some(2_000), moderator).await;
    let expired = db.moderation.lift(Restriction::Ban, "lobby", bob, &audit);
    assert!(!expired.await.unwrap());
    let actions: Vec<String> = db
        .audit_rows()
        .await
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(actions, ["ban"]);
}

async fn a_mute_holds_in_its_room_only(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    let audit = record("mod", "mute", Some("lobby"), Some("bob"));
    let muted = restriction(bob, None, moderator);
    db.moderation
        .restrict(Restriction::Mute, "lobby", &muted, &audit)
        .await
        .unwrap();
    let lobby = db.moderation.room_moderation("lobby", 5_000).await.unwrap();
    assert!(lobby.restricted(Restriction::Mute, bob, 5_000).is_some());
    assert!(lobby.restricted(Restriction::Ban, bob, 5_000).is_none());
    let other = db.moderation.room_moderation("other", 5_000).await.unwrap();
    assert!(other.mutes.is_empty());
}

async fn slow_mode_is_set_changed_and_turned_off(db: Db) {
    let audit = record("mod", "slow", Some("lobby"), None);
    let slow = |db: &Db| {
        let moderation = db.moderation.clone();
        async move {
            let state = moderation.room_moderation("lobby", 0).await.unwrap();
            state.slow_seconds
        }
    };
    assert_eq!(slow(&db).await, 0);
    db.moderation
        .set_slow_mode("lobby", 30, &audit)
        .await
        .unwrap();
    assert_eq!(slow(&db).await, 30);
    db.moderation
        .set_slow_mode("lobby", 5, &audit)
        .await
        .unwrap();
    assert_eq!(slow(&db).await, 5);
    db.moderation
        .set_slow_mode("lobby", 0, &audit)
        .await
        .unwrap();
    assert_eq!(slow(&db).await, 0);
}

async fn every_change_writes_one_audit_row_with_who_what_where(db: Db) {
    let (bob, moderator) = (db.account("bob").await, db.account("mod").await);
    db.post("lobby", "bob", &["spam"]).await;
    let delete = record("mod", "delete", Some("lobby"), Some("#1"));
    db.moderation
        .delete_message("lobby", 1, &delete)
        .await
        .unwrap();
    let mut mute = record("mod", "mute", Some("lobby"), Some("bob"));
    mute.detail = Some("60 s".to_owned());
    let muted = restriction(bob, None, moderator);
    db.moderation
        .restrict(Restriction::Mute, "lobby", &muted, &mute)
        .await
        .unwrap();
    let slow = record("mod", "slow", Some("lobby"), None);
    db.moderation
        .set_slow_mode("lobby", 9, &slow)
        .await
        .unwrap();
    let disable = record("operator", "disable", None, Some("bob"));
    db.moderation.record_audit(&disable).await.unwrap();
    assert_eq!(db.audit_rows().await, [disable, slow, mute, delete]);
}

async fn the_audit_log_reads_newest_first_in_pages(db: Db) {
    for n in 0..5 {
        let target = format!("#{n}");
        let row = record("mod", "delete", Some("lobby"), Some(&target));
        db.moderation.record_audit(&row).await.unwrap();
    }
    let first = AuditQuery {
        rooms: None,
        before: None,
        limit: 2,
    };
    let page = db.moderation.audit(&first).await.unwrap();
    let targets: Vec<_> = page.iter().map(|e| e.record.target.clone()).collect();
    assert_eq!(targets, [Some("#4".into()), Some("#3".into())]);
    let next = AuditQuery {
        before: Some(page[1].id),
        ..first
    };
    let page = db.moderation.audit(&next).await.unwrap();
    let targets: Vec<_> = page.iter().map(|e| e.record.target.clone()).collect();
    assert_eq!(targets, [Some("#2".into()), Some("#1".into())]);
    assert!(page[0].ts_ms > 0);
}

async fn the_audit_log_can_be_limited_to_some_rooms(db: Db) {
    for room in [Some("a"), Some("b"), None, Some("c")] {
        let row = record("mod", "kick", room, Some("bob"));
        db.moderation.record_audit(&row).await.unwrap();
    }
    let rooms_of = |rooms: Option<Vec<String>>| {
        let moderation = db.moderation.clone();
        async move {
            let query = AuditQuery {
                rooms,
                before: None,
                limit: 10,
            };
            let rows = moderation.audit(&query).await.unwrap();
            rows.into_iter()
                .map(|e| e.record.room)
                .collect::<Vec<Option<String>>>()
        }
    };
    let some = rooms_of(Some(vec!["a".into(), "c".into()])).await;
    assert_eq!(some, [Some("c".into()), Some("a".into())]);
    assert!(rooms_of(Some(Vec::new())).await.is_empty());
    assert_eq!(rooms_of(None).await.len(), 4);
}
