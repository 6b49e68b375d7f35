//! Readiness: whether this node can serve new clients now, which `/readyz` answers for a load
//! balancer. `/healthz` only says the process runs; a node whose database does not answer, whose
//! broker is cut off from the other nodes, or which is shutting down still runs, but new clients
//! are better sent elsewhere.
//!
//! The check is bounded: the store's ping gets [`STORE_PING_TIMEOUT`], so a hung database makes
//! the probe answer "not ready" instead of hanging with it. Probes that arrive together share one
//! ping (and a ping's answer is reused for [`PING_REUSE`]), so however many balancers probe how
//! often, the database sees at most about two pings a second from them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::store::Store;

/// How long the store may take to answer a ping before the node counts as not ready. Load
/// balancers' probe timeouts are a few seconds; this answers within them.
pub const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one ping's answer stands for the probes after it.
pub const PING_REUSE: Duration = Duration::from_millis(500);

/// What the store's ping said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreCheck {
    /// It answered.
    Ok,
    /// It answered with an error (unreachable, refused, closed).
    Unavailable,
    /// It did not answer within [`STORE_PING_TIMEOUT`].
    TimedOut,
}

/// What the broker said.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerCheck {
    /// Connected to the other nodes (always, for the in-process broker of a single node).
    Ok,
    /// Cut off from the other nodes: this node's members would miss theirs.
    Disconnected,
}

/// One readiness check, as `/readyz` sends it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Whether the node should get new clients.
    pub ready: bool,
    /// What is not ready: `store`, `broker`, `draining` (empty when ready).
    pub not_ready: Vec<&'static str>,
    /// The store's answer.
    pub store: StoreCheck,
    /// The broker's state.
    pub broker: BrokerCheck,
    /// Whether the node is shutting down.
    pub draining: bool,
}

impl Report {
    /// The verdict on these three answers: ready only if all are fine.
    pub fn new(store: StoreCheck, broker: BrokerCheck, draining: bool) -> Self {
        let mut not_ready = Vec::new();
        if store != StoreCheck::Ok {
            not_ready.push("store");
        }
        if broker != BrokerCheck::Ok {
            not_ready.push("broker");
        }
        if draining {
            not_ready.push("draining");
        }
        Self {
            ready: not_ready.is_empty(),
            not_ready,
            store,
            broker,
            draining,
        }
    }
}

/// Checks a node's readiness. One per server, shared by every `/readyz` request.
pub struct Readiness {
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    /// Cancelled when the server starts shutting down.
    draining: CancellationToken,
    /// The last ping's answer and when it came; held while a ping runs, so concurrent probes
    /// wait for that one instead of pinging too.
    last_ping: Mutex<Option<(Instant, StoreCheck)>>,
    /// The last verdict, so that a change is logged once rather than at every probe.
    was_ready: AtomicBool,
}

impl Readiness {
    /// Checks `store` and `broker`, and counts the node as draining once `draining` is cancelled.
    pub fn new(
        store: Arc<dyn Store>,
        broker: Arc<dyn Broker>,
        draining: CancellationToken,
    ) -> Self {
        Self {
            store,
            broker,
            draining,
            last_ping: Mutex::new(None),
            was_ready: AtomicBool::new(true),
        }
    }

    /// Checks now (at most [`STORE_PING_TIMEOUT`] and the wait for a ping already running).
    pub async fn check(&self) -> Report {
        let store = self.store_check().await;
        let broker = if self.broker.is_ready() {
            BrokerCheck::Ok
        } else {
            BrokerCheck::Disconnected
        };
        let report = Report::new(store, broker, self.draining.is_cancelled());
        if self.was_ready.swap(report.ready, Ordering::Relaxed) != report.ready {
            if report.ready {
                info!("ready again: /readyz answers 200");
            } else {
                warn!(
                    not_ready = ?report.not_ready,
                    store = ?report.store,
                    broker = ?report.broker,
                    draining = report.draining,
                    "not ready: /readyz answers 503"
                );
            }
        }
        report
    }

    async fn store_check(&self) -> StoreCheck {
        let mut last = self.last_ping.lock().await;
        if let Some((at, check)) = *last
            && at.elapsed() < PING_REUSE
        {
            return check;
        }
        let check = match tokio::time::timeout(STORE_PING_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => StoreCheck::Ok,
            Ok(Err(err)) => {
                debug!(cause = %err, "readiness: the store's ping failed");
                StoreCheck::Unavailable
            }
            Err(_) => {
                debug!(
                    timeout = ?STORE_PING_TIMEOUT,
                    "readiness: the store's ping timed out"
                );
                StoreCheck::TimedOut
            }
        };
        *last = Some((Instant::now(), check));
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_passes() {
        let ready = Report::new(StoreCheck::Ok, BrokerCheck::Ok, false);
        assert!(ready.ready);
        assert!(ready.not_ready.is_empty());
        let all = Report::new(StoreCheck::TimedOut, BrokerCheck::Disconnected, true);
        assert!(!all.ready);
        assert_eq!(all.not_ready, ["store", "broker", "draining"]);
        let draining = Report::new(StoreCheck::Ok, BrokerCheck::Ok, true);
        assert_eq!(draining.not_ready, ["draining"]);
        assert!(!draining.ready);
    }

    async fn readiness_on_sqlite(draining: CancellationToken) -> (Readiness, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(
            &dir.path().join("hubbub.db"),
            Duration::from_secs(5),
            crate::config::Durability::Machine,
        )
        .await
        .unwrap();
        let readiness = Readiness::new(Arc::new(store), crate::broker::local(), draining);
        (readiness, dir)
    }

    #[tokio::test]
    async fn a_node_on_a_working_store_is_ready_until_it_drains() {
        let draining = CancellationToken::new();
        let (readiness, _dir) = readiness_on_sqlite(draining.clone()).await;
        assert_eq!(
            readiness.check().await,
            Report::new(StoreCheck::Ok, BrokerCheck::Ok, false)
        );
        draining.cancel();
        assert_eq!(
            readiness.check().await,
            Report::new(StoreCheck::Ok, BrokerCheck::Ok, true)
        );
    }

    #[test]
    fn the_report_is_json_naming_what_is_not_ready() {
        let report = Report::new(StoreCheck::Unavailable, BrokerCheck::Ok, false);
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "ready": false,
                "not_ready": ["store"],
                "store": "unavailable",
                "broker": "ok",
                "draining": false,
            })
        );
    }
}
