//! Cross-node delivery. Every room event goes through a [`Broker`], even on a single node (the
//! centrifuge rule), so the single-node path and a future Redis-backed cluster run the same code:
//! the hub publishes, and the broker hands the event back to every node's hub, this one included.
//! The broker never stores history, assigns ids or touches sockets.

mod control;
mod gate;
mod limits;
mod local;
mod presence;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::store::StoredMessage;

pub use self::redis::{RedisBroker, RedisSettings};
pub use control::{AccountClosed, Control};
pub use local::LocalBroker;
pub use presence::PresenceTiming;

/// Identifies one connection across the cluster, so "everyone but the sender" works on every node.
pub type ConnId = u64;

/// What happens in a room that every node's members must hear about.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A committed message, in id order per room.
    Message(StoredMessage),
    /// A member arrived (`joined: true`) or went.
    Presence {
        /// The connection that arrived or went; it does not hear its own presence.
        origin: ConnId,
        /// Its display name.
        name: String,
        /// Arrived or went.
        joined: bool,
    },
    /// A member is typing.
    Typing {
        /// The typing connection; it does not hear itself.
        origin: ConnId,
        /// Its display name.
        name: String,
    },
}

/// A connection on another node. Connection ids are only unique per node (and per process), so
/// a remote member is known by both; it never equals a local member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteMember {
    /// The node it is connected to.
    pub node: u64,
    /// Its connection id there.
    pub conn: ConnId,
}

/// A member of another node arrived in a room or went (a rename is a leave, then a join): what
/// a cluster broker's presence mirror tells the hub, which keeps remote members beside its own
/// and announces them to its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// The room.
    pub room: String,
    /// Who.
    pub member: RemoteMember,
    /// Its display name (the old one for the leave of a rename).
    pub name: String,
    /// Arrived (`true`) or went.
    pub joined: bool,
}

/// Receives events from the broker: the hub implements this.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// Fans `event` out to this node's members of `room`. Must not block.
    fn deliver(&self, room: &str, event: RoomEvent);

    /// Whether this node has members in `room`. A cluster broker asks before it reads a gap or
    /// catches a room up from the store: a room without members here needs neither. The default
    /// (`true`) is the safe answer for a receiver that cannot tell.
    fn has_room(&self, _room: &str) -> bool {
        true
    }

    /// Members on other nodes arrived or went, in order: the receiver updates its view of each
    /// room's remote members and announces the changes to its members here (all of them: the
    /// origin is never a local connection). Only a cluster broker calls this; the default
    /// ignores it (a receiver without presence).
    fn remote_presence(&self, _changes: &[RemoteChange]) {}

    /// Someone types in `room` on another node: every member here hears it (none is skipped,
    /// the typer is elsewhere). Only a cluster broker calls this.
    fn remote_typing(&self, _room: &str, _name: &str) {}

    /// Applies a control event (an account's connections closed, removed from a room, sent a
    /// frame; a room's policy reloaded) to this node's connections. Every node gets every event,
    /// this one included. Must not block. The default ignores it (a receiver without accounts).
    fn deliver_control(&self, _control: &Control) {}

    /// Fans out one commit's messages, in order; returns once every member has them queued. A
    /// receiver that can hand each member all of its room's messages at once (one socket write
    /// instead of several), or that lets other work run during a long fan-out, overrides this.
    async fn deliver_messages(&self, messages: &[StoredMessage]) {
        for message in messages {
            self.deliver(message.room.as_str(), RoomEvent::Message(message.clone()));
        }
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No hub is registered to receive events (the node is shutting down).
    #[error("no receiver registered")]
    NoReceiver,
    /// `--broker` is not a Redis URL the client accepts.
    #[error("invalid --broker URL: {0}")]
    InvalidUrl(String),
    /// The store could not be read when the broker started (where each room's line begins).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Carries room events to every node. Implementations must keep per-room publish order.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Registers the node's receiver; held weakly so the hub and broker do not keep each other
    /// alive.
    fn register(&self, receiver: std::sync::Weak<dyn Deliver>);

    /// Whether the broker reaches the other nodes now: what `/readyz` asks. A node whose broker
    /// is cut off still serves its own members, but new clients are better sent to a node that
    /// is connected. The in-process broker always is.
    fn is_ready(&self) -> bool {
        true
    }

    /// This node's membership changed: connection `conn` joined `room` or changed its name
    /// (`Some(name)`), or left it (`None`). Called by the hub for every change, under no lock
    /// the broker could wait on; must not block. A cluster broker keeps it where the other
    /// nodes see it (the Redis broker: its presence hash); the local broker has nothing to do.
    fn member_changed(&self, _room: &str, _conn: ConnId, _name: Option<&str>) {}

    /// This node's id in the cluster (what [`RemoteMember::node`] names): the local broker's
    /// single node is 0.
    fn node_id(&self) -> u64 {
        0
    }

    /// Takes a signed-in poster's slow-mode slot in a room on a clock every node shares:
    /// `Some(Ok(()))` taken (the post is stamped), `Some(Err(left))` the poster's last post, on
    /// any node, was less than `interval` ago. `None`: this broker keeps no shared clock (one
    /// node) or cannot reach it now, and the node's own clock decides.
    async fn claim_slow_slot(
        &self,
        _key: &str,
        _interval: Duration,
    ) -> Option<Result<(), Duration>> {
        None
    }

    /// Charges one attempt to the login or sign-up bucket `key` that allows `per_minute` (a
    /// burst of that many, then one every 60/`per_minute` s), counted by every node together:
    /// `Some(Err(wait))` when it is empty. `None`: this broker shares no buckets (one node) or
    /// cannot reach them now, and the node's own bucket decides.
    async fn charge_bucket(&self, _key: &str, _per_minute: u32) -> Option<Result<(), Duration>> {
        None
    }

    /// Sends a control event to every node, this one included (see `control.rs`). This node
    /// applies it before the call returns; other nodes as soon as the bus carries it there.
    async fn publish_control(&self, control: Control) -> Result<(), BrokerError>;

    /// Sends `event` for `room` to every node, in call order per room.
    async fn publish(&self, room: &str, event: RoomEvent) -> Result<(), BrokerError>;

    /// Sends one commit's messages to every node, in order, as one batch where the broker can:
    /// under load a commit holds many messages, and a batch reaches each member in one write.
    async fn publish_messages(&self, messages: &[StoredMessage]) -> Result<(), BrokerError> {
        for message in messages {
            self.publish(message.room.as_str(), RoomEvent::Message(message.clone()))
                .await?;
        }
        Ok(())
    }
}

/// The broker a single node uses by default.
pub fn local() -> Arc<dyn Broker> {
    Arc::new(LocalBroker::default())
}
