//! Who is in which room on this node: the hub's side of a join, a leave and a rename. Each is a
//! short critical section under the rooms lock, followed by a report to the broker
//! (`Broker::member_changed`: how other nodes learn of it).
//!
//! A join (`Session::join`) goes through the steps of the join invariant argued in `member`'s
//! module comment ("no gap, no duplicate"); the hub's part of each is here, in that order:
//! 1. [`Hub::add_member`] adds the member with a hold buffer, and in the same critical section
//!    takes the member sample for `joined` and the room's newest messages (`Recent`), so the
//!    snapshot ends where the held frames begin.
//! 2. The session replays from that snapshot, or else reads the store (after step 1); a read of
//!    the newest page is given to the room by [`Hub::seed_recent`], so later joins replay from
//!    memory.
//! 3. [`Hub::release_held`] pushes the held frames the replay did not send, and from then on the
//!    fan-out skips what the replay sent (step 4 of the argument lives in `Member::take`).
//!
//! A repeat join of a room the connection is already in reads only [`Hub::member_sample`].

use std::sync::Arc;

use super::member::Member;
use super::room::RecentSnapshot;
use super::unread_ledger::LedgerEntry;
use super::{Hub, JOIN_BACKLOG};
use crate::broker::ConnId;
use crate::protocol::{Joined, RoomName, ServerFrame};
use crate::store::Page;
use crate::transport::outbox::{Outbox, Outgoing, Pushed};

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinRefusal {
    /// The room is at `max_room_members`.
    RoomFull,
}

/// What a join learns while the member is added, under the rooms lock.
pub(crate) struct Admission {
    /// Up to `presence_limit` member names, the new one included.
    pub names: Arc<[String]>,
    /// Members in the room now.
    pub count: usize,
    /// The room's newest messages, if memory has them.
    pub recent: Option<RecentSnapshot>,
}

impl Hub {
    /// Adds a member whose live frames are held until [`Hub::release_held`]; returns the member
    /// names (bounded by `presence_limit`) including the new one, the member count, and the
    /// room's newest messages if memory has them (else the replay reads the store).
    pub(super) fn add_member(
        &self,
        room: &RoomName,
        id: ConnId,
        name: &str,
        outbox: &Outbox,
    ) -> Result<Admission, JoinRefusal> {
        let mut rooms = self.lock_rooms();
        let is_new = !rooms.local.contains_key(room.as_str());
        let entry = rooms.local.entry(room.as_str().to_owned()).or_default();
        if let Some(max) = self.settings().max_room_members
            && entry.len() >= max
        {
            return Err(JoinRefusal::RoomFull);
        }
        entry.insert(id, Member::joining(name, outbox.clone()));
        let recent = entry.recent.snapshot(JOIN_BACKLOG);
        let (names, count) = rooms.sample(room.as_str(), self.settings().presence_limit);
        let admitted = Admission {
            names,
            count,
            recent,
        };
        drop(rooms);
        if is_new {
            self.inner.metrics.rooms.inc();
        }
        self.inner
            .broker
            .member_changed(room.as_str(), id, Some(name));
        Ok(admitted)
    }

    /// Gives a room the newest messages a join read from the store (`page` encoded as
    /// `frames`), so later joins replay from memory (see [`super::room::Recent`]) and count
    /// their unread messages there (see [`super::unread_ledger`]).
    pub(super) fn seed_recent(&self, room: &RoomName, page: &Page, frames: &[Outgoing]) {
        let counting = self.inner.counts_unread();
        let entries: Vec<LedgerEntry> = match counting {
            true => page.messages.iter().map(LedgerEntry::of).collect(),
            false => Vec::new(),
        };
        if let Some(entry) = self.lock_rooms().local.get_mut(room.as_str()) {
            entry.recent.seed(frames, JOIN_BACKLOG);
            if counting {
                entry.unread.seed(&entries, !page.has_more);
            }
        }
    }

    /// Ends a member's replay: queues the live frames held meanwhile, skipping messages the
    /// member already has (id ≤ `has_up_to`), and from then on skips live messages at or below
    /// it too (see `Member::has_up_to`). A member who missed presence while held gets a fresh
    /// `joined` (the member list as it is now) after what was held.
    pub(super) fn release_held(&self, room: &RoomName, id: ConnId, has_up_to: u64) {
        let limit = self.settings().presence_limit;
        let mut rooms = self.lock_rooms();
        let Some(entry) = rooms.local.get(room.as_str()) else {
            return;
        };
        let missed = entry
            .member(id)
            .is_some_and(|member| member.missed_presence);
        let last_id = has_up_to.max(entry.recent.last_id());
        let resync = missed.then(|| {
            let (names, count) = rooms.sample(room.as_str(), limit);
            let joined = Joined {
                members: &names,
                count,
                last_id,
                account: None,
            };
            let json = ServerFrame::Joined {
                room: room.as_str(),
                data: joined,
            }
            .encode();
            Outgoing::control(json)
        });
        let Some(member) = rooms
            .local
            .get_mut(room.as_str())
            .and_then(|entry| entry.member_mut(id))
        else {
            return;
        };
        // Presence dropped while held: the current member list (`resync`) stands in for it.
        if member.release(has_up_to, resync) == Pushed::Overflowed {
            self.inner.metrics.slow_consumers.inc();
        }
    }

    /// Up to `presence_limit` member names (as `joined` carries them) and the member count, over
    /// every node.
    pub(super) fn member_sample(&self, room: &RoomName) -> (Arc<[String]>, usize) {
        let limit = self.settings().presence_limit;
        self.lock_rooms().sample(room.as_str(), limit)
    }

    /// Removes a member; drops the room from memory when it empties.
    pub(super) fn remove_member(&self, room: &RoomName, id: ConnId) {
        let mut rooms = self.lock_rooms();
        if let Some(entry) = rooms.local.get_mut(room.as_str()) {
            entry.remove(id);
            if entry.is_empty() {
                rooms.local.remove(room.as_str());
                self.inner.metrics.rooms.dec();
                // Read again when the room next gets a member here (policy.rs).
                self.inner.policies.forget(room.as_str());
            }
        }
        drop(rooms);
        self.inner.broker.member_changed(room.as_str(), id, None);
    }

    /// Changes a member's display name in the room.
    pub(super) fn rename_member(&self, room: &RoomName, id: ConnId, name: &str) {
        if let Some(entry) = self.lock_rooms().local.get_mut(room.as_str()) {
            entry.rename(id, name);
        }
        self.inner
            .broker
            .member_changed(room.as_str(), id, Some(name));
    }

    /// Every member name and the member count, over every node.
    pub(super) fn all_member_names(&self, room: &RoomName) -> (Vec<String>, usize) {
        self.lock_rooms().all_names(room.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::Durability;
    use crate::hub::HubSettings;
    use crate::metrics::Metrics;
    use crate::store::{NewMessage, Page, People, SqliteStore, Store, StoreError, StoredMessage};
    use crate::transport::outbox::OutboxReceiver;

    /// A store that counts the reads a join makes.
    struct CountingStore {
        inner: SqliteStore,
        reads: AtomicU64,
    }

    #[async_trait]
    impl Store for CountingStore {
        async fn append(&self, batch: &[NewMessage]) -> Result<Vec<StoredMessage>, StoreError> {
            self.inner.append(batch).await
        }

        async fn after(
            &self,
            room: &RoomName,
            since: u64,
            limit: u32,
        ) -> Result<Vec<StoredMessage>, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.after(room, since, limit).await
        }

        async fn before(
            &self,
            room: &RoomName,
            before: Option<u64>,
            limit: u32,
        ) -> Result<Page, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.before(room, before, limit).await
        }

        async fn last_id(&self, room: &RoomName) -> Result<u64, StoreError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.inner.last_id(room).await
        }

        async fn rooms(&self) -> Result<Vec<crate::store::RoomSummary>, StoreError> {
            self.inner.rooms().await
        }

        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
    }

    fn message_ids(receiver: &OutboxReceiver) -> Vec<u64> {
        std::iter::from_fn(|| receiver.try_recv())
            .filter_map(|frame| frame.msg_id)
            .collect()
    }

    #[tokio::test]
    async fn a_join_into_an_occupied_room_reads_nothing_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = SqliteStore::open(
            &dir.path().join("hub.db"),
            Duration::from_secs(5),
            Durability::Process,
        )
        .await
        .expect("store");
        let store = Arc::new(CountingStore {
            inner,
            reads: AtomicU64::new(0),
        });
        let hub = Hub::new(
            store.clone(),
            People::sqlite_in(dir.path()).await,
            crate::broker::local(),
            HubSettings::default(),
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        let (outbox, _keeper_frames) = Outbox::new(64);
        let mut keeper = hub.connect(Some("keeper".into()), outbox);
        keeper.join(RoomName::lobby(), None, None).await;
        for text in ["one", "two", "three"] {
            hub.post(RoomName::lobby(), "keeper".into(), text.into())
                .await
                .expect("post");
        }
        store.reads.store(0, Ordering::Relaxed);

        let (outbox, frames) = Outbox::new(64);
        let mut joiner = hub.connect(Some("joiner".into()), outbox);
        joiner.join(RoomName::lobby(), None, None).await;
        assert_eq!(message_ids(&frames), vec![1, 2, 3]);
        let (outbox, frames) = Outbox::new(64);
        let mut resumer = hub.connect(Some("resumer".into()), outbox);
        resumer.join(RoomName::lobby(), Some(1), None).await;
        assert_eq!(message_ids(&frames), vec![2, 3]);
        assert_eq!(store.reads.load(Ordering::Relaxed), 0);
    }
}
