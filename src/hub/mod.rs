//! The hub: rooms, membership, per-room ordering and local fan-out. It reaches storage and other
//! nodes only through `dyn Store` and `dyn Broker`, and sees no HTTP, JSON parsing or SQL.
//!
//! Path of one message: a transport calls [`Session::handle`] → [`Hub::post`] → the group-commit
//! `committer` stores a batch → the broadcaster task publishes each message, in id order,
//! through the broker (while the committer already stores the next batch) → every node's hub
//! [`Deliver`]s it: encoded once, queued to each member's `Outbox`, a large room a slice of
//! members at a time → the sender's `ack` follows its own broadcast.
//!
//! A join, leave or rename changes the rooms under their lock in `membership` (the hub's side
//! of the join invariant argued in `member`). Presence (local, large rooms' counts, members on
//! other nodes) is owned by `presence`, whose doc comment says how it reaches members.

mod accounts;
mod attachments;
mod changes;
mod committer;
mod conversations;
mod member;
mod membership;
mod moderation;
mod policy;
mod presence;
mod read_markers;
mod room;
mod session;
mod unread_ledger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::broker::{Broker, ConnId, Deliver, RemoteChange, RoomEvent};
use crate::config::HubSettings;
use crate::metrics::Metrics;
use crate::protocol::{RoomName, ServerFrame};
use crate::store::accounts::AccountId;
use crate::store::{NewMessage, Page, People, Store, StoreError, StoredMessage};
use crate::transport::outbox::{Outbox, Outgoing, Pushed};

pub use moderation::{PostRefusal, Poster};
pub use session::{Access, Session};

use committer::PostJob;
use membership::{Admission, JoinRefusal};
use presence::RemoteMembers;
use room::{FanOut, Room};
use unread_ledger::LedgerEntry;

/// Why a post was not stored. Clients see both as `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The store refused the batch; nothing in it was stored.
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The server is shutting down and takes no new posts.
    #[error("server is shutting down")]
    ShuttingDown,
}

impl PostError {
    /// The text the poster is told: the store's plain-words reason or its fixed message
    /// ([`StoreError::client_message`]), never the driver's text.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Store(err) => err.client_message(),
            Self::ShuttingDown => "server is shutting down",
        }
    }
}

/// Messages replayed on a join without `since`, and so the messages each room keeps in memory.
const JOIN_BACKLOG: usize = 50;

/// One row of the room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// The room's name.
    pub room: String,
    /// Connections in it, on every node of a cluster.
    pub members: usize,
    /// Its newest message id.
    pub last_id: u64,
}

/// Cheap, cloneable handle to the node's hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Every room's members, local and remote, under one lock.
#[derive(Default)]
struct Rooms {
    /// Rooms with members on this node (a room is here exactly while it has one).
    local: HashMap<String, Room>,
    /// Members on other nodes, as the cluster broker reported them (empty on one node).
    remote: RemoteMembers,
}

struct Inner {
    /// This hub, for work a synchronous callback (a control event) hands to a task of its own.
    this: Weak<Inner>,
    rooms: Mutex<Rooms>,
    store: Arc<dyn Store>,
    /// Accounts, the room directory and moderation records (issue 19).
    people: People,
    broker: Arc<dyn Broker>,
    posts: mpsc::Sender<PostJob>,
    settings: HubSettings,
    metrics: Metrics,
    next_conn: AtomicU64,
    /// Whether authorless messages go out marked `"guest": true` (accounts.rs).
    marks_guests: std::sync::atomic::AtomicBool,
    /// This node's signed-in connections by account (accounts.rs).
    accounts: accounts::AccountIndex,
    /// Each room's cached kind, topic, members and roles (policy.rs).
    policies: policy::Policies,
    /// Read markers waiting for their batched write (read_markers.rs).
    read_markers: Arc<read_markers::ReadMarkers>,
    /// When each poster last posted in each slow-mode room here (moderation.rs).
    slow_clock: moderation::SlowClock,
    /// Held from a change's store write to its delivery here (changes.rs), so this node's
    /// changes reach members in their feed order.
    change_order: tokio::sync::Mutex<()>,
    /// Rooms whose policy changed, to the task that reads them again in order (policy.rs).
    reloads: mpsc::UnboundedSender<policy::Reload>,
}

impl Hub {
    /// Builds the hub, registers it with the broker and starts the group-commit task on
    /// `tracker`. The committer drains what is queued and exits once `stop` is cancelled; cancel
    /// it only after every session is gone, so no acked post is lost.
    pub fn new(
        store: Arc<dyn Store>,
        people: People,
        broker: Arc<dyn Broker>,
        settings: HubSettings,
        metrics: Metrics,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Hub {
        let (posts, queue) = mpsc::channel(settings.post_queue.max(1));
        let (reloads, changed_rooms) = mpsc::unbounded_channel();
        let inner = Arc::new_cyclic(|this| Inner {
            this: this.clone(),
            rooms: Mutex::new(Rooms::default()),
            store: store.clone(),
            people,
            broker: broker.clone(),
            posts,
            settings: settings.clone(),
            metrics: metrics.clone(),
            next_conn: AtomicU64::new(1),
            marks_guests: std::sync::atomic::AtomicBool::new(false),
            accounts: accounts::AccountIndex::default(),
            policies: policy::Policies::default(),
            read_markers: Arc::default(),
            slow_clock: moderation::SlowClock::default(),
            change_order: tokio::sync::Mutex::new(()),
            reloads,
        });
        let receiver: Weak<dyn Deliver> = Arc::downgrade(&inner) as Weak<dyn Deliver>;
        broker.register(receiver);
        let (committed, to_broadcast) = mpsc::channel(committer::BROADCAST_QUEUE);
        // The committer closes the store when it stops, so it waits for the read markers' last
        // flush (read_markers.rs).
        let markers_flushed = CancellationToken::new();
        tracker.spawn(read_markers::run(
            inner.read_markers.clone(),
            inner.people.directory.clone(),
            stop.clone(),
            markers_flushed.clone(),
        ));
        tracker.spawn(committer::run(
            queue,
            store,
            committed,
            metrics,
            settings.max_batch,
            markers_flushed,
        ));
        tracker.spawn(committer::broadcast(to_broadcast, broker));
        tracker.spawn(accounts::revalidate(Arc::downgrade(&inner), stop.clone()));
        tracker.spawn(policy::reload(
            Arc::downgrade(&inner),
            changed_rooms,
            stop.clone(),
        ));
        tracker.spawn(presence::ticker(Arc::downgrade(&inner), stop));
        Hub { inner }
    }

    /// The store's people side: accounts, the room directory and moderation records.
    pub fn people(&self) -> &People {
        &self.inner.people
    }

    /// The broker the node delivers through: what the accounts service counts the cluster's
    /// login limits on.
    pub fn broker(&self) -> Arc<dyn Broker> {
        self.inner.broker.clone()
    }

    /// Starts a session for a new connection and queues its `welcome`. `name` must already be
    /// validated; `None` gets a generated guest name.
    #[cfg(test)]
    pub fn connect(&self, name: Option<String>, outbox: Outbox) -> Session {
        self.connect_with(name, Access::open(), outbox)
    }

    /// [`Hub::connect`] for a connection whose rights are limited by `access` (a token's name
    /// and rooms).
    pub fn connect_with(&self, name: Option<String>, access: Access, outbox: Outbox) -> Session {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        Session::new(self.clone(), id, name, access, outbox)
    }

    /// A session that carries out one HTTP request's frame through the same code as a
    /// WebSocket frame (issue 20's change routes), answering into `outbox`; end it with
    /// [`Session::disconnect`].
    pub fn request_session(&self, name: String, access: Access, outbox: Outbox) -> Session {
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        Session::for_request(self.clone(), id, name, access, outbox)
    }

    /// Stores a guest's message and broadcasts it; returns once it is durably committed.
    #[cfg(test)]
    pub async fn post(
        &self,
        room: RoomName,
        from: String,
        text: String,
    ) -> Result<StoredMessage, PostError> {
        self.post_reply(room, from, text, None, None, None).await
    }

    /// Stores a message of the signed-in `author` (`None`: a guest; issue 19: readers are told
    /// which messages a guest posted), as a reply to message `reply_to` of the same room
    /// (issue 20) when given, which the caller checked exists ([`Hub::message_exists`]), with
    /// the `attachment` the caller made ([`Hub::attachment`]), and broadcasts it; returns once
    /// it is durably committed.
    pub async fn post_reply(
        &self,
        room: RoomName,
        from: String,
        text: String,
        author: Option<AccountId>,
        reply_to: Option<u64>,
        attachment: Option<Box<crate::protocol::Attachment>>,
    ) -> Result<StoredMessage, PostError> {
        let (reply, answer) = oneshot::channel();
        let job = PostJob {
            message: NewMessage {
                room,
                from,
                text,
                ts: now_ms(),
                author,
                reply_to,
                attachment,
            },
            reply,
        };
        self.inner
            .posts
            .send(job)
            .await
            .map_err(|_| PostError::ShuttingDown)?;
        answer.await.map_err(|_| PostError::ShuttingDown)?
    }

    /// A page of a room's history, oldest first.
    pub async fn history(
        &self,
        room: &RoomName,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        self.inner.store.before(room, before, limit).await
    }

    /// Every room with messages or members (on any node), sorted by name.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, StoreError> {
        let stored = self.inner.store.rooms().await?;
        let mut counts: HashMap<String, usize> = HashMap::new();
        {
            let rooms = self.lock_rooms();
            let local = rooms.local.iter().map(|(name, room)| (name, room.len()));
            let remote = rooms.remote.counts();
            for (name, members) in local.chain(remote) {
                *counts.entry(name.clone()).or_default() += members;
            }
        }
        let mut list: Vec<RoomInfo> = stored
            .into_iter()
            .map(|summary| RoomInfo {
                members: counts.remove(&summary.room).unwrap_or(0),
                room: summary.room,
                last_id: summary.last_id,
            })
            .collect();
        list.extend(counts.into_iter().map(|(room, members)| RoomInfo {
            room,
            members,
            last_id: 0,
        }));
        list.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(list)
    }

    fn lock_rooms(&self) -> MutexGuard<'_, Rooms> {
        self.inner.lock_rooms()
    }

    fn settings(&self) -> &HubSettings {
        &self.inner.settings
    }

    fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    async fn publish(&self, room: &RoomName, event: RoomEvent) {
        if let Err(err) = self.inner.broker.publish(room.as_str(), event).await {
            warn!(room = %room, cause = %err, "publish failed");
        }
    }
}

impl Inner {
    /// Queues `frames` (one room's share of a commit, or a count) for the room's members, and
    /// notes messages in its recent frames. A room larger than `fan_out_slice` is served a slice
    /// of members at a time, yielding between slices, so that its 19,000 writes do not stop
    /// every other task (readers, joins, the committer storing the next post) for their whole
    /// quarter of a second. Members who join meanwhile are not in the list: they get a message
    /// from their replay (recorded before the list was taken), and a count next tick.
    ///
    /// `messages` are the frames' messages for the room's unread ledger; `None` when this node
    /// counts no unread messages (no accounts yet), which drops the ledger: it would have a gap
    /// if accounts arrived later (see [`Inner::counts_unread`]).
    async fn fan_out_sliced(
        &self,
        room: &str,
        frames: &[Outgoing],
        messages: Option<&[LedgerEntry]>,
    ) {
        let slice = self.settings.fan_out_slice.max(1);
        let members: Vec<ConnId> = {
            let mut rooms = self.lock_rooms();
            let Some(entry) = rooms.local.get_mut(room) else {
                return;
            };
            entry.recent.record(frames, JOIN_BACKLOG);
            entry.unread.record_or_forget(messages);
            if entry.len() <= slice {
                let result = entry.fan_out(frames, None, self.settings.outbox_frames);
                drop(rooms);
                self.count(result);
                return;
            }
            entry.ids()
        };
        for ids in members.chunks(slice) {
            let result = self
                .lock_rooms()
                .local
                .get_mut(room)
                .map(|entry| entry.fan_out_to(ids, frames, self.settings.outbox_frames));
            if let Some(result) = result {
                self.count(result);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Whether this node keeps unread ledgers (hub/unread_ledger.rs): only signed-in joins
    /// count unread messages, so a server without accounts keeps none (it starts keeping them
    /// for rooms seeded after its first account appears).
    fn counts_unread(&self) -> bool {
        self.marks_guests()
    }

    /// Books one fan-out's outcome in the metrics.
    fn count(&self, result: FanOut) {
        self.metrics.messages_out.inc_by(result.delivered);
        self.metrics.slow_consumers.inc_by(result.overflowed);
    }

    fn lock_rooms(&self) -> MutexGuard<'_, Rooms> {
        // A panic while holding this lock leaves plain data behind (no invariant spans two
        // fields), so recovering the guard is safe and keeps the node serving.
        self.rooms
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[async_trait::async_trait]
impl Deliver for Inner {
    /// A room is in the map exactly while it has members on this node.
    fn has_room(&self, room: &str) -> bool {
        self.lock_rooms().local.contains_key(room)
    }

    /// Encodes each message once, then gives every member its room's share of the commit in one
    /// push (one `writev` when its socket keeps up).
    async fn deliver_messages(&self, messages: &[StoredMessage]) {
        let counting = self.counts_unread();
        let mut by_room: Vec<(&str, Vec<Outgoing>, Vec<LedgerEntry>)> = Vec::new();
        for message in messages {
            let view = message.view_marking(self.marks_guests());
            let frame = Outgoing::message(ServerFrame::Msg(view).encode(), message.id);
            let entry = counting.then(|| LedgerEntry::of(message));
            match by_room.iter_mut().find(|(room, ..)| message.room == *room) {
                Some((_, frames, entries)) => {
                    frames.push(frame);
                    entries.extend(entry);
                }
                None => by_room.push((message.room.as_str(), vec![frame], Vec::from_iter(entry))),
            }
        }
        for (room, frames, entries) in by_room {
            let entries = counting.then_some(entries.as_slice());
            self.fan_out_sliced(room, &frames, entries).await;
        }
    }

    fn deliver(&self, room: &str, event: RoomEvent) {
        // The event's messages for the unread ledger: `None` when this node keeps none.
        let mut ledger_entries = Some(Vec::new());
        let (frame, skip) = match &event {
            RoomEvent::Message(message) => {
                ledger_entries = self.counts_unread().then(|| vec![LedgerEntry::of(message)]);
                let view = message.view_marking(self.marks_guests());
                (
                    Outgoing::message(ServerFrame::Msg(view).encode(), message.id),
                    None,
                )
            }
            RoomEvent::Presence {
                origin,
                name,
                joined,
            } => {
                let Some(frame) = self.presence_change(room, name, *joined) else {
                    return;
                };
                (frame, Some(*origin))
            }
            RoomEvent::Typing { origin, name } => {
                let json = ServerFrame::Typing { room, from: name }.encode();
                (Outgoing::control(json), Some(*origin))
            }
        };
        let result = match self.lock_rooms().local.get_mut(room) {
            Some(members) => {
                members
                    .recent
                    .record(std::slice::from_ref(&frame), JOIN_BACKLOG);
                members.unread.record_or_forget(ledger_entries.as_deref());
                members.fan_out(
                    std::slice::from_ref(&frame),
                    skip,
                    self.settings.outbox_frames,
                )
            }
            None => return,
        };
        self.count(result);
    }

    /// See [`Inner::apply_control`] (accounts.rs).
    fn deliver_control(&self, control: &crate::broker::Control) {
        self.apply_control(control);
    }

    /// See [`Inner::apply_remote_changes`] (presence.rs).
    fn remote_presence(&self, changes: &[RemoteChange]) {
        self.apply_remote_changes(changes);
    }

    fn remote_typing(&self, room: &str, name: &str) {
        let json = ServerFrame::Typing { room, from: name }.encode();
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

/// Milliseconds since the Unix epoch, the `ts` of every message.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerError;
    use crate::config::Durability;
    use crate::protocol::RoomName;
    use crate::store::{People, SqliteStore};
    use async_trait::async_trait;
    use std::sync::OnceLock;
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A local broker that lets a batch through only when the test hands out a permit, so a
    /// test can hold a broadcast "in progress" for as long as it likes.
    struct GatedBroker {
        receiver: OnceLock<Weak<dyn Deliver>>,
        gate: Semaphore,
        published: Mutex<Vec<Vec<u64>>>,
    }

    impl GatedBroker {
        fn closed() -> Self {
            Self {
                receiver: OnceLock::new(),
                gate: Semaphore::new(0),
                published: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl Broker for GatedBroker {
        fn register(&self, receiver: Weak<dyn Deliver>) {
            let _ = self.receiver.set(receiver);
        }

        async fn publish(&self, room: &str, event: RoomEvent) -> Result<(), BrokerError> {
            if let Some(receiver) = self.receiver.get().and_then(Weak::upgrade) {
                receiver.deliver(room, event);
            }
            Ok(())
        }

        async fn publish_control(
            &self,
            control: crate::broker::Control,
        ) -> Result<(), BrokerError> {
            if let Some(receiver) = self.receiver.get().and_then(Weak::upgrade) {
                receiver.deliver_control(&control);
            }
            Ok(())
        }

        async fn publish_messages(&self, messages: &[StoredMessage]) -> Result<(), BrokerError> {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|_| BrokerError::NoReceiver)?;
            permit.forget();
            let ids = messages.iter().map(|m| m.id).collect();
            self.published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ids);
            Ok(())
        }
    }

    async fn hub_with(broker: Arc<GatedBroker>) -> (Hub, Arc<dyn Store>, tempfile::TempDir) {
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
            store.clone(),
            People::sqlite_in(dir.path()).await,
            broker,
            HubSettings::default(),
            Metrics::new(),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        (hub, store, dir)
    }

    fn spawn_post(
        hub: &Hub,
        text: &str,
    ) -> tokio::task::JoinHandle<Result<StoredMessage, PostError>> {
        let (hub, text) = (hub.clone(), text.to_owned());
        tokio::spawn(async move { hub.post(RoomName::lobby(), "a".into(), text).await })
    }

    async fn stored_up_to(store: &dyn Store, id: u64) {
        for _ in 0..500 {
            if store.last_id(&RoomName::lobby()).await.expect("last_id") >= id {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("message {id} was never stored");
    }

    #[tokio::test]
    async fn a_post_is_stored_while_the_previous_broadcast_is_still_going_out() {
        let broker = Arc::new(GatedBroker::closed());
        let (hub, store, _dir) = hub_with(broker.clone()).await;
        let first = spawn_post(&hub, "one");
        stored_up_to(store.as_ref(), 1).await;
        let second = spawn_post(&hub, "two");
        // The first broadcast is held at the gate, and the second post is committed anyway.
        stored_up_to(store.as_ref(), 2).await;
        assert!(!first.is_finished(), "acked before its broadcast");
        broker.gate.add_permits(2);
        assert_eq!(first.await.expect("join").expect("post").id, 1);
        assert_eq!(second.await.expect("join").expect("post").id, 2);
        // What was committed during the held broadcast left in the next one, in id order.
        let published = broker.published.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(published.concat(), vec![1, 2]);
    }
}
