//! GCRA rate limits (governor). Keys are hashes or IPs, so a check allocates nothing; idle
//! keys are dropped by `upkeep`, so limiter state does not grow without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{LimitConfig, RateLimitConfig};

/// Most client IPs whose failure budget is remembered at once.
const MAX_FAILING_IPS: u64 = 100_000;

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

/// The per-IP failure budget, a GCRA written out because the decision must *look* at the
/// budget (is it spent?) before it verifies anything, and governor can only spend.
/// A failure at `now` is admitted while `tat <= now + tolerance`; admitting it moves the
/// theoretical arrival time `tat` to `max(tat, now) + interval`.
struct FailureBudget {
    interval: Duration,
    /// `(burst - 1) * interval`: `burst` failures pass from a full budget.
    tolerance: Duration,
    epoch: Instant,
    /// `tat` per IP, as time since `epoch`. An entry is dropped `burst * interval` after its
    /// last write, when its budget is full again, so absent means full.
    tat: moka::sync::Cache<IpAddr, Duration>,
}

impl FailureBudget {
    fn new(l: &LimitConfig) -> FailureBudget {
        let interval = (l.per.0 / l.rate.max(1)).max(Duration::from_nanos(1));
        let burst = l.burst.max(1);
        FailureBudget {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            epoch: Instant::now(),
            tat: moka::sync::Cache::builder()
                .max_capacity(MAX_FAILING_IPS)
                .time_to_live(interval.saturating_mul(burst))
                .build(),
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// How long until the next failure would be admitted, when the budget is spent.
    fn spent(&self, ip: IpAddr, now: Duration) -> Option<Duration> {
        let tat = self.tat.get(&ip)?;
        let wait = tat.checked_sub(now + self.tolerance)?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Counts a failure; `Err(wait)` when the budget was already spent (then not counted).
    fn record(&self, ip: IpAddr, now: Duration) -> Result<(), Duration> {
        use moka::ops::compute::Op;
        let mut result = Ok(());
        self.tat.entry(ip).and_compute_with(|entry| {
            let tat = entry.map_or(now, |e| e.into_value().max(now));
            match tat
                .checked_sub(now + self.tolerance)
                .filter(|w| !w.is_zero())
            {
                Some(wait) => {
                    result = Err(wait);
                    Op::Nop
                }
                None => Op::Put(tat + self.interval),
            }
        });
        result
    }
}

/// All configured limits.
pub struct Limits {
    per_user: Option<Limit<u64>>,
    upgrades: Option<Limit<u64>>,
    ip_failures: Option<FailureBudget>,
}

impl Limits {
    pub fn new(c: &RateLimitConfig) -> Limits {
        Limits {
            per_user: c.per_user.as_ref().map(Limit::new),
            upgrades: c.upgrades_per_user.as_ref().map(Limit::new),
            ip_failures: c.per_ip_failures.as_ref().map(FailureBudget::new),
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

    /// Is this IP's failure budget spent? `Some(retry_after_secs)` until it refills.
    pub fn ip_blocked(&self, ip: IpAddr) -> Option<u64> {
        let b = self.ip_failures.as_ref()?;
        b.spent(ip, b.now()).map(retry_secs)
    }

    /// Counts a 400/401 for this IP; `Some(retry)` when the budget was already spent (a
    /// concurrent request spent it first): answer 429.
    pub fn record_failure(&self, ip: IpAddr) -> Option<u64> {
        let b = self.ip_failures.as_ref()?;
        b.record(ip, b.now()).err().map(retry_secs)
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
        if let Some(b) = &self.ip_failures {
            b.tat.run_pending_tasks();
        }
    }

    /// Keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.per_user.as_ref().map_or(0, |l| l.limiter.len())
            + self.upgrades.as_ref().map_or(0, |l| l.limiter.len())
            + self
                .ip_failures
                .as_ref()
                .map_or(0, |b| b.tat.entry_count() as usize)
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
        for _ in 0..2 {
            assert_eq!(limits.record_failure(ip), None);
            assert_eq!(limits.ip_blocked(ip), None);
        }
        // The `burst`-th failure is admitted and spends the budget: blocked from now on.
        assert_eq!(limits.record_failure(ip), None);
        let retry = limits.ip_blocked(ip).unwrap();
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(limits.record_failure(ip), Some(retry));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limits.ip_blocked(other), None);
    }

    /// The budget refills at `rate` per `per`: one failure per interval after the burst.
    #[test]
    fn failure_budget_refills_one_interval_at_a_time() {
        let b = FailureBudget::new(&cfg(1, 10, 2));
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let at = Duration::from_secs;
        assert_eq!(b.record(ip, at(100)), Ok(()));
        assert_eq!(b.record(ip, at(100)), Ok(()));
        assert_eq!(b.spent(ip, at(100)), Some(at(10)));
        assert_eq!(b.record(ip, at(100)), Err(at(10)));
        assert_eq!(b.spent(ip, at(105)), Some(at(5)));
        // One interval (10 s) refills one failure, not the whole burst.
        assert_eq!(b.spent(ip, at(110)), None);
        assert_eq!(b.record(ip, at(110)), Ok(()));
        assert_eq!(b.spent(ip, at(110)), Some(at(10)));
        // After `burst` intervals the budget is full again.
        assert_eq!(b.spent(ip, at(130)), None);
        assert_eq!(b.record(ip, at(130)), Ok(()));
        assert_eq!(b.record(ip, at(130)), Ok(()));
        assert!(b.spent(ip, at(130)).is_some());
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
