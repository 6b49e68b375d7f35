//! Metric names and the Prometheus registry. The registry is an owned value (no global recorder),
//! so several servers can run in one test process. Labels are bounded: transports and route
//! templates only, never room or user names.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label for per-transport series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// `ws`, `sse` or `echo` (and `http` for plain connections refused at accept).
    pub transport: &'static str,
}

/// Label for HTTP request counts: the route template and status, both bounded sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route template, e.g. `/api/rooms/{room}/messages`.
    pub route: String,
    /// The HTTP status code.
    pub status: u16,
}

/// Label for store reads: which kind of read (`last_id`, `after`, `before`, `rooms`), a fixed
/// set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabel {
    /// The `Store` method the read went through.
    pub kind: &'static str,
}

/// Every metric the server exports. Cheap to clone: each field is a shared handle.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Open client connections, by transport.
    pub connections: Family<TransportLabel, Gauge>,
    /// Connections refused before the upgrade (limits), by transport.
    pub connections_refused: Family<TransportLabel, Counter>,
    /// Rooms with at least one member on this node.
    pub rooms: Gauge,
    /// Messages committed to the store.
    pub messages_in: Counter,
    /// Frames queued to members (one per member per broadcast).
    pub messages_out: Counter,
    /// Connections closed because their outbound queue was full (1013).
    pub slow_consumers: Counter,
    /// Posts refused because the store failed.
    pub store_errors: Counter,
    /// Frames and API requests refused or dropped by a rate limit.
    pub rate_limited: Counter,
    /// Connections closed (1008) for sustained flooding over the rate limit.
    pub flood_closes: Counter,
    /// Time of one group commit, in seconds.
    pub store_commit_seconds: Histogram,
    /// Posts per group commit: shows how well batching works under load.
    pub store_batch_size: Histogram,
    /// HTTP requests, by route template and status.
    pub http_requests: Family<RouteLabel, Counter>,
    /// Read queries that reached the database, by kind: what a reconnect storm costs the store
    /// (identical concurrent reads share one, see store/coalesce.rs).
    pub store_reads: Family<ReadLabel, Counter>,
    /// Reads answered by a query another concurrent read had already asked for, by kind.
    pub store_reads_joined: Family<ReadLabel, Counter>,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hubbub");
        let connections = Family::<TransportLabel, Gauge>::default();
        let connections_refused = Family::<TransportLabel, Counter>::default();
        let rooms = Gauge::default();
        let messages_in = Counter::default();
        let messages_out = Counter::default();
        let slow_consumers = Counter::default();
        let store_errors = Counter::default();
        let rate_limited = Counter::default();
        let flood_closes = Counter::default();
        let store_commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let store_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let http_requests = Family::<RouteLabel, Counter>::default();
        let store_reads = Family::<ReadLabel, Counter>::default();
        let store_reads_joined = Family::<ReadLabel, Counter>::default();
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused before the upgrade",
            connections_refused.clone(),
        );
        registry.register("rooms", "Rooms with members on this node", rooms.clone());
        registry.register(
            "messages_in",
            "Messages committed to the store",
            messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Frames queued to members",
            messages_out.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed because their outbound queue was full",
            slow_consumers.clone(),
        );
        registry.register(
            "store_errors",
            "Posts refused because the store failed",
            store_errors.clone(),
        );
        registry.register(
            "rate_limited",
            "Frames and API requests refused or dropped by a rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "flood_closes",
            "Connections closed for sustained flooding over the rate limit",
            flood_closes.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of one group commit",
            store_commit_seconds.clone(),
        );
        registry.register(
            "store_batch_size",
            "Posts per group commit",
            store_batch_size.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "store_reads",
            "Read queries that reached the database, by kind",
            store_reads.clone(),
        );
        registry.register(
            "store_reads_joined",
            "Reads answered by a query another concurrent read had already asked for, by kind",
            store_reads_joined.clone(),
        );
        Self {
            registry: Arc::new(registry),
            connections,
            connections_refused,
            rooms,
            messages_in,
            messages_out,
            slow_consumers,
            store_errors,
            rate_limited,
            flood_closes,
            store_commit_seconds,
            store_batch_size,
            http_requests,
            store_reads,
            store_reads_joined,
        }
    }

    /// The counter of `kind` read queries that reached the database (created at zero, so the
    /// series shows before the first read).
    pub fn store_reads(&self, kind: &'static str) -> Counter {
        self.store_reads.get_or_create(&ReadLabel { kind }).clone()
    }

    /// The counter of `kind` reads that shared a query another read had asked for.
    pub fn store_reads_joined(&self, kind: &'static str) -> Counter {
        self.store_reads_joined
            .get_or_create(&ReadLabel { kind })
            .clone()
    }

    /// The connection gauge for one transport.
    pub fn connections(&self, transport: &'static str) -> Gauge {
        self.connections
            .get_or_create(&TransportLabel { transport })
            .clone()
    }

    /// Renders the Prometheus text format, with the process's resident memory appended (read at
    /// scrape time so leak tests can compare it with a baseline).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        if let Some(rss) = resident_memory_bytes() {
            // `encode` ends with "# EOF"; keep that terminator last.
            let body = out.trim_end().trim_end_matches("# EOF").to_owned();
            out = format!(
                "{body}# HELP process_resident_memory_bytes Resident memory size in bytes.\n\
                 # TYPE process_resident_memory_bytes gauge\n\
                 process_resident_memory_bytes {rss}\n# EOF\n"
            );
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// VmRSS of this process from /proc (Linux only; `None` elsewhere).
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
