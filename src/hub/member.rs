//! A connection's place in one room, and the hold/replay state that makes a join lose and repeat
//! nothing.
//!
//! # The join invariant: no gap, no duplicate
//!
//! A member joining with `since` (or none) must get every message of the room after that point
//! exactly once, in id order, whether a message reaches it through the replay read from the store
//! (or from the room's `Recent` copy) or through the live fan-out. The steps, and why each is
//! needed:
//!
//! 1. **Held before read.** The member is added to the room with a hold buffer
//!    ([`Member::joining`]) *before* its replay is read, under the rooms lock. Every message
//!    published from then on reaches it (held), so nothing committed during the replay's read can
//!    fall between the replay and the live stream: no gap.
//! 2. **Replay.** The session reads the replay (from the `Recent` copy taken in the same critical
//!    section as step 1, or from the store) and sends it with `Outbox::send_all`, which waits for
//!    room; the live frames meanwhile wait in the hold buffer, so the two never interleave.
//! 3. **Release skipping what the replay sent.** [`Member::release`] (called under the rooms
//!    lock by `Hub::release_held`) records the highest id the replay sent as `has_up_to`, drops
//!    held messages at or below it, and pushes the rest in one write. A message committed during
//!    the replay is both in the replay and held: no duplicate.
//! 4. **Skip after the release too.** A message is visible in the store once committed but
//!    reaches the hub only when published, a moment later; one committed during the replay and
//!    published after the release is already in the replay, so [`Member::take`] skips messages
//!    at or below `has_up_to` for the member's whole life.
//!
//! Presence and typing are not part of the invariant: while held they are dropped once the hold
//! buffer is half full, and the member gets a fresh `joined` (the member list as it is now) at
//! release instead. The model test `hub/member/model.rs` runs steps 1-4 against a racing commit
//! under loom, with the real `Room::fan_out`, [`Member::take`] and [`Member::release`].

#[cfg(all(test, feature = "loom-model"))]
mod model;

use super::room::FanOut;
use crate::transport::outbox::{Outbox, Outgoing, Pushed};

/// A connection's place in one room.
pub(crate) struct Member {
    /// Display name shown to the others.
    pub name: String,
    /// The connection's queue (shared by all its rooms).
    pub outbox: Outbox,
    /// `Some` while the member's replay is being read from the store: live frames wait here.
    pub held: Option<Vec<Outgoing>>,
    /// Highest message id the member surely has once its replay ended (what the replay sent,
    /// or its `since` as far as the room had messages); see step 4 of the module comment.
    pub has_up_to: u64,
    /// Highest change number (issue 20) the member's catch-up sent when it joined with
    /// `changes_since`; live `change` frames at or below it are skipped, like messages at or
    /// below `has_up_to`. 0 for a member that asked for no catch-up. A `u32` like
    /// [`Outgoing::change_seq`], so the member does not grow.
    pub changes_up_to: u32,
    /// Presence or typing frames were dropped while held (see [`Member::take`]): the member
    /// gets a fresh `joined` when its replay ends instead.
    pub missed_presence: bool,
}

impl Member {
    /// A member that has just joined: its live frames are held until [`Member::release`]
    /// (step 1 of the module comment).
    pub(crate) fn joining(name: &str, outbox: Outbox) -> Member {
        Member {
            name: name.to_owned(),
            outbox,
            held: Some(Vec::new()),
            has_up_to: 0,
            changes_up_to: 0,
            missed_presence: false,
        }
    }

    /// Queues the frames the member lacks, or holds them while it replays.
    ///
    /// Messages beyond `hold_limit` close the member as a slow consumer (it resumes with
    /// `since`). Presence and typing are held only while the hold buffer is less than half full:
    /// a busy room's arrivals and departures during one slow store read must not close a member
    /// who is not slow at all, and a fresh member list replaces what was dropped.
    pub(super) fn take(&mut self, frames: &[Outgoing], hold_limit: usize, result: &mut FanOut) {
        // Messages come in id order, so the ones the member lacks are a suffix.
        let has_up_to = self.has_up_to;
        let lacks = |frame: &Outgoing| frame.msg_id.is_none_or(|id| id > has_up_to);
        let fresh = &frames[frames.iter().position(lacks).unwrap_or(frames.len())..];
        if fresh.is_empty() || self.caught_up_on(fresh) {
            return;
        }
        // Changes are never dropped while held: they are held (or overflow) like messages.
        let control = fresh
            .iter()
            .all(|frame| frame.msg_id.is_none() && frame.change_seq == 0);
        match &mut self.held {
            Some(held) if control && held.len() >= hold_limit / 2 => {
                self.missed_presence = true;
            }
            Some(held) if held.len() + fresh.len() <= hold_limit => {
                held.extend_from_slice(fresh);
                result.delivered += fresh.len() as u64;
            }
            Some(_) => {
                self.outbox.close_as_slow_consumer();
                result.overflowed += 1;
            }
            None => match self.outbox.push_all(fresh) {
                Pushed::Queued => result.delivered += fresh.len() as u64,
                Pushed::Overflowed => result.overflowed += 1,
                Pushed::Closed => {}
            },
        }
    }

    /// Whether `frames` is one `change` frame the member's catch-up already sent (change
    /// frames are fanned out one at a time).
    fn caught_up_on(&self, frames: &[Outgoing]) -> bool {
        matches!(frames, [frame] if frame.change_seq != 0 && frame.change_seq <= self.changes_up_to)
    }

    /// Ends the member's replay (step 3 of the module comment): from now on it has every message
    /// up to `has_up_to`; the frames held meanwhile, less those messages, go out in one push,
    /// followed by `resync` (a fresh `joined` for a member who missed presence while held).
    pub(crate) fn release(&mut self, has_up_to: u64, resync: Option<Outgoing>) -> Pushed {
        self.has_up_to = has_up_to;
        self.missed_presence = false;
        let mut held = self.held.take().unwrap_or_default();
        let changes_up_to = self.changes_up_to;
        held.retain(|frame| {
            frame.msg_id.is_none_or(|msg_id| msg_id > has_up_to)
                && (frame.change_seq == 0 || frame.change_seq > changes_up_to)
        });
        held.extend(resync);
        // One push, so what piled up during the replay leaves in one write.
        self.outbox.push_all(&held)
    }
}
