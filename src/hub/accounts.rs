//! The node's index of signed-in connections by account (issue 19), and what the hub does with
//! it: send a frame to every device of an account, close them all, take them out of a room.
//!
//! Each of these starts as a control event ([`Control`]) published through the broker, so it
//! reaches the account's connections on every node, this one included; [`Inner::apply_control`]
//! is what every node runs when one arrives. Guests are not in the index: nothing of this costs
//! a guest connection anything.
//!
//! **A session removed from a room learns it before its next frame.** The room's member entry
//! is removed under the rooms lock when the event is applied (so no fan-out reaches it any
//! more), but the session's own set of rooms belongs to its connection task, which may be in
//! the middle of a frame. So the index shares an [`AccountLink`] with each signed-in session: the
//! event notes the room there and raises a flag, and [`super::Session::handle`] checks the flag
//! (one atomic load) before every frame and drops the noted rooms, so a `msg` to a room the
//! account was kicked from answers `not_member` instead of being posted.
//!
//! **A connection's first joins count unread from its sidebar's read.** Every signed-in
//! connection reads its sidebar (its rooms and its read markers in them) as it opens, and its
//! joins follow at once (the web client joins its rooms on `welcome`): so the link keeps the
//! markers that read found, and a join within [`SIDEBAR_MARKERS_SERVE`] of the connection
//! counts from them (waiting for the read if need be), instead of one store read per join. A
//! move since the connection linked is noted in the hub's read markers (a `read` here, or a
//! `ReadMoved` from another node) and answered from there (read_markers.rs keeps it at least as
//! long); a later join reads the store as before. So a join sees what a store read would have,
//! but for a move on another node made before this connection opened and written after its
//! sidebar was read: the same second-late window a node without connections has.
//!
//! **An account disabled behind the server's back is noticed within seconds.** `hubbub user
//! disable` works on the database directly, also while nodes run, and cannot reach their
//! connections; so every node checks the accounts of its signed-in connections against the
//! store every [`REVALIDATE_EVERY`] ([`revalidate`]: one indexed query per 500 accounts) and
//! closes those that are disabled, as a `CloseAccount` would. Sessions (cookies) are checked
//! by the accounts service each time they are used, so a disabled account cannot come back.
//!
//! **A room the operator CLI changed is reloaded within seconds.** `hubbub room create`,
//! `add-member` and `set-topic` write the database directly too, and add a row to the
//! store's directory change log; the same tick reads the rows after the last one this node saw
//! (one indexed query, usually empty) and runs for each what a `RoomChanged` event does, plus
//! the room's `room` entry for an added member's connections here. Changes made through a
//! server are not logged: they reach every node as `RoomChanged` through the broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::SetOnce;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Hub, Inner};
use crate::broker::{AccountClosed, ConnId, Control, Deliver as _, RemoteMember, RoomEvent};
use crate::protocol::people::ReadPosition;
use crate::protocol::{RoomName, ServerFrame};
use crate::store::accounts::AccountId;
use crate::transport::outbox::{Outbox, Outgoing, Pushed};

/// How often each node checks its signed-in connections' accounts for one disabled in the
/// store (by the operator CLI, or by another node): the longest a disabled account's
/// connection stays open when the `CloseAccount` event did not reach this node.
pub(super) const REVALIDATE_EVERY: Duration = Duration::from_secs(2);
/// Accounts asked about per query.
const REVALIDATE_CHUNK: usize = 500;
/// Directory changes applied per tick at most (more wait for the next tick).
const DIRECTORY_CHANGES_PER_TICK: u32 = 500;

/// How long after a signed-in connection opens its joins count from the markers its sidebar
/// read (see the module doc).
pub(super) const SIDEBAR_MARKERS_SERVE: Duration = Duration::from_secs(2);

/// The account's stored read markers by room, as a connection's sidebar read them.
pub(super) type SidebarMarkers = Box<[(Box<str>, u64)]>;

/// What a signed-in session shares with the index: the rooms its account was removed from that
/// the session has not yet dropped from its own set; and the read markers its sidebar found.
pub(crate) struct AccountLink {
    /// Raised with every room noted; what the session checks before each frame.
    pending: AtomicBool,
    removed: Mutex<Vec<RoomName>>,
    linked_at: Instant,
    /// Set once by the sidebar's read: the account's markers by room, or `None` when the read
    /// failed (joins then read the store).
    sidebar_markers: SetOnce<Option<SidebarMarkers>>,
}

impl AccountLink {
    fn new() -> Self {
        AccountLink {
            pending: AtomicBool::new(false),
            removed: Mutex::default(),
            linked_at: Instant::now(),
            sidebar_markers: SetOnce::new(),
        }
    }

    /// Hands the joins the markers the sidebar read (`None`: it failed). Only the first call
    /// counts.
    pub(super) fn share_sidebar_markers(&self, markers: Option<SidebarMarkers>) {
        let _already = self.sidebar_markers.set(markers);
    }

    /// The account's stored marker in `room` as the sidebar read it, for a join in the
    /// connection's first [`SIDEBAR_MARKERS_SERVE`] (waiting for the read if it is under way);
    /// `None` later, or when the read failed: then the store answers.
    pub(super) async fn sidebar_marker(&self, room: &str) -> Option<u64> {
        if self.linked_at.elapsed() >= SIDEBAR_MARKERS_SERVE {
            return None;
        }
        let markers = self.sidebar_markers.wait().await.as_ref()?;
        // A room the sidebar does not list has no marker the account can use: every room with
        // one that the account can still join is listed (public ones by their marker).
        Some(
            markers
                .iter()
                .find(|(listed, _)| &**listed == room)
                .map_or(0, |(_, last_read)| *last_read),
        )
    }

    fn lock(&self) -> MutexGuard<'_, Vec<RoomName>> {
        // Plain data: a panic elsewhere leaves nothing half-done here.
        self.removed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn note_removed(&self, room: RoomName) {
        self.lock().push(room);
        self.pending.store(true, Ordering::Release);
    }

    /// The rooms noted since the last call (empty without touching the lock when none were).
    pub(super) fn take_removed(&self) -> Vec<RoomName> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.lock())
    }
}

/// One signed-in connection on this node.
struct Linked {
    conn: ConnId,
    outbox: Outbox,
    link: Arc<AccountLink>,
}

/// This node's signed-in connections by account.
#[derive(Default)]
pub(super) struct AccountIndex {
    by_account: Mutex<HashMap<AccountId, Vec<Linked>>>,
}

impl AccountIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<AccountId, Vec<Linked>>> {
        // Plain data: a panic elsewhere leaves nothing half-done here.
        self.by_account
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a signed-in connection; the returned link is the session's side.
    pub(super) fn add(
        &self,
        account: AccountId,
        conn: ConnId,
        outbox: &Outbox,
    ) -> Arc<AccountLink> {
        let link = Arc::new(AccountLink::new());
        // Capacity one: most accounts have one connection per node, and `push` on an empty
        // Vec would reserve four.
        self.lock()
            .entry(account)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Linked {
                conn,
                outbox: outbox.clone(),
                link: link.clone(),
            });
        link
    }

    /// Removes a connection (its session ended).
    pub(super) fn remove(&self, account: AccountId, conn: ConnId) {
        let mut index = self.lock();
        if let Some(linked) = index.get_mut(&account) {
            linked.retain(|linked| linked.conn != conn);
            if linked.is_empty() {
                index.remove(&account);
            }
        }
    }

    /// Every account with a connection here: what [`revalidate`] checks.
    fn accounts(&self) -> Vec<AccountId> {
        self.lock().keys().copied().collect()
    }

    /// How many connections the account has here.
    pub(super) fn connections(&self, account: AccountId) -> usize {
        self.lock().get(&account).map_or(0, Vec::len)
    }

    /// Runs `each` on every connection of the account here, under the index lock (`each` must
    /// not take the rooms lock: see [`Inner::remove_account_from_room`]).
    fn for_each(&self, account: AccountId, mut each: impl FnMut(&Linked)) {
        if let Some(linked) = self.lock().get(&account) {
            linked.iter().for_each(&mut each);
        }
    }
}

impl Hub {
    /// Sends an encoded server frame to every connection of `account`, on every node, except
    /// `except` (a connection of this node: the one whose action caused it, which got its own
    /// answer).
    pub async fn to_account(&self, account: AccountId, frame: Bytes, except: Option<ConnId>) {
        let node = self.inner.broker.node_id();
        let except = except.map(|conn| RemoteMember { node, conn });
        self.publish_control(Control::ToAccount {
            account,
            frame,
            except,
        })
        .await;
    }

    /// `account`'s read marker in `room` moved to `id` on its connection `except` here: every
    /// other connection of the account, on every node, gets a `read` frame, and every node
    /// where the account is connected counts unread from `id` at once ([`Control::ReadMoved`]).
    pub async fn read_moved(&self, account: AccountId, room: &RoomName, id: u64, except: ConnId) {
        let node = self.inner.broker.node_id();
        self.publish_control(Control::ReadMoved {
            account,
            room: room.clone(),
            id,
            except: Some(RemoteMember { node, conn: except }),
        })
        .await;
    }

    /// Closes every connection of `account`, on every node, with close code 1008 and `reason`'s
    /// text (disabled, signed out everywhere, password changed).
    pub async fn close_account(&self, account: AccountId, reason: AccountClosed) {
        self.publish_control(Control::CloseAccount { account, reason })
            .await;
    }

    /// Takes every connection of `account` out of `room`, on every node: each first gets
    /// `frame` (e.g. `kicked`; empty for none), then leaves the room (its other members hear it
    /// go), and its session drops the room before its next frame. The caller records the reason
    /// (ban, removal) in the store first, so a rejoin is refused.
    pub async fn remove_from_room(&self, room: &RoomName, account: AccountId, frame: Bytes) {
        self.publish_control(Control::RemoveFromRoom {
            room: room.clone(),
            account,
            frame,
        })
        .await;
    }

    /// The room's kind, members, roles, topic or moderation changed in the store: every node
    /// drops its cached policy and reads it again (`policy.rs`).
    pub async fn room_changed(&self, room: &RoomName) {
        // Noted here before the event goes out, so this node never takes the room for one
        // without a record (policy.rs) in the meantime.
        self.inner.policies.note_recorded(room.as_str());
        self.publish_control(Control::RoomChanged { room: room.clone() })
            .await;
    }

    async fn publish_control(&self, control: Control) {
        if let Err(err) = self.inner.broker.publish_control(control).await {
            warn!(cause = %err, "control event not published");
        }
    }

    /// Registers a signed-in session's connection in the index. The server has accounts now:
    /// guests' messages are marked from here on.
    pub(super) fn link_account(
        &self,
        account: AccountId,
        conn: ConnId,
        outbox: &Outbox,
    ) -> Arc<AccountLink> {
        self.inner.marks_guests.store(true, Ordering::Relaxed);
        self.inner.accounts.add(account, conn, outbox)
    }

    /// Whether messages no account posted go out marked `"guest": true`: once the store holds
    /// an account (checked at start and with every re-validation until it does) or one is
    /// signed in here. A server nobody made an account on encodes every message as before.
    pub fn marks_guests(&self) -> bool {
        self.inner.marks_guests()
    }

    /// A page of messages as the wire shows them (guest marking included).
    pub fn views<'a>(
        &self,
        messages: &'a [crate::store::StoredMessage],
    ) -> Vec<crate::protocol::MessageView<'a>> {
        let mark = self.marks_guests();
        messages.iter().map(|m| m.view_marking(mark)).collect()
    }

    /// Removes a session's connection from the index.
    pub(super) fn unlink_account(&self, account: AccountId, conn: ConnId) {
        self.inner.accounts.remove(account, conn);
    }

    /// How many connections `account` has on this node.
    #[cfg(test)]
    pub fn account_connections(&self, account: AccountId) -> usize {
        self.inner.accounts.connections(account)
    }
}

impl Inner {
    /// What every node does with a control event (see the module doc). Never blocks: the
    /// presence announcements of a removal go out from a task of their own.
    pub(super) fn apply_control(&self, control: &Control) {
        match control {
            Control::CloseAccount { account, reason } => {
                let mut closed = 0;
                self.accounts.for_each(*account, |linked| {
                    linked.outbox.close_for_policy(reason.text());
                    closed += 1;
                });
                debug!(
                    account = account.0,
                    ?reason,
                    closed,
                    "account's connections closed"
                );
            }
            Control::ToAccount {
                account,
                frame,
                except,
            } => {
                let node = self.broker.node_id();
                let skip = except.filter(|member| member.node == node).map(|m| m.conn);
                self.accounts.for_each(*account, |linked| {
                    if Some(linked.conn) != skip {
                        self.push_to(&linked.outbox, frame);
                    }
                });
            }
            Control::RemoveFromRoom {
                room,
                account,
                frame,
            } => self.remove_account_from_room(room, *account, frame),
            Control::ReadMoved {
                account,
                room,
                id,
                except,
            } => self.apply_read_moved(*account, room, *id, *except),
            Control::RoomChanged { room } => self.policy_changed(room.as_str()),
            Control::MessageDeleted {
                room,
                id,
                tombstone,
            } => self.apply_deletion(room, *id, tombstone),
            Control::MessageChanged {
                room,
                seq,
                id,
                change,
                message,
                deleted,
            } => self.apply_change(room, (*seq, *id), change, message, *deleted),
            Control::AccountAdded { account, key } => self.people.names.insert(*account, key),
        }
    }

    /// A read marker moved (see [`Control::ReadMoved`]). Where the account has connections the
    /// marker is noted (a no-op on the node it moved on, which noted it first), so a `joined`
    /// or sidebar served here next does not count read messages as unread while the other node's
    /// batched write is still pending; this node's next flush writes it once more, which changes
    /// nothing (the store keeps the greater marker). Then its connections here get `read`.
    fn apply_read_moved(
        &self,
        account: AccountId,
        room: &RoomName,
        id: u64,
        except: Option<RemoteMember>,
    ) {
        if self.accounts.connections(account) == 0 {
            return;
        }
        self.read_markers.note(account, room.as_str(), id, 0);
        let frame = ServerFrame::Read {
            data: ReadPosition {
                room: room.as_str(),
                id,
            },
        }
        .encode();
        let node = self.broker.node_id();
        let skip = except.filter(|member| member.node == node).map(|m| m.conn);
        self.accounts.for_each(account, |linked| {
            if Some(linked.conn) != skip {
                self.push_to(&linked.outbox, &frame);
            }
        });
    }

    fn push_to(&self, outbox: &Outbox, frame: &Bytes) {
        if outbox.push(Outgoing::control(frame.clone())) == Pushed::Overflowed {
            self.metrics.slow_consumers.inc();
        }
    }

    /// Takes the account's connections here out of `room`: the note for the session first,
    /// then the member entry (no fan-out reaches it after this), then the frame, then the leave
    /// announced to the room.
    ///
    /// The order is what makes the frame mean something: a client may answer `kicked` at once
    /// (post, rejoin), and its session, on another thread, must already find the note, or it
    /// would post to the room it was just told it left.
    fn remove_account_from_room(&self, room: &RoomName, account: AccountId, frame: &Bytes) {
        let mut targets = Vec::new();
        self.accounts.for_each(account, |linked| {
            linked.link.note_removed(room.clone());
            targets.push((linked.conn, linked.outbox.clone()));
        });
        debug!(%room, account = account.0, connections = targets.len(), "account removed from room");
        for (conn, outbox) in targets {
            let left = self.take_out_of_room(room, conn);
            if !frame.is_empty() {
                self.push_to(&outbox, frame);
            }
            let Some(name) = left else {
                continue;
            };
            // What `Hub::publish` does with presence on either broker: this node's members
            // hear it here; other nodes learn it from `member_changed` (the presence mirror).
            let event = RoomEvent::Presence {
                origin: conn,
                name,
                joined: false,
            };
            self.deliver(room.as_str(), event);
        }
    }

    /// Removes a member as `Hub::remove_member` does (the room leaves memory when it empties;
    /// the broker hears of it); returns its name, `None` when it was not in the room.
    fn take_out_of_room(&self, room: &RoomName, conn: ConnId) -> Option<String> {
        let mut rooms = self.lock_rooms();
        let entry = rooms.local.get_mut(room.as_str())?;
        let name = entry.member(conn)?.name.clone();
        entry.remove(conn);
        if entry.is_empty() {
            rooms.local.remove(room.as_str());
            self.metrics.rooms.dec();
            self.policies.forget(room.as_str());
        }
        drop(rooms);
        self.broker.member_changed(room.as_str(), conn, None);
        Some(name)
    }
}

/// Checks this node's signed-in accounts against the store every [`REVALIDATE_EVERY`] until
/// `stop` (see the module doc).
pub(super) async fn revalidate(hub: Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REVALIDATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut directory_seen = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = hub.upgrade() else {
            return;
        };
        inner.read_account_names().await;
        inner.read_recorded_rooms().await;
        inner.close_disabled().await;
        inner.follow_directory(&mut directory_seen).await;
    }
}

impl Inner {
    /// See [`Hub::marks_guests`].
    pub(super) fn marks_guests(&self) -> bool {
        self.marks_guests.load(Ordering::Relaxed)
    }

    /// Reads the accounts made since the last tick into the node's name set (guests' names
    /// are checked against it: store/account_names.rs), and turns guest marking on once the
    /// store holds an account.
    async fn read_account_names(&self) {
        if let Err(err) = self.people.names.refresh().await {
            warn!(cause = %err, "could not read the accounts' names");
        }
        if !self.marks_guests() && self.people.names.any() {
            self.marks_guests.store(true, Ordering::Relaxed);
        }
    }

    /// Applies the room changes the operator CLI recorded in the store after `seen` (module
    /// doc of `operator.rs`): each room's cached policy is reloaded (its members here hear a
    /// new topic), and an added member's connections here get the room's `room` entry. The
    /// first call only notes where the log ends: a policy loaded after that reads the store.
    async fn follow_directory(&self, seen: &mut Option<i64>) {
        let directory = &self.people.directory;
        let Some(after) = *seen else {
            match directory.last_directory_change().await {
                Ok(last) => *seen = Some(last),
                Err(err) => warn!(cause = %err, "could not read the directory change log"),
            }
            return;
        };
        let changes = match directory
            .directory_changes_since(after, DIRECTORY_CHANGES_PER_TICK)
            .await
        {
            Ok(changes) => changes,
            Err(err) => {
                warn!(cause = %err, "could not read the directory change log");
                return;
            }
        };
        for change in changes {
            *seen = Some(change.id);
            info!(room = %change.room, change = change.id, "room changed by an operator: policy reloaded");
            self.policy_changed(&change.room);
            if let Some(account) = change.account {
                self.send_room_entry(&change.room, account).await;
            }
        }
    }

    /// Sends the account's connections here the room's `room` entry (as an invite does), when
    /// it has any and may see the room.
    async fn send_room_entry(&self, room: &str, account: AccountId) {
        let Some(inner) = self.this.upgrade() else {
            return;
        };
        if self.accounts.connections(account) == 0 {
            return;
        }
        let policy = match (Hub { inner }).policy(room).await {
            Ok(policy) => policy,
            Err(err) => {
                warn!(%room, cause = %err, "room policy unavailable; no room entry sent");
                return;
            }
        };
        if !policy.visible_to(Some(account)) {
            return;
        }
        let entry = super::conversations::room_entry(room, &policy, Some(account));
        let frame = ServerFrame::Room { data: &entry }.encode();
        self.accounts
            .for_each(account, |linked| self.push_to(&linked.outbox, &frame));
    }

    /// Closes the connections here of every account the store says is disabled.
    async fn close_disabled(&self) {
        let accounts = self.accounts.accounts();
        for chunk in accounts.chunks(REVALIDATE_CHUNK) {
            let disabled = match self.people.accounts.disabled_among(chunk).await {
                Ok(disabled) => disabled,
                Err(err) => {
                    warn!(cause = %err, "could not re-validate signed-in accounts");
                    return;
                }
            };
            for account in disabled {
                info!(
                    account = account.0,
                    "account disabled in the store: closing its connections"
                );
                self.apply_control(&Control::CloseAccount {
                    account,
                    reason: AccountClosed::Disabled,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::config::{Durability, HubSettings};
    use crate::hub::{Access, Session};
    use crate::metrics::Metrics;
    use crate::protocol::{ClientFrame, Request};
    use crate::store::{People, SqliteStore, Store};
    use crate::transport::outbox::{CloseReason, OutboxReceiver};

    /// A hub on the local broker and a fresh SQLite file.
    async fn hub() -> (Hub, tempfile::TempDir) {
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
            HubSettings::default(),
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        (hub, dir)
    }

    /// A hub with two accounts, ann and bob.
    async fn hub_with_accounts() -> (Hub, AccountId, AccountId, tempfile::TempDir) {
        let (hub, dir) = hub().await;
        let ann = create_account(&hub, "ann").await;
        let bob = create_account(&hub, "bob").await;
        (hub, ann, bob, dir)
    }

    /// A connection signed in as `account` (`None`: a guest), its `welcome` taken.
    async fn connect(
        hub: &Hub,
        name: &str,
        account: Option<AccountId>,
    ) -> (Session, OutboxReceiver) {
        let access = Access {
            account,
            ..Access::open()
        };
        let (outbox, frames) = Outbox::new(64);
        let session = hub.connect_with(Some(name.to_owned()), access, outbox);
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(frame) = frames.recv().await {
                let frame: serde_json::Value = serde_json::from_slice(&frame.json).expect("json");
                if frame["type"] == "welcome" {
                    return;
                }
            }
        })
        .await
        .expect("the connection's first frames");
        (session, frames)
    }

    /// What was queued so far, less the sidebar (`rooms`), which a signed-in connection gets
    /// from a task of its own at some point after `welcome`.
    fn drain(frames: &OutboxReceiver) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| frames.try_recv())
            .map(|frame| serde_json::from_slice::<serde_json::Value>(&frame.json).expect("json"))
            .filter(|frame| frame["type"] != "rooms")
            .collect()
    }

    fn types(frames: &OutboxReceiver) -> Vec<String> {
        drain(frames)
            .iter()
            .map(|frame| frame["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    const FRAME: &[u8] = br#"{"type":"read","data":{"room":"lobby","id":3}}"#;

    #[tokio::test]
    async fn to_account_reaches_every_connection_of_the_account_but_the_one_excepted() {
        let (hub, ann, bob, _dir) = hub_with_accounts().await;
        let (phone, phone_frames) = connect(&hub, "ann", Some(ann)).await;
        let (_laptop, laptop_frames) = connect(&hub, "ann", Some(ann)).await;
        let (_bob, bob_frames) = connect(&hub, "bob", Some(bob)).await;
        let (_guest, guest_frames) = connect(&hub, "guest", None).await;

        hub.to_account(ann, Bytes::from_static(FRAME), Some(phone.id()))
            .await;

        assert_eq!(types(&laptop_frames), vec!["read"]);
        assert!(types(&phone_frames).is_empty(), "the excepted connection");
        assert!(types(&bob_frames).is_empty(), "another account");
        assert!(types(&guest_frames).is_empty(), "a guest");
    }

    #[tokio::test]
    async fn close_account_closes_every_connection_of_the_account_with_1008() {
        let (hub, ann, bob, _dir) = hub_with_accounts().await;
        let (_phone, phone_frames) = connect(&hub, "ann", Some(ann)).await;
        let (_laptop, laptop_frames) = connect(&hub, "ann", Some(ann)).await;
        let (_bob, bob_frames) = connect(&hub, "bob", Some(bob)).await;

        hub.close_account(ann, AccountClosed::Disabled).await;

        for frames in [&phone_frames, &laptop_frames] {
            let reason = frames.reason();
            assert_eq!(reason, CloseReason::Policy("account disabled"));
            assert_eq!(reason.code(), 1008);
        }
        assert!(!bob_frames.is_closing());
    }

    #[tokio::test]
    async fn a_disconnected_session_leaves_the_account_index() {
        let (hub, ann, _bob, _dir) = hub_with_accounts().await;
        let (phone, _) = connect(&hub, "ann", Some(ann)).await;
        let (_laptop, _) = connect(&hub, "ann", Some(ann)).await;
        assert_eq!(hub.account_connections(ann), 2);
        phone.disconnect().await;
        assert_eq!(hub.account_connections(ann), 1);
    }

    #[tokio::test]
    async fn a_guest_is_not_in_the_account_index() {
        let (hub, _dir) = hub().await;
        let (_guest, _) = connect(&hub, "guest", None).await;
        assert!(hub.inner.accounts.lock().is_empty());
    }

    async fn create_account(hub: &Hub, name: &str) -> AccountId {
        let new = crate::store::accounts::NewAccount {
            name: name.to_owned(),
            name_key: name.to_owned(),
            password_hash: None,
            admin: false,
            created_ms: 0,
        };
        let created = hub.people().accounts.create_account(&new).await;
        created.expect("store").expect("a new name").id
    }

    #[tokio::test]
    async fn the_check_closes_the_connections_of_an_account_disabled_in_the_store() {
        let (hub, _dir) = hub().await;
        let ann = create_account(&hub, "ann").await;
        let bob = create_account(&hub, "bob").await;
        let (_ann, ann_frames) = connect(&hub, "ann", Some(ann)).await;
        let (_bob, bob_frames) = connect(&hub, "bob", Some(bob)).await;

        let accounts = &hub.people().accounts;
        assert!(accounts.set_disabled(ann, true).await.expect("disable"));
        hub.inner.close_disabled().await;

        assert_eq!(ann_frames.reason(), CloseReason::Policy("account disabled"));
        assert!(!bob_frames.is_closing(), "an enabled account stays");
    }

    async fn joined(
        hub: &Hub,
        name: &str,
        account: Option<AccountId>,
    ) -> (Session, OutboxReceiver) {
        let (mut session, frames) = connect(hub, name, account).await;
        session.join(RoomName::lobby(), None, None).await;
        drain(&frames);
        (session, frames)
    }

    #[tokio::test]
    async fn remove_from_room_sends_the_frame_and_the_others_see_the_member_go() {
        let (hub, ann, bob, _dir) = hub_with_accounts().await;
        let (_ann, ann_frames) = joined(&hub, "ann", Some(ann)).await;
        let (_bob, bob_frames) = joined(&hub, "bob", Some(bob)).await;
        drain(&ann_frames);
        let kicked = br#"{"type":"kicked","data":{"room":"lobby","reason":"kicked","by":"bob"}}"#;

        hub.remove_from_room(&RoomName::lobby(), ann, Bytes::from_static(kicked))
            .await;

        assert_eq!(types(&ann_frames), vec!["kicked"]);
        assert_eq!(hub.all_member_names(&RoomName::lobby()).0, vec!["bob"]);
        let left = tokio::time::timeout(Duration::from_secs(5), bob_frames.recv())
            .await
            .expect("bob hears ann go")
            .expect("bob's connection is open");
        let left: serde_json::Value = serde_json::from_slice(&left.json).expect("json");
        assert_eq!(left["type"], "presence");
        assert_eq!(left["data"]["left"], "ann");
    }

    #[tokio::test]
    async fn a_session_removed_from_a_room_cannot_post_there_with_its_next_frame() {
        let (hub, ann_id, _bob, _dir) = hub_with_accounts().await;
        let (mut ann, ann_frames) = joined(&hub, "ann", Some(ann_id)).await;

        hub.remove_from_room(&RoomName::lobby(), ann_id, Bytes::new())
            .await;
        ann.handle(Request {
            frame: ClientFrame::Msg {
                room: Some(RoomName::lobby()),
                text: "still here?".to_owned(),
                reply_to: None,
                attachment: None,
            },
            reference: None,
        })
        .await;

        let answers = drain(&ann_frames);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0]["data"]["code"], "not_member");
        let page = hub
            .history(&RoomName::lobby(), None, 10)
            .await
            .expect("history");
        assert!(page.messages.is_empty(), "nothing was stored");
    }

    #[test]
    fn a_link_hands_over_each_removed_room_once() {
        let link = AccountLink::new();
        assert!(link.take_removed().is_empty());
        link.note_removed(RoomName::lobby());
        assert_eq!(link.take_removed(), vec![RoomName::lobby()]);
        assert!(link.take_removed().is_empty());
    }

    #[test]
    fn the_index_forgets_an_account_with_its_last_connection() {
        let index = AccountIndex::default();
        let (outbox, _frames) = Outbox::new(4);
        index.add(AccountId(1), 10, &outbox);
        index.add(AccountId(1), 11, &outbox);
        assert_eq!(index.connections(AccountId(1)), 2);
        index.remove(AccountId(1), 10);
        assert_eq!(index.connections(AccountId(1)), 1);
        index.remove(AccountId(1), 11);
        assert!(index.lock().is_empty());
    }
}
