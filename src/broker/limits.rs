//! Limits every node of a cluster counts together, in Redis: slow mode's clock for accounts and
//! the login and sign-up buckets (issue 19). Counted per node, an account connected to two nodes
//! could post once per node per interval, and an attacker spread over N nodes would get N times
//! the password guesses.
//!
//! **Slow mode.** One key per account and room (`{channel}:slow:{room}:{account}`) holds the time
//! of its last post, by Redis's own clock (so the nodes' clocks need not agree). A Lua script
//! reads it, compares it with the room's interval *now* (a room whose interval was shortened lets
//! the account post sooner, as the node-local clock does) and stamps the post, in one atomic
//! step: two posts at the same moment on two nodes cannot both pass. Keys expire after the
//! longest interval there is.
//!
//! **Login buckets.** The same cell rate algorithm (GCRA) the node-local buckets use (governor:
//! a burst of N, then one every 60/N s), as one Lua step on one key per bucket
//! (`{channel}:bucket:{key}`) holding the bucket's "theoretical arrival time", kept only as long
//! as the bucket is not full again.
//!
//! **Redis unreachable: each node decides alone.** The callers fall back to their node's own
//! clock and buckets, and these limits do not ask Redis again for [`RETRY_AFTER`], so a
//! request waits for a dead Redis at most once per that time.

use std::sync::Mutex;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tracing::warn;

/// Slow mode's read, compare and stamp, atomically. KEYS[1]: the slot; ARGV[1]: the room's interval in
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

/// GCRA, atomically. KEYS[1]: the bucket; ARGV[1]: ms between two attempts once the burst is
/// spent; ARGV[2]: the burst. Answers 0 (charged) or the ms left to wait.
const CHARGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allowed_at = tat + interval - burst * interval
if allowed_at > now then
  return allowed_at - now
end
redis.call('SET', KEYS[1], tat + interval, 'PX', tat + interval - now)
return 0
";

/// How long a call waits for Redis before the node decides alone.
const TIMEOUT: Duration = Duration::from_secs(1);
/// After a failure, how long the node decides alone before asking Redis again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The shared limits (see the module doc).
pub(super) struct SharedLimits {
    client: redis::Client,
    /// `{channel}:`: the cluster's channel names its keys too.
    prefix: String,
    /// How long a stamp is kept: the longest interval slow mode allows.
    keep: Duration,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Set after a failure: until then the node decides alone.
    alone_until: Mutex<Option<Instant>>,
}

impl SharedLimits {
    pub(super) fn new(client: redis::Client, channel: &str, keep: Duration) -> Self {
        SharedLimits {
            client,
            prefix: format!("{channel}:"),
            keep,
            connection: tokio::sync::Mutex::new(None),
            alone_until: Mutex::new(None),
        }
    }

    /// Takes the slow-mode slot `key` for a post now: `Some(Ok(()))` taken (and stamped),
    /// `Some(Err(left))` a post less than `interval` ago holds it, `None` when Redis cannot
    /// answer (the caller's own clock decides).
    pub(super) async fn claim_slow_slot(
        &self,
        key: &str,
        interval: Duration,
    ) -> Option<Result<(), Duration>> {
        let key = format!("{}slow:{key}", self.prefix);
        self.run(CLAIM, key, millis(interval), millis(self.keep))
            .await
    }

    /// Charges one attempt to the bucket `key` that allows `per_minute` (a burst of that many,
    /// then one every 60/`per_minute` s): `Some(Err(wait))` when it is empty, `None` when Redis
    /// cannot answer (the caller's own bucket decides).
    pub(super) async fn charge_bucket(
        &self,
        key: &str,
        per_minute: u32,
    ) -> Option<Result<(), Duration>> {
        let per_minute = per_minute.max(1);
        let interval_ms = 60_000 / u64::from(per_minute);
        let key = format!("{}bucket:{key}", self.prefix);
        self.run(CHARGE, key, interval_ms, u64::from(per_minute))
            .await
    }

    /// Runs `script` on `key` with two numbers: `Some(Ok)` for 0, `Some(Err(ms))` for a wait.
    async fn run(
        &self,
        script: &str,
        key: String,
        first: u64,
        second: u64,
    ) -> Option<Result<(), Duration>> {
        if self.deciding_alone() {
            return None;
        }
        let call = self.eval(script, key, first, second);
        match tokio::time::timeout(TIMEOUT, call).await {
            Ok(Ok(0)) => Some(Ok(())),
            Ok(Ok(left_ms)) => Some(Err(Duration::from_millis(left_ms))),
            Ok(Err(err)) => self.failed(&err.to_string()),
            Err(_) => self.failed("no answer in time"),
        }
    }

    async fn eval(
        &self,
        script: &str,
        key: String,
        first: u64,
        second: u64,
    ) -> redis::RedisResult<u64> {
        let mut connection = self.connection().await?;
        let answer = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(key)
            .arg(first)
            .arg(second)
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
                "shared limits unreachable in redis: each node counts slow mode and logins alone meanwhile"
            );
        }
        *until = Some(Instant::now() + RETRY_AFTER);
        None
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
