//! Login and sign-up limits (governor's keyed GCRA buckets): sign-in attempts per account name
//! (its case-folded key, known or not, so the limit itself reveals nothing) and per client
//! address, and sign-ups per address (sign-up has to say when a name is taken, so it is the
//! one place a name can be probed; the limit makes probing slow). Every attempt is charged,
//! successful or not, before any password is hashed.
//!
//! On a cluster the buckets are the cluster's: each charge goes to the broker's shared buckets
//! (Redis, `broker/limits.rs`, the same algorithm), so an attacker spread over N nodes gets the
//! limit once, not N times. The node's own buckets decide on one node, and while the shared
//! ones cannot be reached.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::broker::Broker;

/// Keys kept before buckets that are full again are forgotten.
const PRUNE_ABOVE: usize = 10_000;

/// How many attempts each bucket allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Sign-in attempts per account name: this many at once, then one per
    /// `60 / per_name_per_minute` seconds.
    pub per_name_per_minute: u32,
    /// Sign-in attempts per client address, as above.
    pub per_address_per_minute: u32,
    /// Sign-ups per client address, as above.
    pub signups_per_address_per_minute: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_name_per_minute: 5,
            per_address_per_minute: 20,
            signups_per_address_per_minute: 10,
        }
    }
}

/// The buckets.
pub struct LoginLimits {
    settings: LimitSettings,
    by_name: DefaultKeyedRateLimiter<String>,
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    signups: DefaultKeyedRateLimiter<IpAddr>,
    /// The cluster's buckets, asked first when set.
    shared: Option<Arc<dyn Broker>>,
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
}

impl LoginLimits {
    /// Buckets as `settings` says.
    pub fn new(settings: LimitSettings) -> Self {
        LoginLimits {
            settings,
            by_name: RateLimiter::keyed(per_minute(settings.per_name_per_minute)),
            by_address: RateLimiter::keyed(per_minute(settings.per_address_per_minute)),
            signups: RateLimiter::keyed(per_minute(settings.signups_per_address_per_minute)),
            shared: None,
        }
    }

    /// Counts on the broker's shared buckets first (see the module doc).
    pub(crate) fn share_through(&mut self, broker: Arc<dyn Broker>) {
        self.shared = Some(broker);
    }

    /// Charges one sign-in attempt for `name_key` from `address` (already the counted key:
    /// IPv4, or an IPv6 /64). `Err(wait)` when either bucket is empty.
    pub async fn sign_in(&self, name_key: &str, address: IpAddr) -> Result<(), Duration> {
        let per_address = self.settings.per_address_per_minute;
        match self
            .charge_shared(&format!("in:addr:{address}"), per_address)
            .await
        {
            Some(charged) => charged?,
            None => charge(&self.by_address, &address)?,
        }
        let per_name = self.settings.per_name_per_minute;
        match self
            .charge_shared(&format!("in:name:{name_key}"), per_name)
            .await
        {
            Some(charged) => charged,
            None => charge(&self.by_name, &name_key.to_owned()),
        }
    }

    /// Charges one sign-up from `address`.
    pub async fn sign_up(&self, address: IpAddr) -> Result<(), Duration> {
        let per_address = self.settings.signups_per_address_per_minute;
        match self
            .charge_shared(&format!("up:addr:{address}"), per_address)
            .await
        {
            Some(charged) => charged,
            None => charge(&self.signups, &address),
        }
    }

    async fn charge_shared(&self, key: &str, per_minute: u32) -> Option<Result<(), Duration>> {
        self.shared.as_ref()?.charge_bucket(key, per_minute).await
    }
}

fn charge<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Duration>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > PRUNE_ABOVE {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
    limiter
        .check_key(key)
        .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_name_is_refused_after_its_burst_with_a_wait() {
        let limits = LoginLimits::new(LimitSettings::default());
        for _ in 0..5 {
            assert!(limits.sign_in("alice", HOME).await.is_ok());
        }
        let wait = limits.sign_in("alice", HOME).await.unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(12));
        assert!(limits.sign_in("bob", HOME).await.is_ok());
    }

    #[tokio::test]
    async fn an_address_is_refused_after_its_burst_whatever_the_names() {
        let limits = LoginLimits::new(LimitSettings::default());
        for n in 0..20 {
            assert!(limits.sign_in(&format!("user{n}"), HOME).await.is_ok());
        }
        assert!(limits.sign_in("someone-else", HOME).await.is_err());
    }
}
