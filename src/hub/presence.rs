//! Presence: how the members of a room hear who is in it. This module owns every path by which
//! presence reaches a member, the member lists and counts over every node, and the pacing of
//! large rooms' counts; `Room` only keeps its count state for it, behind methods.
//!
//! How presence reaches members:
//! - **Local arrivals, departures and renames.** A session publishes `RoomEvent::Presence`
//!   through the broker, which hands it back to this node's hub (`Deliver::deliver`): every
//!   member here except the one who moved gets one `presence` `{"joined"|"left": name}` frame
//!   ([`Inner::presence_change`]). The hub also reports each change to the broker
//!   (`Broker::member_changed`) so that other nodes learn of it.
//! - **Large rooms: counts instead of names.** A room with more than `presence_limit` members
//!   over every node announces no single arrival or departure; the ticker ([`ticker`]) sends its
//!   members one `presence` `{"count": N}` per tick when the count differs from the one last
//!   announced, and no more often than the count budget allows (`presence_count_budget`: a room
//!   of N members at most every N / budget seconds), so announcing costs O(N) per tick instead of
//!   O(N) per join. A room that shrinks back to the limit announces one by one again.
//! - **Members on other nodes.** A cluster broker mirrors the other nodes' memberships and reports
//!   what changed as [`RemoteChange`]s ([`Inner::apply_remote_changes`]). The hub keeps them per room
//!   in [`RemoteMembers`], under the rooms lock beside its own members, so a `joined` list and the
//!   `presence` frames that follow it never disagree, and counts them in `joined`, `members`,
//!   the room list, large rooms' counts and the presence limit. Each change is announced to the
//!   room's members here unless the room is large. On one node the remote map stays empty and
//!   nothing else changes.
//!
//! A joining member gets the names and count of [`Rooms::sample`] in its `joined`; presence
//! frames that come while its replay is read are held with its messages (or dropped, and a fresh
//! `joined` sent instead: see `Member::take` and `Hub::release_held`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use tokio_util::sync::CancellationToken;

use super::room::FanOut;
use super::{Inner, Rooms};
use crate::broker::{RemoteChange, RemoteMember};
use crate::protocol::{PresenceChange, ServerFrame};
use crate::transport::outbox::Outgoing;

/// Announces large rooms' member counts once per `presence_tick` until `stop` (or until the hub
/// is gone).
pub(super) async fn ticker(inner: Weak<Inner>, stop: CancellationToken) {
    let Some(tick) = inner.upgrade().map(|i| i.settings.presence_tick) else {
        return;
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => match inner.upgrade() {
                Some(inner) => inner.announce_counts().await,
                None => return,
            },
        }
    }
}

impl Inner {
    /// The frame announcing a local member's arrival or departure, or `None` when the room is
    /// large and the change is left to the next count.
    pub(super) fn presence_change(&self, room: &str, name: &str, joined: bool) -> Option<Outgoing> {
        let large = self
            .lock_rooms()
            .coalesce(room, self.settings.presence_limit);
        (!large).then(|| change_frame(room, name, joined))
    }

    /// Sends `presence` `{"count": N}` to every large room whose count differs from the one
    /// last announced (arrivals and departures that cancel out change nothing a member sees)
    /// and is due (see `HubSettings::presence_count_budget`).
    pub(super) async fn announce_counts(&self) {
        let changed = self.lock_rooms().counts_due(
            Instant::now(),
            self.settings.presence_limit,
            self.settings.presence_tick,
            self.settings.presence_count_budget,
        );
        for (room, count) in changed {
            self.fan_out_sliced(&room, &[count_frame(&room, count)], Some(&[]))
                .await;
        }
    }

    /// Applies every change to the rooms' remote members first, then announces each to the
    /// room's members here, unless the room (counted over every node, after the changes) is
    /// large: its count goes out with the next tick instead.
    pub(super) fn apply_remote_changes(&self, changes: &[RemoteChange]) {
        let limit = self.settings.presence_limit;
        let mut rooms = self.lock_rooms();
        for change in changes {
            rooms.remote.apply(change);
        }
        let mut result = FanOut::default();
        for change in changes {
            if !rooms.local.contains_key(&change.room) || rooms.coalesce(&change.room, limit) {
                continue;
            }
            let frame = change_frame(&change.room, &change.name, change.joined);
            if let Some(entry) = rooms.local.get_mut(&change.room) {
                let out = entry.fan_out(
                    std::slice::from_ref(&frame),
                    None,
                    self.settings.outbox_frames,
                );
                result.delivered += out.delivered;
                result.overflowed += out.overflowed;
            }
        }
        drop(rooms);
        self.count(result);
    }
}

impl Rooms {
    /// Up to `limit` names of `room` (local members first, the longest present of each) and
    /// the member count, over every node. Without remote members this is the local room's
    /// cached sample.
    pub(super) fn sample(&mut self, room: &str, limit: usize) -> (Arc<[String]>, usize) {
        let (local, local_len) = self
            .local
            .get_mut(room)
            .map(|r| (r.member_names(limit), r.len()))
            .unwrap_or_else(|| (Arc::from([]), 0));
        let remote_len = self.remote.len(room);
        if remote_len == 0 {
            return (local, local_len);
        }
        let count = local_len + remote_len;
        if local.len() >= limit {
            return (local, count);
        }
        let mut names = local.to_vec();
        names.extend(self.remote.names(room).take(limit - local.len()).cloned());
        names.sort();
        (names.into(), count)
    }

    /// Every name in `room` over every node, sorted, and the count.
    pub(super) fn all_names(&self, room: &str) -> (Vec<String>, usize) {
        let mut names = self
            .local
            .get(room)
            .map(super::room::Room::all_member_names)
            .unwrap_or_default();
        if self.remote.len(room) > 0 {
            names.extend(self.remote.names(room).cloned());
            names.sort();
        }
        let count = names.len();
        (names, count)
    }

    /// Whether `room` is large (over `limit` members on every node together), so one member's
    /// arrival or departure is left to the next count instead of being announced. A room that
    /// is not large forgets its last announced count: members hear of each change again.
    fn coalesce(&mut self, room: &str, limit: usize) -> bool {
        let remote = self.remote.len(room);
        match self.local.get_mut(room) {
            Some(entry) if entry.len() + remote > limit => true,
            Some(entry) => {
                entry.forget_count();
                false
            }
            None => false,
        }
    }

    /// The large rooms (over `limit` on every node) whose count is to go out at `now`, with that
    /// count, each noted as announced.
    fn counts_due(
        &mut self,
        now: Instant,
        limit: usize,
        tick: Duration,
        budget: usize,
    ) -> Vec<(String, usize)> {
        let Rooms { local, remote } = self;
        local
            .iter_mut()
            .filter_map(|(name, room)| {
                let count = room.len() + remote.len(name);
                let due = count > limit && room.take_count_due(count, now, tick, budget);
                due.then(|| (name.clone(), count))
            })
            .collect()
    }
}

/// What a large room last announced of its count, kept in its `Room` (and dropped with it).
#[derive(Debug, Default)]
pub(super) struct CountState {
    /// When the count was last announced.
    last: Option<Instant>,
    /// The count last announced (`None` once the room announces members one by one again).
    announced: Option<usize>,
}

impl CountState {
    /// Whether `count` (the room's members over every node) is to be announced at `now`: it
    /// differs from the count last announced and is due (see [`CountState::due`]). If so, it is
    /// noted as announced.
    pub(super) fn take_due(
        &mut self,
        count: usize,
        now: Instant,
        tick: Duration,
        budget: usize,
    ) -> bool {
        let due = self.announced != Some(count) && self.due(count, now, tick, budget);
        if due {
            self.last = Some(now);
            self.announced = Some(count);
        }
        due
    }

    /// The room announces arrivals and departures one by one again: its members no longer hold
    /// the last count, so the next time it is large its count goes out even if unchanged.
    pub(super) fn forget(&mut self) {
        self.announced = None;
    }

    /// Whether a changed count may go out at `now`: one room's counts cost at most `budget`
    /// frames per second, and the ticker runs once per `tick` (half a tick of slack, so a
    /// ticker that fires a little early does not skip a whole tick). `count` is the room's
    /// member count over every node, so that all nodes together stay within the budget for the
    /// room and a member sees the same rhythm whichever node it is connected to.
    fn due(&self, count: usize, now: Instant, tick: Duration, budget: usize) -> bool {
        let interval = count_interval(count, tick, budget);
        self.last
            .is_none_or(|last| now.saturating_duration_since(last) + tick / 2 >= interval)
    }
}

/// How often a room of `members` may have its count announced: every tick, or every
/// `members / budget` seconds when that is longer.
fn count_interval(members: usize, tick: Duration, budget: usize) -> Duration {
    tick.max(Duration::from_secs_f64(
        members as f64 / budget.max(1) as f64,
    ))
}

/// Members on other nodes per room, as the cluster broker reported them (empty on one node). A
/// room is here while it has a remote member.
#[derive(Default)]
pub(super) struct RemoteMembers {
    rooms: HashMap<String, RemoteRoom>,
}

impl RemoteMembers {
    /// Notes one arrival (or new name) or departure.
    fn apply(&mut self, change: &RemoteChange) {
        let entry = self.rooms.entry(change.room.clone()).or_default();
        if change.joined {
            entry.members.insert(change.member, change.name.clone());
        } else {
            entry.members.swap_remove(&change.member);
            if entry.members.is_empty() {
                self.rooms.remove(&change.room);
            }
        }
    }

    /// Members of `room` on other nodes.
    pub(super) fn len(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.members.len())
    }

    /// Every room with members on other nodes, and how many.
    pub(super) fn counts(&self) -> impl Iterator<Item = (&String, usize)> {
        self.rooms
            .iter()
            .map(|(name, room)| (name, room.members.len()))
    }

    /// The names of `room`'s members on other nodes, longest present first (unsorted).
    fn names(&self, room: &str) -> impl Iterator<Item = &String> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|r| r.members.values())
    }
}

/// A room's members on other nodes, in arrival order (a departure moves the newest into its
/// place, as in `Room`), so a `joined` sample lists those present longest.
#[derive(Default)]
struct RemoteRoom {
    members: IndexMap<RemoteMember, String>,
}

/// A `presence` frame announcing one arrival or departure.
fn change_frame(room: &str, name: &str, joined: bool) -> Outgoing {
    let data = if joined {
        PresenceChange {
            joined: Some(name),
            ..PresenceChange::default()
        }
    } else {
        PresenceChange {
            left: Some(name),
            ..PresenceChange::default()
        }
    };
    Outgoing::control(ServerFrame::Presence { room, data }.encode())
}

/// A `presence` `{"count": N}` frame for a large room.
fn count_frame(room: &str, count: usize) -> Outgoing {
    let data = PresenceChange {
        count: Some(count),
        ..PresenceChange::default()
    };
    Outgoing::control(ServerFrame::Presence { room, data }.encode())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ConnId, Deliver};
    use crate::config::Durability;
    use crate::hub::{Hub, HubSettings};
    use crate::metrics::Metrics;
    use crate::protocol::RoomName;
    use crate::store::{People, SqliteStore, Store};
    use crate::transport::outbox::{Outbox, OutboxReceiver};
    use tokio_util::task::TaskTracker;

    /// The frames queued so far, as JSON.
    fn frames_json(receiver: &OutboxReceiver) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| receiver.try_recv())
            .map(|frame| serde_json::from_slice(&frame.json).expect("json"))
            .collect()
    }

    fn remote(room: &str, node: u64, conn: ConnId, name: &str, joined: bool) -> RemoteChange {
        RemoteChange {
            room: room.into(),
            member: crate::broker::RemoteMember { node, conn },
            name: name.into(),
            joined,
        }
    }

    async fn local_hub(settings: HubSettings) -> (Hub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                &dir.path().join("hub.db"),
                Duration::from_secs(5),
                Durability::Process,
            )
            .await
            .expect("store"),
        );
        let hub = Hub::new(
            store,
            People::sqlite_in(dir.path()).await,
            crate::broker::local(),
            settings,
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        (hub, dir)
    }

    #[tokio::test]
    async fn a_member_on_another_node_is_announced_to_every_member_here_even_one_with_its_connection_id()
     {
        let (hub, _dir) = local_hub(HubSettings::default()).await;
        let (outbox, ann_frames) = Outbox::new(64);
        let mut ann = hub.connect(Some("ann".into()), outbox);
        ann.join(RoomName::lobby(), None, None).await;
        frames_json(&ann_frames);
        // Connection 1 on node 7: the same id as ann's here.
        assert_eq!(ann.id(), 1);
        hub.inner
            .remote_presence(&[remote("lobby", 7, 1, "bo", true)]);
        assert_eq!(
            frames_json(&ann_frames),
            vec![
                serde_json::json!({"type": "presence", "room": "lobby", "data": {"joined": "bo"}})
            ]
        );
        let (outbox, cy_frames) = Outbox::new(64);
        let mut cy = hub.connect(Some("cy".into()), outbox);
        cy.join(RoomName::lobby(), None, None).await;
        let joined = frames_json(&cy_frames)
            .into_iter()
            .find(|f| f["type"] == "joined")
            .expect("joined");
        assert_eq!(
            joined["data"]["members"],
            serde_json::json!(["ann", "bo", "cy"])
        );
        assert_eq!(joined["data"]["count"], 3);
        assert_eq!(
            hub.all_member_names(&RoomName::lobby()),
            (vec!["ann".into(), "bo".into(), "cy".into()], 3)
        );
        hub.inner
            .remote_presence(&[remote("lobby", 7, 1, "bo", false)]);
        let left = frames_json(&ann_frames);
        assert!(left.iter().any(|f| f["data"]["left"] == "bo"), "{left:?}");
        assert_eq!(hub.member_sample(&RoomName::lobby()).1, 2);
    }

    #[tokio::test]
    async fn a_room_large_only_with_its_remote_members_counts_instead_of_announcing() {
        let settings = HubSettings {
            presence_limit: 2,
            ..HubSettings::default()
        };
        let (hub, _dir) = local_hub(settings).await;
        let (outbox, frames) = Outbox::new(64);
        let mut ann = hub.connect(Some("ann".into()), outbox);
        ann.join(RoomName::lobby(), None, None).await;
        frames_json(&frames);
        hub.inner.remote_presence(&[
            remote("lobby", 7, 1, "bo", true),
            remote("lobby", 8, 1, "cy", true),
        ]);
        assert!(
            frames_json(&frames).is_empty(),
            "three members over the limit of two: no arrivals announced"
        );
        hub.inner.announce_counts().await;
        assert_eq!(
            frames_json(&frames),
            vec![serde_json::json!({"type": "presence", "room": "lobby", "data": {"count": 3}})]
        );
    }

    #[test]
    fn counts_of_a_very_large_room_are_spaced_to_the_budget() {
        let tick = Duration::from_secs(1);
        assert_eq!(count_interval(2_000, tick, 5_000), tick);
        assert_eq!(count_interval(5_000, tick, 5_000), tick);
        assert_eq!(
            count_interval(19_000, tick, 5_000),
            Duration::from_millis(3_800)
        );
        let mut counts = CountState::default();
        let start = Instant::now();
        assert!(
            counts.take_due(19_000, start, tick, 5_000),
            "the first count is due at once"
        );
        assert!(!counts.take_due(19_001, start + Duration::from_secs(3), tick, 5_000));
        assert!(counts.take_due(19_001, start + Duration::from_secs(4), tick, 5_000));
    }
}
