//! GCRA rate limits (governor). Keys are hashes or IPs, so a check allocates nothing; idle
//! keys are dropped by `upkeep`, so limiter state does not grow without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{LimitConfig, RateLimitConfig};

/// Most client IPs remembered as blocked at once.
const MAX_BLOCKED: u64 = 100_000;

fn quota(l: &LimitConfig) -> Quota {
    let period = (l.per.0 / l.rate.max(1)).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(l.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

struct Limit<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
}

impl<K: std::hash::Hash + Eq + Clone> Limit<K> {
    fn new(l: &LimitConfig) -> Self {
        Limit {
            limiter: DefaultKeyedRateLimiter::keyed(quota(l)),
        }
    }

    /// `Err(wait)` when over the limit.
    fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|nu| nu.wait_time_from(DefaultClock::default().now()))
    }
}

/// All configured limits.
pub struct Limits {
    per_user: Option<Limit<u64>>,
    upgrades: Option<Limit<u64>>,
    ip_failures: Option<Limit<IpAddr>>,
    /// IPs whose failure budget is spent, until when.
    blocked: moka::sync::Cache<IpAddr, Instant>,
}

impl Limits {
    pub fn new(c: &RateLimitConfig) -> Limits {
        let ttl = c
            .per_ip_failures
            .map(|l| l.per.0)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1));
        Limits {
            per_user: c.per_user.as_ref().map(Limit::new),
            upgrades: c.upgrades_per_user.as_ref().map(Limit::new),
            ip_failures: c.per_ip_failures.as_ref().map(Limit::new),
            blocked: moka::sync::Cache::builder()
                .max_capacity(MAX_BLOCKED)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// Per-user request limit; `Err(retry_after_secs)`.
    pub fn check_user(&self, key: u64) -> Result<(), u64> {
        match &self.per_user {
            Some(l) => l.check(&key).map_err(retry_secs),
            None => Ok(()),
        }
    }

    /// Per-user upgrade limit.
    pub fn check_upgrade(&self, key: u64) -> Result<(), u64> {
        match &self.upgrades {
            Some(l) => l.check(&key).map_err(retry_secs),
            None => Ok(()),
        }
    }

    /// Is this IP's failure budget spent?
    pub fn ip_blocked(&self, ip: IpAddr) -> Option<u64> {
        self.ip_failures.as_ref()?;
        let until = self.blocked.get(&ip)?;
        let now = Instant::now();
        if until > now {
            Some(retry_secs(until - now))
        } else {
            self.blocked.invalidate(&ip);
            None
        }
    }

    /// Counts a 400/401 for this IP; `Some(retry)` when it exceeded the budget (answer 429).
    pub fn record_failure(&self, ip: IpAddr) -> Option<u64> {
        let l = self.ip_failures.as_ref()?;
        match l.check(&ip) {
            Ok(()) => None,
            Err(wait) => {
                self.blocked.insert(ip, Instant::now() + wait);
                Some(retry_secs(wait))
            }
        }
    }

    /// Drops limiter state for keys that are back to a full budget.
    pub fn upkeep(&self) {
        if let Some(l) = &self.per_user {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        if let Some(l) = &self.upgrades {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        if let Some(l) = &self.ip_failures {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        self.blocked.run_pending_tasks();
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.per_user.as_ref().map_or(0, |l| l.limiter.len())
            + self.upgrades.as_ref().map_or(0, |l| l.limiter.len())
            + self.ip_failures.as_ref().map_or(0, |l| l.limiter.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn cfg(rate: u32, per: u64, burst: u32) -> LimitConfig {
        LimitConfig {
            rate,
            per: Dur::secs(per),
            burst,
        }
    }

    #[test]
    fn failures_burst_then_block() {
        let limits = Limits::new(&RateLimitConfig {
            per_ip_failures: Some(cfg(1, 60, 3)),
            ..Default::default()
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(limits.ip_blocked(ip), None);
        for _ in 0..3 {
            assert_eq!(limits.record_failure(ip), None);
        }
        let retry = limits.record_failure(ip).unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(limits.ip_blocked(ip).is_some());
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limits.ip_blocked(other), None);
    }

    #[test]
    fn per_user_and_state_is_bounded() {
        let limits = Limits::new(&RateLimitConfig {
            per_user: Some(cfg(1000, 1, 2)),
            ..Default::default()
        });
        assert!(limits.check_user(1).is_ok());
        assert!(limits.check_user(1).is_ok());
        assert_eq!(limits.check_user(1), Err(1));
        for k in 2..1000 {
            let _ = limits.check_user(k);
        }
        assert!(limits.len() >= 999);
        std::thread::sleep(Duration::from_millis(10));
        limits.upkeep();
        assert_eq!(limits.len(), 0);
    }

    #[test]
    fn retry_rounds_up() {
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_secs(Duration::from_millis(2500)), 3);
        assert_eq!(retry_secs(Duration::ZERO), 1);
    }
}
