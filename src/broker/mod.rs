//! Cross-node delivery. Every room event goes through a [`Broker`], even on a single node (the
//! centrifuge rule), so the single-node path and a future Redis-backed cluster run the same code:
//! the hub publishes, and the broker hands the event back to every node's hub, this one included.
//! The broker never stores history, assigns ids or touches sockets.

mod gate;
mod local;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::store::StoredMessage;

pub use self::redis::{RedisBroker, RedisSettings};
pub use local::LocalBroker;

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

    /// Fans out one commit's messages, in order; returns once every member has them queued. A
    /// receiver that can hand each member all of its room's messages at once (one socket write
    /// instead of several), or that lets other work run during a long fan-out, overrides this.
    async fn deliver_messages(&self, messages: &[StoredMessage]) {
        for message in messages {
            self.deliver(&message.room, RoomEvent::Message(message.clone()));
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

    /// Sends `event` for `room` to every node, in call order per room.
    async fn publish(&self, room: &str, event: RoomEvent) -> Result<(), BrokerError>;

    /// Sends one commit's messages to every node, in order, as one batch where the broker can:
    /// under load a commit holds many messages, and a batch reaches each member in one write.
    async fn publish_messages(&self, messages: &[StoredMessage]) -> Result<(), BrokerError> {
        for message in messages {
            self.publish(&message.room, RoomEvent::Message(message.clone()))
                .await?;
        }
        Ok(())
    }
}

/// The broker a single node uses by default.
pub fn local() -> Arc<dyn Broker> {
    Arc::new(LocalBroker::default())
}
