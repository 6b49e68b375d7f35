//! A room's policy as the hub caches it (issue 19): its kind, title, topic, and its listed
//! members with their roles, read from the [`RoomDirectory`](crate::store::RoomDirectory) once
//! when the room first gets a member on this node, and dropped when its last local member leaves
//! or when the room changes anywhere (an invite, a topic, a role: `Hub::policy_changed`, which
//! the cross-node `RoomChanged` control event calls on every node). So a join into an occupied
//! room, and every post, reads nothing from the store to learn who may be there.
//!
//! Concurrent first joins of one room share one load (a reconnect storm costs one read per
//! room, not one per client): each room's entry is a cell that the first caller fills and the
//! others wait on. Dropping an entry while a load is in flight leaves that load's callers with
//! what it read; the next caller starts a fresh load, which sees the change.
//!
//! Visibility: a private room or direct conversation is seen only by its members; anyone else
//! is answered as for a room that does not exist ([`RoomPolicy::visible_to`]). A name in the
//! reserved namespaces (`p-`, `dm-`) without a record is such a room with no members: it is
//! never created by a join.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use super::{Hub, Inner};
use crate::protocol::ServerFrame;
use crate::protocol::people::TopicChange;
use crate::store::StoreError;
use crate::store::accounts::AccountId;
use crate::store::directory::{Role, RoomKind, RoomMember, is_reserved};
use crate::store::moderation::RoomModeration;
use crate::transport::outbox::Outgoing;

/// What the hub knows about one room's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPolicy {
    /// Who may see it.
    pub kind: RoomKind,
    /// A private room's title (its name is server-made).
    pub title: Option<String>,
    /// The topic.
    pub topic: Option<String>,
    /// The listed members (every member of a private room or DM; the owners and moderators of
    /// a public room with a record), with their names and roles.
    pub members: HashMap<AccountId, PolicyMember>,
    /// Its bans and mutes in force and its slow mode (hub/moderation.rs checks joins and posts
    /// against these, so no post reads the store).
    pub moderation: RoomModeration,
}

/// One listed member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMember {
    /// The account's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl RoomPolicy {
    /// The policy of a room without a record: public, unless its name is reserved (then a room
    /// nobody may see).
    pub fn unrecorded(room: &str) -> RoomPolicy {
        RoomPolicy {
            kind: if is_reserved(room) {
                RoomKind::Private
            } else {
                RoomKind::Public
            },
            title: None,
            topic: None,
            members: HashMap::new(),
            moderation: RoomModeration::default(),
        }
    }

    /// The account's role here, `None` for a guest or an account that is not listed.
    pub fn role(&self, account: Option<AccountId>) -> Option<Role> {
        account
            .and_then(|account| self.members.get(&account))
            .map(|member| member.role)
    }

    /// Whether the connection (its account, `None` for a guest) may see the room at all: any
    /// public room; a private room or DM only as one of its members.
    pub fn visible_to(&self, account: Option<AccountId>) -> bool {
        self.kind == RoomKind::Public || self.role(account).is_some()
    }

    /// Whether the account may invite, set the topic and moderate here.
    pub fn can_moderate(&self, account: Option<AccountId>) -> bool {
        self.role(account).is_some_and(Role::can_moderate)
    }

    /// The members as the directory lists them (owners first, then by name).
    pub fn member_list(&self) -> Vec<RoomMember> {
        let mut members: Vec<RoomMember> = self
            .members
            .iter()
            .map(|(account, member)| RoomMember {
                account: *account,
                name: member.name.clone(),
                role: member.role,
            })
            .collect();
        members.sort_by(|a, b| b.role.cmp(&a.role).then_with(|| a.name.cmp(&b.name)));
        members
    }
}

/// One room's cached policy: filled once by the first caller, shared by the others.
type Entry = Arc<OnceCell<Arc<RoomPolicy>>>;

/// Every cached room policy on this node.
#[derive(Default)]
pub(super) struct Policies {
    rooms: Mutex<HashMap<String, Entry>>,
    recorded: Mutex<RecordedRooms>,
}

/// The public rooms with anything recorded about them, as this node last read them
/// ([`RoomDirectory::public_rooms_with_records`](crate::store::RoomDirectory)): a public room
/// outside the list gets the default policy without a store read. Read at start and on every
/// re-validation tick; a change made through any node's hub notes its room at once (the
/// `RoomChanged` event reaches every node), one made by the operator CLI is in the next read.
#[derive(Default)]
struct RecordedRooms {
    /// `false` until the first read: every policy is read from the store meanwhile.
    loaded: bool,
    rooms: HashSet<String>,
    /// Rooms noted since the current read started, which that read may not have seen.
    noted: HashSet<String>,
}

impl Policies {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Plain data behind the lock: a panic elsewhere leaves nothing half-done here.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The room's entry, made empty if there is none.
    fn entry(&self, room: &str) -> Entry {
        self.lock().entry(room.to_owned()).or_default().clone()
    }

    /// The cached policy, if it is loaded.
    pub(super) fn cached(&self, room: &str) -> Option<Arc<RoomPolicy>> {
        self.lock().get(room).and_then(|cell| cell.get().cloned())
    }

    /// Drops the room's entry: the next caller loads it afresh.
    pub(super) fn forget(&self, room: &str) {
        self.lock().remove(room);
    }

    fn recorded(&self) -> MutexGuard<'_, RecordedRooms> {
        // Plain data behind the lock, as above.
        self.recorded
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether the public `room` surely has nothing recorded (the default policy).
    fn surely_unrecorded(&self, room: &str) -> bool {
        let recorded = self.recorded();
        recorded.loaded && !recorded.rooms.contains(room)
    }

    /// Notes that `room` may have a record now.
    pub(super) fn note_recorded(&self, room: &str) {
        let mut recorded = self.recorded();
        recorded.rooms.insert(room.to_owned());
        recorded.noted.insert(room.to_owned());
    }

    /// Starts a read of the recorded rooms: changes noted from here on are kept beside it.
    fn read_started(&self) {
        self.recorded().noted.clear();
    }

    /// Replaces the list with a finished read (plus what was noted while it ran).
    fn read_finished(&self, rooms: Vec<String>) {
        let mut recorded = self.recorded();
        let mut fresh: HashSet<String> = rooms.into_iter().collect();
        fresh.extend(recorded.noted.iter().cloned());
        recorded.rooms = fresh;
        recorded.loaded = true;
    }
}

impl Hub {
    /// The room's policy: cached, or read from the directory (once, however many ask at once).
    pub async fn policy(&self, room: &str) -> Result<Arc<RoomPolicy>, StoreError> {
        let entry = self.inner.policies.entry(room);
        entry
            .get_or_try_init(|| self.load_policy(room))
            .await
            .cloned()
    }

    /// The room's policy if this node has it cached (every room with a local member, unless it
    /// changed since and nobody asked again): for checks that must not wait.
    pub fn cached_policy(&self, room: &str) -> Option<Arc<RoomPolicy>> {
        self.inner.policies.cached(room)
    }

    /// Whether the connection may see the room, without caching anything for a room nobody
    /// here is in: names outside the reserved namespaces are public and cost nothing; a
    /// reserved name is checked against the cached policy, else the directory.
    pub async fn can_see(
        &self,
        room: &str,
        account: Option<AccountId>,
    ) -> Result<bool, StoreError> {
        if !is_reserved(room) {
            return Ok(true);
        }
        if let Some(policy) = self.cached_policy(room) {
            return Ok(policy.visible_to(account));
        }
        let Some(account) = account else {
            return Ok(false);
        };
        let directory = &self.people().directory;
        Ok(directory.settings(room).await?.is_some()
            && directory.role(room, account).await?.is_some())
    }

    async fn load_policy(&self, room: &str) -> Result<Arc<RoomPolicy>, StoreError> {
        if !is_reserved(room) && self.inner.policies.surely_unrecorded(room) {
            return Ok(Arc::new(RoomPolicy::unrecorded(room)));
        }
        let directory = &self.people().directory;
        // A room without a record can still have bans, mutes and slow mode.
        let moderation = self
            .people()
            .moderation
            .room_moderation(room, crate::store::moderation::now_ms())
            .await?;
        let Some(settings) = directory.settings(room).await? else {
            return Ok(Arc::new(RoomPolicy {
                moderation,
                ..RoomPolicy::unrecorded(room)
            }));
        };
        let members = directory
            .members(room)
            .await?
            .into_iter()
            .map(|member| {
                let listed = PolicyMember {
                    name: member.name,
                    role: member.role,
                };
                (member.account, listed)
            })
            .collect();
        Ok(Arc::new(RoomPolicy {
            kind: settings.kind,
            title: settings.title,
            topic: settings.topic,
            members,
            moderation,
        }))
    }
}

impl Inner {
    /// Reads the public rooms with records again (see [`RecordedRooms`]); on a failure the
    /// last list stays.
    pub(super) async fn read_recorded_rooms(&self) {
        self.policies.read_started();
        match self.people.directory.public_rooms_with_records().await {
            Ok(rooms) => self.policies.read_finished(rooms),
            Err(err) => tracing::warn!(cause = %err, "could not read which rooms have records"),
        }
    }

    /// The room's record, members or roles changed (here or on another node): the cached policy
    /// is dropped, so the next check reads it again. What the `RoomChanged` control event calls
    /// on every node. A room with members here is read again at once, and if its topic changed
    /// they get a `topic` frame (so a topic reaches every node's members through this one
    /// event).
    pub(super) fn policy_changed(&self, room: &str) {
        self.policies.note_recorded(room);
        let old = self.policies.cached(room);
        self.policies.forget(room);
        let reload = Reload {
            room: room.to_owned(),
            old,
        };
        // Unbounded: one entry per room change, which people make by hand; the reload task
        // ends only with the hub.
        let _ = self.reloads.send(reload);
    }

    /// Gives the room's members here a `topic` frame.
    fn tell_topic(&self, room: &str, topic: Option<&str>) {
        let json = ServerFrame::Topic {
            data: TopicChange { room, topic },
        }
        .encode();
        let frame = Outgoing::control(json);
        let result = match self.lock_rooms().local.get_mut(room) {
            Some(entry) => entry.fan_out(
                std::slice::from_ref(&frame),
                None,
                self.settings.outbox_frames,
            ),
            None => return,
        };
        self.count(result);
    }
}

/// A room whose policy changed, with the policy this node had cached when the change arrived
/// (`None` when it had none: a load still in flight, or no local member asked yet).
pub(super) struct Reload {
    room: String,
    old: Option<Arc<RoomPolicy>>,
}

/// Reads each changed room's policy again, one change after another, and tells the room's
/// members here what changed (`topic`, `slow`).
///
/// **In order, in one task**, because two changes can follow each other faster than a read:
/// with a task per change, the second change found no cached policy to compare with (the first
/// reload's read still in flight) and said nothing, and the first reload could then announce
/// the intermediate value (slow mode 60 s, when it was already off again) or nothing at all.
/// Here each reload compares with what the previous reload of the room read when there is no
/// cached policy, so members always end up told the room's current state, in the order the
/// changes were made.
pub(super) async fn reload(
    hub: std::sync::Weak<Inner>,
    mut changes: tokio::sync::mpsc::UnboundedReceiver<Reload>,
    stop: tokio_util::sync::CancellationToken,
) {
    // What the last reload of each room read, while the room has members here.
    let mut last_read: HashMap<String, Arc<RoomPolicy>> = HashMap::new();
    loop {
        let Reload { room, old } = tokio::select! {
            () = stop.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        let Some(inner) = hub.upgrade() else {
            return;
        };
        let previous = last_read.remove(&room);
        if !inner.lock_rooms().local.contains_key(&room) {
            continue;
        }
        let Some(old) = old.or(previous) else {
            continue;
        };
        let hub = Hub { inner };
        match hub.policy(&room).await {
            Ok(new) => {
                if new.topic != old.topic {
                    hub.inner.tell_topic(&room, new.topic.as_deref());
                }
                hub.inner.moderation_reloaded(&room, &old, &new);
                last_read.insert(room, new);
            }
            Err(err) => {
                tracing::warn!(%room, error = %err, "room policy unavailable after a change");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_with(account: AccountId, role: Role) -> RoomPolicy {
        let mut policy = RoomPolicy::unrecorded("p-0000000000000000");
        policy.members.insert(
            account,
            PolicyMember {
                name: "ann".into(),
                role,
            },
        );
        policy
    }

    #[test]
    fn a_public_room_is_visible_to_guests_and_accounts() {
        let policy = RoomPolicy::unrecorded("lobby");
        assert!(policy.visible_to(None));
        assert!(policy.visible_to(Some(AccountId(1))));
    }

    #[test]
    fn a_private_room_is_visible_only_to_its_members() {
        let policy = private_with(AccountId(1), Role::Member);
        assert!(policy.visible_to(Some(AccountId(1))));
        assert!(!policy.visible_to(Some(AccountId(2))));
        assert!(!policy.visible_to(None));
    }

    #[test]
    fn an_unrecorded_reserved_name_is_visible_to_nobody() {
        let policy = RoomPolicy::unrecorded("dm-0000000000000000");
        assert!(!policy.visible_to(None));
        assert!(!policy.visible_to(Some(AccountId(1))));
    }

    #[test]
    fn only_owners_and_moderators_moderate() {
        assert!(private_with(AccountId(1), Role::Owner).can_moderate(Some(AccountId(1))));
        assert!(private_with(AccountId(1), Role::Moderator).can_moderate(Some(AccountId(1))));
        assert!(!private_with(AccountId(1), Role::Member).can_moderate(Some(AccountId(1))));
        assert!(!private_with(AccountId(1), Role::Owner).can_moderate(None));
    }

    #[test]
    fn every_room_is_read_from_the_store_until_the_recorded_list_is_loaded() {
        let policies = Policies::default();
        assert!(!policies.surely_unrecorded("lobby"));
        policies.read_started();
        policies.read_finished(vec!["ruled".to_owned()]);
        assert!(policies.surely_unrecorded("lobby"));
        assert!(!policies.surely_unrecorded("ruled"));
    }

    #[test]
    fn a_room_noted_while_a_read_runs_stays_recorded_after_it() {
        let policies = Policies::default();
        policies.read_started();
        policies.note_recorded("lobby");
        // The read began before lobby's record was written, so it does not list it.
        policies.read_finished(Vec::new());
        assert!(!policies.surely_unrecorded("lobby"));
        policies.read_started();
        policies.read_finished(vec!["lobby".to_owned()]);
        assert!(!policies.surely_unrecorded("lobby"));
    }
}
