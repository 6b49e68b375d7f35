//! A session's conversation frames (issue 19; docs/protocol.md "Accounts and rooms" and "Read
//! markers"): `create`, `dm`, `invite`, `topic`, `role` and `read`, the `rooms` sidebar sent
//! after `welcome`, the account's extras in `joined`, and the visibility rule every room access
//! goes through.
//!
//! Visibility: a private room or DM answers a non-member exactly as a room that does not exist
//! (`not_found`, "no such room"), whatever the frame, so its name cannot be probed. Rights: only
//! signed-in accounts make rooms, open DMs and keep read markers (a guest gets `unauthorized`);
//! inviting and setting the topic take an owner or moderator, changing roles an owner
//! (`forbidden` otherwise).
//!
//! Every change to a room's record or members goes to the directory first; then the room's
//! cached policy is dropped here and on every other node (`Hub::room_changed`, the
//! `RoomChanged` control event), and the people concerned are told through `Hub::to_account`,
//! which reaches their connections on every node.

use std::sync::Arc;

use rand::RngExt;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::Hub;
use super::policy::RoomPolicy;
use super::session::Session;
use crate::protocol::people::{
    DIRECT_PREFIX, GivenRole, JoinedRoomState, MemberEntry, NewConversation, PRIVATE_PREFIX,
    PeopleFrame, RoomEntry,
};
use crate::protocol::{ErrorCode, Ref, RoomName, ServerFrame};
use crate::store::StoreError;
use crate::store::accounts::AccountId;
use crate::store::directory::{
    Created, NewRoom, Role, RoomKind, RoomSettings, SidebarRoom, UnreadAsk, is_reserved,
};

/// Unread and mention counts stop here (clients show "999+").
pub const UNREAD_CAP: u32 = 999;

/// What a non-member is told about a private room or DM, and anyone about a missing room.
const NO_SUCH_ROOM: &str = "no such room";

impl Session {
    /// Carries out a conversation frame.
    pub(super) async fn people(&mut self, frame: PeopleFrame, reference: Option<Ref>) {
        let Some(account) = self.access.account else {
            let message = "sign in to do this: guests cannot make rooms, open direct messages, \
                           invite, moderate or keep read markers";
            return self.reject_with(ErrorCode::Unauthorized, message, reference);
        };
        match frame {
            PeopleFrame::Create(new) => self.create(account, new, reference).await,
            PeopleFrame::Dm { with } => self.direct(account, with, reference).await,
            PeopleFrame::Invite { room, name } => {
                self.invite(account, room, name, reference).await;
            }
            PeopleFrame::Topic { room, topic } => {
                self.set_topic(account, room, topic, reference).await;
            }
            PeopleFrame::Role { room, name, role } => {
                self.set_role(account, room, name, role, reference).await;
            }
            PeopleFrame::Read { room, id } => self.read(account, room, id, reference).await,
        }
    }

    /// The room's policy if this connection may see the room; otherwise answers `not_found`
    /// (or `store_unavailable`) and returns `None`.
    ///
    /// When the directory cannot be read, a name outside the reserved namespaces is taken as
    /// the public room it must be (so joins and history behave under a failing store as they
    /// did before issue 19: the history read reports the failure), while a reserved name fails
    /// closed with `store_unavailable`.
    pub(super) async fn visible_policy(
        &self,
        room: &RoomName,
        action: &'static str,
        reference: Option<Ref>,
    ) -> Option<Arc<RoomPolicy>> {
        match self.hub.policy(room.as_str()).await {
            Ok(policy) if policy.visible_to(self.access.account) => Some(policy),
            Ok(_) => {
                self.reject_with(ErrorCode::NotFound, NO_SUCH_ROOM, reference);
                None
            }
            Err(err) if !is_reserved(room.as_str()) => {
                warn!(conn = self.id, %room, action, error = %err, "room policy unavailable; treated as public");
                Some(Arc::new(RoomPolicy::unrecorded(room.as_str())))
            }
            Err(err) => {
                self.store_failed(room, action, &err, reference);
                None
            }
        }
    }

    /// What `joined` adds for a signed-in connection: the room's kind, title, topic, the
    /// account's role, its read marker and the unread and mention counts after it (up to
    /// `last_id`, the room's newest message as the join saw it: later ones reach the member
    /// live). `None` for a guest (whose `joined` is unchanged).
    pub(super) async fn joined_state(
        &self,
        room: &RoomName,
        policy: &RoomPolicy,
        last_id: u64,
    ) -> Option<JoinedRoomState> {
        let account = self.access.account?;
        let sidebar_marker = match &self.link {
            Some(link) => link.sidebar_marker(room.as_str()).await,
            None => None,
        };
        let (last_read, counts) = match self
            .hub
            .read_state(account, room.as_str(), &self.name, last_id, sidebar_marker)
            .await
        {
            Ok(state) => state,
            Err(err) => {
                warn!(conn = self.id, %room, error = %err, "read state unavailable; joined counts 0");
                (0, Default::default())
            }
        };
        Some(JoinedRoomState {
            kind: policy.kind.as_str(),
            title: policy.title.clone(),
            topic: policy.topic.clone(),
            role: policy.role(Some(account)).map(Role::as_str),
            last_read,
            unread: counts.unread,
            mentions: counts.mentions,
        })
    }

    /// Queues the `rooms` sidebar for a signed-in connection. It is read in a task of its own so
    /// the connection starts at once: it follows `welcome`, possibly after answers to frames
    /// the client sent meanwhile.
    pub(super) fn send_sidebar(&self) {
        let Some(account) = self.access.account else {
            return;
        };
        let (hub, name, outbox, conn) = (
            self.hub.clone(),
            self.name.clone(),
            self.outbox.clone(),
            self.id,
        );
        let markers_for = self.link.clone().map(SidebarMarkersFor);
        tokio::spawn(async move {
            match hub.sidebar(account, &name, markers_for.as_ref()).await {
                Ok(entries) => {
                    let json = ServerFrame::Rooms { data: &entries }.encode();
                    outbox.push(super::Outgoing::control(json));
                }
                Err(err) => warn!(conn, error = %err, "sidebar unavailable; no rooms frame sent"),
            }
        });
    }

    async fn create(&mut self, account: AccountId, new: NewConversation, reference: Option<Ref>) {
        let (settings, public_name) = match new {
            NewConversation::Private { title, topic } => {
                let room = format!("{PRIVATE_PREFIX}{:016x}", rand::rng().random::<u64>());
                (
                    settings(room, RoomKind::Private, Some(title), topic, account),
                    None,
                )
            }
            NewConversation::Public { room, topic } => {
                let name = room.as_str().to_owned();
                (
                    settings(name, RoomKind::Public, None, topic, account),
                    Some(room),
                )
            }
        };
        if let Some(room) = &public_name {
            match self.hub.public_room_in_use(room).await {
                Ok(false) => {}
                Ok(true) => return self.room_exists(room, reference),
                Err(err) => return self.store_failed(room, "create", &err, reference),
            }
        }
        let room = settings.room.clone();
        let new = NewRoom {
            settings,
            members: vec![(account, Role::Owner)],
        };
        let Ok(room_name) = RoomName::parse(&room) else {
            return self.reject_with(ErrorCode::BadRoom, NO_SUCH_ROOM, reference);
        };
        match self.hub.people().directory.create_room(&new).await {
            Ok(Created::New) => {}
            Ok(Created::Existed) => return self.room_exists(&room_name, reference),
            Err(err) => return self.store_failed(&room_name, "create", &err, reference),
        }
        self.hub.room_changed(&room_name).await;
        self.announce_room(&room_name, &[account], reference).await;
    }

    async fn direct(&mut self, account: AccountId, with: Vec<String>, reference: Option<Ref>) {
        let mut people = vec![account];
        for name in &with {
            match self.hub.account_named(name).await {
                Ok(Some(other)) => people.push(other),
                Ok(None) => {
                    let message = format!("no account is named {name}");
                    return self.reject_with(ErrorCode::NotFound, &message, reference);
                }
                Err(err) => {
                    return self.store_failed(&RoomName::lobby(), "dm", &err, reference);
                }
            }
        }
        people.sort();
        people.dedup();
        if people.len() < 2 {
            let message = "a direct conversation needs someone besides you";
            return self.reject_with(ErrorCode::BadJson, message, reference);
        }
        let room = direct_name(&people);
        let Ok(room_name) = RoomName::parse(&room) else {
            return self.reject_with(ErrorCode::BadRoom, NO_SUCH_ROOM, reference);
        };
        let new = NewRoom {
            settings: RoomSettings {
                room: room.clone(),
                kind: RoomKind::Direct,
                title: None,
                topic: None,
                created_by: Some(account),
                created_ms: super::now_ms(),
            },
            members: people
                .iter()
                .map(|person| (*person, Role::Member))
                .collect(),
        };
        match self.hub.people().directory.create_room(&new).await {
            Ok(Created::New) => {
                self.hub.room_changed(&room_name).await;
                self.announce_room(&room_name, &people, reference).await;
            }
            // The same people's conversation: only the caller is told (again).
            Ok(Created::Existed) => self.announce_room(&room_name, &[account], reference).await,
            Err(err) => self.store_failed(&room_name, "dm", &err, reference),
        }
    }

    async fn invite(
        &mut self,
        account: AccountId,
        room: RoomName,
        name: String,
        reference: Option<Ref>,
    ) {
        let Some(policy) = self
            .visible_policy(&room, "invite", reference.clone())
            .await
        else {
            return;
        };
        if policy.kind != RoomKind::Private {
            let message = match policy.kind {
                RoomKind::Direct => "a direct conversation keeps the people it was opened with",
                _ => "anyone may join a public room: there is nobody to invite",
            };
            return self.reject_with(ErrorCode::BadRoom, message, reference);
        }
        if !policy.can_moderate(Some(account)) {
            let message = "only the room's owners and moderators may invite";
            return self.reject_with(ErrorCode::Forbidden, message, reference);
        }
        let Some(invitee) = self.named_account(&room, &name, reference.clone()).await else {
            return;
        };
        match self
            .hub
            .people()
            .directory
            .add_member(room.as_str(), invitee, Role::Member)
            .await
        {
            Ok(_) => {}
            Err(err) => return self.store_failed(&room, "invite", &err, reference),
        }
        self.hub.room_changed(&room).await;
        self.announce_room(&room, &[invitee], reference).await;
    }

    async fn set_topic(
        &mut self,
        account: AccountId,
        room: RoomName,
        topic: Option<String>,
        reference: Option<Ref>,
    ) {
        let Some(policy) = self.visible_policy(&room, "topic", reference.clone()).await else {
            return;
        };
        if !policy.can_moderate(Some(account)) && !self.is_operator(account, &room).await {
            let message = "only the room's owners and moderators may set its topic";
            return self.reject_with(ErrorCode::Forbidden, message, reference);
        }
        let directory = &self.hub.people().directory;
        if let Err(err) = directory
            .set_topic(room.as_str(), topic.as_deref(), Some(account))
            .await
        {
            return self.store_failed(&room, "topic", &err, reference);
        }
        // Every node reloads the policy and tells its members of the new topic (policy.rs).
        self.hub.room_changed(&room).await;
        self.done(&room, reference);
    }

    async fn set_role(
        &mut self,
        account: AccountId,
        room: RoomName,
        name: String,
        role: GivenRole,
        reference: Option<Ref>,
    ) {
        let Some(policy) = self.visible_policy(&room, "role", reference.clone()).await else {
            return;
        };
        if policy.role(Some(account)) != Some(Role::Owner) {
            let message = "only the room's owners may change roles";
            return self.reject_with(ErrorCode::Forbidden, message, reference);
        }
        let Some(target) = self.named_account(&room, &name, reference.clone()).await else {
            return;
        };
        if policy.role(Some(target)) == Some(Role::Owner) {
            let message = "an owner's role cannot be changed";
            return self.reject_with(ErrorCode::Forbidden, message, reference);
        }
        let role = match role {
            GivenRole::Moderator => Role::Moderator,
            GivenRole::Member => Role::Member,
        };
        let directory = &self.hub.people().directory;
        let changed = match policy.kind {
            // A public room lists only its owners and moderators: a new moderator is added.
            RoomKind::Public => directory
                .add_member(room.as_str(), target, role)
                .await
                .and(directory.set_role(room.as_str(), target, role).await),
            _ => directory.set_role(room.as_str(), target, role).await,
        };
        match changed {
            Ok(true) => {}
            Ok(false) => {
                let message = format!("{name} is not a member of this room");
                return self.reject_with(ErrorCode::NotFound, &message, reference);
            }
            Err(err) => return self.store_failed(&room, "role", &err, reference),
        }
        self.hub.room_changed(&room).await;
        let policy = self.hub.policy(room.as_str()).await;
        if let Ok(policy) = policy {
            let entry = room_entry(room.as_str(), &policy, Some(target));
            let json = ServerFrame::Room { data: &entry }.encode();
            self.hub.to_account(target, json, None).await;
        }
        self.done(&room, reference);
    }

    async fn read(&mut self, account: AccountId, room: RoomName, id: u64, reference: Option<Ref>) {
        if self
            .visible_policy(&room, "read", reference.clone())
            .await
            .is_none()
        {
            return;
        }
        if self
            .hub
            .inner
            .read_markers
            .note(account, room.as_str(), id, 0)
        {
            self.hub.read_moved(account, &room, id, self.id).await;
        }
        self.done(&room, reference);
    }

    /// Whether the account is an operator (`accounts.admin`: moderator rights in every room it
    /// can see), read from the store when asked (rare: only when the room role falls short), so
    /// a revoked operator loses the right at once. A failed read counts as no.
    async fn is_operator(&self, account: AccountId, room: &RoomName) -> bool {
        match self.hub.people().accounts.account_by_id(account).await {
            Ok(found) => found.is_some_and(|found| found.admin && !found.disabled),
            Err(err) => {
                warn!(conn = self.id, %room, error = %err, "operator check failed; treated as no");
                false
            }
        }
    }

    /// The account named `name`, or `not_found` answered.
    async fn named_account(
        &self,
        room: &RoomName,
        name: &str,
        reference: Option<Ref>,
    ) -> Option<AccountId> {
        match self.hub.account_named(name).await {
            Ok(Some(account)) => Some(account),
            Ok(None) => {
                let message = format!("no account is named {name}");
                self.reject_with(ErrorCode::NotFound, &message, reference);
                None
            }
            Err(err) => {
                self.store_failed(room, "account", &err, reference);
                None
            }
        }
    }

    /// Tells `people` (every connection of each, on every node) of the room as it now is, this
    /// connection directly, then acks.
    async fn announce_room(&self, room: &RoomName, people: &[AccountId], reference: Option<Ref>) {
        match self.hub.policy(room.as_str()).await {
            Ok(policy) => {
                for person in people {
                    let entry = room_entry(room.as_str(), &policy, Some(*person));
                    let json = ServerFrame::Room { data: &entry }.encode();
                    if Some(*person) == self.access.account {
                        self.push(json.clone());
                        self.hub.to_account(*person, json, Some(self.id)).await;
                    } else {
                        self.hub.to_account(*person, json, None).await;
                    }
                }
                self.done(room, reference);
            }
            Err(err) => self.store_failed(room, "announce", &err, reference),
        }
    }

    fn room_exists(&self, room: &RoomName, reference: Option<Ref>) {
        let message = format!("room {room} already exists");
        self.reject_with(ErrorCode::RoomExists, &message, reference);
    }

    /// The `ack` of a conversation frame: the room, no message id.
    fn done(&self, room: &RoomName, reference: Option<Ref>) {
        self.push(
            ServerFrame::Done {
                reference: reference.as_ref(),
                room: room.as_str(),
            }
            .encode(),
        );
    }
}

impl Hub {
    /// The account named `name`, found by its case-folded key as accounts keep it (`Alice` and
    /// `alice` are one account). Disabled
    /// accounts are found too: a DM or invite with one waits for it to be enabled again.
    async fn account_named(&self, name: &str) -> Result<Option<AccountId>, StoreError> {
        let key = crate::accounts::name_key(name);
        let account = self.people().accounts.account_by_key(&key).await?;
        Ok(account.map(|account| account.id))
    }

    /// The account's read marker in the room (a pending one if newer than the stored one) and
    /// the unread and mention counts after it up to `last_id` (the room's newest message as the
    /// caller knows it; see [`Hub::unread_after`]).
    async fn read_state(
        &self,
        account: AccountId,
        room: &str,
        name: &str,
        last_id: u64,
        sidebar_marker: Option<u64>,
    ) -> Result<(u64, crate::store::directory::Unread), StoreError> {
        let directory = &self.people().directory;
        let stored = match sidebar_marker {
            Some(stored) => stored,
            None => directory.read_marker(account, room).await?,
        };
        let last_read = self.pending_marker(account, room).max(stored);
        let counts = self.unread_after(room, name, last_read, last_id).await?;
        Ok((last_read, counts))
    }

    /// `name`'s unread and mention counts in `room` after `last_read` up to `last_id`: none to
    /// count when the marker is there already (a member that keeps up, a room filling with new
    /// members before anyone posts); from the room's ledger when this node holds every message
    /// after the marker (hub/unread_ledger.rs); else one batched store read.
    async fn unread_after(
        &self,
        room: &str,
        name: &str,
        last_read: u64,
        last_id: u64,
    ) -> Result<crate::store::directory::Unread, StoreError> {
        if last_read >= last_id {
            return Ok(Default::default());
        }
        if let Some(counts) = self.unread_in_memory(room, last_read, last_id, name) {
            return Ok(counts);
        }
        let ask = UnreadAsk {
            room: room.to_owned(),
            name: name.to_owned(),
            last_read,
        };
        self.people().connecting.unread(ask, UNREAD_CAP).await
    }

    /// The unread counts after `last_read` up to `last_id`, from the room's ledger when this
    /// node has the room and its ledger reaches back that far (hub/unread_ledger.rs).
    pub(super) fn unread_in_memory(
        &self,
        room: &str,
        last_read: u64,
        last_id: u64,
        name: &str,
    ) -> Option<crate::store::directory::Unread> {
        let rooms = self.lock_rooms();
        let entry = rooms.local.get(room)?;
        entry.unread.count(last_read, last_id, name, UNREAD_CAP)
    }

    /// The marker waiting to be written for the account and room, 0 if none.
    fn pending_marker(&self, account: AccountId, room: &str) -> u64 {
        self.inner
            .read_markers
            .pending(account, room)
            .unwrap_or_default()
    }

    /// The account's sidebar as the `rooms` frame carries it; the markers it read go to
    /// `markers_for`'s joins as soon as they are read (accounts.rs).
    async fn sidebar(
        &self,
        account: AccountId,
        name: &str,
        markers_for: Option<&SidebarMarkersFor>,
    ) -> Result<Vec<RoomEntry>, StoreError> {
        let directory = &self.people().directory;
        let mut rooms = self.people().connecting.sidebar(account).await?;
        if let Some(SidebarMarkersFor(link)) = markers_for {
            let markers = rooms
                .iter()
                .filter(|room| room.last_read > 0)
                .map(|room| (Box::from(room.settings.room.as_str()), room.last_read))
                .collect();
            link.share_sidebar_markers(Some(markers));
        }
        self.add_pending_public_rooms(account, &mut rooms).await?;
        let mut entries = Vec::with_capacity(rooms.len());
        for room in rooms {
            let last_read = self
                .pending_marker(account, &room.settings.room)
                .max(room.last_read);
            let counts = self
                .unread_after(&room.settings.room, name, last_read, room.last_id)
                .await?;
            let members = match room.settings.kind {
                RoomKind::Public => None,
                _ => Some(
                    directory
                        .members(&room.settings.room)
                        .await?
                        .into_iter()
                        .map(|member| MemberEntry {
                            name: member.name,
                            role: member.role.as_str(),
                        })
                        .collect(),
                ),
            };
            entries.push(sidebar_entry(room, last_read, counts, members));
        }
        Ok(entries)
    }

    /// Adds the public rooms the account has a marker in that is not written yet (moved within
    /// the last second): the sidebar lists them as if it were, keeping the list by name.
    async fn add_pending_public_rooms(
        &self,
        account: AccountId,
        rooms: &mut Vec<SidebarRoom>,
    ) -> Result<(), StoreError> {
        let directory = &self.people().directory;
        for (room, last_read) in self.inner.read_markers.pending_of(account) {
            if rooms.iter().any(|listed| listed.settings.room == room) {
                continue;
            }
            let Ok(name) = RoomName::parse(&room) else {
                continue;
            };
            let settings = match directory.settings(&room).await? {
                Some(settings) if settings.kind == RoomKind::Public => settings,
                Some(_) => continue,
                None if is_reserved(&room) => continue,
                None => RoomSettings {
                    room: room.clone(),
                    kind: RoomKind::Public,
                    title: None,
                    topic: None,
                    created_by: None,
                    created_ms: 0,
                },
            };
            rooms.push(SidebarRoom {
                settings,
                role: None,
                last_id: self.store().last_id(&name).await?,
                last_read,
            });
        }
        rooms.sort_by(|a, b| a.settings.room.cmp(&b.settings.room));
        Ok(())
    }

    /// Whether a public room name is already in use (it has messages, a record or members
    /// anywhere), so `create` does not hand ownership of someone else's room to the caller.
    async fn public_room_in_use(&self, room: &RoomName) -> Result<bool, StoreError> {
        if self.member_sample(room).1 > 0 {
            return Ok(true);
        }
        if self
            .people()
            .directory
            .settings(room.as_str())
            .await?
            .is_some()
        {
            return Ok(true);
        }
        Ok(self.store().last_id(room).await? > 0)
    }
}

/// A room record as `create` stores it.
fn settings(
    room: String,
    kind: RoomKind,
    title: Option<String>,
    topic: Option<String>,
    account: AccountId,
) -> RoomSettings {
    RoomSettings {
        room,
        kind,
        title,
        topic,
        created_by: Some(account),
        created_ms: super::now_ms(),
    }
}

/// A DM's name: `dm-` and the first 16 hex digits of the SHA-256 over the participants' sorted
/// account ids, so the same people always get the same conversation (and a name reveals
/// nothing of who they are).
pub(super) fn direct_name(sorted_people: &[AccountId]) -> String {
    let ids: Vec<String> = sorted_people.iter().map(|a| a.0.to_string()).collect();
    let digest = Sha256::digest(ids.join(",").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{DIRECT_PREFIX}{hex}")
}

fn member_entries(policy: &RoomPolicy) -> Vec<MemberEntry> {
    policy
        .member_list()
        .into_iter()
        .map(|member| MemberEntry {
            name: member.name,
            role: member.role.as_str(),
        })
        .collect()
}

/// The `room` frame's payload for `account`.
pub(super) fn room_entry(room: &str, policy: &RoomPolicy, account: Option<AccountId>) -> RoomEntry {
    RoomEntry {
        room: room.to_owned(),
        kind: policy.kind.as_str(),
        title: policy.title.clone(),
        topic: policy.topic.clone(),
        role: policy.role(account).map(Role::as_str),
        last_id: None,
        last_read: None,
        unread: None,
        mentions: None,
        members: (policy.kind != RoomKind::Public).then(|| member_entries(policy)),
    }
}

fn sidebar_entry(
    room: SidebarRoom,
    last_read: u64,
    counts: crate::store::directory::Unread,
    members: Option<Vec<MemberEntry>>,
) -> RoomEntry {
    RoomEntry {
        kind: room.settings.kind.as_str(),
        room: room.settings.room,
        title: room.settings.title,
        topic: room.settings.topic,
        role: room.role.map(Role::as_str),
        last_id: Some(room.last_id),
        last_read: Some(last_read),
        unread: Some(counts.unread),
        mentions: Some(counts.mentions),
        members,
    }
}

/// The signed-in connection a sidebar read is for: its link gets the markers the read found,
/// or, should the read fail or its task end first, word that the store must answer its joins
/// (so no join waits for markers that never come).
pub(super) struct SidebarMarkersFor(Arc<super::accounts::AccountLink>);

impl Drop for SidebarMarkersFor {
    fn drop(&mut self) {
        self.0.share_sidebar_markers(None);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::{Durability, HubSettings};
    use crate::hub::Access;
    use crate::metrics::Metrics;
    use crate::protocol::RoomGrant;
    use crate::store::accounts::NewAccount;
    use crate::store::{People, SqliteStore};
    use crate::transport::outbox::{Outbox, OutboxReceiver};

    /// A hub whose history and people share one SQLite file, as `serve` opens them.
    async fn hub() -> (Hub, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(
                &dir.path().join("hub.db"),
                Duration::from_secs(5),
                Durability::Process,
            )
            .await
            .expect("store"),
        );
        let hub = Hub::new(
            store.clone(),
            People::of(store),
            crate::broker::local(),
            HubSettings::default(),
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        (hub, dir)
    }

    async fn account(hub: &Hub, name: &str) -> AccountId {
        let new = NewAccount {
            name: name.to_owned(),
            name_key: name.to_lowercase(),
            password_hash: None,
            admin: false,
            created_ms: 0,
        };
        let made = hub.people().accounts.create_account(&new).await;
        made.expect("store").expect("a new name").id
    }

    fn signed_in(hub: &Hub, name: &str, account: AccountId) -> (Session, OutboxReceiver) {
        let (outbox, frames) = Outbox::new(64);
        let access = Access {
            fixed_name: true,
            grant: RoomGrant::all(),
            account: Some(account),
            welcome_account: None,
        };
        (
            hub.connect_with(Some(name.to_owned()), access, outbox),
            frames,
        )
    }

    /// The frames queued so far, decoded.
    fn drain(frames: &OutboxReceiver) -> Vec<Value> {
        std::iter::from_fn(|| frames.try_recv())
            .map(|frame| serde_json::from_slice(&frame.json).expect("json"))
            .collect()
    }

    fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
        frames.iter().filter(|f| f["type"] == kind).collect()
    }

    async fn make_private(session: &mut Session, frames: &OutboxReceiver) -> RoomName {
        let create = NewConversation::Private {
            title: "Design".into(),
            topic: None,
        };
        session.people(PeopleFrame::Create(create), None).await;
        let answers = drain(frames);
        let room = of_type(&answers, "room")[0]["data"]["room"]
            .as_str()
            .expect("room name")
            .to_owned();
        RoomName::parse(&room).expect("valid")
    }

    #[tokio::test]
    async fn an_outsiders_join_of_a_private_room_is_not_found_and_adds_no_member() {
        let (hub, _dir) = hub().await;
        let ann = account(&hub, "ann").await;
        let eve = account(&hub, "eve").await;
        let (mut owner, owner_frames) = signed_in(&hub, "ann", ann);
        let room = make_private(&mut owner, &owner_frames).await;
        let (mut outsider, frames) = signed_in(&hub, "eve", eve);
        drain(&frames);
        outsider.join(room.clone(), None, None).await;
        let answers = drain(&frames);
        let errors = of_type(&answers, "error");
        assert_eq!(errors.len(), 1, "{answers:?}");
        assert_eq!(errors[0]["data"]["code"], "not_found");
        assert!(of_type(&answers, "joined").is_empty(), "{answers:?}");
        assert_eq!(hub.member_sample(&room).1, 0);
    }

    #[tokio::test]
    async fn an_invitation_reaches_every_connection_of_the_invitee() {
        let (hub, _dir) = hub().await;
        let ann = account(&hub, "ann").await;
        let bob = account(&hub, "bob").await;
        let (mut owner, owner_frames) = signed_in(&hub, "ann", ann);
        let room = make_private(&mut owner, &owner_frames).await;
        let (_laptop, laptop) = signed_in(&hub, "bob", bob);
        let (_phone, phone) = signed_in(&hub, "bob", bob);
        let invite = PeopleFrame::Invite {
            room: room.clone(),
            name: "bob".into(),
        };
        owner.people(invite, None).await;
        for frames in [&laptop, &phone] {
            let got = drain(frames);
            let added = of_type(&got, "room");
            assert_eq!(added.len(), 1, "{got:?}");
            assert_eq!(added[0]["data"]["room"], room.as_str());
        }
    }

    #[tokio::test]
    async fn a_read_reaches_the_accounts_other_connections_only() {
        let (hub, _dir) = hub().await;
        let ann = account(&hub, "ann").await;
        let bob = account(&hub, "bob").await;
        let (mut laptop, laptop_frames) = signed_in(&hub, "ann", ann);
        let (_phone, phone_frames) = signed_in(&hub, "ann", ann);
        let (_other, other_frames) = signed_in(&hub, "bob", bob);
        drain(&laptop_frames);
        let read = PeopleFrame::Read {
            room: RoomName::lobby(),
            id: 3,
        };
        laptop.people(read, None).await;
        let phone = drain(&phone_frames);
        assert_eq!(
            of_type(&phone, "read")
                .iter()
                .map(|f| f["data"].clone())
                .collect::<Vec<_>>(),
            vec![serde_json::json!({"room": "lobby", "id": 3})]
        );
        assert!(of_type(&drain(&laptop_frames), "read").is_empty());
        assert!(of_type(&drain(&other_frames), "read").is_empty());
    }

    #[tokio::test]
    async fn an_operator_sets_the_topic_of_a_public_room_without_an_owner() {
        let (hub, _dir) = hub().await;
        let root = account(&hub, "root").await;
        let ann = account(&hub, "ann").await;
        let accounts = &hub.people().accounts;
        assert!(accounts.set_admin(root, true).await.expect("store"));
        let topic = |text: &str| PeopleFrame::Topic {
            room: RoomName::lobby(),
            topic: Some(text.to_owned()),
        };
        let (mut member, member_frames) = signed_in(&hub, "ann", ann);
        drain(&member_frames);
        member.people(topic("mine"), None).await;
        let refused = drain(&member_frames);
        let errors = of_type(&refused, "error");
        assert_eq!(errors[0]["data"]["code"], "forbidden", "{refused:?}");
        let (mut operator, operator_frames) = signed_in(&hub, "root", root);
        drain(&operator_frames);
        operator.people(topic("welcome"), None).await;
        let done = drain(&operator_frames);
        assert_eq!(of_type(&done, "ack").len(), 1, "{done:?}");
        assert!(of_type(&done, "error").is_empty(), "{done:?}");
        let policy = hub.policy("lobby").await.expect("policy");
        assert_eq!(policy.topic.as_deref(), Some("welcome"));
    }

    #[tokio::test]
    async fn a_pending_marker_counts_before_it_is_written() {
        let (hub, _dir) = hub().await;
        let ann = account(&hub, "ann").await;
        for text in ["1", "2", "3"] {
            hub.post(RoomName::lobby(), "bob".into(), text.into())
                .await
                .expect("post");
        }
        let (mut session, _frames) = signed_in(&hub, "ann", ann);
        let read = PeopleFrame::Read {
            room: RoomName::lobby(),
            id: 2,
        };
        session.people(read, None).await;
        let (last_read, counts) = hub
            .read_state(ann, "lobby", "ann", 3, None)
            .await
            .expect("state");
        assert_eq!(last_read, 2);
        assert_eq!(counts.unread, 1);
    }

    #[test]
    fn a_direct_name_depends_only_on_the_set_of_people() {
        let ab = direct_name(&[AccountId(1), AccountId(2)]);
        assert_eq!(ab, direct_name(&[AccountId(1), AccountId(2)]));
        assert_ne!(ab, direct_name(&[AccountId(1), AccountId(3)]));
        assert!(ab.starts_with("dm-"));
        assert_eq!(ab.len(), 3 + 16);
    }
}
