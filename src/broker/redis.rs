//! The Redis broker: several nodes on one PostgreSQL database act as one chat.
//!
//! Path of a message: this node's broadcaster hands a committed batch to
//! [`RedisBroker::publish_messages`], which (1) encodes it once and queues it for the publisher
//! task, which sends it with one `PUBLISH` on the shared channel, and (2) hands it to this node's
//! ordering gate (`gate.rs`), which delivers it to this node's members. Every other node's
//! subscriber task receives the payload, skips it if it is its own, and hands it to its gate.
//!
//! **One channel for every room**, with the room in each message: a node must hear every room it
//! has members in, and per-room channels would mean a `SUBSCRIBE`/`UNSUBSCRIBE` round trip on
//! every first join and last leave, with a window in which a message published before the
//! subscription is active is missed (a gap read per first join). One channel also keeps a commit
//! that spans rooms one `PUBLISH`, encoded once. The cost: every node receives every room's
//! messages, also those of rooms it has no member in (the gate drops them after a comparison).
//! Sharded channels per room are the step for when that traffic matters.
//!
//! **Own commits are delivered locally through the gate, not round-tripped through Redis.** The
//! round trip would make every local delivery depend on Redis and need a second path anyway for
//! when Redis is down (posts must still reach this node's members). Delivering locally gives one
//! path in both cases: the gate sees this node's commits directly and other nodes' from the bus,
//! orders both by id and drops duplicates, so a Redis outage only means other nodes' messages
//! arrive later (from a gap read or the catch-up after the reconnect). This node's own payloads
//! coming back on the channel are recognised by the node id in front of them and skipped
//! undecoded.
//!
//! **Outage:** the subscriber notices a dropped connection (end of the stream, or no answer to a
//! ping), retries with backoff, and after each (re)subscription the gate reads from the store
//! every room with members here from its last delivered id. The publisher keeps what it could
//! not send (bounded) and sends it once Redis is back, so a node that was cut off alone is not
//! left waiting for a later message to reveal the gap.
//!
//! **Presence and typing** cross nodes through `presence.rs` (its module doc has the design):
//! this node's memberships live in a Redis hash refreshed by heartbeats, changes and heartbeats
//! are announced on the same channel (payloads starting with `P`; typing with `T`), and every
//! node mirrors the others and hands the hub [`RemoteChange`](super::RemoteChange)s. Presence
//! events the hub publishes are still delivered here directly (the local members hear them at
//! once); the other nodes learn of them from the presence announcements.
//!
//! **Control events** (issue 19: an account's connections closed or sent a frame, an account
//! removed from a room, a room's policy changed; `control.rs`) are applied here at once and
//! sent on the same channel (payloads starting with `C`) through the same publisher, so one kept
//! while Redis is down goes out when it is back; every other node applies what it hears.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::control::{self, CONTROL_TAG};
use super::gate::{Gate, Input};
use super::limits::SharedLimits;
use super::presence::{
    self, LocalPresence, MirrorInput, MirrorTask, PresenceTiming, Signal, Writer,
};
use super::{Broker, BrokerError, ConnId, Control, Deliver, RoomEvent};
use crate::protocol::moderation::MAX_SLOW_SECS;
use crate::protocol::{Attachment, RoomName};
use crate::store::{Store, StoredMessage};

/// Batches the broadcaster may queue for the publisher before it waits.
const PUBLISH_QUEUE: usize = 1024;
/// Inputs the gate may have queued before the subscriber (and the broadcaster) wait.
const GATE_QUEUE: usize = 1024;
/// Payloads kept while Redis is unreachable; past it the oldest are dropped (the other nodes
/// still read those messages from the store: at their reconnect, or at the room's next message).
const BACKLOG_LIMIT: usize = 10_000;
/// How often the subscriber checks that Redis still answers, and how long it waits for it.
const PING_EVERY: Duration = Duration::from_secs(1);
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting (and each publish) may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a commit's acks wait for the gate to deliver it here. Only a gap that the store
/// cannot fill (the database unreachable) holds it that long; the acks then go (the messages
/// are stored) and members get them when the gap is read.
const LOCAL_DELIVERY_WAIT: Duration = Duration::from_secs(10);
/// Reconnect backoff: first delay, doubling up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a node needs to join the cluster's bus.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// This node's id: its own payloads on the channel carry it and are skipped.
    pub node_id: u64,
    /// The pub/sub channel every node of the cluster publishes on and listens to.
    pub channel: String,
    /// How long a message that arrived ahead of a gap is held before the gap is read from the
    /// store.
    pub gap_wait: Duration,
    /// Presence heartbeat and expiry: a node that dies is dropped from the others' view after
    /// at most `expiry` plus half a second after its last heartbeat.
    pub presence: PresenceTiming,
}

/// The cross-node [`Broker`] on Redis pub/sub (see the module doc).
pub struct RedisBroker {
    node_id: u64,
    receiver: Arc<OnceLock<Weak<dyn Deliver>>>,
    gate: mpsc::Sender<Input>,
    publish: mpsc::Sender<Vec<u8>>,
    /// Whether the subscription is up (set by the subscriber task): what `/readyz` reports.
    subscribed: Arc<AtomicBool>,
    /// When another process with this node's id was last heard (see [`DuplicateNode`]).
    duplicate: Arc<DuplicateNode>,
    /// This node's memberships, on their way to Redis.
    presence: Arc<LocalPresence>,
    /// Slow mode's clock for signed-in posters and the login buckets, shared by the nodes.
    limits: SharedLimits,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl RedisBroker {
    /// Reads each room's newest id (where the gate starts), then starts the gate, the publisher
    /// and the subscriber. Redis need not be up: the node serves its own members meanwhile and
    /// subscribes when it can. Call before the node serves anyone.
    pub async fn start(
        settings: RedisSettings,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Self>, BrokerError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|err| BrokerError::InvalidUrl(err.to_string()))?;
        let receiver: Arc<OnceLock<Weak<dyn Deliver>>> = Arc::new(OnceLock::new());
        let gate = Gate::start(store, receiver.clone(), settings.gap_wait).await?;
        let (to_gate, gate_inputs) = mpsc::channel(GATE_QUEUE);
        let (publish, payloads) = mpsc::channel(PUBLISH_QUEUE);
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let subscribed = Arc::new(AtomicBool::new(false));
        let (presence, typing) = LocalPresence::new(settings.node_id);
        let incarnation = rand::random();
        let duplicate = Arc::new(DuplicateNode::new(settings.presence.expiry));
        let (to_mirror, mirror_inputs) = mpsc::channel(presence::MIRROR_QUEUE);
        let limits = SharedLimits::new(
            client.clone(),
            &settings.channel,
            Duration::from_secs(u64::from(MAX_SLOW_SECS)),
        );
        let writer = Writer {
            client: client.clone(),
            channel: settings.channel.clone(),
            node_id: settings.node_id,
            incarnation,
            timing: settings.presence,
            local: presence.clone(),
        };
        let mirror = MirrorTask {
            client: client.clone(),
            channel: settings.channel.clone(),
            own: settings.node_id,
            timing: settings.presence,
            receiver: receiver.clone(),
        };
        tasks.spawn(writer.run(typing, stop.clone()));
        tasks.spawn(mirror.run(mirror_inputs, stop.clone()));
        tasks.spawn(gate.run(gate_inputs, stop.clone()));
        tasks.spawn(publisher(
            client.clone(),
            settings.channel.clone(),
            payloads,
            stop.clone(),
        ));
        tasks.spawn(subscriber(
            client,
            settings.channel,
            settings.node_id,
            Listeners {
                receiver: receiver.clone(),
                gate: to_gate.clone(),
                presence: to_mirror,
                incarnation,
                duplicate: duplicate.clone(),
            },
            subscribed.clone(),
            stop.clone(),
        ));
        info!(node_id = settings.node_id, "redis broker started");
        Ok(Arc::new(Self {
            node_id: settings.node_id,
            receiver,
            gate: to_gate,
            publish,
            subscribed,
            duplicate,
            presence,
            limits,
            stop,
            tasks,
        }))
    }

    /// Stops the broker's tasks once nothing publishes any more (after the committer stopped):
    /// the publisher first sends what is still queued, if Redis takes it, and the presence
    /// writer deletes this node's presence and says goodbye, so the other nodes drop its
    /// members at once instead of at expiry.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn register(&self, receiver: Weak<dyn Deliver>) {
        // A second registration is a programming error; the first receiver stays.
        let _ = self.receiver.set(receiver);
    }

    /// Not ready while cut off from Redis, or while another live process uses this node's id
    /// (each would miss the other's messages until a gap revealed them).
    fn is_ready(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && !self.duplicate.heard_recently()
    }

    fn member_changed(&self, room: &str, conn: ConnId, name: Option<&str>) {
        self.presence.changed(room, conn, name);
    }

    fn node_id(&self) -> u64 {
        self.node_id
    }

    async fn claim_slow_slot(&self, key: &str, interval: Duration) -> Option<Result<(), Duration>> {
        self.limits.claim_slow_slot(key, interval).await
    }

    async fn charge_bucket(&self, key: &str, per_minute: u32) -> Option<Result<(), Duration>> {
        self.limits.charge_bucket(key, per_minute).await
    }

    /// Applied here first, then queued for the other nodes (kept and resent like a batch while
    /// Redis is unreachable).
    async fn publish_control(&self, control: Control) -> Result<(), BrokerError> {
        let receiver = self
            .receiver
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::NoReceiver)?;
        receiver.deliver_control(&control);
        if self
            .publish
            .send(control::encode(self.node_id, &control))
            .await
            .is_err()
        {
            warn!(
                ?control,
                "publisher stopped; control event not sent to other nodes"
            );
        }
        Ok(())
    }

    /// Messages go through [`Broker::publish_messages`]. Presence and typing are delivered here
    /// at once; typing is also sent to the other nodes (best effort), while presence reaches
    /// them through the presence hash and its announcements (fed by `member_changed`).
    async fn publish(&self, room: &str, event: RoomEvent) -> Result<(), BrokerError> {
        if let RoomEvent::Message(message) = event {
            return self.publish_messages(std::slice::from_ref(&message)).await;
        }
        if let RoomEvent::Typing { name, .. } = &event {
            self.presence.typing(room, name);
        }
        let receiver = self
            .receiver
            .get()
            .and_then(Weak::upgrade)
            .ok_or(BrokerError::NoReceiver)?;
        receiver.deliver(room, event);
        Ok(())
    }

    /// Queues the batch for Redis (one payload, encoded once) and delivers it here through the
    /// gate; returns once this node's members have it, so the acks that follow come after.
    async fn publish_messages(&self, messages: &[StoredMessage]) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        if self
            .publish
            .send(encode(self.node_id, messages))
            .await
            .is_err()
        {
            warn!(
                posts = messages.len(),
                "publisher stopped; batch not sent to other nodes"
            );
        }
        let (done, delivered) = oneshot::channel();
        let local = Input::Local {
            messages: messages.to_vec(),
            done,
        };
        self.gate
            .send(local)
            .await
            .map_err(|_| BrokerError::NoReceiver)?;
        // Dropped unanswered only when the gate stops (shutdown): nothing left to wait for.
        if tokio::time::timeout(LOCAL_DELIVERY_WAIT, delivered)
            .await
            .is_err()
        {
            warn!(
                posts = messages.len(),
                "acks sent before local delivery: a gap before them could not be read yet"
            );
        }
        Ok(())
    }
}

/// One message as it travels on the channel (borrowed for encoding).
#[derive(Serialize)]
struct WireOut<'a> {
    room: &'a str,
    id: u64,
    ts: i64,
    from: &'a str,
    text: &'a str,
    /// The posting account (issue 19); absent for a guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<i64>,
    /// The message it answers (issue 20); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    /// The attached file (issue 20); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    attachment: Option<&'a Attachment>,
}

/// One message as it is read from the channel.
#[derive(Deserialize)]
struct WireIn {
    room: String,
    id: u64,
    ts: i64,
    from: String,
    text: String,
    #[serde(default)]
    author: Option<i64>,
    #[serde(default)]
    reply_to: Option<u64>,
    #[serde(default)]
    attachment: Option<Box<Attachment>>,
}

/// `NODE_ID\n[messages as JSON]`: the id first, so a node skips its own payloads undecoded.
pub(crate) fn encode(node_id: u64, messages: &[StoredMessage]) -> Vec<u8> {
    let wire: Vec<WireOut<'_>> = messages
        .iter()
        .map(|m| WireOut {
            room: m.room.as_str(),
            id: m.id,
            ts: m.ts,
            from: &m.from,
            text: &m.text,
            author: m.author.map(|author| author.0),
            reply_to: m.reply_to,
            attachment: m.attachment.as_deref(),
        })
        .collect();
    let mut payload = format!("{node_id}\n").into_bytes();
    // Serialising plain strings and integers into a Vec cannot fail.
    if let Err(err) = serde_json::to_writer(&mut payload, &wire) {
        warn!(cause = %err, "could not encode a batch");
    }
    payload
}

/// Why a payload from the channel was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// This node's own batch, already delivered here.
    Own,
    /// Another node's batch.
    Batch(Vec<StoredMessage>),
    /// Another node's presence announcement or typing.
    Signal(Signal),
    /// Another node's control event.
    Control(Control),
    /// Not a payload of ours (logged and dropped).
    Invalid(String),
}

/// Reads a payload from the channel. Messages with a room name that breaks the room rule are
/// refused, like everything else that comes from outside the process.
pub(crate) fn decode(own: u64, payload: &[u8]) -> Decoded {
    if payload.first() == Some(&CONTROL_TAG) {
        return match control::decode(own, payload) {
            Ok(Some(control)) => Decoded::Control(control),
            Ok(None) => Decoded::Own,
            Err(cause) => Decoded::Invalid(cause),
        };
    }
    if let Some(&(presence::PRESENCE_TAG | presence::TYPING_TAG)) = payload.first() {
        return match presence::decode_signal(own, payload) {
            Ok(Some(signal)) => Decoded::Signal(signal),
            Ok(None) => Decoded::Own,
            Err(cause) => Decoded::Invalid(cause),
        };
    }
    let Some(newline) = payload.iter().position(|b| *b == b'\n') else {
        return Decoded::Invalid("no node id".to_owned());
    };
    let node = std::str::from_utf8(&payload[..newline])
        .ok()
        .and_then(|id| id.parse::<u64>().ok());
    match node {
        None => return Decoded::Invalid("bad node id".to_owned()),
        Some(node) if node == own => return Decoded::Own,
        Some(_) => {}
    }
    let wire: Vec<WireIn> = match serde_json::from_slice(&payload[newline + 1..]) {
        Ok(wire) => wire,
        Err(err) => return Decoded::Invalid(err.to_string()),
    };
    let mut batch = Vec::with_capacity(wire.len());
    for m in wire {
        let Ok(room) = RoomName::parse(&m.room) else {
            return Decoded::Invalid(format!("bad room name {:?}", m.room));
        };
        batch.push(StoredMessage {
            room,
            id: m.id,
            ts: m.ts,
            from: m.from,
            text: m.text,
            author: m.author.map(crate::store::accounts::AccountId),
            reply_to: m.reply_to,
            attachment: m.attachment,
        });
    }
    Decoded::Batch(batch)
}

/// Reconnect delays: 100 ms doubling to 2 s, back to the start after a success.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Failures since the last success.
    pub(crate) attempt: u32,
}

impl Backoff {
    /// The delay before the next attempt.
    pub(crate) fn next(&mut self) -> Duration {
        let delay = BACKOFF_FIRST
            .saturating_mul(1 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt += 1;
        delay
    }

    /// Whether this failure is worth a log line: the first, then every doubling.
    pub(crate) fn loud(&self) -> bool {
        self.attempt.is_power_of_two() || self.attempt == 0
    }
}

/// Publishes queued payloads in order; keeps those Redis did not take and retries with backoff.
async fn publisher(
    client: redis::Client,
    channel: String,
    mut queue: mpsc::Receiver<Vec<u8>>,
    stop: CancellationToken,
) {
    let mut outbox = Unsent::default();
    let mut connection: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::default();
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                while let Ok(payload) = queue.try_recv() {
                    outbox.push(payload);
                }
                let _ = flush(&client, &mut connection, &channel, &mut outbox).await;
                return;
            }
            payload = queue.recv() => match payload {
                Some(payload) => outbox.push(payload),
                None => return,
            },
            () = sleep_until(retry_at) => retry_at = None,
        }
        while let Ok(payload) = queue.try_recv() {
            outbox.push(payload);
        }
        if retry_at.is_some() {
            continue;
        }
        match flush(&client, &mut connection, &channel, &mut outbox).await {
            Ok(()) => {
                if backoff.attempt > 0 {
                    info!("publishing to redis again");
                }
                backoff = Backoff::default();
            }
            Err(err) => {
                connection = None;
                let delay = backoff.next();
                if backoff.loud() {
                    warn!(cause = %err, unsent = outbox.len(), retry_in_ms = delay.as_millis() as u64,
                        "redis publish failed: this node's members are still served; kept for later");
                }
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

/// Payloads not yet taken by Redis, oldest first, bounded by [`BACKLOG_LIMIT`].
#[derive(Default)]
struct Unsent {
    payloads: VecDeque<Vec<u8>>,
    dropped: u64,
}

impl Unsent {
    fn push(&mut self, payload: Vec<u8>) {
        if self.payloads.len() == BACKLOG_LIMIT {
            self.payloads.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    dropped = self.dropped,
                    "redis backlog full: oldest batches dropped (other nodes read them from the store)"
                );
            }
        }
        self.payloads.push_back(payload);
    }

    fn len(&self) -> usize {
        self.payloads.len()
    }
}

/// Sends every kept payload, oldest first, connecting if needed.
async fn flush(
    client: &redis::Client,
    connection: &mut Option<MultiplexedConnection>,
    channel: &str,
    outbox: &mut Unsent,
) -> redis::RedisResult<()> {
    while let Some(payload) = outbox.payloads.front() {
        let conn = match connection {
            Some(conn) => conn,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(CONNECT_TIMEOUT));
                connection.insert(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        };
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload.as_slice())
            .query_async::<i64>(conn)
            .await?;
        outbox.payloads.pop_front();
    }
    Ok(())
}

/// Where the subscriber hands what it hears.
struct Listeners {
    /// This node's hub, which applies other nodes' control events.
    receiver: Arc<OnceLock<Weak<dyn Deliver>>>,
    /// Message batches, and the subscription's ups and downs (catch-up from the store).
    gate: mpsc::Sender<Input>,
    /// Presence and typing, and the subscription's ups and downs (snapshot, expiry).
    presence: mpsc::Sender<MirrorInput>,
    /// This process's presence incarnation, to tell its own payloads from a namesake's.
    incarnation: u64,
    /// Where a namesake is noted.
    duplicate: Arc<DuplicateNode>,
}

/// Evidence that another live process uses this node's `--node-id`: its presence payloads
/// carry the id with another incarnation. The node stays up (refusing to serve would take both
/// down), logs an error naming the id and reports itself not ready until the namesake has been
/// silent for a presence expiry, so a load balancer sends clients elsewhere meanwhile.
struct DuplicateNode {
    started: Instant,
    /// Milliseconds after `started` of the last evidence, 0 for none.
    last_heard_ms: std::sync::atomic::AtomicU64,
    expiry: Duration,
}

impl DuplicateNode {
    fn new(expiry: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_heard_ms: std::sync::atomic::AtomicU64::new(0),
            expiry,
        }
    }

    /// Notes a namesake's payload; logs the first one of each episode.
    fn heard(&self, node_id: u64, other_incarnation: u64) {
        let first = !self.heard_recently();
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_heard_ms.store(now, Ordering::Relaxed);
        if first {
            error!(
                node_id,
                other_incarnation,
                "ANOTHER LIVE PROCESS USES THIS --node-id: the two skip each other's messages \
                 and overwrite each other's presence; give every node its own --node-id. This \
                 node reports itself not ready (/readyz) until the other is gone"
            );
        }
    }

    fn heard_recently(&self) -> bool {
        let last = self.last_heard_ms.load(Ordering::Relaxed);
        last != 0 && self.started.elapsed() < Duration::from_millis(last) + self.expiry
    }
}

impl Listeners {
    /// Tells both that the subscription is up (`true`) or lost; `false` if either is gone.
    async fn subscription(&self, up: bool) -> bool {
        let (gate, presence) = if up {
            (Input::Resubscribed, MirrorInput::Subscribed)
        } else {
            (Input::BusLost, MirrorInput::Lost)
        };
        self.gate.send(gate).await.is_ok() && self.presence.send(presence).await.is_ok()
    }
}

/// Subscribes, hands other nodes' batches to the gate and their presence to the mirror, and
/// resubscribes with backoff after the connection drops; each (re)subscription asks the gate to
/// catch up from the store and the mirror to snapshot every node.
async fn subscriber(
    client: redis::Client,
    channel: String,
    node_id: u64,
    listeners: Listeners,
    subscribed: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    loop {
        match subscribe(&client, &channel).await {
            Ok((sink, stream)) => {
                if backoff.attempt > 0 {
                    info!(%channel, "resubscribed to redis; catching up from the store");
                } else {
                    info!(%channel, "subscribed to redis");
                }
                backoff = Backoff::default();
                if !listeners.subscription(true).await {
                    return;
                }
                subscribed.store(true, Ordering::Relaxed);
                let ended = listen(sink, stream, node_id, &listeners, &stop).await;
                subscribed.store(false, Ordering::Relaxed);
                match ended {
                    Listen::Stopped => return,
                    Listen::Lost(cause) => warn!(
                        %cause,
                        "redis connection lost: this node serves its own members until it is back"
                    ),
                }
                if !listeners.subscription(false).await {
                    return;
                }
            }
            Err(err) => {
                if backoff.loud() {
                    warn!(cause = %err, "redis unreachable; retrying");
                }
            }
        }
        let delay = backoff.next();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// A connection with the subscription confirmed.
async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<(PubSubSink, PubSubStream)> {
    let connect = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.split())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting to redis timed out",
        ))),
    }
}

/// How listening ended.
enum Listen {
    /// The broker is shutting down (or the gate is gone).
    Stopped,
    /// The connection dropped or stopped answering.
    Lost(String),
}

/// Reads the channel until the connection is lost or the broker stops, pinging to notice a
/// connection that hangs without closing.
async fn listen(
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    node_id: u64,
    listeners: &Listeners,
    stop: &CancellationToken,
) -> Listen {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return Listen::Stopped,
            message = stream.next() => {
                let Some(message) = message else {
                    return Listen::Lost("connection closed".to_owned());
                };
                let payload = message.get_payload_bytes();
                match decode(node_id, payload) {
                    Decoded::Own => {
                        if let Some(other) = presence::duplicate_incarnation(payload, listeners.incarnation) {
                            listeners.duplicate.heard(node_id, other);
                        }
                    }
                    Decoded::Batch(batch) => {
                        if listeners.gate.send(Input::Remote(batch)).await.is_err() {
                            return Listen::Stopped;
                        }
                    }
                    // Never waited for: a dropped announcement is a gap the mirror repairs.
                    Decoded::Signal(signal) => {
                        if let Err(err) = listeners.presence.try_send(MirrorInput::Signal(signal)) {
                            debug!(cause = %err, "presence payload dropped: the mirror is behind");
                        }
                    }
                    Decoded::Control(control) => {
                        if let Some(receiver) = listeners.receiver.get().and_then(Weak::upgrade) {
                            receiver.deliver_control(&control);
                        }
                    }
                    Decoded::Invalid(cause) => warn!(%cause, "unreadable payload on the channel dropped"),
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => debug!("redis answered a ping"),
                    Ok(Err(err)) => return Listen::Lost(err.to_string()),
                    Err(_) => return Listen::Lost("no answer to a ping".to_owned()),
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever without one.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(room: &str, id: u64) -> StoredMessage {
        StoredMessage {
            room: RoomName::parse(room).unwrap(),
            id,
            ts: 1_700_000_000_000,
            from: "ann".into(),
            text: "hi \"there\"\n".into(),
            author: Some(crate::store::accounts::AccountId(3)),
            reply_to: None,
            attachment: None,
        }
    }

    #[test]
    fn another_nodes_batch_decodes_to_the_same_messages() {
        let batch = vec![message("lobby", 7), message("ops", 1)];
        assert_eq!(decode(2, &encode(1, &batch)), Decoded::Batch(batch));
    }

    #[test]
    fn a_nodes_own_batch_is_recognised_by_its_id() {
        assert_eq!(decode(1, &encode(1, &[message("lobby", 7)])), Decoded::Own);
    }

    #[test]
    fn presence_and_typing_payloads_are_told_from_batches_by_their_first_byte() {
        let typing = b"T1\n{\"room\":\"lobby\",\"name\":\"ann\"}";
        assert!(matches!(
            decode(2, typing),
            Decoded::Signal(Signal::Typing(1, _))
        ));
        assert_eq!(decode(1, typing), Decoded::Own);
        let beat = b"P1\n{\"incarnation\":5,\"seq\":3,\"kind\":\"beat\"}";
        assert!(matches!(
            decode(2, beat),
            Decoded::Signal(Signal::Presence(1, _))
        ));
        assert!(matches!(
            decode(2, &encode(1, &[message("lobby", 7)])),
            Decoded::Batch(_)
        ));
    }

    #[test]
    fn a_payload_with_a_bad_room_name_is_refused() {
        // A StoredMessage cannot hold such a name, so the payload is written by hand.
        let payload = br#"1
[{"room":"no spaces allowed","id":7,"ts":1,"from":"ann","text":"hi"}]"#;
        assert!(matches!(decode(2, payload), Decoded::Invalid(_)));
        assert!(matches!(decode(2, b"garbage"), Decoded::Invalid(_)));
    }
}
