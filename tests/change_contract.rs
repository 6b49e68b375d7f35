//! The `ChangeStore` contract (issue 20): edits and deletes by the author, moderators' deletes,
//! reactions, message state, and the per-room change feed, one test body per behaviour, run
//! against SQLite always and PostgreSQL when `HUBBUB_TEST_POSTGRES` (or `HUBBUB_TEST_DB`) names
//! a server (each test in a schema of its own), as tests/moderation_contract.rs does.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::contract::Db;

use hubbub::protocol::RoomName;
use hubbub::store::NewMessage;
use hubbub::store::accounts::AccountId;
use hubbub::store::changes::{ChangeOutcome, Deleter, Reaction};
use hubbub::store::moderation::{AuditQuery, AuditRecord};
use serde_json::Value;

const ANN: AccountId = AccountId(1);
const BOB: AccountId = AccountId(2);

impl Db {
    /// Posts `texts` to `room` as `author` (`None`: a guest); returns their ids.
    async fn post(&self, room: &str, author: Option<AccountId>, texts: &[&str]) -> Vec<u64> {
        let batch: Vec<NewMessage> = texts
            .iter()
            .map(|text| NewMessage {
                room: RoomName::parse(room).unwrap(),
                from: "someone".to_owned(),
                text: (*text).to_owned(),
                ts: 7,
                author,
                reply_to: None,
                attachment: None,
            })
            .collect();
        let stored = self.store.append(&batch).await.unwrap();
        stored.iter().map(|message| message.id).collect()
    }

    /// The text of message `id` as history reads it.
    async fn text(&self, room: &str, id: u64) -> String {
        let page = self
            .store
            .before(&RoomName::parse(room).unwrap(), None, 100)
            .await
            .unwrap();
        let message = page.messages.iter().find(|m| m.id == id).unwrap();
        message.text.clone()
    }

    /// The room's feed as (seq, message id, kind).
    async fn feed(&self, room: &str) -> Vec<(u64, u64, String)> {
        let changes = self.changes.changes_after(room, 0, 1000).await.unwrap();
        changes
            .iter()
            .map(|change| {
                let payload: Value = serde_json::from_str(&change.payload).unwrap();
                assert_eq!(payload["seq"], change.seq);
                assert_eq!(payload["id"], change.message_id);
                let kind = payload["kind"].as_str().unwrap().to_owned();
                (change.seq, change.message_id, kind)
            })
            .collect()
    }

    async fn react(
        &self,
        room: &str,
        id: u64,
        account: AccountId,
        emoji: &str,
        on: bool,
    ) -> ChangeOutcome {
        let reaction = Reaction {
            account,
            name: if account == ANN { "ann" } else { "bob" },
            emoji,
            on,
        };
        self.changes.react(room, id, &reaction).await.unwrap()
    }
}

contract!(
    an_authors_edit_replaces_the_text_and_is_the_rooms_first_change,
    an_edit_by_another_account_or_of_a_guests_message_changes_nothing,
    a_change_to_a_message_of_another_room_or_none_is_missing,
    an_authors_delete_leaves_a_tombstone_that_cannot_be_edited_or_reacted_to,
    a_moderators_delete_writes_its_audit_row_with_the_change,
    a_reaction_is_one_per_account_emoji_and_message,
    message_state_lists_edits_and_reactors_in_reaction_order,
    the_feed_is_numbered_per_room_and_read_in_pages,
    concurrent_changes_get_distinct_gap_free_numbers,
    a_reply_is_kept_through_append_reads_tombstones_and_import,
    a_reply_target_exists_only_in_its_own_room,
);

async fn an_authors_edit_replaces_the_text_and_is_the_rooms_first_change(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["helo"]).await;
    let outcome = db
        .changes
        .edit_message("lobby", ids[0], ANN, "hello", 42)
        .await
        .unwrap();
    let ChangeOutcome::Changed { change, message } = outcome else {
        panic!("not changed: {outcome:?}");
    };
    assert_eq!(change.seq, 1);
    assert_eq!(message.unwrap().text, "hello");
    let payload: Value = serde_json::from_str(&change.payload).unwrap();
    assert_eq!(payload["text"], "hello");
    assert_eq!(payload["edited_ms"], 42);
    assert_eq!(db.text("lobby", ids[0]).await, "hello");
    assert_eq!(db.changes.last_change("lobby").await.unwrap(), 1);
}

async fn an_edit_by_another_account_or_of_a_guests_message_changes_nothing(db: Db) {
    let ann = db.post("lobby", Some(ANN), &["ann's"]).await;
    let guest = db.post("lobby", None, &["a guest's"]).await;
    let by_bob = db.changes.edit_message("lobby", ann[0], BOB, "x", 1).await;
    assert_eq!(by_bob.unwrap(), ChangeOutcome::NotYours);
    let of_guest = db
        .changes
        .edit_message("lobby", guest[0], ANN, "x", 1)
        .await;
    assert_eq!(of_guest.unwrap(), ChangeOutcome::NotYours);
    let deleted = db
        .changes
        .delete_message("lobby", ann[0], Deleter::Author(BOB))
        .await;
    assert_eq!(deleted.unwrap(), ChangeOutcome::NotYours);
    assert_eq!(db.text("lobby", ann[0]).await, "ann's");
    assert!(db.feed("lobby").await.is_empty());
}

async fn a_change_to_a_message_of_another_room_or_none_is_missing(db: Db) {
    let ids = db.post("other", Some(ANN), &["elsewhere"]).await;
    let edit = db.changes.edit_message("lobby", ids[0], ANN, "x", 1).await;
    assert_eq!(edit.unwrap(), ChangeOutcome::Missing);
    assert_eq!(
        db.react("lobby", 9, ANN, "👍", true).await,
        ChangeOutcome::Missing
    );
    let delete = db
        .changes
        .delete_message("lobby", 9, Deleter::Author(ANN))
        .await;
    assert_eq!(delete.unwrap(), ChangeOutcome::Missing);
    assert!(db.feed("lobby").await.is_empty());
}

async fn an_authors_delete_leaves_a_tombstone_that_cannot_be_edited_or_reacted_to(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["oops"]).await;
    let outcome = db
        .changes
        .delete_message("lobby", ids[0], Deleter::Author(ANN))
        .await
        .unwrap();
    assert!(
        matches!(outcome, ChangeOutcome::Changed { .. }),
        "{outcome:?}"
    );
    assert_eq!(db.text("lobby", ids[0]).await, "");
    let again = db
        .changes
        .delete_message("lobby", ids[0], Deleter::Author(ANN))
        .await;
    assert_eq!(again.unwrap(), ChangeOutcome::Unchanged);
    let edit = db
        .changes
        .edit_message("lobby", ids[0], ANN, "back", 1)
        .await;
    assert_eq!(edit.unwrap(), ChangeOutcome::Gone);
    assert_eq!(
        db.react("lobby", ids[0], BOB, "👍", true).await,
        ChangeOutcome::Gone
    );
    assert_eq!(
        db.feed("lobby").await,
        vec![(1, ids[0], "delete".to_owned())]
    );
}

async fn a_moderators_delete_writes_its_audit_row_with_the_change(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["rude"]).await;
    let audit = AuditRecord {
        actor: "mod".to_owned(),
        action: "delete".to_owned(),
        room: Some("lobby".to_owned()),
        target: Some(format!("#{}", ids[0])),
        detail: None,
    };
    let outcome = db
        .changes
        .delete_message("lobby", ids[0], Deleter::Moderator(&audit))
        .await
        .unwrap();
    let ChangeOutcome::Changed { change, .. } = outcome else {
        panic!("not changed: {outcome:?}");
    };
    let payload: Value = serde_json::from_str(&change.payload).unwrap();
    assert_eq!(payload["by"], "moderator");
    let query = AuditQuery {
        rooms: None,
        before: None,
        limit: 10,
    };
    let rows = db.moderation.audit(&query).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].record, audit);
}

async fn a_reaction_is_one_per_account_emoji_and_message(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["vote"]).await;
    let first = db.react("lobby", ids[0], BOB, "👍", true).await;
    assert!(matches!(first, ChangeOutcome::Changed { .. }));
    assert_eq!(
        db.react("lobby", ids[0], BOB, "👍", true).await,
        ChangeOutcome::Unchanged
    );
    let ChangeOutcome::Changed { change, .. } = db.react("lobby", ids[0], ANN, "👍", true).await
    else {
        panic!("ann's reaction not stored");
    };
    let payload: Value = serde_json::from_str(&change.payload).unwrap();
    assert_eq!(payload["count"], 2);
    let ChangeOutcome::Changed { change, .. } = db.react("lobby", ids[0], BOB, "👍", false).await
    else {
        panic!("bob's removal not stored");
    };
    let payload: Value = serde_json::from_str(&change.payload).unwrap();
    assert_eq!(
        (payload["on"].clone(), payload["count"].clone()),
        (false.into(), 1.into())
    );
    assert_eq!(
        db.react("lobby", ids[0], BOB, "👍", false).await,
        ChangeOutcome::Unchanged
    );
    assert_eq!(db.feed("lobby").await.len(), 3);
}

async fn message_state_lists_edits_and_reactors_in_reaction_order(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["one", "two", "three"]).await;
    db.changes
        .edit_message("lobby", ids[1], ANN, "2", 50)
        .await
        .unwrap();
    db.react("lobby", ids[2], BOB, "🎉", true).await;
    db.react("lobby", ids[2], ANN, "🎉", true).await;
    let states = db
        .changes
        .message_states("lobby", ids[0], ids[2])
        .await
        .unwrap();
    assert_eq!(states.len(), 2);
    assert_eq!((states[0].id, states[0].edited_ms), (ids[1], Some(50)));
    assert_eq!(states[1].id, ids[2]);
    assert_eq!(states[1].reactions[0].by, vec!["bob", "ann"]);
    let outside = db.changes.message_states("lobby", ids[0], ids[0]).await;
    assert!(outside.unwrap().is_empty());
}

async fn the_feed_is_numbered_per_room_and_read_in_pages(db: Db) {
    let lobby = db.post("lobby", Some(ANN), &["a"]).await;
    let other = db.post("other", Some(ANN), &["b"]).await;
    db.react("lobby", lobby[0], ANN, "👍", true).await;
    db.react("other", other[0], ANN, "👍", true).await;
    db.changes
        .edit_message("lobby", lobby[0], ANN, "a2", 1)
        .await
        .unwrap();
    assert_eq!(
        db.feed("lobby").await,
        vec![
            (1, lobby[0], "react".to_owned()),
            (2, lobby[0], "edit".to_owned())
        ]
    );
    assert_eq!(
        db.feed("other").await,
        vec![(1, other[0], "react".to_owned())]
    );
    let page = db.changes.changes_after("lobby", 1, 1).await.unwrap();
    assert_eq!(page.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![2]);
    assert!(
        db.changes
            .changes_after("lobby", 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.changes.last_change("empty").await.unwrap(), 0);
}

async fn concurrent_changes_get_distinct_gap_free_numbers(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["popular"]).await;
    let id = ids[0];
    let changes = db.changes.clone();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let changes = changes.clone();
            tokio::spawn(async move {
                let reaction = Reaction {
                    account: AccountId(100 + n),
                    name: "someone",
                    emoji: "👍",
                    on: true,
                };
                changes.react("lobby", id, &reaction).await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert!(matches!(task.await.unwrap(), ChangeOutcome::Changed { .. }));
    }
    let seqs: Vec<u64> = db.feed("lobby").await.iter().map(|row| row.0).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
}

async fn a_reply_is_kept_through_append_reads_tombstones_and_import(db: Db) {
    let ids = db.post("lobby", Some(ANN), &["question"]).await;
    let reply = NewMessage {
        room: RoomName::parse("lobby").unwrap(),
        from: "bob".to_owned(),
        text: "answer".to_owned(),
        ts: 8,
        author: Some(BOB),
        reply_to: Some(ids[0]),
        attachment: None,
    };
    let stored = db.store.append(&[reply]).await.unwrap();
    assert_eq!(stored[0].reply_to, Some(ids[0]));
    let lobby = RoomName::parse("lobby").unwrap();
    let after = db.store.after(&lobby, 0, 10).await.unwrap();
    assert_eq!(
        after.iter().map(|m| m.reply_to).collect::<Vec<_>>(),
        vec![None, Some(ids[0])]
    );
    let deleted = db
        .changes
        .delete_message("lobby", stored[0].id, Deleter::Author(BOB))
        .await
        .unwrap();
    let ChangeOutcome::Changed { message, .. } = deleted else {
        panic!("not deleted: {deleted:?}");
    };
    assert_eq!(
        message.unwrap().reply_to,
        Some(ids[0]),
        "a tombstone keeps its place"
    );
    let mut imported = after.clone();
    for message in &mut imported {
        message.room = RoomName::parse("copied").unwrap();
    }
    db.store.import(&imported).await.unwrap();
    let copied = RoomName::parse("copied").unwrap();
    let page = db.store.before(&copied, None, 10).await.unwrap();
    assert_eq!(page.messages[1].reply_to, Some(ids[0]));
}

async fn a_reply_target_exists_only_in_its_own_room(db: Db) {
    let ids = db.post("other", Some(ANN), &["elsewhere"]).await;
    assert!(db.changes.message_exists("other", ids[0]).await.unwrap());
    assert!(!db.changes.message_exists("lobby", ids[0]).await.unwrap());
}
