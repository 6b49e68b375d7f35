//! Slow mode's clock shared by every node (issue 19): when each signed-in account last posted in
//! each slow room, kept in Redis so that an account connected to two nodes still gets one post
//! per interval, not one per node.
//!
//! One key per account and room (`{channel}:slow:{room}:{account}`) holds the time of its last
//! post, by Redis's own clock (so the nodes' clocks need not agree). A Lua script reads it,
//! compares it with the room's interval *now* (a room whose interval was shortened lets the
//! account post sooner, as the node-local clock does) and stamps the post, in one atomic step:
//! two posts at the same moment on two nodes cannot both pass. Keys expire after the longest
//! interval there is, so a room that stops being slow leaves nothing behind for long.
//!
//! **Redis unreachable: each node decides alone.** The hub falls back to its own clock (one
//! post per interval per node, as before), and this clock does not ask Redis again for
//! [`RETRY_AFTER`], so a post to a slow room waits for a dead Redis at most once per that time.

use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tracing::warn;

/// The read, compare and stamp, atomically. KEYS[1]: the slot; ARGV[1]: the room's interval in
/// ms; ARGV[2]: the key's lifetime in ms. Answers 0 (taken) or the ms left to wait.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[1]))
local interval = tonumber(ARGV[1])
if last and now - last < interval then
  return interval - (now - last)
end
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
return 0
";

/// How long a call waits for Redis before the node decides alone.
const TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, how long the node decides alone before asking Redis again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The shared clock (see the module doc).
pub(super) struct SharedSlowClock {
    client: redis::Client,
    /// `{channel}:slow:`: the cluster's channel names its keys too.
    prefix: String,
    /// How long a stamp is kept: the longest interval slow mode allows.
    keep: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Set after a failure: until then the node decides alone.
    alone_until: Mutex<Option<Instant>>,
}

impl SharedSlowClock {
    pub(super) fn new(client: redis::Client, channel: &str, keep: Duration) -> Self {
        SharedSlowClock {
            client,
            prefix: format!("{channel}:slow:"),
            keep,
            connection: tokio::sync::Mutex::new(None),
            alone_until: Mutex::new(None),
        }
    }

    /// Takes the slot `key` for a post now: `Some(Ok(()))` taken (and stamped), `Some(Err(left))`
    /// a post less than `interval` ago holds it, `None` when Redis cannot answer (the caller's
    /// own clock decides).
    pub(super) async fn claim(
        &self,
        key: &str,
        interval: Duration,
    ) -> Option<Result<(), Duration>> {
        if self.deciding_alone() {
            return None;
        }
        match tokio::time::timeout(TIMEOUT, self.run_claim(key, interval)).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(left_ms)) => Some(Err(Duration::from_millis(left_ms))),
            Ok(Err(err)) => self.failed(&err.to_string()),
            Err(_) => self.failed("no answer in time"),
        }
    }

    async fn run_claim(&self, key: &str, interval: Duration) -> redis::RedisResult<u64> {
        let mut connection = self.connection().await?;
        let answer = redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(format!("{}{key}", self.prefix))
            .arg(millis(interval))
            .arg(millis(self.keep))
            .query_async::<u64>(&mut connection)
            .await;
        if answer.is_err() {
            // A broken connection is made again on the next call.
            *self.connection.lock().await = None;
        }
        answer
    }

    /// The shared connection, made on first use.
    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(slot.insert(connection).clone())
    }

    fn deciding_alone(&self) -> bool {
        let mut until = self
            .alone_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match *until {
            Some(at) if Instant::now() < at => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    fn failed(&self, cause: &str) -> Option<Result<(), Duration>> {
        let mut until = self
            .alone_until
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if until.is_none() {
            warn!(
                cause,
                retry_in_s = RETRY_AFTER.as_secs(),
                "slow mode's shared clock unreachable: each node counts posts alone meanwhile"
            );
        }
        *until = Some(Instant::now() + RETRY_AFTER);
        None
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
