//! Cluster presence: who is in which room on every node, kept in Redis with heartbeats and
//! expiry, and typing between nodes. Owned by the [`RedisBroker`](super::RedisBroker); the
//! single-node path never reaches this module.
//!
//! **What each node keeps in Redis.** One hash per node, `{channel}:presence:{node_id}`: one
//! field per membership (`ROOM/CONN` → display name; room names cannot contain `/`) and the
//! field `#` holding `INCARNATION SEQ`. The incarnation is a random number drawn at each start;
//! the sequence number counts this incarnation's writes. A sorted set
//! `{channel}:presence:nodes` lists the node ids (score: the last write, Unix ms) so that a
//! node can find every other node's hash.
//!
//! **Writing.** The hub reports every local join, leave and rename (`Broker::member_changed`);
//! [`LocalPresence`] keeps the node's whole membership plus what changed since the last write.
//! The writer task writes the changes in one `MULTI`/`EXEC`: `HSET`/`HDEL` of the fields, the
//! new `#` (seq + 1), `PEXPIRE` of the hash, `ZADD` of the node, and a `PUBLISH` on the broker's
//! channel of an announcement `{incarnation, seq, kind: "changes", changes}`. Changes that pile
//! up while a write is in flight leave together in the next one, so a burst of joins costs a
//! handful of transactions, not one per join. Every heartbeat
//! (`HubSettings::presence_heartbeat`, 5 s) the writer refreshes the hash's TTL
//! (`presence_expiry`, 15 s) and publishes a `beat` carrying `(incarnation, seq)`, so a node
//! that missed an announcement notices the gap without waiting for the next change. After any failed write, after a beat that finds the hash gone (Redis
//! restarted and lost it), and at start, the writer rewrites the whole hash (`DEL`, then every
//! field: this is also what removes a previous incarnation's members after a restart with the
//! same node id) and publishes a `full` announcement. A graceful stop deletes the hash and
//! publishes `gone`.
//!
//! **Mirroring.** Every node mirrors every other node as node → (incarnation, seq, last heard,
//! members) in one task ([`Mirror`], no lock). An announcement with the next seq of the known
//! incarnation is applied as it is; one that does not fit (a seq gap, a `full`, a new
//! incarnation, an unknown node) makes the task re-read that node's hash (`HGETALL`, which is
//! atomic with the writer's transactions, so the fields and the seq agree), and announcements
//! at or below the seq read are then ignored. Whatever changed in the mirror is handed to the
//! hub as [`RemoteChange`]s (diffs: a member that is in both the old and new view with the same
//! name is not announced again), which keeps the remote members per room next to the local ones
//! and announces them. Payloads queue in the task's channel while it reads, so nothing
//! published during a read is lost; a payload dropped because the channel was full shows up as
//! a gap and is repaired by a re-read.
//!
//! **(Re)subscription and expiry.** The subscriber tells this task when the subscription is up;
//! the task then snapshots every node listed in the sorted set (payloads arriving meanwhile
//! wait in the channel). A node's age is taken from its hash's remaining TTL, so a node that
//! died just before this one started is still dropped within one expiry. A node not heard from
//! (announcement or beat) for `presence_expiry` while this node's own subscription is up is
//! dead: its members are removed and their departure announced, and this node publishes `gone`
//! on the dead node's behalf so that every node drops it at once (members then see the same
//! room on every node, not for a moment a ghost on the node whose check comes later; a node
//! found dead by mistake makes everyone re-read it at its next beat). While the subscription
//! is down nothing is expired (silence then says nothing about the others), and after it is
//! back every node gets a fresh expiry period before the snapshot's verdict.
//!
//! **Typing** is published as a small `T` payload and handed to the hub on the other nodes; it
//! is best effort (dropped when Redis is unreachable or the queue is full) and never stored.
//!
//! Payloads on the shared channel: message batches start with the node id (digits) and are
//! decoded as before; presence payloads start with `P`, typing with `T`, then the node id, a
//! newline and JSON. The first byte tells them apart, so the message path pays one comparison.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{ConnId, Deliver, RemoteChange, RemoteMember};
use crate::protocol::RoomName;

/// The hash field holding `INCARNATION SEQ`.
const META: &str = "#";
/// Typing payloads queued for the writer before more are dropped.
const TYPING_QUEUE: usize = 256;
/// Presence and typing payloads queued for the mirror task before more are dropped.
pub(crate) const MIRROR_QUEUE: usize = 4096;
/// Longest interval between two expiry checks (with the default 15 s expiry: every 500 ms).
const CHECK_MAX: Duration = Duration::from_millis(500);
/// How long connecting (and each command) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// First byte of a presence payload.
pub(crate) const PRESENCE_TAG: u8 = b'P';
/// First byte of a typing payload.
pub(crate) const TYPING_TAG: u8 = b'T';

/// How often a node proves it is alive, and how long the others wait before they drop it.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTiming {
    /// Interval of the writer's heartbeat.
    pub heartbeat: Duration,
    /// Silence after which a node counts as dead; also the TTL of its hash.
    pub expiry: Duration,
}

/// The keys of one cluster (one channel).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    channel: String,
}

impl Keys {
    pub(crate) fn new(channel: &str) -> Self {
        Self {
            channel: channel.to_owned(),
        }
    }

    fn node(&self, node: u64) -> String {
        format!("{}:presence:{node}", self.channel)
    }

    fn nodes(&self) -> String {
        format!("{}:presence:nodes", self.channel)
    }
}

/// What an announcement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// `changes` are the difference from `seq - 1`.
    Changes,
    /// The hash was rewritten whole: re-read it.
    Full,
    /// Nothing changed; the node is alive at `seq`.
    Beat,
    /// The node stopped; its hash is deleted.
    Gone,
}

/// One membership changed on the announcing node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Change {
    /// The room.
    pub room: String,
    /// The connection on the announcing node.
    pub conn: ConnId,
    /// Its name now; `None`: it left.
    pub name: Option<String>,
}

/// A node's presence payload on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Announcement {
    /// The announcing process's incarnation.
    pub incarnation: u64,
    /// Its write count after this write.
    pub seq: u64,
    /// What kind of announcement.
    pub kind: Kind,
    /// For [`Kind::Changes`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// A typing payload on the channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Typing {
    /// The room.
    pub room: String,
    /// Who types.
    pub name: String,
}

/// A presence or typing payload from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Presence of the node.
    Presence(u64, Announcement),
    /// Someone types on the node.
    Typing(u64, Typing),
}

/// `TAG NODE_ID \n JSON`.
fn encode_tagged<T: Serialize>(tag: u8, node: u64, body: &T) -> Vec<u8> {
    let mut payload = vec![tag];
    payload.extend_from_slice(format!("{node}\n").as_bytes());
    // Serialising plain strings and integers into a Vec cannot fail.
    if let Err(err) = serde_json::to_writer(&mut payload, body) {
        warn!(cause = %err, "could not encode a presence payload");
    }
    payload
}

/// Reads a payload starting with [`PRESENCE_TAG`] or [`TYPING_TAG`]: `Ok(None)` for this node's
/// own. Room names are checked like everything else from outside the process.
pub(crate) fn decode_signal(own: u64, payload: &[u8]) -> Result<Option<Signal>, String> {
    let (&tag, rest) = payload.split_first().ok_or("empty payload")?;
    let newline = rest.iter().position(|b| *b == b'\n').ok_or("no node id")?;
    let node = std::str::from_utf8(&rest[..newline])
        .ok()
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or("bad node id")?;
    if node == own {
        return Ok(None);
    }
    let body = &rest[newline + 1..];
    let signal = match tag {
        PRESENCE_TAG => {
            let announcement: Announcement =
                serde_json::from_slice(body).map_err(|err| err.to_string())?;
            if let Some(bad) = announcement
                .changes
                .iter()
                .find(|c| RoomName::parse(&c.room).is_err())
            {
                return Err(format!("bad room name {:?}", bad.room));
            }
            Signal::Presence(node, announcement)
        }
        TYPING_TAG => {
            let typing: Typing = serde_json::from_slice(body).map_err(|err| err.to_string())?;
            RoomName::parse(&typing.room)
                .map_err(|_| format!("bad room name {:?}", typing.room))?;
            Signal::Typing(node, typing)
        }
        _ => return Err("unknown payload tag".to_owned()),
    };
    Ok(Some(signal))
}

/// The incarnation in a presence payload that carries this node's id but is not this process's
/// own: another live process was started with the same `--node-id`. Such a pair skips each
/// other's message batches (a node skips payloads with its own id) and overwrites each other's
/// presence, so the operator must hear of it. `gone` is not evidence: another node announces it
/// on behalf of a dead one, also of a previous incarnation of this node.
pub(crate) fn duplicate_incarnation(payload: &[u8], own_incarnation: u64) -> Option<u64> {
    let (&PRESENCE_TAG, rest) = payload.split_first()? else {
        return None;
    };
    let newline = rest.iter().position(|b| *b == b'\n')?;
    let announcement: Announcement = serde_json::from_slice(&rest[newline + 1..]).ok()?;
    (announcement.kind != Kind::Gone && announcement.incarnation != own_incarnation)
        .then_some(announcement.incarnation)
}

/// A membership on one node: room and connection.
type MemberKey = (String, ConnId);

/// The hash field of a membership.
fn field(room: &str, conn: ConnId) -> String {
    format!("{room}/{conn}")
}

/// This node's membership and what changed since the last write.
#[derive(Default)]
struct Pending {
    members: HashMap<MemberKey, String>,
    dirty: HashMap<MemberKey, Option<String>>,
}

/// This node's side of presence: the hub's changes are recorded here (never waiting) and the
/// writer task takes them to Redis.
pub(crate) struct LocalPresence {
    node_id: u64,
    pending: Mutex<Pending>,
    wake: Notify,
    typing: mpsc::Sender<Vec<u8>>,
}

impl LocalPresence {
    /// The shared state and the receiving end of the typing queue (for the writer).
    pub(crate) fn new(node_id: u64) -> (Arc<Self>, mpsc::Receiver<Vec<u8>>) {
        let (typing, typing_rx) = mpsc::channel(TYPING_QUEUE);
        let local = Arc::new(Self {
            node_id,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            typing,
        });
        (local, typing_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain maps: a panic while holding the lock leaves nothing half-done that matters.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A member joined `room` or changed its name (`Some`), or left (`None`).
    pub(crate) fn changed(&self, room: &str, conn: ConnId, name: Option<&str>) {
        {
            let mut pending = self.lock();
            let key = (room.to_owned(), conn);
            match name {
                Some(name) => pending.members.insert(key.clone(), name.to_owned()),
                None => pending.members.remove(&key),
            };
            pending.dirty.insert(key, name.map(str::to_owned));
        }
        self.wake.notify_one();
    }

    /// Queues a typing signal for the other nodes; dropped if the queue is full.
    pub(crate) fn typing(&self, room: &str, name: &str) {
        let typing = Typing {
            room: room.to_owned(),
            name: name.to_owned(),
        };
        let payload = encode_tagged(TYPING_TAG, self.node_id, &typing);
        if self.typing.try_send(payload).is_err() {
            debug!(room, "typing not sent to other nodes: queue full");
        }
    }

    /// What changed since the last take.
    fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut self.lock().dirty)
            .into_iter()
            .map(|((room, conn), name)| Change { room, conn, name })
            .collect()
    }

    /// The whole membership (and forgets what changed: the whole is written).
    fn take_all(&self) -> Vec<(String, String)> {
        let mut pending = self.lock();
        pending.dirty.clear();
        pending
            .members
            .iter()
            .map(|((room, conn), name)| (field(room, *conn), name.clone()))
            .collect()
    }
}

/// A multiplexed connection with timeouts, made if there is none.
async fn connection<'a>(
    client: &redis::Client,
    slot: &'a mut Option<MultiplexedConnection>,
) -> redis::RedisResult<&'a mut MultiplexedConnection> {
    match slot {
        Some(conn) => Ok(conn),
        None => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT));
            let conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            Ok(slot.insert(conn))
        }
    }
}

/// Milliseconds since the Unix epoch (the sorted set's scores).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes this node's presence to Redis (see the module doc).
pub(crate) struct Writer {
    /// The Redis client.
    pub client: redis::Client,
    /// The broker's channel (announcements go there too).
    pub channel: String,
    /// This node.
    pub node_id: u64,
    /// This process's incarnation.
    pub incarnation: u64,
    /// Heartbeat and TTL.
    pub timing: PresenceTiming,
    /// What the hub reported.
    pub local: Arc<LocalPresence>,
}

/// What the next write must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// The whole hash (start, after a failure, after the hash vanished).
    Full,
    /// Only what changed (or a beat).
    Changes,
}

impl Writer {
    /// Writes until `stop`, then says goodbye.
    pub(crate) async fn run(self, mut typing: mpsc::Receiver<Vec<u8>>, stop: CancellationToken) {
        let keys = Keys::new(&self.channel);
        let mut conn = None;
        let mut seq = 0u64;
        let mut due = Due::Full;
        let mut backoff = super::redis::Backoff::default();
        let mut retry_at: Option<Instant> = None;
        let mut beat = tokio::time::interval(self.timing.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let beat_due = tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.goodbye(&keys, &mut conn, seq + 1).await;
                    return;
                }
                _ = beat.tick() => true,
                () = self.local.wake.notified() => false,
                () = super::redis::sleep_until(retry_at) => false,
                Some(payload) = typing.recv() => {
                    if due == Due::Changes {
                        self.send_typing(&mut conn, payload).await;
                    }
                    continue;
                }
            };
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            match self.write(&keys, &mut conn, &mut seq, due, beat_due).await {
                Ok(()) => {
                    if backoff.attempt > 0 {
                        info!("presence written to redis again");
                    }
                    due = Due::Changes;
                    backoff = Default::default();
                    retry_at = None;
                }
                Err(err) => {
                    conn = None;
                    due = Due::Full;
                    let delay = backoff.next();
                    if backoff.loud() {
                        warn!(cause = %err, retry_in_ms = delay.as_millis() as u64,
                            "presence not written to redis; other nodes keep the last state they saw");
                    }
                    retry_at = Some(Instant::now() + delay);
                }
            }
        }
    }

    /// One write: the whole hash, the changes, or a beat; a change or beat that finds the hash
    /// gone (Redis lost it) is followed at once by a whole rewrite.
    async fn write(
        &self,
        keys: &Keys,
        conn: &mut Option<MultiplexedConnection>,
        seq: &mut u64,
        due: Due,
        beat_due: bool,
    ) -> redis::RedisResult<()> {
        let conn = connection(&self.client, conn).await?;
        if due == Due::Changes {
            let changes = self.local.take_changes();
            let alive = if !changes.is_empty() {
                self.write_changes(keys, conn, seq, changes).await?
            } else if beat_due {
                self.beat(keys, conn, *seq).await?
            } else {
                true
            };
            if alive {
                return Ok(());
            }
            info!("presence hash missing in redis (restarted?): writing it whole");
        }
        self.write_all(keys, conn, seq).await
    }

    /// Adds `#`, the TTL, the node's entry and the announcement to a transaction.
    fn finish(&self, pipe: &mut redis::Pipeline, keys: &Keys, seq: u64, announcement: &[u8]) {
        let key = keys.node(self.node_id);
        pipe.cmd("HSET")
            .arg(&key)
            .arg(META)
            .arg(format!("{} {seq}", self.incarnation))
            .ignore();
        self.refresh(pipe, keys, announcement);
    }

    /// `PEXPIRE` of the hash, `ZADD` of the node and the announcement.
    fn refresh(&self, pipe: &mut redis::Pipeline, keys: &Keys, announcement: &[u8]) {
        let key = keys.node(self.node_id);
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(self.timing.expiry.as_millis() as u64)
            .ignore();
        pipe.cmd("ZADD")
            .arg(keys.nodes())
            .arg(now_ms())
            .arg(self.node_id)
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(&self.channel)
            .arg(announcement)
            .ignore();
    }

    fn announcement(&self, seq: u64, kind: Kind, changes: Vec<Change>) -> Vec<u8> {
        let announcement = Announcement {
            incarnation: self.incarnation,
            seq,
            kind,
            changes,
        };
        encode_tagged(PRESENCE_TAG, self.node_id, &announcement)
    }

    /// Writes what changed; returns whether the hash was there before (else it holds only the
    /// changes now, and must be rewritten whole).
    async fn write_changes(
        &self,
        keys: &Keys,
        conn: &mut MultiplexedConnection,
        seq: &mut u64,
        changes: Vec<Change>,
    ) -> redis::RedisResult<bool> {
        *seq += 1;
        let key = keys.node(self.node_id);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("EXISTS").arg(&key);
        let (joins, leaves): (Vec<&Change>, Vec<&Change>) =
            changes.iter().partition(|c| c.name.is_some());
        if !joins.is_empty() {
            pipe.cmd("HSET").arg(&key);
            for change in joins {
                pipe.arg(field(&change.room, change.conn))
                    .arg(change.name.as_deref());
            }
            pipe.ignore();
        }
        if !leaves.is_empty() {
            pipe.cmd("HDEL").arg(&key);
            for change in leaves {
                pipe.arg(field(&change.room, change.conn));
            }
            pipe.ignore();
        }
        let announcement = self.announcement(*seq, Kind::Changes, changes);
        self.finish(&mut pipe, keys, *seq, &announcement);
        let (existed,): (bool,) = pipe.query_async(conn).await?;
        Ok(existed)
    }

    /// Refreshes the TTL and says "alive at `seq`"; returns whether the hash was still there.
    async fn beat(
        &self,
        keys: &Keys,
        conn: &mut MultiplexedConnection,
        seq: u64,
    ) -> redis::RedisResult<bool> {
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("EXISTS").arg(keys.node(self.node_id));
        let announcement = self.announcement(seq, Kind::Beat, Vec::new());
        self.refresh(&mut pipe, keys, &announcement);
        let (existed,): (bool,) = pipe.query_async(conn).await?;
        Ok(existed)
    }

    /// Replaces the hash with the whole membership (a previous incarnation's fields go).
    async fn write_all(
        &self,
        keys: &Keys,
        conn: &mut MultiplexedConnection,
        seq: &mut u64,
    ) -> redis::RedisResult<()> {
        let members = self.local.take_all();
        *seq += 1;
        let key = keys.node(self.node_id);
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore();
        if !members.is_empty() {
            pipe.cmd("HSET").arg(&key);
            for (field, name) in &members {
                pipe.arg(field).arg(name);
            }
            pipe.ignore();
        }
        let announcement = self.announcement(*seq, Kind::Full, Vec::new());
        self.finish(&mut pipe, keys, *seq, &announcement);
        pipe.query_async::<()>(conn).await?;
        debug!(
            members = members.len(),
            seq = *seq,
            "presence written whole"
        );
        Ok(())
    }

    /// A graceful stop: the hash goes and the others drop this node's members at once.
    async fn goodbye(&self, keys: &Keys, conn: &mut Option<MultiplexedConnection>, seq: u64) {
        let result = async {
            let conn = connection(&self.client, conn).await?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("DEL")
                .arg(keys.node(self.node_id))
                .ignore()
                .cmd("ZREM")
                .arg(keys.nodes())
                .arg(self.node_id)
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(self.announcement(seq, Kind::Gone, Vec::new()))
                .ignore();
            pipe.query_async::<()>(conn).await
        }
        .await;
        if let Err(err) = result {
            info!(cause = %err, "presence goodbye not sent: other nodes drop this one at expiry");
        }
    }

    /// Best effort: a typing signal while Redis is unreachable is simply lost.
    async fn send_typing(&self, conn: &mut Option<MultiplexedConnection>, payload: Vec<u8>) {
        let Some(conn) = conn else {
            return;
        };
        let result = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(payload)
            .query_async::<i64>(conn)
            .await;
        if let Err(err) = result {
            debug!(cause = %err, "typing not sent to other nodes");
        }
    }
}

/// A node's presence as read from its hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeState {
    /// Its incarnation.
    pub incarnation: u64,
    /// Its write count the members are as of.
    pub seq: u64,
    /// Room and connection → name.
    pub members: HashMap<MemberKey, String>,
}

/// Reads a node's hash; `None` if it has no `#` (gone, or not written yet).
pub(crate) fn parse_state(hash: HashMap<String, String>) -> Option<NodeState> {
    let meta = hash.get(META)?;
    let (incarnation, seq) = meta.split_once(' ')?;
    let mut state = NodeState {
        incarnation: incarnation.parse().ok()?,
        seq: seq.parse().ok()?,
        members: HashMap::with_capacity(hash.len().saturating_sub(1)),
    };
    for (field, name) in hash {
        if field == META {
            continue;
        }
        let parsed = field.split_once('/').and_then(|(room, conn)| {
            RoomName::parse(room).ok()?;
            Some((room.to_owned(), conn.parse::<ConnId>().ok()?))
        });
        match parsed {
            Some(key) => {
                state.members.insert(key, name);
            }
            None => debug!(%field, "unreadable presence field skipped"),
        }
    }
    Some(state)
}

/// What the mirror makes of an announcement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Applied: these changes for the hub (maybe none).
    Changes(Vec<RemoteChange>),
    /// Does not fit what is known: re-read the node's hash.
    Reread,
}

/// One other node as this node last saw it.
#[derive(Debug)]
struct NodeView {
    state: NodeState,
    last_heard: Instant,
}

/// Every other node's presence (see the module doc). Pure state; the task around it does I/O.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    nodes: HashMap<u64, NodeView>,
}

fn joined(node: u64, (room, conn): &MemberKey, name: &str, joined: bool) -> RemoteChange {
    RemoteChange {
        room: room.clone(),
        member: RemoteMember { node, conn: *conn },
        name: name.to_owned(),
        joined,
    }
}

impl Mirror {
    /// Applies an announcement from `node` heard at `now`, or asks for a re-read.
    pub(crate) fn on_announcement(
        &mut self,
        node: u64,
        announcement: Announcement,
        now: Instant,
    ) -> Step {
        let Some(view) = self.nodes.get_mut(&node) else {
            return match announcement.kind {
                Kind::Gone => Step::Changes(Vec::new()),
                _ => Step::Reread,
            };
        };
        if view.state.incarnation != announcement.incarnation {
            return Step::Reread;
        }
        view.last_heard = now;
        let known = view.state.seq;
        match announcement.kind {
            Kind::Gone => Step::Changes(self.remove(node)),
            Kind::Changes if announcement.seq == known + 1 => {
                view.state.seq = announcement.seq;
                let mut changes = Vec::new();
                for change in announcement.changes {
                    apply(node, &mut view.state.members, change, &mut changes);
                }
                Step::Changes(changes)
            }
            _ if announcement.seq <= known => Step::Changes(Vec::new()),
            _ => Step::Reread,
        }
    }

    /// Takes a node's state as read from Redis; returns the differences from what was known.
    pub(crate) fn replace(
        &mut self,
        node: u64,
        state: NodeState,
        last_heard: Instant,
    ) -> Vec<RemoteChange> {
        let old = self
            .nodes
            .remove(&node)
            .map(|view| view.state.members)
            .unwrap_or_default();
        let mut changes = Vec::new();
        for (key, name) in &old {
            if state.members.get(key) != Some(name) {
                changes.push(joined(node, key, name, false));
            }
        }
        for (key, name) in &state.members {
            if old.get(key) != Some(name) {
                changes.push(joined(node, key, name, true));
            }
        }
        self.nodes.insert(node, NodeView { state, last_heard });
        changes
    }

    /// Drops a node; its members leave.
    pub(crate) fn remove(&mut self, node: u64) -> Vec<RemoteChange> {
        self.nodes
            .remove(&node)
            .map(|view| {
                view.state
                    .members
                    .iter()
                    .map(|(key, name)| joined(node, key, name, false))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops every node not heard from for longer than `expiry`; returns the dropped nodes
    /// (id and incarnation) and who left with them.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        expiry: Duration,
    ) -> (Vec<(u64, u64)>, Vec<RemoteChange>) {
        let dead: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .filter(|(_, view)| now.saturating_duration_since(view.last_heard) > expiry)
            .map(|(node, view)| (*node, view.state.incarnation))
            .collect();
        let changes = dead
            .iter()
            .flat_map(|(node, _)| self.remove(*node))
            .collect();
        (dead, changes)
    }

    /// Counts every node as heard at `now` (after this node's own subscription came back).
    pub(crate) fn touch_all(&mut self, now: Instant) {
        for view in self.nodes.values_mut() {
            view.last_heard = now;
        }
    }

    /// The state known for `node`.
    #[cfg(test)]
    fn state(&self, node: u64) -> Option<&NodeState> {
        self.nodes.get(&node).map(|view| &view.state)
    }
}

/// Applies one change to a node's members, noting what the hub must hear.
fn apply(
    node: u64,
    members: &mut HashMap<MemberKey, String>,
    change: Change,
    out: &mut Vec<RemoteChange>,
) {
    let key = (change.room, change.conn);
    match change.name {
        Some(name) => {
            let previous = members.insert(key.clone(), name.clone());
            if previous.as_ref() == Some(&name) {
                return;
            }
            if let Some(previous) = previous {
                out.push(joined(node, &key, &previous, false));
            }
            out.push(joined(node, &key, &name, true));
        }
        None => {
            if let Some(previous) = members.remove(&key) {
                out.push(joined(node, &key, &previous, false));
            }
        }
    }
}

/// What the subscriber hands the mirror task.
#[derive(Debug)]
pub(crate) enum MirrorInput {
    /// The subscription is (again) up: snapshot every node.
    Subscribed,
    /// The subscription is down: stop expiring.
    Lost,
    /// A payload from another node.
    Signal(Signal),
}

/// What the mirror task keeps between inputs.
#[derive(Default)]
struct MirrorState {
    mirror: Mirror,
    /// For re-reads, snapshots and burials.
    conn: Option<MultiplexedConnection>,
    /// Whether this node's own subscription is up (only then is silence a sign of death).
    subscribed: bool,
}

/// The task that keeps the [`Mirror`] and tells the hub (see the module doc).
pub(crate) struct MirrorTask {
    /// The Redis client (re-reads and snapshots).
    pub client: redis::Client,
    /// The broker's channel (the keys derive from it).
    pub channel: String,
    /// This node (skipped in snapshots).
    pub own: u64,
    /// Expiry.
    pub timing: PresenceTiming,
    /// The hub.
    pub receiver: Arc<OnceLock<Weak<dyn Deliver>>>,
}

impl MirrorTask {
    /// Runs until `stop`.
    pub(crate) async fn run(
        self,
        mut inputs: mpsc::Receiver<MirrorInput>,
        stop: CancellationToken,
    ) {
        let keys = Keys::new(&self.channel);
        let mut state = MirrorState::default();
        let every = (self.timing.expiry / 30).clamp(Duration::from_millis(50), CHECK_MAX);
        let mut check = tokio::time::interval(every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                // Before the inputs, so that a steady stream of them cannot starve it.
                _ = check.tick(), if state.subscribed => {
                    // What has already arrived counts before anyone is found silent: a node
                    // whose beat waits in the queue is not dead.
                    for _ in 0..inputs.len() {
                        match inputs.try_recv() {
                            Ok(input) => self.handle(&keys, &mut state, input).await,
                            Err(_) => break,
                        }
                    }
                    if state.subscribed {
                        self.expire(&mut state).await;
                    }
                }
                input = inputs.recv() => match input {
                    None => return,
                    Some(input) => self.handle(&keys, &mut state, input).await,
                },
            }
        }
    }

    async fn handle(&self, keys: &Keys, state: &mut MirrorState, input: MirrorInput) {
        match input {
            MirrorInput::Subscribed => {
                state.subscribed = true;
                state.mirror.touch_all(Instant::now());
                self.snapshot(keys, &mut state.conn, &mut state.mirror)
                    .await;
            }
            MirrorInput::Lost => {
                state.subscribed = false;
                // Most likely Redis itself went: the snapshot after the resubscription must
                // not try the old connection first.
                state.conn = None;
            }
            MirrorInput::Signal(Signal::Presence(node, announcement)) => {
                self.announced(keys, &mut state.conn, &mut state.mirror, node, announcement)
                    .await;
            }
            MirrorInput::Signal(Signal::Typing(_, typing)) => {
                if let Some(receiver) = self.receiver() {
                    receiver.remote_typing(&typing.room, &typing.name);
                }
            }
        }
    }

    /// Drops the nodes not heard from for too long, tells the others, then the hub.
    async fn expire(&self, state: &mut MirrorState) {
        let (dead, changes) = state.mirror.expire(Instant::now(), self.timing.expiry);
        if dead.is_empty() {
            return;
        }
        info!(
            ?dead,
            members = changes.len(),
            "nodes not heard from: their members leave"
        );
        for (node, incarnation) in dead {
            self.bury(&mut state.conn, node, incarnation).await;
        }
        self.tell(&changes);
    }

    /// Announces `gone` on behalf of a node this one found dead, so every node drops it now
    /// rather than at its own next check: members see the same room on every node. Were the
    /// node alive after all, its next beat makes everyone re-read it (best effort).
    async fn bury(&self, conn: &mut Option<MultiplexedConnection>, node: u64, incarnation: u64) {
        let announcement = Announcement {
            incarnation,
            seq: 0,
            kind: Kind::Gone,
            changes: Vec::new(),
        };
        let payload = encode_tagged(PRESENCE_TAG, node, &announcement);
        let result = match connection(&self.client, conn).await {
            Ok(c) => {
                redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(payload)
                    .query_async::<i64>(c)
                    .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            *conn = None;
            debug!(node, cause = %err, "could not announce a dead node; the others find it themselves");
        }
    }

    fn receiver(&self) -> Option<Arc<dyn Deliver>> {
        self.receiver.get().and_then(Weak::upgrade)
    }

    fn tell(&self, changes: &[RemoteChange]) {
        if changes.is_empty() {
            return;
        }
        if let Some(receiver) = self.receiver() {
            receiver.remote_presence(changes);
        }
    }

    async fn announced(
        &self,
        keys: &Keys,
        conn: &mut Option<MultiplexedConnection>,
        mirror: &mut Mirror,
        node: u64,
        announcement: Announcement,
    ) {
        match mirror.on_announcement(node, announcement, Instant::now()) {
            Step::Changes(changes) => self.tell(&changes),
            Step::Reread => match self.read_node(keys, conn, node).await {
                Ok(Some(state)) => self.tell(&mirror.replace(node, state, Instant::now())),
                // Not written (yet), or gone: a live node's next write shows up; a dead one
                // expires.
                Ok(None) => debug!(node, "presence hash not found on re-read"),
                Err(err) => {
                    *conn = None;
                    warn!(node, cause = %err, "could not re-read a node's presence; retried at its next announcement");
                }
            },
        }
    }

    async fn read_node(
        &self,
        keys: &Keys,
        conn: &mut Option<MultiplexedConnection>,
        node: u64,
    ) -> redis::RedisResult<Option<NodeState>> {
        let conn = connection(&self.client, conn).await?;
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.node(node))
            .query_async(conn)
            .await?;
        Ok(parse_state(hash))
    }

    /// Reads every listed node's hash; a node whose hash has expired is unlisted. Nodes known
    /// but not found keep their members until they expire.
    async fn snapshot(
        &self,
        keys: &Keys,
        conn: &mut Option<MultiplexedConnection>,
        mirror: &mut Mirror,
    ) {
        match self.read_all(keys, conn).await {
            Ok(states) => {
                let now = Instant::now();
                let mut changes = Vec::new();
                for (node, state, age) in states {
                    let heard = now.checked_sub(age).unwrap_or(now);
                    changes.extend(mirror.replace(node, state, heard));
                }
                debug!(changes = changes.len(), "presence snapshot taken");
                self.tell(&changes);
            }
            Err(err) => {
                *conn = None;
                warn!(cause = %err, "presence snapshot failed; nodes are re-read as they announce");
            }
        }
    }

    async fn read_all(
        &self,
        keys: &Keys,
        conn: &mut Option<MultiplexedConnection>,
    ) -> redis::RedisResult<Vec<(u64, NodeState, Duration)>> {
        let conn = connection(&self.client, conn).await?;
        let listed: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.nodes())
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await?;
        let mut states = Vec::new();
        for node in listed.iter().filter_map(|id| id.parse::<u64>().ok()) {
            if node == self.own {
                continue;
            }
            let key = keys.node(node);
            let (hash, ttl_ms): (HashMap<String, String>, i64) = redis::pipe()
                .atomic()
                .cmd("HGETALL")
                .arg(&key)
                .cmd("PTTL")
                .arg(&key)
                .query_async(conn)
                .await?;
            match parse_state(hash) {
                Some(state) => {
                    // The TTL is reset at every write: what is gone of it is the time since.
                    let left = Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0));
                    states.push((node, state, self.timing.expiry.saturating_sub(left)));
                }
                None => {
                    redis::cmd("ZREM")
                        .arg(keys.nodes())
                        .arg(node)
                        .query_async::<i64>(conn)
                        .await?;
                }
            }
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(room: &str, conn: ConnId, name: Option<&str>) -> Change {
        Change {
            room: room.into(),
            conn,
            name: name.map(str::to_owned),
        }
    }

    fn announce(incarnation: u64, seq: u64, kind: Kind, changes: Vec<Change>) -> Announcement {
        Announcement {
            incarnation,
            seq,
            kind,
            changes,
        }
    }

    fn state(incarnation: u64, seq: u64, members: &[(&str, ConnId, &str)]) -> NodeState {
        NodeState {
            incarnation,
            seq,
            members: members
                .iter()
                .map(|(room, conn, name)| (((*room).to_owned(), *conn), (*name).to_owned()))
                .collect(),
        }
    }

    /// (room, name, joined) of each change, sorted (diffs come in map order).
    fn summary(changes: &[RemoteChange]) -> Vec<(String, String, bool)> {
        let mut out: Vec<_> = changes
            .iter()
            .map(|c| (c.room.clone(), c.name.clone(), c.joined))
            .collect();
        out.sort();
        out
    }

    fn s(room: &str, name: &str, joined: bool) -> (String, String, bool) {
        (room.into(), name.into(), joined)
    }

    #[test]
    fn an_announcement_decodes_to_what_was_encoded_and_a_nodes_own_is_skipped() {
        let announcement = announce(9, 3, Kind::Changes, vec![change("lobby", 4, Some("ann"))]);
        let payload = encode_tagged(PRESENCE_TAG, 1, &announcement);
        assert_eq!(
            decode_signal(2, &payload),
            Ok(Some(Signal::Presence(1, announcement)))
        );
        assert_eq!(decode_signal(1, &payload), Ok(None));
        let typing = Typing {
            room: "ops".into(),
            name: "bo".into(),
        };
        let payload = encode_tagged(TYPING_TAG, 1, &typing);
        assert_eq!(
            decode_signal(2, &payload),
            Ok(Some(Signal::Typing(1, typing)))
        );
    }

    #[test]
    fn a_presence_payload_with_a_bad_room_name_is_refused() {
        let announcement = announce(9, 3, Kind::Changes, vec![change("no/slash", 4, Some("a"))]);
        assert!(decode_signal(2, &encode_tagged(PRESENCE_TAG, 1, &announcement)).is_err());
        assert!(decode_signal(2, b"P1\nnot json").is_err());
    }

    #[test]
    fn changes_in_sequence_are_applied_and_a_gap_asks_for_a_re_read() {
        let now = Instant::now();
        let mut mirror = Mirror::default();
        assert_eq!(
            mirror.on_announcement(1, announce(7, 1, Kind::Full, vec![]), now),
            Step::Reread,
            "an unknown node is read first"
        );
        mirror.replace(1, state(7, 1, &[]), now);
        let step = mirror.on_announcement(
            1,
            announce(7, 2, Kind::Changes, vec![change("lobby", 4, Some("ann"))]),
            now,
        );
        let Step::Changes(changes) = step else {
            panic!("applied")
        };
        assert_eq!(summary(&changes), vec![s("lobby", "ann", true)]);
        assert_eq!(
            mirror.on_announcement(1, announce(7, 2, Kind::Beat, vec![]), now),
            Step::Changes(vec![]),
            "a beat at the known seq changes nothing"
        );
        assert_eq!(
            mirror.on_announcement(1, announce(7, 4, Kind::Beat, vec![]), now),
            Step::Reread,
            "seq 3 was missed"
        );
        assert_eq!(
            mirror.on_announcement(1, announce(8, 1, Kind::Full, vec![]), now),
            Step::Reread,
            "a new incarnation"
        );
    }

    #[test]
    fn a_rename_is_a_leave_then_a_join_and_a_repeat_is_nothing() {
        let now = Instant::now();
        let mut mirror = Mirror::default();
        mirror.replace(1, state(7, 1, &[("lobby", 4, "ann")]), now);
        let rename = vec![
            change("lobby", 4, Some("anna")),
            change("ops", 4, Some("anna")),
        ];
        let Step::Changes(changes) =
            mirror.on_announcement(1, announce(7, 2, Kind::Changes, rename), now)
        else {
            panic!("applied")
        };
        assert_eq!(
            changes
                .iter()
                .map(|c| (c.name.as_str(), c.joined))
                .collect::<Vec<_>>(),
            vec![("ann", false), ("anna", true), ("anna", true)]
        );
        let again = vec![change("lobby", 4, Some("anna")), change("nowhere", 9, None)];
        assert_eq!(
            mirror.on_announcement(1, announce(7, 3, Kind::Changes, again), now),
            Step::Changes(vec![])
        );
    }

    #[test]
    fn a_re_read_announces_only_the_difference() {
        let now = Instant::now();
        let mut mirror = Mirror::default();
        mirror.replace(
            1,
            state(
                7,
                3,
                &[("lobby", 1, "ann"), ("lobby", 2, "bo"), ("ops", 1, "ann")],
            ),
            now,
        );
        // A restart of the node: a new incarnation, whose connection 1 is someone else.
        let changes = mirror.replace(
            1,
            state(8, 1, &[("lobby", 1, "cy"), ("lobby", 2, "bo")]),
            now,
        );
        assert_eq!(
            summary(&changes),
            vec![
                s("lobby", "ann", false),
                s("lobby", "cy", true),
                s("ops", "ann", false)
            ]
        );
        assert_eq!(mirror.state(1).map(|s| s.incarnation), Some(8));
    }

    #[test]
    fn a_silent_node_expires_with_its_members_and_a_touch_gives_it_time() {
        let start = Instant::now();
        let expiry = Duration::from_secs(15);
        let mut mirror = Mirror::default();
        mirror.replace(1, state(7, 1, &[("lobby", 1, "ann")]), start);
        mirror.replace(2, state(5, 1, &[("lobby", 1, "bo")]), start);
        let later = start + Duration::from_secs(10);
        mirror.on_announcement(2, announce(5, 1, Kind::Beat, vec![]), later);
        let (dead, changes) = mirror.expire(start + Duration::from_secs(16), expiry);
        assert_eq!(dead, vec![(1, 7)]);
        assert_eq!(summary(&changes), vec![s("lobby", "ann", false)]);
        mirror.touch_all(start + Duration::from_secs(20));
        let (dead, _) = mirror.expire(start + Duration::from_secs(30), expiry);
        assert!(dead.is_empty(), "heard (touched) at 20 s");
    }

    #[test]
    fn a_goodbye_removes_the_node_at_once() {
        let now = Instant::now();
        let mut mirror = Mirror::default();
        mirror.replace(1, state(7, 1, &[("lobby", 1, "ann")]), now);
        let Step::Changes(changes) =
            mirror.on_announcement(1, announce(7, 2, Kind::Gone, vec![]), now)
        else {
            panic!("applied")
        };
        assert_eq!(summary(&changes), vec![s("lobby", "ann", false)]);
        assert!(mirror.state(1).is_none());
    }

    #[test]
    fn a_hash_reads_back_into_the_state_written() {
        let hash: HashMap<String, String> = [
            ("#", "7 12"),
            ("lobby/4", "ann"),
            ("ops/4", "ann"),
            ("bad room/1", "x"),
            ("lobby/notanumber", "y"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            parse_state(hash),
            Some(state(7, 12, &[("lobby", 4, "ann"), ("ops", 4, "ann")]))
        );
        assert_eq!(parse_state(HashMap::new()), None);
    }
}
