//! What a room's newest messages need for unread counting, kept in memory beside the recent
//! frames: each message's id, sender, whether it is deleted and, if its text has an `@`, the
//! text. A signed-in join counts its unread messages and mentions from here when the ledger
//! reaches back to the member's read marker; only an older marker asks the store (one of the
//! store's reads per join that a room filling with members would otherwise pay once each,
//! docs/benchmarks.md round 18).
//!
//! The counts are the store's (store/directory.rs, `RoomDirectory::unread`): messages after the
//! marker not sent by the account's name and not deleted, and those of them mentioning the
//! name among the first [`crate::store::directory::MENTION_SCAN_FACTOR`] × cap that contain
//! `@`, each capped. The ledger holds at most [`LEDGER_CAPACITY`] messages, fewer than that
//! scan, so a count from memory is exact whenever it is given.
//!
//! Like the recent frames it is fed where the hub fans messages out (every message of the room
//! in id order) and trusted once a join's store read has seeded it; deletions and edits reach
//! it where they reach the recent frames, and are remembered (a few) for what a seed or a
//! record brings later that was read or committed before them.
//!
//! A node keeps ledgers only once it has accounts (guests count nothing); a room whose messages
//! went by before that is counted by the store until its entry is made again. Memory: at most
//! [`LEDGER_CAPACITY`] entries per room with members here, each about 50 bytes plus its
//! sender's name and, for an `@` text, the text.

use std::collections::VecDeque;

use serde::Deserialize;

use crate::store::StoredMessage;
use crate::store::directory::{Unread, mention_needle, mentions_lowercased};

/// Messages a room's ledger keeps: an account whose marker is this far behind (or further) on
/// a busy room is counted by the store.
pub(crate) const LEDGER_CAPACITY: usize = 1_000;

/// Deletions and edits remembered for a seed or record that brings the message later.
const REMEMBERED_CHANGES: usize = 64;

/// One message as counting needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerEntry {
    id: u64,
    /// The display name it was posted under (what the store's `sender` column holds).
    sender: Box<str>,
    /// The text lowercased (as mentions are matched), only when it contains `@` (it may
    /// mention someone); `None` once deleted.
    mention_text: Option<Box<str>>,
    deleted: bool,
}

impl LedgerEntry {
    /// The entry of a stored (or fanned out) message.
    pub fn of(message: &StoredMessage) -> Self {
        Self {
            id: message.id,
            sender: message.from.as_str().into(),
            mention_text: mention_text(&message.text),
            deleted: message.is_deleted(),
        }
    }

    fn apply(&mut self, change: &LedgerChange) {
        match change {
            LedgerChange::Deleted(_) => {
                self.deleted = true;
                self.mention_text = None;
            }
            // A deleted message stays deleted (its text is gone from the store too).
            LedgerChange::Edited(_, text) if !self.deleted => self.mention_text = text.clone(),
            LedgerChange::Edited(..) => {}
        }
    }
}

fn mention_text(text: &str) -> Option<Box<str>> {
    text.contains('@').then(|| text.to_lowercase().into())
}

/// A deletion or an edit of message `.0`.
#[derive(Debug, Clone)]
enum LedgerChange {
    Deleted(u64),
    /// The new text's `@`-bearing form, as [`LedgerEntry::mention_text`].
    Edited(u64, Option<Box<str>>),
}

impl LedgerChange {
    fn id(&self) -> u64 {
        match self {
            Self::Deleted(id) | Self::Edited(id, _) => *id,
        }
    }
}

/// A room's newest messages as unread counting needs them (module doc).
#[derive(Default)]
pub(crate) struct UnreadLedger {
    /// In id order.
    entries: VecDeque<LedgerEntry>,
    /// Every message of the room with an id above this one is in `entries` (once seeded).
    start: u64,
    /// The highest id recorded or seeded.
    last_id: u64,
    seeded: bool,
    /// A message or change went by unrecorded ([`UnreadLedger::forget`]): never trusted again
    /// (the room's entry, and this ledger with it, goes when its last member here leaves).
    gap: bool,
    /// The latest deletions and edits, oldest first.
    changes: VecDeque<LedgerChange>,
}

impl UnreadLedger {
    /// Notes messages being fanned out (one room's share of a commit, in id order).
    pub fn record(&mut self, messages: &[LedgerEntry]) {
        if self.gap {
            return;
        }
        for message in messages {
            if message.id > self.last_id {
                let mut entry = message.clone();
                self.apply_remembered(&mut entry);
                self.last_id = entry.id;
                self.entries.push_back(entry);
            }
        }
        self.trim();
    }

    /// Merges the newest messages a join read from the store (id order; `whole_history` when
    /// they are all the room has) with what was recorded since the room entry existed: from
    /// the page's first message on, the two together are every message of the room.
    pub fn seed(&mut self, page: &[LedgerEntry], whole_history: bool) {
        if self.seeded || self.gap {
            return;
        }
        let start = match page.first() {
            _ if whole_history => 0,
            Some(first) => first.id.saturating_sub(1),
            // A page cut short yet empty cannot be: trust nothing.
            None => return,
        };
        let recorded = std::mem::take(&mut self.entries);
        let mut merged: VecDeque<LedgerEntry> = page.iter().cloned().collect();
        let newest_read = merged.back().map_or(0, |entry| entry.id);
        merged.extend(recorded.into_iter().filter(|entry| entry.id > newest_read));
        merged.retain(|entry| entry.id > start);
        for entry in &mut merged {
            self.apply_remembered(entry);
        }
        self.entries = merged;
        self.start = start;
        self.last_id = self.last_id.max(newest_read);
        self.seeded = true;
        self.trim();
    }

    /// [`UnreadLedger::record`] for `Some`; `None` stands for messages that went by without
    /// entries (the node keeps no ledgers yet): [`UnreadLedger::forget`].
    pub fn record_or_forget(&mut self, messages: Option<&[LedgerEntry]>) {
        match messages {
            Some(messages) => self.record(messages),
            None => self.forget(),
        }
    }

    /// Drops everything and stops trusting the ledger for good: a message or a change went by
    /// unrecorded, so whatever it held or would be seeded with could miss it.
    pub fn forget(&mut self) {
        if !self.gap {
            *self = Self {
                gap: true,
                ..Self::default()
            };
        }
    }

    /// Message `id` was deleted.
    pub fn delete(&mut self, id: u64) {
        self.change(LedgerChange::Deleted(id));
    }

    /// Message `id`'s text is now `text`.
    pub fn edit(&mut self, id: u64, text: &str) {
        self.change(LedgerChange::Edited(id, mention_text(text)));
    }

    /// A message's current state as a `msg` frame carries it (a change event's `message`):
    /// applied as [`UnreadLedger::delete`] or [`UnreadLedger::edit`]. A frame that does not
    /// parse leaves the ledger untrusted rather than wrong.
    pub fn changed_to(&mut self, id: u64, frame: &[u8]) {
        #[derive(Deserialize)]
        struct Msg<'a> {
            #[serde(borrow)]
            data: std::borrow::Cow<'a, str>,
            #[serde(default)]
            deleted: bool,
        }
        match serde_json::from_slice::<Msg<'_>>(frame) {
            Ok(msg) if msg.deleted => self.delete(id),
            Ok(msg) => self.edit(id, &msg.data),
            Err(_) => self.forget(),
        }
    }

    /// The unread and mention counts of `name` (an account's name) for the messages after
    /// `after` up to `up_to`, each at most `cap`; `None` when the ledger does not hold all of
    /// them (not seeded, `after` older than what it keeps, `up_to` newer than it has seen).
    pub fn count(&self, after: u64, up_to: u64, name: &str, cap: u32) -> Option<Unread> {
        if !self.seeded || self.gap || after < self.start || up_to > self.last_id {
            return None;
        }
        let from = self.entries.partition_point(|entry| entry.id <= after);
        let needle = mention_needle(name);
        let (mut unread, mut mentioned) = (0u32, 0u32);
        for entry in self.entries.range(from..) {
            if entry.id > up_to {
                break;
            }
            if entry.deleted || *entry.sender == *name {
                continue;
            }
            unread = unread.saturating_add(1);
            let text = entry.mention_text.as_deref();
            if text.is_some_and(|text| mentions_lowercased(text, &needle)) {
                mentioned = mentioned.saturating_add(1);
            }
        }
        Some(Unread {
            unread: unread.min(cap),
            mentions: mentioned.min(cap),
        })
    }

    fn change(&mut self, change: LedgerChange) {
        if self.gap {
            return;
        }
        let id = change.id();
        if let Some(entry) = self.entries.iter_mut().rev().find(|entry| entry.id == id) {
            entry.apply(&change);
        }
        // Each message's latest change is what is remembered of it.
        self.changes.retain(|known| known.id() != id);
        if self.changes.len() >= REMEMBERED_CHANGES {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    fn apply_remembered(&self, entry: &mut LedgerEntry) {
        let id = entry.id;
        for change in self.changes.iter().filter(|change| change.id() == id) {
            entry.apply(change);
        }
    }

    fn trim(&mut self) {
        while self.entries.len() > LEDGER_CAPACITY {
            if let Some(dropped) = self.entries.pop_front() {
                self.start = self.start.max(dropped.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u32 = 999;

    fn by(id: u64, sender: &str, text: &str) -> LedgerEntry {
        LedgerEntry {
            id,
            sender: sender.into(),
            mention_text: mention_text(text),
            deleted: false,
        }
    }

    fn from_bob(ids: std::ops::RangeInclusive<u64>) -> Vec<LedgerEntry> {
        ids.map(|id| by(id, "bob", "hi")).collect()
    }

    fn unread(unread: u32, mentions: u32) -> Option<Unread> {
        Some(Unread { unread, mentions })
    }

    #[test]
    fn nothing_is_counted_before_a_store_read_seeded_it() {
        let mut ledger = UnreadLedger::default();
        ledger.record(&from_bob(1..=3));
        assert_eq!(ledger.count(0, 3, "ann", CAP), None);
    }

    #[test]
    fn a_seed_merges_with_what_was_recorded_meanwhile() {
        let mut ledger = UnreadLedger::default();
        ledger.record(&from_bob(9..=10));
        ledger.seed(&from_bob(5..=9), false);
        assert_eq!(ledger.count(4, 10, "ann", CAP), unread(6, 0));
        assert_eq!(
            ledger.count(3, 10, "ann", CAP),
            None,
            "4 is only in the store"
        );
        assert_eq!(ledger.count(4, 11, "ann", CAP), None, "11 is not here yet");
    }

    #[test]
    fn a_whole_history_counts_from_any_marker() {
        let mut ledger = UnreadLedger::default();
        ledger.seed(&[], true);
        ledger.record(&from_bob(1..=2));
        assert_eq!(ledger.count(0, 2, "ann", CAP), unread(2, 0));
    }

    #[test]
    fn own_deleted_and_later_messages_are_not_unread() {
        let mut ledger = UnreadLedger::default();
        ledger.seed(&[], true);
        ledger.record(&[
            by(1, "ann", "mine @ann"),
            by(2, "bob", "hey @Ann!"),
            by(3, "bob", "mail x@ann"),
            by(4, "bob", "gone @ann"),
            by(5, "bob", "thanks @ann."),
            by(6, "bob", "after the join @ann"),
        ]);
        ledger.delete(4);
        assert_eq!(ledger.count(0, 5, "ann", CAP), unread(3, 2));
        assert_eq!(ledger.count(0, 5, "ann", 1), unread(1, 1), "capped");
        assert_eq!(ledger.count(0, 5, "bob", CAP), unread(1, 0));
    }

    #[test]
    fn a_change_made_before_the_message_arrives_applies_to_it() {
        let mut ledger = UnreadLedger::default();
        ledger.record(&from_bob(3..=3));
        // The join's store read happened before 2 was deleted and 1 was edited; the changes
        // reached the room before the read's page did.
        ledger.delete(2);
        ledger.edit(1, "now for @ann");
        ledger.seed(&from_bob(1..=2), true);
        assert_eq!(ledger.count(0, 3, "ann", CAP), unread(2, 1));
        ledger.delete(4);
        ledger.record(&from_bob(4..=4));
        assert_eq!(ledger.count(0, 4, "ann", CAP), unread(2, 1));
    }

    #[test]
    fn an_edit_does_not_bring_a_deleted_message_back() {
        let mut ledger = UnreadLedger::default();
        ledger.seed(&[by(1, "bob", "@ann")], true);
        ledger.delete(1);
        ledger.edit(1, "@ann again");
        assert_eq!(ledger.count(0, 1, "ann", CAP), unread(0, 0));
    }

    #[test]
    fn the_oldest_messages_leave_beyond_the_capacity() {
        let mut ledger = UnreadLedger::default();
        ledger.seed(&[], true);
        let total = LEDGER_CAPACITY as u64 + 10;
        ledger.record(&from_bob(1..=total));
        assert_eq!(ledger.count(9, total, "ann", CAP), None);
        assert_eq!(ledger.count(10, total, "ann", CAP), unread(999, 0));
        assert_eq!(ledger.count(total - 5, total, "ann", CAP), unread(5, 0));
    }

    #[test]
    fn a_message_that_went_by_unrecorded_is_never_counted_over() {
        let mut ledger = UnreadLedger::default();
        ledger.forget();
        ledger.record(&from_bob(1..=2));
        ledger.seed(&from_bob(1..=1), true);
        assert_eq!(ledger.count(0, 2, "ann", CAP), None);
    }

    #[test]
    fn a_change_event_frame_edits_or_deletes() {
        let mut ledger = UnreadLedger::default();
        ledger.seed(&from_bob(1..=2), true);
        let edited = br#"{"type":"msg","room":"lobby","id":1,"ts":1,"from":"bob","data":"\u0040ann \"quoted\""}"#;
        ledger.changed_to(1, edited);
        let deleted =
            br#"{"type":"msg","room":"lobby","id":2,"ts":1,"from":"bob","data":"","deleted":true}"#;
        ledger.changed_to(2, deleted);
        assert_eq!(ledger.count(0, 2, "ann", CAP), unread(1, 1));
        ledger.changed_to(1, b"not json");
        assert_eq!(ledger.count(0, 2, "ann", CAP), None, "not trusted after");
    }
}
