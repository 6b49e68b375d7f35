//! One room's local membership: who is in it on this node, and which members are still catching
//! up on replay (their live frames are held back so replay and live traffic never interleave).

use std::collections::HashMap;

use super::member::{Outbox, Outgoing, Pushed};
use crate::broker::ConnId;

/// A connection's place in one room.
pub(crate) struct Member {
    /// Display name shown to the others.
    pub name: String,
    /// The connection's queue (shared by all its rooms).
    pub outbox: Outbox,
    /// `Some` while the member's replay is being read from the store: live frames wait here.
    pub held: Option<Vec<Outgoing>>,
    /// Highest message id the member surely has once its replay ended (what the replay sent,
    /// or its `since` as far as the room had messages). A message is visible in the store once
    /// committed but reaches the hub only when published, a moment later; one committed during
    /// the replay and delivered after it ended is already in the replay and must not be queued
    /// again.
    pub has_up_to: u64,
}

impl Member {
    /// Queues the frames the member lacks, or holds them while it replays.
    fn take(&mut self, frames: &[Outgoing], hold_limit: usize, result: &mut FanOut) {
        // Messages come in id order, so the ones the member lacks are a suffix.
        let has_up_to = self.has_up_to;
        let lacks = |frame: &Outgoing| frame.msg_id.is_none_or(|id| id > has_up_to);
        let fresh = &frames[frames.iter().position(lacks).unwrap_or(frames.len())..];
        if fresh.is_empty() {
            return;
        }
        match &mut self.held {
            Some(held) if held.len() + fresh.len() <= hold_limit => {
                held.extend_from_slice(fresh);
                result.delivered += fresh.len() as u64;
            }
            Some(_) => {
                self.outbox.close(super::member::CloseReason::SlowConsumer);
                result.overflowed += 1;
            }
            None => match self.outbox.push_all(fresh) {
                Pushed::Queued => result.delivered += fresh.len() as u64,
                Pushed::Overflowed => result.overflowed += 1,
                Pushed::Closed => {}
            },
        }
    }
}

/// The members of one room on this node.
#[derive(Default)]
pub(crate) struct Room {
    pub members: HashMap<ConnId, Member>,
    /// A large room's membership changed since the last presence tick.
    pub presence_dirty: bool,
}

/// The outcome of one fan-out, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FanOut {
    /// Frames queued (or held for replaying members).
    pub delivered: u64,
    /// Members closed because their queue was full.
    pub overflowed: u64,
}

impl Room {
    /// Queues `frames` (in order) for every member except `skip`. Never waits: a member whose
    /// queue (or hold buffer, bounded by `hold_limit`) is full is closed as a slow consumer.
    /// Several frames are one room's share of a commit, in id order.
    pub fn fan_out(
        &mut self,
        frames: &[Outgoing],
        skip: Option<ConnId>,
        hold_limit: usize,
    ) -> FanOut {
        let mut result = FanOut::default();
        for (id, member) in &mut self.members {
            if Some(*id) != skip {
                member.take(frames, hold_limit, &mut result);
            }
        }
        result
    }

    /// [`Room::fan_out`] for the members among `ids` that are still here: one slice of a large
    /// room's fan-out, which runs in slices so that the room's lock is not held for all of it.
    pub fn fan_out_to(&mut self, ids: &[ConnId], frames: &[Outgoing], hold_limit: usize) -> FanOut {
        let mut result = FanOut::default();
        for id in ids {
            if let Some(member) = self.members.get_mut(id) {
                member.take(frames, hold_limit, &mut result);
            }
        }
        result
    }

    /// Up to `limit` member names, sorted so `joined` is stable. Bounded so that filling a
    /// room of N members costs O(N · limit), not O(N²).
    pub fn member_names(&self, limit: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .members
            .values()
            .take(limit)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(id: u64) -> Outgoing {
        Outgoing::message(Bytes::from_static(b"{}"), id)
    }

    #[test]
    fn message_already_replayed_is_not_queued_again() {
        let (outbox, receiver) = Outbox::new(8);
        let mut room = Room::default();
        room.members.insert(
            1,
            Member {
                name: "a".into(),
                outbox,
                held: None,
                has_up_to: 5,
            },
        );
        // Committed during the replay (so replayed), published after it ended.
        room.fan_out(&[msg(5)], None, 8);
        room.fan_out(&[msg(6)], None, 8);
        assert_eq!(receiver.try_recv().and_then(|f| f.msg_id), Some(6));
        assert!(receiver.try_recv().is_none());
    }
}
