//! The messages the coordinator and its worker processes exchange.
//!
//! Workers exist because one process may hold at most 20,000 open files on the benchmark
//! machine, so 19,000 client connections have to be split. The coordinator writes one
//! [`WorkerSpec`] line to a worker's stdin, then [`Command`] lines; the worker answers with
//! [`Event`] lines on stdout. Everything is one JSON object per line so a worker's stderr stays
//! free for human-readable diagnostics.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{Mode, Route};
use crate::hist::Buckets;

/// How members are spread over rooms. Deterministic in the global connection index so that the
/// coordinator and every worker agree on room sizes without talking.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RoomLayout {
    /// Everybody in one room called `bench`.
    Single,
    /// Consecutive blocks of `size` members, rooms `r0`, `r1`, ... (idle scenario).
    Blocks { size: usize },
    /// `rooms` rooms whose sizes follow a Zipf law (s = 1): a few big rooms, a long tail of
    /// small ones, which is what real chat deployments look like.
    Zipf { rooms: usize },
}

impl RoomLayout {
    /// The room index of global connection `idx` out of `total` connections.
    pub fn room_of(&self, idx: usize, total: usize) -> usize {
        match *self {
            RoomLayout::Single => 0,
            RoomLayout::Blocks { size } => idx / size.max(1),
            RoomLayout::Zipf { rooms } => {
                let sizes = zipf_sizes(rooms, total);
                let mut acc = 0;
                for (r, s) in sizes.iter().enumerate() {
                    acc += s;
                    if idx < acc {
                        return r;
                    }
                }
                sizes.len().saturating_sub(1)
            }
        }
    }

    /// How many of `total` connections are in room `room`.
    pub fn room_size(&self, room: usize, total: usize) -> usize {
        match *self {
            RoomLayout::Single => total,
            RoomLayout::Blocks { size } => {
                let size = size.max(1);
                let start = room * size;
                total.saturating_sub(start).min(size)
            }
            RoomLayout::Zipf { rooms } => zipf_sizes(rooms, total).get(room).copied().unwrap_or(0),
        }
    }

    /// The room's name on the wire.
    pub fn room_name(&self, room: usize) -> String {
        match self {
            RoomLayout::Single => "bench".to_string(),
            _ => format!("r{room}"),
        }
    }
}

/// Room sizes for a Zipf layout: proportional to 1/(rank+1), at least one member each, summing
/// to exactly `total` (the remainder goes to the biggest room).
pub fn zipf_sizes(rooms: usize, total: usize) -> Vec<usize> {
    let rooms = rooms.clamp(1, total.max(1));
    let h: f64 = (1..=rooms).map(|k| 1.0 / k as f64).sum();
    let mut sizes: Vec<usize> = (1..=rooms)
        .map(|k| ((total as f64) / (k as f64 * h)).floor().max(1.0) as usize)
        .collect();
    let sum: usize = sizes.iter().sum();
    if sum < total {
        sizes[0] += total - sum;
    } else {
        // Flooring plus the minimum of one can overshoot only when rooms ~ total; trim the head.
        let mut over = sum - total;
        for s in sizes.iter_mut() {
            let cut = over.min(s.saturating_sub(1));
            *s -= cut;
            over -= cut;
        }
    }
    sizes
}

impl WorkerSpec {
    /// The server connection `idx` talks to: its node when the members are spread over nodes.
    pub fn server_of(&self, idx: usize) -> SocketAddr {
        node_of(idx, self.nodes.len())
            .and_then(|n| self.nodes.get(n).copied())
            .unwrap_or(self.server)
    }
}

/// The node (index into [`WorkerSpec::nodes`]) that connection `idx` is on, when there are
/// several nodes; `None` with zero or one, where no delivery crosses nodes.
pub fn node_of(idx: usize, nodes: usize) -> Option<usize> {
    (nodes > 1).then(|| idx % nodes)
}

/// Everything a worker needs to open and hold its share of the connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub mode: Mode,
    pub route: Route,
    pub server: SocketAddr,
    /// Several nodes of one cluster (the cluster scenario): connection `i` goes to
    /// `nodes[i % nodes.len()]`, so members and senders are spread over every node. Empty: every
    /// connection goes to `server`.
    #[serde(default)]
    pub nodes: Vec<SocketAddr>,
    /// Local address the worker binds its sockets to (127.0.0.2, 127.0.0.3, ...), so each
    /// worker has its own ephemeral port space.
    pub source_ip: Ipv4Addr,
    /// Global index of this worker's first connection.
    pub first: usize,
    /// How many connections this worker opens.
    pub count: usize,
    /// Total connections in the test once every worker has connected (for room sizes).
    pub total: usize,
    pub layout: RoomLayout,
    /// Handshakes in flight at once: bounded so the server's accept queue never overflows.
    pub concurrency: usize,
    /// Give up on the whole connect phase after this long.
    pub connect_timeout_ms: u64,
    /// The server's token secret when the connections sign in (`hubbub-accounts`): each
    /// connection mints its own token for its name. `None`: guests (`?name=`).
    #[serde(default)]
    pub auth_secret: Option<String>,
}

/// A phase the coordinator asks every worker to run at the same time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "cmd")]
pub enum Command {
    /// Post and receive: connection `i` posts iff `i % sender_stride == 0` and
    /// `i / sender_stride < senders`, at `rate` messages per second each.
    Fanout(FanoutPhase),
    /// Every connection does back-to-back round trips on the echo route.
    Echo { duration_ms: u64, text_len: usize },
    /// Report the worker's connection state (how many are still open) without traffic.
    Status,
    /// Close every connection and exit.
    Stop,
}

/// Parameters of one fan-out phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutPhase {
    /// Marks this phase's messages so deliveries from an earlier phase (or a history replay)
    /// are never counted.
    pub nonce: u64,
    pub senders: usize,
    pub sender_stride: usize,
    pub rate: f64,
    pub duration_ms: u64,
    /// How long to keep receiving after the last post before counting losses.
    pub drain_ms: u64,
    pub text_len: usize,
    /// Members of the room right now when the room grows in stages (single-room layout);
    /// 0 means "use the layout's room size".
    #[serde(default)]
    pub room_members: usize,
    /// End the drain as soon as every delivery a worker expects (and, from hubbub, every ack of
    /// its own posts) has arrived, so that `drain_ms` is only a deadline: the smoke plan's
    /// phases are counted, not timed. Off in the measured plans, whose full drain also catches
    /// late duplicates.
    #[serde(default)]
    pub until_delivered: bool,
}

/// Senders wait this long after a phase starts before their first post, so every worker has
/// switched to the phase (and counts its nonce) before the first delivery can arrive.
pub const LEAD_IN_MS: u64 = 250;

impl FanoutPhase {
    /// Whether global connection `idx` posts in this phase.
    pub fn is_sender(&self, idx: usize) -> bool {
        let stride = self.sender_stride.max(1);
        idx.is_multiple_of(stride) && idx / stride < self.senders
    }

    /// Time between two posts of one sender.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// When sender `idx` posts first, after the lead-in: the senders' first posts are spread
    /// evenly over one interval so that posts do not arrive in bursts of `senders` at once.
    pub fn first_post(&self, idx: usize) -> Duration {
        let slot = (idx / self.sender_stride.max(1)) as f64 / self.senders.max(1) as f64;
        self.interval().mul_f64(slot)
    }

    /// How many posts connection `idx` makes in this phase, by the schedule the worker follows:
    /// the first post goes out even when it falls after the end, each later one only before it.
    pub fn posts_by(&self, idx: usize) -> u64 {
        if !self.is_sender(idx) || self.rate <= 0.0 {
            return 0;
        }
        let end = Duration::from_millis(self.duration_ms);
        let mut next = self.first_post(idx) + self.interval();
        let mut posts = 1;
        while next < end {
            posts += 1;
            next += self.interval();
        }
        posts
    }
}

/// What a worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The connect phase is over.
    Ready {
        connected: usize,
        failed: usize,
        connect_ms: u64,
        /// The first few distinct failure reasons, for the log.
        errors: Vec<String>,
    },
    /// A fan-out phase is over.
    Fanout(FanoutReport),
    /// An echo phase is over.
    Echo(EchoReport),
    /// Answer to [`Command::Status`].
    Status { open: usize },
}

/// One worker's view of a fan-out phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FanoutReport {
    /// Posts written by this worker's senders.
    pub sent: u64,
    /// Deliveries this worker's senders' posts should cause: sent × size of the sender's room.
    pub expected: u64,
    /// Deliveries of this phase's messages received by this worker's connections.
    pub received: u64,
    /// Delivery latency (send timestamp to receipt), microseconds.
    pub latency: Buckets,
    /// Post-to-ack latency (hubbub only), microseconds.
    pub ack_latency: Buckets,
    pub acks: u64,
    /// With members spread over several nodes: delivery latency of posts made on another node
    /// than the receiving member's (through Redis) and on the same node, microseconds.
    #[serde(default)]
    pub cross_latency: Buckets,
    #[serde(default)]
    pub local_latency: Buckets,
    /// `error` frames received (e.g. `rate_limited`).
    pub error_frames: u64,
    pub first_error: Option<String>,
    /// Connections that closed or failed during the phase.
    pub closed: u64,
}

/// One worker's view of an echo phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EchoReport {
    pub round_trips: u64,
    pub latency: Buckets,
    pub closed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_sum_to_total_and_decrease() {
        for (rooms, total) in [(100, 5000), (10, 10), (7, 3), (50, 19_000)] {
            let s = zipf_sizes(rooms, total);
            assert_eq!(s.iter().sum::<usize>(), total, "{rooms} {total}");
            assert!(s.iter().all(|&x| x >= 1));
        }
    }

    #[test]
    fn connections_are_spread_round_robin_over_the_nodes() {
        let node = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let spec = WorkerSpec {
            mode: Mode::Hubbub,
            route: Route::Chat,
            server: node(1),
            nodes: vec![node(1), node(2), node(3)],
            source_ip: Ipv4Addr::new(127, 0, 0, 2),
            first: 0,
            count: 6,
            total: 6,
            layout: RoomLayout::Single,
            concurrency: 1,
            connect_timeout_ms: 1_000,
            auth_secret: None,
        };
        let ports: Vec<u16> = (0..6).map(|i| spec.server_of(i).port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert_eq!(node_of(4, 3), Some(1));
        assert_eq!(node_of(4, 1), None, "one node: nothing crosses");
        let single = WorkerSpec {
            nodes: Vec::new(),
            ..spec
        };
        assert_eq!(single.server_of(5), node(1));
    }

    #[test]
    fn room_of_agrees_with_room_size() {
        let layout = RoomLayout::Zipf { rooms: 20 };
        let total = 1000;
        let mut counts = [0usize; 20];
        for i in 0..total {
            counts[layout.room_of(i, total)] += 1;
        }
        for (r, c) in counts.iter().enumerate() {
            assert_eq!(*c, layout.room_size(r, total));
        }
        let blocks = RoomLayout::Blocks { size: 100 };
        assert_eq!(blocks.room_size(2, 250), 50);
        assert_eq!(blocks.room_of(249, 250), 2);
    }
}
