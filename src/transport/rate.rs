//! Rate limits: a token bucket per connection for the frames a client sends, with a verdict on
//! sustained abuse, and a token bucket per client IP for the HTTP API. Buckets come from
//! `governor` (GCRA, lock-free); only the abuse window is ours.
//!
//! Every chat frame is charged to one bucket, so a connection's limits never slow another one:
//! - `msg` to the post bucket: over it the client gets `error` `rate_limited` and nothing is
//!   stored;
//! - `typing` to its own bucket of the same size: over it the frame is dropped silently (a typing
//!   hint is advisory; an error per extra hint would only add traffic);
//! - everything else (`join`, `leave`, `nick`, `members`, `history`, unparsable frames) to a
//!   third bucket with the same rate and a burst large enough to rejoin every room a connection
//!   may be in (`--max-rooms-per-connection` + 10) after a reconnect: over it, `error`
//!   `rate_limited`.
//!
//! Every refused or dropped frame counts towards abuse: more than the threshold within the
//! window (default 10x the rate within 10 s) closes the connection with 1008.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiError;
use super::guard::client_key;
use crate::config::Config;
use crate::protocol::{ClientFrame, ErrorCode};

/// Frames beyond one `join` per allowed room in the burst of the "everything else" bucket.
const REJOIN_SLACK: u32 = 10;

/// Client IPs tracked by the API limiter before idle ones are pruned.
const PRUNE_ABOVE: usize = 10_000;

/// What to do with one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: carry it out.
    Allow,
    /// Over the limit: answer `rate_limited`, do nothing else.
    Reject,
    /// Over the limit, and the frame is advisory: drop it without an answer.
    Drop,
    /// Over the limit for too long: close the connection (1008).
    Abuse,
}

/// Which bucket a frame is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `msg`.
    Post,
    /// `typing`.
    Typing,
    /// Any other frame, or one that did not parse.
    Other,
}

impl FrameKind {
    /// The bucket of a decoded frame.
    pub fn of(frame: &ClientFrame) -> Self {
        match frame {
            ClientFrame::Msg { .. } => FrameKind::Post,
            ClientFrame::Typing { .. } => FrameKind::Typing,
            _ => FrameKind::Other,
        }
    }
}

/// One connection's token bucket. On `std::time::Instant` rather than governor's default quanta
/// clock: the clock is then zero-sized, which keeps three buckets per idle connection small, and
/// none needs calibrating when a connection opens.
type FrameBucket =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// One connection's buckets and its record of recent refusals.
pub struct FrameLimiter {
    posts: FrameBucket,
    typing: FrameBucket,
    other: FrameBucket,
    refusals: VecDeque<Instant>,
    threshold: usize,
    window: Duration,
}

impl FrameLimiter {
    /// The limiter `config` describes; `None` when rate limiting is off.
    pub fn new(config: &Config) -> Option<Self> {
        let quota = quota(config)?;
        // A reconnecting client rejoins every room it was in at once: the burst for `join` and
        // friends covers the most rooms a connection may be in, plus a few requests.
        let rejoin_burst = u32::try_from(config.hub.max_rooms_per_connection)
            .unwrap_or(u32::MAX)
            .saturating_add(REJOIN_SLACK);
        let other = match NonZeroU32::new(rejoin_burst) {
            Some(burst) if burst > quota.burst_size() => quota.allow_burst(burst),
            _ => quota,
        };
        Some(Self {
            posts: RateLimiter::direct_with_clock(quota, MonotonicClock),
            typing: RateLimiter::direct_with_clock(quota, MonotonicClock),
            other: RateLimiter::direct_with_clock(other, MonotonicClock),
            refusals: VecDeque::new(),
            threshold: config.abuse_threshold() as usize,
            window: config.abuse_window,
        })
    }

    /// Charges one frame and says what to do with it.
    pub fn check(&mut self, kind: FrameKind) -> Verdict {
        let bucket = match kind {
            FrameKind::Post => &self.posts,
            FrameKind::Typing => &self.typing,
            FrameKind::Other => &self.other,
        };
        if bucket.check().is_ok() {
            return Verdict::Allow;
        }
        let now = Instant::now();
        while self
            .refusals
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.refusals.pop_front();
        }
        self.refusals.push_back(now);
        if self.refusals.len() > self.threshold {
            return Verdict::Abuse;
        }
        match kind {
            FrameKind::Typing => Verdict::Drop,
            FrameKind::Post | FrameKind::Other => Verdict::Reject,
        }
    }
}

/// The HTTP API's bucket per client IP (posts, history and the room list alike).
pub struct ApiLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl ApiLimiter {
    /// The limiter `config` describes; `None` when rate limiting is off.
    pub fn new(config: &Config) -> Option<Self> {
        Some(Self {
            limiter: RateLimiter::keyed(quota(config)?),
        })
    }

    /// Charges one request from `ip` (IPv6: its /64): 429 `rate_limited` when over.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.limiter.len() > PRUNE_ABOVE {
            // Addresses whose bucket is full again carry no information; forget them so a scan
            // from many addresses cannot grow the map without bound.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&client_key(ip)).map_err(|_| {
            ApiError::new(
                ErrorCode::RateLimited,
                "too many requests from this address; slow down",
            )
        })
    }
}

fn quota(config: &Config) -> Option<Quota> {
    let rate = NonZeroU32::new(config.rate_limit)?;
    let burst = NonZeroU32::new(config.rate_burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rate: u32, burst: u32, abuse: u32) -> Config {
        Config {
            rate_limit: rate,
            rate_burst: burst,
            abuse_rejections: Some(abuse),
            ..Config::default()
        }
    }

    #[test]
    fn burst_passes_then_posts_are_rejected_and_typing_dropped() {
        let mut limiter = FrameLimiter::new(&config(1, 3, 100)).unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check(FrameKind::Post), Verdict::Allow);
        }
        assert_eq!(limiter.check(FrameKind::Post), Verdict::Reject);
        // Separate buckets: the rest can still rejoin every allowed room (100) at once, plus 10.
        for _ in 0..110 {
            assert_eq!(limiter.check(FrameKind::Other), Verdict::Allow);
        }
        assert_eq!(limiter.check(FrameKind::Other), Verdict::Reject);
        for _ in 0..3 {
            assert_eq!(limiter.check(FrameKind::Typing), Verdict::Allow);
        }
        assert_eq!(limiter.check(FrameKind::Typing), Verdict::Drop);
    }

    #[test]
    fn refusals_past_the_threshold_are_abuse() {
        let mut limiter = FrameLimiter::new(&config(1, 1, 5)).unwrap();
        assert_eq!(limiter.check(FrameKind::Post), Verdict::Allow);
        for _ in 0..5 {
            assert_eq!(limiter.check(FrameKind::Post), Verdict::Reject);
        }
        assert_eq!(limiter.check(FrameKind::Post), Verdict::Abuse);
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        assert!(FrameLimiter::new(&config(0, 20, 5)).is_none());
        assert!(ApiLimiter::new(&config(0, 20, 5)).is_none());
    }

    #[test]
    fn api_limiter_counts_per_address() {
        let limiter = ApiLimiter::new(&config(1, 2, 5)).unwrap();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        assert_eq!(limiter.check(a).unwrap_err().code, ErrorCode::RateLimited);
        assert!(limiter.check(b).is_ok());
    }
}
