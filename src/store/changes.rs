//! Changes to stored messages (issue 20): an author's edits and deletes, moderators' deletes,
//! reactions, and the per-room change feed that lets a resuming client catch up on them.
//!
//! **The feed.** Every change is one row of `message_changes` (migration 0007), numbered per
//! room from 1 with no gap (`seq`), written in the same transaction as the change itself, so
//! a change is in the feed exactly when it is in the store. The row's `payload` is the `data`
//! of the `change` frame live members got; catching up sends the same bytes
//! ([`Change::frame`]), so a resumed client sees what a connected one saw.
//!
//! **Who may change what.** An edit and an own delete need the author's account
//! (`messages.author_id`): guests have no account, so they cannot edit or delete what they
//! posted (a guest's name is not proof of anything). Moderators delete through
//! [`Deleter::Moderator`], with the audit row issue 19 writes. A reaction needs an account;
//! one per account, emoji and message.

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use super::accounts::AccountId;
use super::moderation::AuditRecord;
use super::{StoreError, StoredMessage};
pub use crate::protocol::changes::{MessageState, ReactionSummary};

/// Change rows read per catch-up query.
pub const CHANGE_PAGE: u32 = 500;

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The room.
    pub room: String,
    /// Per-room change number: 1, 2, 3 ... with no gap.
    pub seq: u64,
    /// The message it changed.
    pub message_id: u64,
    /// The `change` frame's `data`, as JSON.
    pub payload: String,
}

impl Change {
    /// The encoded `change` frame: `{"type":"change","room":R,"data":PAYLOAD}`. Built once per
    /// change and shared by every member (the payload is already JSON; the room name follows
    /// the room rule, which allows nothing JSON would escape, but it is escaped anyway).
    pub fn frame(&self) -> Bytes {
        let room = serde_json::to_string(&self.room).unwrap_or_else(|_| "\"\"".to_owned());
        let mut json = String::with_capacity(self.payload.len() + room.len() + 40);
        json.push_str("{\"type\":\"change\",\"room\":");
        json.push_str(&room);
        json.push_str(",\"data\":");
        json.push_str(&self.payload);
        json.push('}');
        Bytes::from(json)
    }
}

/// What a change's payload says, before the store numbers it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChangeBody<'a> {
    /// The author replaced the text.
    Edit {
        /// The new text.
        text: &'a str,
        /// When, ms since the Unix epoch.
        edited_ms: i64,
    },
    /// The text is gone (a tombstone).
    Delete {
        /// `author` or `moderator`.
        by: &'a str,
    },
    /// A reaction was added (`on`) or taken back.
    React {
        /// The emoji.
        emoji: &'a str,
        /// The reactor's display name.
        name: &'a str,
        /// Added (`true`) or removed.
        on: bool,
        /// How many accounts now react with this emoji to the message.
        count: u64,
    },
}

/// A change's payload: its number, the message, and the body's fields.
#[derive(Serialize)]
struct Payload<'a> {
    seq: u64,
    id: u64,
    #[serde(flatten)]
    body: &'a ChangeBody<'a>,
}

/// The JSON payload of change `seq` to message `id`.
pub(crate) fn payload(seq: u64, id: u64, body: &ChangeBody<'_>) -> String {
    // Plain strings, integers and booleans: serialising cannot fail.
    serde_json::to_string(&Payload { seq, id, body }).unwrap_or_default()
}

/// The kind column of a change row.
pub(crate) fn kind(body: &ChangeBody<'_>) -> &'static str {
    match body {
        ChangeBody::Edit { .. } => "edit",
        ChangeBody::Delete { .. } => "delete",
        ChangeBody::React { .. } => "react",
    }
}

/// Who deletes a message.
#[derive(Debug, Clone, Copy)]
pub enum Deleter<'a> {
    /// Its author (checked against `messages.author_id`).
    Author(AccountId),
    /// A moderator whose rights the hub checked; the audit row is written with the delete.
    Moderator(&'a AuditRecord),
}

/// A reaction added or removed.
#[derive(Debug, Clone)]
pub struct Reaction<'a> {
    /// The reacting account.
    pub account: AccountId,
    /// Its display name, shown to others.
    pub name: &'a str,
    /// The emoji (validated by `protocol::changes`).
    pub emoji: &'a str,
    /// Add (`true`) or take back.
    pub on: bool,
}

/// How a change went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeOutcome {
    /// Stored with this feed row; `message` is the message's new state when its text changed
    /// (an edit, a delete), for the rooms' recent frames.
    Changed {
        /// The feed row.
        change: Change,
        /// The message as readers now get it (edits and deletes only).
        message: Option<StoredMessage>,
    },
    /// Nothing to do (a delete of a tombstone, a reaction already there or already gone): no row.
    Unchanged,
    /// The room has no message with that id.
    Missing,
    /// The caller is not the message's author (edit, own delete).
    NotYours,
    /// The message is a tombstone: it cannot be edited or reacted to.
    Gone,
}

/// Groups reaction rows (`(message id, emoji, name)` in reaction order) and edit times into
/// states, one per message that has either, in id order.
pub(crate) fn states(
    mut edited: Vec<(u64, i64)>,
    reactions: Vec<(u64, String, String)>,
) -> Vec<MessageState> {
    let mut out: std::collections::BTreeMap<u64, MessageState> = Default::default();
    edited.sort_unstable();
    for (id, edited_ms) in edited {
        out.entry(id)
            .or_insert_with(|| MessageState {
                id,
                edited_ms: None,
                reactions: Vec::new(),
            })
            .edited_ms = Some(edited_ms);
    }
    for (id, emoji, name) in reactions {
        let state = out.entry(id).or_insert_with(|| MessageState {
            id,
            edited_ms: None,
            reactions: Vec::new(),
        });
        match state.reactions.iter_mut().find(|r| r.emoji == emoji) {
            Some(summary) => {
                summary.count += 1;
                summary.by.push(name);
            }
            None => state.reactions.push(ReactionSummary {
                emoji,
                count: 1,
                by: vec![name],
            }),
        }
    }
    out.into_values().collect()
}

/// Edits, deletes, reactions and the change feed, as SQLite and PostgreSQL keep them. Each
/// change and its feed row are one transaction. Methods are ordered update, read.
#[async_trait]
pub trait ChangeStore: Send + Sync + 'static {
    /// Replaces the text of message `id` if `author` posted it; marks it edited at `edited_ms`.
    async fn edit_message(
        &self,
        room: &str,
        id: u64,
        author: AccountId,
        text: &str,
        edited_ms: i64,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Clears the text of message `id` (a tombstone) for its author or a moderator.
    async fn delete_message(
        &self,
        room: &str,
        id: u64,
        by: Deleter<'_>,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Adds or removes one reaction to message `id`.
    async fn react(
        &self,
        room: &str,
        id: u64,
        reaction: &Reaction<'_>,
    ) -> Result<ChangeOutcome, StoreError>;

    /// Up to `limit` changes of `room` with `seq` greater than `after`, in `seq` order.
    async fn changes_after(
        &self,
        room: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError>;

    /// The room's newest change number, 0 when it has none.
    async fn last_change(&self, room: &str) -> Result<u64, StoreError>;

    /// Whether `room` holds message `id` (a reply's target; a tombstone counts).
    async fn message_exists(&self, room: &str, id: u64) -> Result<bool, StoreError>;

    /// Edit times and reactions of the messages `first..=last` of `room` that have any.
    async fn message_states(
        &self,
        room: &str,
        first: u64,
        last: u64,
    ) -> Result<Vec<MessageState>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_frame_wraps_the_stored_payload_once() {
        let body = ChangeBody::React {
            emoji: "👍",
            name: "ann",
            on: true,
            count: 1,
        };
        let change = Change {
            room: "lobby".into(),
            seq: 3,
            message_id: 9,
            payload: payload(3, 9, &body),
        };
        let frame: serde_json::Value = serde_json::from_slice(&change.frame()).expect("json");
        assert_eq!(
            frame,
            serde_json::json!({"type":"change","room":"lobby","data":{
                "seq":3,"id":9,"kind":"react","emoji":"👍","name":"ann","on":true,"count":1}})
        );
    }

    #[test]
    fn states_group_reactions_by_emoji_in_reaction_order() {
        let states = states(
            vec![(2, 50)],
            vec![
                (1, "👍".into(), "ann".into()),
                (1, "🎉".into(), "bob".into()),
                (1, "👍".into(), "cy".into()),
            ],
        );
        assert_eq!(states.len(), 2);
        assert_eq!(states[0].reactions[0].by, vec!["ann", "cy"]);
        assert_eq!(states[0].reactions[1].count, 1);
        assert_eq!(states[1].edited_ms, Some(50));
    }
}
