//! The rule every store applies to a batch of messages that already have ids (`hubbub import`,
//! `hubbub copy`), written once so SQLite and PostgreSQL store, skip and refuse exactly the same
//! messages. Each store reads its side (a room's counter, the messages it already holds in the
//! batch's id range) inside the batch's transaction and hands it to [`plan_room`].
//!
//! Per room, against the counter `last` the target has before the batch:
//! - an id above `last` must be the next one (`last + 1`, then `last + 2`, ...): stored, and the
//!   counter raised to it, so the room's next post continues after the imported history;
//! - an id at or below `last` must already be stored with the same ts, sender and text: skipped,
//!   which makes a copy or import that was interrupted safe to run again from the start;
//! - anything else (a gap, a different message under an id the target holds, an id the target
//!   used without a message) refuses the whole batch: an import never overwrites, never
//!   duplicates and never leaves a gap.

use std::collections::BTreeMap;

use super::StoredMessage;

/// What one import batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Messages stored by this batch.
    pub stored: u64,
    /// Messages the target already held, identical, and so left as they were.
    pub skipped: u64,
}

impl ImportOutcome {
    /// Adds another batch's counts, for a run's totals.
    pub fn add(&mut self, other: ImportOutcome) {
        self.stored += other.stored;
        self.skipped += other.skipped;
    }
}

/// Why an import batch was refused. Nothing of the batch was stored; batches before it were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportConflict {
    /// The id is not the room's next one: storing it would leave ids nobody can fill.
    #[error(
        "room {room:?}: message {id} would leave a gap: the room's next id in the target is {next}"
    )]
    Gap {
        /// The room.
        room: String,
        /// The id the batch carried.
        id: u64,
        /// The only new id the target could take in that room.
        next: u64,
    },
    /// The target holds another message under this id (posted there, or from another history).
    #[error(
        "room {room:?}: message {id} is already stored in the target with a different ts, sender \
         or text; an import never overwrites"
    )]
    Differs {
        /// The room.
        room: String,
        /// The id both messages have.
        id: u64,
    },
    /// The target's counter is past this id but it holds no message under it.
    #[error(
        "room {room:?}: id {id} was already used in the target but holds no message; an import \
         never reuses an id"
    )]
    Missing {
        /// The room.
        room: String,
        /// The id.
        id: u64,
    },
    /// A room's ids in the batch do not increase, or an id is 0 or too large to store.
    #[error("room {room:?}: message {id} is out of order (after {previous}) or not a valid id")]
    OutOfOrder {
        /// The room.
        room: String,
        /// The offending id.
        id: u64,
        /// The id before it in the batch (0 for the first).
        previous: u64,
    },
}

impl ImportConflict {
    /// The room and id the refusal is about, so a caller can point at the input line.
    pub fn message(&self) -> (&str, u64) {
        match self {
            ImportConflict::Gap { room, id, .. }
            | ImportConflict::Differs { room, id }
            | ImportConflict::Missing { room, id }
            | ImportConflict::OutOfOrder { room, id, .. } => (room, *id),
        }
    }
}

/// The batch's messages per room, in batch order within each room, rooms in byte order of their
/// names (the order PostgreSQL locks their counters in, see store/postgres.rs).
pub(crate) fn by_room(batch: &[StoredMessage]) -> BTreeMap<&str, Vec<&StoredMessage>> {
    let mut rooms: BTreeMap<&str, Vec<&StoredMessage>> = BTreeMap::new();
    for message in batch {
        rooms
            .entry(message.room.as_str())
            .or_default()
            .push(message);
    }
    rooms
}

/// The id range of `part` that the target may already hold (`last` is the room's counter), for
/// the store to read: `None` when every id is new.
pub(crate) fn held_range(part: &[&StoredMessage], last: u64) -> Option<(u64, u64)> {
    let first = part.first()?.id;
    let newest = part.iter().map(|m| m.id).max()?;
    (first <= last).then(|| (first, newest.min(last)))
}

/// Checks one room's part of a batch against the target's counter `last` and the messages
/// `held` it already stores in [`held_range`] (by id, ascending), and returns the messages to
/// store (consecutive from `last + 1`) and how many were skipped as already stored.
pub(crate) fn plan_room<'a>(
    room: &str,
    last: u64,
    part: &[&'a StoredMessage],
    held: &[StoredMessage],
) -> Result<(Vec<&'a StoredMessage>, u64), ImportConflict> {
    let mut fresh = Vec::new();
    let mut skipped = 0;
    let mut previous = 0;
    for &message in part {
        let id = message.id;
        if id <= previous || id > i64::MAX as u64 {
            return Err(ImportConflict::OutOfOrder {
                room: room.to_owned(),
                id,
                previous,
            });
        }
        previous = id;
        if id <= last {
            let stored = held
                .binary_search_by_key(&id, |m| m.id)
                .map(|at| &held[at])
                .map_err(|_| ImportConflict::Missing {
                    room: room.to_owned(),
                    id,
                })?;
            if !same_message(stored, message) {
                return Err(ImportConflict::Differs {
                    room: room.to_owned(),
                    id,
                });
            }
            skipped += 1;
            continue;
        }
        let next = last + fresh.len() as u64 + 1;
        if id != next {
            return Err(ImportConflict::Gap {
                room: room.to_owned(),
                id,
                next,
            });
        }
        fresh.push(message);
    }
    Ok((fresh, skipped))
}

/// Whether two messages under one room and id are the same message.
fn same_message(a: &StoredMessage, b: &StoredMessage) -> bool {
    a.ts == b.ts && a.from == b.from && a.text == b.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomName;

    fn message(id: u64, text: &str) -> StoredMessage {
        StoredMessage {
            room: RoomName::parse("r").unwrap(),
            id,
            ts: 7,
            from: "alice".to_owned(),
            text: text.to_owned(),
            author: None,
            reply_to: None,
            attachment: None,
        }
    }

    fn plan(
        last: u64,
        part: &[StoredMessage],
        held: &[StoredMessage],
    ) -> Result<(Vec<u64>, u64), ImportConflict> {
        let part: Vec<&StoredMessage> = part.iter().collect();
        plan_room("r", last, &part, held)
            .map(|(fresh, skipped)| (fresh.iter().map(|m| m.id).collect(), skipped))
    }

    #[test]
    fn ids_continuing_the_counter_are_stored() {
        let part = [message(4, "d"), message(5, "e")];
        assert_eq!(plan(3, &part, &[]), Ok((vec![4, 5], 0)));
    }

    #[test]
    fn identical_held_messages_are_skipped_and_the_rest_stored() {
        let held = [message(2, "b"), message(3, "c")];
        let part = [message(2, "b"), message(3, "c"), message(4, "d")];
        assert_eq!(plan(3, &part, &held), Ok((vec![4], 2)));
    }

    #[test]
    fn a_held_id_with_other_text_is_refused() {
        let held = [message(1, "mine")];
        assert!(matches!(
            plan(1, &[message(1, "theirs")], &held),
            Err(ImportConflict::Differs { id: 1, .. })
        ));
    }

    #[test]
    fn a_gap_after_the_counter_is_refused() {
        assert!(matches!(
            plan(3, &[message(5, "e")], &[]),
            Err(ImportConflict::Gap { id: 5, next: 4, .. })
        ));
    }

    #[test]
    fn a_used_id_without_a_message_is_refused() {
        assert!(matches!(
            plan(3, &[message(2, "b")], &[]),
            Err(ImportConflict::Missing { id: 2, .. })
        ));
    }

    #[test]
    fn ids_that_do_not_increase_are_refused() {
        let part = [message(1, "a"), message(1, "a")];
        assert!(matches!(
            plan(0, &part, &[]),
            Err(ImportConflict::OutOfOrder { id: 1, .. })
        ));
        assert!(matches!(
            plan(0, &[message(0, "zero")], &[]),
            Err(ImportConflict::OutOfOrder { id: 0, .. })
        ));
    }

    #[test]
    fn the_held_range_covers_only_ids_up_to_the_counter() {
        let part = [message(3, "c"), message(4, "d"), message(5, "e")];
        let part: Vec<&StoredMessage> = part.iter().collect();
        assert_eq!(held_range(&part, 4), Some((3, 4)));
        assert_eq!(held_range(&part, 2), None);
    }
}
