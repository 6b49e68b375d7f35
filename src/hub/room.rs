//! One room's local membership: who is in it on this node, and which members are still catching
//! up on replay (their live frames are held back so replay and live traffic never interleave).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::member::Member;
use super::presence::CountState;
use super::unread_ledger::UnreadLedger;
use crate::broker::ConnId;
use crate::transport::outbox::Outgoing;

/// The members of one room on this node.
#[derive(Default)]
pub(crate) struct Room {
    /// In join order (a leave moves the newest member into its place), which is the order a
    /// fan-out writes in: on loopback each write also runs the reader's receive path, and
    /// writing sockets in the order they were created costs the kernel 15–30 % less per write
    /// at 19,000 sockets than a hash map's order (docs/benchmarks.md, round 7). Private so
    /// that every change goes through [`Room::insert`], [`Room::remove`] and [`Room::rename`],
    /// which keep `names` true.
    members: IndexMap<ConnId, Member>,
    /// The sorted names of the first `.0` members, kept until a change among them: every join
    /// sends them, and a room filling to thousands would otherwise clone and sort the same
    /// names once per join.
    names: Option<(usize, Arc<[String]>)>,
    /// What it last announced of its count while large (owned by `presence`).
    counts: CountState,
    /// The room's newest messages, encoded, for the replay of a join.
    pub recent: Recent,
    /// The room's newest messages as a signed-in join counts its unread ones.
    pub unread: UnreadLedger,
}

/// The newest messages of a room as encoded frames, so that a join replays them from memory:
/// filling a room of thousands would otherwise read and encode the same rows from the store
/// once per member. Kept up to date where the hub fans messages out, which sees every message
/// of the room in id order; it is trusted only once a replay read from the store has seeded it,
/// because a room entry is created by its first join, when the store may already hold history.
#[derive(Default)]
pub(crate) struct Recent {
    frames: VecDeque<Outgoing>,
    /// Highest message id in `frames` or fanned out since.
    last_id: u64,
    /// `frames` holds the room's newest messages (all of them, if fewer than the capacity).
    seeded: bool,
    /// Tombstones of messages deleted while the room had members here (at most the capacity,
    /// newest last): applied to what a seed or a record brings later, which may have been read
    /// or committed before the delete (hub/moderation.rs).
    deleted: Vec<Outgoing>,
}

/// What a joining member can be replayed from memory.
pub(crate) struct RecentSnapshot {
    /// The newest messages, oldest first.
    pub frames: Vec<Outgoing>,
    /// The room's newest message id as this node has seen it.
    pub last_id: u64,
    /// `frames` is the whole history of the room.
    pub whole_history: bool,
}

impl RecentSnapshot {
    /// The frames after `since` (all of them without), if memory holds everything after it.
    pub fn after(&self, since: Option<u64>) -> Option<&[Outgoing]> {
        let Some(since) = since else {
            return Some(&self.frames);
        };
        let first = self.frames.first().and_then(|f| f.msg_id);
        if !self.whole_history && first.is_none_or(|first| first > since + 1) {
            return None;
        }
        let start = self
            .frames
            .iter()
            .position(|f| f.msg_id.is_some_and(|id| id > since))
            .unwrap_or(self.frames.len());
        Some(&self.frames[start..])
    }
}

impl Recent {
    /// Notes messages being fanned out (one room's share of a commit, in id order).
    pub fn record(&mut self, frames: &[Outgoing], capacity: usize) {
        for frame in frames {
            if let Some(id) = frame.msg_id.filter(|id| *id > self.last_id) {
                // A message deleted before its fan-out reached this node is kept as deleted.
                let tombstone = self.deleted.iter().find(|known| known.msg_id == Some(id));
                self.push(tombstone.unwrap_or(frame).clone(), id, capacity);
            }
        }
    }

    /// Replaces message `tombstone.msg_id` by its tombstone, now and in whatever a later seed
    /// or record brings.
    pub fn tombstone(&mut self, tombstone: Outgoing, capacity: usize) {
        self.deleted
            .retain(|known| known.msg_id != tombstone.msg_id);
        if self.deleted.len() >= capacity {
            self.deleted.remove(0);
        }
        self.deleted.push(tombstone);
        self.apply_tombstones();
    }

    fn apply_tombstones(&mut self) {
        for tombstone in &self.deleted {
            let same = |frame: &&mut Outgoing| frame.msg_id == tombstone.msg_id;
            if let Some(frame) = self.frames.iter_mut().find(same) {
                *frame = tombstone.clone();
            }
        }
    }

    /// Merges the newest messages a join read from the store (id order) after the room entry
    /// existed: together with what was fanned out since, they are the room's newest messages.
    pub fn seed(&mut self, page: &[Outgoing], capacity: usize) {
        if self.seeded {
            return;
        }
        let mut merged: Vec<Outgoing> = Vec::with_capacity(page.len() + self.frames.len());
        let mut cached = std::mem::take(&mut self.frames).into_iter().peekable();
        for frame in page {
            while let Some(next) = cached.next_if(|c| c.msg_id < frame.msg_id) {
                merged.push(next);
            }
            cached.next_if(|c| c.msg_id == frame.msg_id);
            merged.push(frame.clone());
        }
        merged.extend(cached);
        let skip = merged.len().saturating_sub(capacity);
        self.frames = merged.into_iter().skip(skip).collect();
        self.last_id = self
            .frames
            .back()
            .and_then(|f| f.msg_id)
            .unwrap_or(0)
            .max(self.last_id);
        self.seeded = true;
        self.apply_tombstones();
    }

    /// The highest message id this room entry has seen.
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// A copy for a joining member, once seeded. `capacity` tells whether it is all there is.
    pub fn snapshot(&self, capacity: usize) -> Option<RecentSnapshot> {
        self.seeded.then(|| RecentSnapshot {
            frames: self.frames.iter().cloned().collect(),
            last_id: self.last_id,
            whole_history: self.frames.len() < capacity,
        })
    }

    fn push(&mut self, frame: Outgoing, id: u64, capacity: usize) {
        if self.frames.len() == capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(frame);
        self.last_id = id;
    }
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

    /// Whether the room's count over every node, `count`, is to be announced at `now` (changed
    /// since the last announcement and due: [`CountState::take_due`]); noted as announced if so.
    pub fn take_count_due(
        &mut self,
        count: usize,
        now: Instant,
        tick: Duration,
        budget: usize,
    ) -> bool {
        self.counts.take_due(count, now, tick, budget)
    }

    /// The room announces arrivals and departures one by one again ([`CountState::forget`]).
    pub fn forget_count(&mut self) {
        self.counts.forget();
    }

    /// Up to `limit` member names (the longest present), sorted so `joined` is stable. Bounded
    /// so that filling a room of N members costs O(N · limit), not O(N²).
    pub fn member_names(&mut self, limit: usize) -> Arc<[String]> {
        if let Some((cached, names)) = &self.names
            && *cached == limit
        {
            return Arc::clone(names);
        }
        let names: Arc<[String]> = self.sorted_names(limit).into();
        self.names = Some((limit, Arc::clone(&names)));
        names
    }

    /// Every member's name, sorted (for a `members` request; not cached, as any change to the
    /// room would stale it).
    pub fn all_member_names(&self) -> Vec<String> {
        self.sorted_names(usize::MAX)
    }

    fn sorted_names(&self, limit: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .members
            .values()
            .take(limit)
            .map(|m| m.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Members in the room on this node.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the last member left.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member behind `id`.
    pub fn member(&self, id: ConnId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// The member behind `id`, to change its replay state (not its name: see [`Room::rename`]).
    pub fn member_mut(&mut self, id: ConnId) -> Option<&mut Member> {
        self.members.get_mut(&id)
    }

    /// Every member's id, in join order.
    pub fn ids(&self) -> Vec<ConnId> {
        self.members.keys().copied().collect()
    }

    /// Adds a member at the end of the join order (or replaces the one with the same id).
    pub fn insert(&mut self, id: ConnId, member: Member) {
        let (index, _) = self.members.insert_full(id, member);
        self.forget_names_at(index);
    }

    /// Removes a member; the newest moves into its place.
    pub fn remove(&mut self, id: ConnId) {
        if let Some((index, _, _)) = self.members.swap_remove_full(&id) {
            self.forget_names_at(index);
        }
    }

    /// Changes a member's display name.
    pub fn rename(&mut self, id: ConnId, name: &str) {
        if let Some((index, _, member)) = self.members.get_full_mut(&id) {
            name.clone_into(&mut member.name);
            self.forget_names_at(index);
        }
    }

    /// Drops the cached names if the member at `index` is among them.
    fn forget_names_at(&mut self, index: usize) {
        if self.names.as_ref().is_some_and(|(limit, _)| index < *limit) {
            self.names = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::outbox::Outbox;
    use bytes::Bytes;

    fn msg(id: u64) -> Outgoing {
        Outgoing::message(Bytes::from(format!("{{\"id\":{id}}}")), id)
    }

    fn ids(frames: &[Outgoing]) -> Vec<u64> {
        frames.iter().filter_map(|f| f.msg_id).collect()
    }

    fn page(range: std::ops::RangeInclusive<u64>) -> Vec<Outgoing> {
        range.map(msg).collect()
    }

    fn change(seq: u64) -> Outgoing {
        Outgoing::change(Bytes::from(format!("change {seq}")), seq)
    }

    #[test]
    fn a_change_the_catch_up_sent_is_not_queued_again_live_or_from_the_hold() {
        let (outbox, receiver) = Outbox::new(8);
        let mut room = Room::default();
        room.insert(1, Member::joining("a", outbox));
        // Committed before the catch-up read (so sent by it), delivered while held.
        room.fan_out(&[change(3)], None, 8);
        room.fan_out(&[change(4)], None, 8);
        let member = room.member_mut(1).expect("member");
        member.changes_up_to = 3;
        member.release(0, None);
        // Committed before the read too, but delivered after the release.
        room.fan_out(&[change(3)], None, 8);
        room.fan_out(&[change(5)], None, 8);
        let got: Vec<u32> = std::iter::from_fn(|| receiver.try_recv())
            .map(|frame| frame.change_seq)
            .collect();
        assert_eq!(got, vec![4, 5]);
    }

    #[test]
    fn changes_are_held_not_dropped_when_the_hold_buffer_is_half_full() {
        let (outbox, receiver) = Outbox::new(8);
        let mut room = Room::default();
        room.insert(1, Member::joining("a", outbox));
        for id in 1..=4 {
            room.fan_out(&[msg(id)], None, 8);
        }
        room.fan_out(&[change(1)], None, 8);
        room.member_mut(1).expect("member").release(0, None);
        let changes = std::iter::from_fn(|| receiver.try_recv())
            .filter(|frame| frame.change_seq == 1)
            .count();
        assert_eq!(changes, 1);
    }

    #[test]
    fn message_already_replayed_is_not_queued_again() {
        let (outbox, receiver) = Outbox::new(8);
        let mut room = Room::default();
        room.insert(
            1,
            Member {
                name: "a".into(),
                outbox,
                held: None,
                has_up_to: 5,
                changes_up_to: 0,
                missed_presence: false,
            },
        );
        // Committed during the replay (so replayed), published after it ended.
        room.fan_out(&[msg(5)], None, 8);
        room.fan_out(&[msg(6)], None, 8);
        assert_eq!(receiver.try_recv().and_then(|f| f.msg_id), Some(6));
        assert!(receiver.try_recv().is_none());
    }

    fn held_member(outbox: Outbox) -> Room {
        let mut room = Room::default();
        room.insert(
            1,
            Member {
                name: "a".into(),
                outbox,
                held: Some(Vec::new()),
                has_up_to: 0,
                changes_up_to: 0,
                missed_presence: false,
            },
        );
        room
    }

    #[test]
    fn presence_beyond_half_the_hold_buffer_is_dropped_not_fatal() {
        let (outbox, receiver) = Outbox::new(8);
        let mut room = held_member(outbox);
        let presence = Outgoing::control(Bytes::from_static(b"{}"));
        for _ in 0..10 {
            room.fan_out(std::slice::from_ref(&presence), None, 8);
        }
        // Messages still have the rest of the buffer.
        room.fan_out(&page(1..=4), None, 8);
        let member = &room.members[&1];
        assert!(
            !receiver.is_closing(),
            "a replaying member was closed for presence"
        );
        assert!(member.missed_presence);
        assert_eq!(member.held.as_ref().map(Vec::len), Some(8));
        room.fan_out(&page(5..=5), None, 8);
        assert!(
            receiver.is_closing(),
            "messages beyond the hold limit close it"
        );
    }

    #[test]
    fn fan_out_visits_members_in_join_order_and_a_leave_moves_the_newest_into_its_place() {
        let mut room = Room::default();
        let mut receivers = Vec::new();
        for id in 1..=6 {
            let (outbox, receiver) = Outbox::new(8);
            receivers.push(receiver);
            room.insert(
                id,
                Member {
                    name: format!("m{id}"),
                    outbox,
                    held: None,
                    has_up_to: 0,
                    changes_up_to: 0,
                    missed_presence: false,
                },
            );
        }
        room.remove(3);
        let order: Vec<ConnId> = room.members.keys().copied().collect();
        assert_eq!(order, vec![1, 2, 6, 4, 5]);
        assert_eq!(&*room.member_names(3), ["m1", "m2", "m6"]);
        let result = room.fan_out(&page(1..=1), None, 8);
        assert_eq!(result.delivered, 5);
    }

    fn named(name: &str) -> Member {
        let (outbox, _receiver) = Outbox::new(1);
        Member {
            name: name.into(),
            outbox,
            held: None,
            has_up_to: 0,
            changes_up_to: 0,
            missed_presence: false,
        }
    }

    #[test]
    fn the_cached_member_sample_follows_joins_leaves_and_renames() {
        let mut room = Room::default();
        for (id, name) in [(1, "d"), (2, "b")] {
            room.insert(id, named(name));
        }
        assert_eq!(&*room.member_names(3), ["b", "d"]);
        room.insert(3, named("c"));
        assert_eq!(
            &*room.member_names(3),
            ["b", "c", "d"],
            "a join into the sample"
        );
        room.insert(4, named("a"));
        assert_eq!(&*room.member_names(3), ["b", "c", "d"], "beyond the sample");
        room.remove(2);
        assert_eq!(
            &*room.member_names(3),
            ["a", "c", "d"],
            "the newest moves in"
        );
        room.rename(3, "e");
        assert_eq!(&*room.member_names(3), ["a", "d", "e"]);
        room.insert(5, named("f"));
        room.remove(5);
        assert_eq!(&*room.member_names(3), ["a", "d", "e"]);
        assert_eq!(
            &*room.member_names(2),
            ["a", "d"],
            "another limit is not served stale"
        );
        room.remove(1);
        assert_eq!(&*room.member_names(2), ["a", "e"]);
        assert_eq!(room.all_member_names(), ["a", "e"]);
    }

    #[test]
    fn nothing_is_replayed_from_memory_before_a_store_read_seeded_it() {
        let mut recent = Recent::default();
        recent.record(&page(7..=8), 5);
        assert!(recent.snapshot(5).is_none());
    }

    #[test]
    fn a_seed_merges_with_what_was_fanned_out_meanwhile() {
        let mut recent = Recent::default();
        // 9 and 10 were fanned out after the room entry appeared; the join's store read saw
        // up to 9 (10 was committed after it).
        recent.record(&page(9..=10), 5);
        recent.seed(&page(5..=9), 5);
        let snapshot = recent.snapshot(5).expect("seeded");
        assert_eq!(ids(&snapshot.frames), vec![6, 7, 8, 9, 10]);
        assert_eq!(snapshot.last_id, 10);
        assert!(!snapshot.whole_history);
    }

    #[test]
    fn a_message_read_from_the_store_before_its_fan_out_is_not_kept_twice() {
        let mut recent = Recent::default();
        recent.seed(&page(1..=3), 5);
        recent.record(&page(3..=4), 5);
        assert_eq!(
            ids(&recent.snapshot(5).expect("seeded").frames),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn the_newest_messages_are_kept_up_to_the_capacity() {
        let mut recent = Recent::default();
        recent.seed(&[], 3);
        recent.record(&page(1..=2), 3);
        assert!(recent.snapshot(3).expect("seeded").whole_history);
        recent.record(&page(3..=5), 3);
        let snapshot = recent.snapshot(3).expect("seeded");
        assert_eq!(ids(&snapshot.frames), vec![3, 4, 5]);
        assert!(!snapshot.whole_history);
    }

    #[test]
    fn a_resume_is_served_from_memory_only_when_memory_reaches_back_to_it() {
        let mut recent = Recent::default();
        recent.seed(&page(10..=14), 5);
        let snapshot = recent.snapshot(5).expect("seeded");
        assert_eq!(
            snapshot.after(Some(9)).map(ids),
            Some(vec![10, 11, 12, 13, 14])
        );
        assert_eq!(snapshot.after(Some(12)).map(ids), Some(vec![13, 14]));
        assert_eq!(snapshot.after(Some(14)).map(ids), Some(vec![]));
        assert!(snapshot.after(Some(8)).is_none(), "9 is only in the store");
        assert_eq!(snapshot.after(None).map(ids).map(|v| v.len()), Some(5));
    }

    #[test]
    fn a_short_history_held_whole_serves_any_resume() {
        let mut recent = Recent::default();
        recent.seed(&page(1..=2), 5);
        let snapshot = recent.snapshot(5).expect("seeded");
        assert_eq!(snapshot.after(Some(0)).map(ids), Some(vec![1, 2]));
    }
}
