//! GCRA rate limits, behind one interface with two implementations: in process (governor
//! for the per-user limits, a written-out GCRA for the failure budget; keys are hashes or
//! IPs, so a check allocates nothing, and idle keys are dropped by `upkeep`), or one GCRA per
//! key for the whole cluster in Redis (`LIMIT_SCRIPT`: atomic, timed by Redis's `TIME`, every
//! limit of one request in one call). Per-user limits large enough are *sliced* (SPEC §11): a
//! replica takes a few of a key's requests from Redis in one call (`TAKE_SCRIPT`) and spends
//! them locally for a short while; once Redis says the budget is spent, it refuses locally
//! until the time Redis gave. With Redis unreachable the in-process limiter decides
//! (`on_unavailable = "local"`, counted) or the request is refused (`"deny"`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gatepass_service::state::{OnUnavailable, RedisState};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{LimitConfig, RateLimitConfig};

/// Most client IPs whose failure budget is remembered at once.
const MAX_FAILING_IPS: u64 = 100_000;

/// The GCRA emission interval of a limit: `per / rate` (at least 1 µs, which every
/// implementation here can represent).
fn interval(l: &LimitConfig) -> Duration {
    (l.per.0 / l.rate.max(1)).max(Duration::from_micros(1))
}

fn quota(l: &LimitConfig) -> Quota {
    let period = interval(l);
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
        let interval = interval(l);
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

/// All configured limits, in process.
pub struct LocalLimits {
    per_user: Option<Limit<u64>>,
    upgrades: Option<Limit<u64>>,
    ip_failures: Option<FailureBudget>,
}

impl LocalLimits {
    pub fn new(c: &RateLimitConfig) -> LocalLimits {
        LocalLimits {
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

/// One GCRA for every replica, per key: `KEYS[i]` with `ARGV[3i-2..3i]` = interval and
/// tolerance (µs) and a mode: `spend` admits and moves `tat` to `max(tat, now) + interval`,
/// `look` only reports. A key is refused while `tat > now + tolerance` (an absent key is a
/// full budget: each expires when its `tat` has passed). Returns, per key, 0 (admitted) or the
/// wait in µs; after the first refused `spend` later keys are not evaluated (-1), as the
/// in-process limiter stops at the first limit that refuses.
const LIMIT_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local refused = false
for i, key in ipairs(KEYS) do
  if refused then
    out[i] = -1
  else
    local interval = tonumber(ARGV[3 * i - 2])
    local tolerance = tonumber(ARGV[3 * i - 1])
    local spend = ARGV[3 * i] == 'spend'
    local tat = tonumber(redis.call('GET', key) or '0') or 0
    if tat < now then tat = now end
    local wait = tat - (now + tolerance)
    if wait > 0 then
      out[i] = wait
      if spend then refused = true end
    else
      out[i] = 0
      if spend then
        local new = tat + interval
        redis.call('SET', key, string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)
      end
    end
  end
end
return out
"#;

static LIMIT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LIMIT_LUA));

/// Slices of one GCRA per key: `KEYS[i]` with `ARGV[3i-2..3i]` = interval, tolerance (µs) and
/// how many requests to take. Takes `min(want, available)` at once, exactly as that many
/// requests arriving now would (so the cluster never admits more than one GCRA does), and
/// returns per key `{taken, wait}`: with nothing available, `wait` is the µs until `want`
/// requests are (the replica refuses locally until then).
const TAKE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  local room = now + tolerance - tat
  if room < 0 then
    out[2 * i - 1] = 0
    out[2 * i] = tat + (want - 1) * interval - (now + tolerance)
  else
    local taken = math.min(want, math.floor(room / interval) + 1)
    local new = tat + taken * interval
    redis.call('SET', key, string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)
    out[2 * i - 1] = taken
    out[2 * i] = 0
  end
end
return out
"#;

static TAKE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE_LUA));

/// How long a replica may spend a slice; what is left then lapses (never returned, so a
/// replica that dies holding one loses at most that slice).
pub const SLICE_LIFETIME: Duration = Duration::from_millis(100);
/// The lifetime of a slice that is at most 1% of its limit's burst: holding it longer
/// withholds nothing another replica could miss, and saves round trips for keys far below
/// their limit.
pub const LONG_SLICE_LIFETIME: Duration = Duration::from_secs(1);
/// A limit is sliced when a slice holds at least this many requests (at most 1/4 round trip
/// per admitted request); smaller budgets keep the exact path.
pub const MIN_SLICE: u32 = 4;
/// At most this many requests in one slice.
pub const MAX_SLICE: u32 = 64;

/// The slice size of a limit: what it admits in `SLICE_LIFETIME`, at most half its burst
/// (the rest stays for the other replicas) and `MAX_SLICE`; `None` below `MIN_SLICE`.
fn slice_size(l: &LimitConfig) -> Option<u32> {
    let per_lifetime = (SLICE_LIFETIME.as_micros() / interval(l).as_micros().max(1)) as u64;
    let size = per_lifetime
        .min(u64::from((l.burst / 2).max(1)))
        .min(u64::from(MAX_SLICE)) as u32;
    (size >= MIN_SLICE).then_some(size)
}

/// One key's slice on this replica.
#[derive(Default)]
struct Slice {
    /// Requests left to admit locally, until `until`.
    tokens: u32,
    until: Option<Instant>,
    /// Redis said the budget is spent: refuse locally until then.
    blocked_until: Option<Instant>,
    /// A refill in flight; waiters subscribe and wake when it is dropped.
    refill: Option<tokio::sync::watch::Sender<()>>,
}

type SliceShard = Mutex<HashMap<u64, Slice, foldhash::fast::RandomState>>;

/// A sliced limit's slices on this replica, sharded by key.
struct Slices {
    gcra: Gcra,
    size: u32,
    lifetime: Duration,
    shards: Box<[SliceShard]>,
}

/// What a request does next with its key's slice.
enum Step {
    Admit,
    Refuse(Duration),
    Wait(tokio::sync::watch::Receiver<()>),
    Refill,
}

const SLICE_SHARDS: usize = 16;

impl Slices {
    fn new(l: &LimitConfig) -> Option<Slices> {
        let size = slice_size(l)?;
        let lifetime = if u64::from(size) * 100 <= u64::from(l.burst) {
            LONG_SLICE_LIFETIME
        } else {
            SLICE_LIFETIME
        };
        Some(Slices {
            gcra: Gcra::new(l),
            size,
            lifetime,
            shards: (0..SLICE_SHARDS).map(|_| Mutex::default()).collect(),
        })
    }

    fn shard(
        &self,
        key: u64,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, Slice, foldhash::fast::RandomState>> {
        self.shards[(key as usize) % SLICE_SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn step(&self, key: u64, now: Instant) -> Step {
        let mut shard = self.shard(key);
        let e = shard.entry(key).or_default();
        if let Some(b) = e.blocked_until {
            if now < b {
                return Step::Refuse(b - now);
            }
            e.blocked_until = None;
        }
        if e.tokens > 0 && e.until.is_some_and(|u| now < u) {
            e.tokens -= 1;
            return Step::Admit;
        }
        match &e.refill {
            Some(tx) => Step::Wait(tx.subscribe()),
            None => {
                e.refill = Some(tokio::sync::watch::channel(()).0);
                Step::Refill
            }
        }
    }

    /// Spends one request of `key`'s budget: from the slice in hand, else a new slice from
    /// Redis (one call per key at a time on this replica; concurrent requests wait for it).
    /// `Ok(Err(wait))` when refused.
    async fn spend(
        &self,
        shared: &Shared,
        key: u64,
        redis_key: impl Fn() -> String,
    ) -> Result<Result<(), Duration>, gatepass_service::state::StateError> {
        loop {
            match self.step(key, Instant::now()) {
                Step::Admit => return Ok(Ok(())),
                Step::Refuse(wait) => return Ok(Err(wait)),
                // Woken when the refill ends (its sender is dropped), whatever its outcome.
                Step::Wait(mut rx) => {
                    let _ = rx.changed().await;
                }
                Step::Refill => {
                    // Clears the in-flight mark even if this request is dropped mid-call.
                    let guard = RefillGuard { slices: self, key };
                    let taken = shared.take(redis_key(), self.gcra, self.size).await;
                    let now = Instant::now();
                    let mut shard = self.shard(key);
                    let e = shard.entry(key).or_default();
                    let out = match taken {
                        Ok((n, _)) if n >= 1 => {
                            e.tokens = n - 1;
                            e.until = Some(now + self.lifetime);
                            Ok(Ok(()))
                        }
                        Ok((_, wait)) => {
                            e.tokens = 0;
                            e.blocked_until = Some(now + wait);
                            Ok(Err(wait))
                        }
                        Err(err) => Err(err),
                    };
                    drop(shard);
                    drop(guard);
                    return out;
                }
            }
        }
    }

    /// Drops slices that hold nothing: spent or lapsed, not blocked, no refill in flight.
    fn upkeep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            s.retain(|_, e| {
                e.refill.is_some()
                    || e.blocked_until.is_some_and(|b| now < b)
                    || (e.tokens > 0 && e.until.is_some_and(|u| now < u))
            });
        }
    }

    fn len(&self) -> usize {
        (0..SLICE_SHARDS as u64).map(|i| self.shard(i).len()).sum()
    }
}

/// Ends a refill: drops its sender (waking the waiters), also when the request is dropped.
struct RefillGuard<'a> {
    slices: &'a Slices,
    key: u64,
}

impl Drop for RefillGuard<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.slices.shard(self.key).get_mut(&self.key) {
            e.refill = None;
        }
    }
}

/// A limit's GCRA parameters in µs, as the script takes them.
#[derive(Clone, Copy)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(l: &LimitConfig) -> Gcra {
        let interval = interval(l).as_micros().min(u64::MAX as u128) as u64;
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(l.burst.max(1) - 1)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Spend,
    Look,
}

/// The limits in Redis.
struct Shared {
    redis: Arc<RedisState>,
    per_user: Option<Gcra>,
    upgrades: Option<Gcra>,
    ip_failures: Option<Gcra>,
    /// Slices of the per-user limits large enough to slice.
    user_slices: Option<Slices>,
    upgrade_slices: Option<Slices>,
}

impl Shared {
    /// A slice of up to `want` requests of `key`: (taken, wait) as `TAKE_SCRIPT` answers.
    async fn take(
        &self,
        key: String,
        g: Gcra,
        want: u32,
    ) -> Result<(u32, Duration), gatepass_service::state::StateError> {
        let out: Vec<i64> = self
            .redis
            .call("limit_slice", |mut c| async move {
                TAKE_SCRIPT
                    .key(key)
                    .arg(g.interval)
                    .arg(g.tolerance)
                    .arg(want)
                    .invoke_async::<Vec<i64>>(&mut c)
                    .await
            })
            .await?;
        let taken = out.first().copied().unwrap_or(0).clamp(0, i64::from(want)) as u32;
        let wait = Duration::from_micros(out.get(1).copied().unwrap_or(0).max(0) as u64);
        Ok((taken, wait))
    }

    /// One script call for every `(key, limit, mode)`: the waits in µs (0 = admitted).
    async fn run(
        &self,
        op: &'static str,
        checks: Vec<(String, Gcra, Mode)>,
    ) -> Result<Vec<i64>, gatepass_service::state::StateError> {
        self.redis
            .call(op, |mut c| async move {
                let mut inv = LIMIT_SCRIPT.prepare_invoke();
                for (key, g, mode) in &checks {
                    inv.key(key)
                        .arg(g.interval)
                        .arg(g.tolerance)
                        .arg(match mode {
                            Mode::Spend => "spend",
                            Mode::Look => "look",
                        });
                }
                inv.invoke_async::<Vec<i64>>(&mut c).await
            })
            .await
    }

    /// A stable (cluster-wide) key for a user: a digest of the encoded id. A user's limits
    /// share one group (one Cluster slot): the exact path checks both in one script.
    fn user_key(&self, kind: &str, user: LimitedUser<'_>) -> String {
        let id = gatepass_service::digest::sha256_b64(user.id);
        self.redis.group_key(&id, &format!("limit:{kind}:{id}"))
    }

    fn ip_key(&self, ip: IpAddr) -> String {
        self.redis.key(&format!("limit:ip:{ip}"))
    }
}

fn wait_secs(us: i64) -> u64 {
    retry_secs(Duration::from_micros(us.max(0) as u64))
}

/// One request of `v`'s `kind` limit: from its slices when sliced, else one exact round
/// trip. `Some(retry_secs)` when refused.
async fn spend_one(
    s: &Shared,
    kind: &'static str,
    slices: Option<&Slices>,
    g: Gcra,
    v: LimitedUser<'_>,
) -> Result<Option<u64>, gatepass_service::state::StateError> {
    match slices {
        Some(slices) => Ok(slices
            .spend(s, v.key, || s.user_key(kind, v))
            .await?
            .err()
            .map(retry_secs)),
        None => exact(s, s.user_key(kind, v), g).await,
    }
}

/// One exact spend of `key` (one round trip): `Some(retry_secs)` when refused.
async fn exact(
    s: &Shared,
    key: String,
    g: Gcra,
) -> Result<Option<u64>, gatepass_service::state::StateError> {
    let waits = s.run("limits", vec![(key, g, Mode::Spend)]).await?;
    Ok(waits.first().filter(|w| **w > 0).map(|w| wait_secs(*w)))
}

/// Whom a per-user limit counts: a key for the in-process limiter (a per-process hash of the
/// user id) and the encoded user id, whose digest names the user's budget in Redis.
#[derive(Debug, Clone, Copy)]
pub struct LimitedUser<'a> {
    pub key: u64,
    pub id: &'a [u8],
}

/// Why a verified request is refused by a per-user limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `per_user`, with `Retry-After` seconds.
    User(u64),
    /// `upgrades_per_user`.
    Upgrades(u64),
    /// Redis unreachable and `on_unavailable = "deny"`.
    Unavailable,
}

/// Redis unreachable and `on_unavailable = "deny"`: answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// Every configured limit: in Redis when `[state] backend = "redis"`, else (and as the
/// fallback) in process.
pub struct Limits {
    local: LocalLimits,
    shared: Option<Shared>,
    fallbacks: metrics::Counter,
}

impl Limits {
    /// In process only.
    pub fn new(c: &RateLimitConfig) -> Limits {
        Limits {
            local: LocalLimits::new(c),
            shared: None,
            fallbacks: metrics::Counter::noop(),
        }
    }

    /// In Redis, with the in-process limits as the fallback; `fallbacks` counts its use.
    pub fn redis(
        c: &RateLimitConfig,
        redis: Arc<RedisState>,
        fallbacks: metrics::Counter,
    ) -> Limits {
        Limits {
            local: LocalLimits::new(c),
            shared: Some(Shared {
                redis,
                per_user: c.per_user.as_ref().map(Gcra::new),
                upgrades: c.upgrades_per_user.as_ref().map(Gcra::new),
                ip_failures: c.per_ip_failures.as_ref().map(Gcra::new),
                user_slices: c.per_user.as_ref().and_then(Slices::new),
                upgrade_slices: c.upgrades_per_user.as_ref().and_then(Slices::new),
            }),
            fallbacks,
        }
    }

    /// Redis did not answer: the process decides, or the request is refused.
    fn fallback(&self, shared: &Shared) -> Result<(), Unavailable> {
        match shared.redis.on_unavailable() {
            OnUnavailable::Deny => Err(Unavailable),
            _ => {
                self.fallbacks.increment(1);
                Ok(())
            }
        }
    }

    /// The per-user request limit, and the upgrade limit for upgrades. In Redis: a sliced
    /// limit is a local step (a round trip only to take a new slice); the exact ones are one
    /// round trip together; none when no limit applies.
    pub async fn check_user(&self, v: LimitedUser<'_>, upgrade: bool) -> Result<(), Refusal> {
        if let Some(s) = &self.shared {
            match self.check_shared(s, v, upgrade).await {
                Ok(r) => return r,
                Err(_) => self.fallback(s).map_err(|_| Refusal::Unavailable)?,
            }
        }
        self.local.check_user(v.key).map_err(Refusal::User)?;
        if upgrade {
            self.local.check_upgrade(v.key).map_err(Refusal::Upgrades)?;
        }
        Ok(())
    }

    /// [`Limits::check_user`] in Redis: the per-user limit first, then the upgrade limit
    /// (not spent when the first refuses). `Err` when Redis did not answer.
    async fn check_shared(
        &self,
        s: &Shared,
        v: LimitedUser<'_>,
        upgrade: bool,
    ) -> Result<Result<(), Refusal>, gatepass_service::state::StateError> {
        let upgrade = upgrade && s.upgrades.is_some();
        let sliced_user = s.user_slices.as_ref().filter(|_| s.per_user.is_some());
        let sliced_upgrade = s.upgrade_slices.as_ref().filter(|_| upgrade);
        // Both exact: one call for both, as before slices.
        if sliced_user.is_none() && sliced_upgrade.is_none() {
            let mut checks = Vec::with_capacity(2);
            if let Some(g) = s.per_user {
                checks.push((s.user_key("user", v), g, Mode::Spend));
            }
            if let (true, Some(g)) = (upgrade, s.upgrades) {
                checks.push((s.user_key("upgrade", v), g, Mode::Spend));
            }
            if checks.is_empty() {
                return Ok(Ok(()));
            }
            let user_first = s.per_user.is_some();
            let waits = s.run("limits", checks).await?;
            return Ok(match waits.iter().position(|w| *w > 0) {
                None => Ok(()),
                Some(0) if user_first => Err(Refusal::User(wait_secs(waits[0]))),
                Some(i) => Err(Refusal::Upgrades(wait_secs(waits[i]))),
            });
        }
        if let Some(g) = s.per_user {
            if let Some(r) = spend_one(s, "user", sliced_user, g, v).await? {
                return Ok(Err(Refusal::User(r)));
            }
        }
        if let (true, Some(g)) = (upgrade, s.upgrades) {
            if let Some(r) = spend_one(s, "upgrade", sliced_upgrade, g, v).await? {
                return Ok(Err(Refusal::Upgrades(r)));
            }
        }
        Ok(Ok(()))
    }

    /// Is this IP's failure budget spent? `Some(retry_after_secs)` until it refills. Looks
    /// without spending; one round trip in Redis (only on paths that would verify a token or
    /// answer a failure: a cached token never asks).
    pub async fn ip_blocked(&self, ip: Option<IpAddr>) -> Result<Option<u64>, Unavailable> {
        match ip {
            Some(ip) => self.ip_budget(ip, Mode::Look).await,
            None => Ok(None),
        }
    }

    /// Counts a 400/401 for this IP; `Some(retry)` when the budget was already spent (a
    /// concurrent request spent it first): answer 429.
    pub async fn record_failure(&self, ip: IpAddr) -> Result<Option<u64>, Unavailable> {
        self.ip_budget(ip, Mode::Spend).await
    }

    /// The failure budget of `ip`, looked at or spent: in Redis when shared (the process
    /// decides when Redis doesn't answer and the config allows it), else in process.
    async fn ip_budget(&self, ip: IpAddr, mode: Mode) -> Result<Option<u64>, Unavailable> {
        if let Some(s) = &self.shared {
            let Some(g) = s.ip_failures else {
                return Ok(None);
            };
            match s.run("ip_budget", vec![(s.ip_key(ip), g, mode)]).await {
                Ok(w) => return Ok(w.first().filter(|w| **w > 0).map(|w| wait_secs(*w))),
                Err(_) => self.fallback(s)?,
            }
        }
        Ok(match mode {
            Mode::Look => self.local.ip_blocked(ip),
            Mode::Spend => self.local.record_failure(ip),
        })
    }

    /// Drops in-process limiter state for keys that are back to a full budget, and slices
    /// that hold nothing.
    pub fn upkeep(&self) {
        self.local.upkeep();
        if let Some(s) = &self.shared {
            for slices in [&s.user_slices, &s.upgrade_slices].into_iter().flatten() {
                slices.upkeep();
            }
        }
    }

    /// In-process keys currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        let slices = self.shared.as_ref().map_or(0, |s| {
            [&s.user_slices, &s.upgrade_slices]
                .into_iter()
                .flatten()
                .map(Slices::len)
                .sum()
        });
        self.local.len() + slices
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
        let limits = LocalLimits::new(&RateLimitConfig {
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
        let limits = LocalLimits::new(&RateLimitConfig {
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

    fn user(id: &str) -> crate::verify::Verified {
        crate::verify::Verified::new(
            gatepass_identity::Identity {
                id: id.into(),
                ..Default::default()
            },
            crate::verify::verified::now_secs() + 600,
        )
    }

    fn conf() -> RateLimitConfig {
        RateLimitConfig {
            per_user: Some(cfg(1, 60, 3)),
            upgrades_per_user: Some(cfg(1, 60, 2)),
            per_ip_failures: Some(cfg(1, 60, 2)),
            ..Default::default()
        }
    }

    /// The suite both implementations pass.
    async fn conformance(l: &Limits) {
        // Burst, then limited with a Retry-After of about one interval.
        let a = user("alice");
        for _ in 0..3 {
            assert_eq!(l.check_user(a.limited(), false).await, Ok(()));
        }
        match l.check_user(a.limited(), false).await {
            Err(Refusal::User(retry)) => assert!((59..=60).contains(&retry), "{retry}"),
            other => panic!("{other:?}"),
        }
        // Another user has its own budget; upgrades spend both limits, upgrade limit second.
        let b = user("bob");
        assert_eq!(l.check_user(b.limited(), true).await, Ok(()));
        assert_eq!(l.check_user(b.limited(), true).await, Ok(()));
        assert!(
            matches!(l.check_user(b.limited(), true).await, Err(Refusal::Upgrades(r)) if r >= 59)
        );
        // The refused upgrade still spent per_user, as a plain request would: that was 3.
        assert!(matches!(
            l.check_user(b.limited(), false).await,
            Err(Refusal::User(_))
        ));
        // The failure budget: looking never spends; `burst` failures, then blocked.
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.ip_blocked(Some(ip)).await, Ok(None));
        }
        assert_eq!(l.record_failure(ip).await, Ok(None));
        assert_eq!(l.ip_blocked(Some(ip)).await, Ok(None));
        assert_eq!(l.record_failure(ip).await, Ok(None));
        let retry = l.ip_blocked(Some(ip)).await.unwrap().expect("blocked");
        assert!((59..=60).contains(&retry), "{retry}");
        assert_eq!(
            l.record_failure(ip).await.unwrap().map(|r| r >= 59),
            Some(true)
        );
        assert_eq!(
            l.ip_blocked(Some("192.0.2.10".parse().unwrap())).await,
            Ok(None)
        );
        assert_eq!(l.ip_blocked(None).await, Ok(None));
    }

    #[tokio::test]
    async fn memory_limits_conformance() {
        conformance(&Limits::new(&conf())).await;
    }

    async fn shared(url: &str, on_unavailable: &str) -> Arc<RedisState> {
        let c: gatepass_service::state::StateConfig = toml::from_str(&format!(
            "backend = \"redis\"\nurl = \"{url}\"\ncommand_timeout = \"500ms\"\non_unavailable = \"{on_unavailable}\"\n"
        ))
        .unwrap();
        let r = RedisState::start(
            &c,
            std::path::Path::new("."),
            Arc::new(gatepass_service::state::NoObserver),
        )
        .unwrap();
        gatepass_testkit::wait_for(Duration::from_secs(10), "redis up", || async { r.is_up() })
            .await;
        r
    }

    #[tokio::test]
    async fn redis_limits_conformance() {
        let server = gatepass_testkit::RedisServer::start();
        let r = shared(&server.url(), "local").await;
        conformance(&Limits::redis(&conf(), r, metrics::Counter::noop())).await;
    }

    /// Two replicas (two limiters, two clients) on one Redis together admit what one admits.
    #[tokio::test]
    async fn two_redis_limiters_admit_what_one_admits() {
        let server = gatepass_testkit::RedisServer::start();
        let c = RateLimitConfig {
            per_user: Some(cfg(1, 60, 10)),
            per_ip_failures: Some(cfg(1, 60, 4)),
            ..Default::default()
        };
        let a = Limits::redis(
            &c,
            shared(&server.url(), "local").await,
            metrics::Counter::noop(),
        );
        let b = Limits::redis(
            &c,
            shared(&server.url(), "local").await,
            metrics::Counter::noop(),
        );
        let u = user("carol");
        let mut admitted = 0;
        for i in 0..30 {
            let l = if i % 2 == 0 { &a } else { &b };
            admitted += l.check_user(u.limited(), false).await.is_ok() as u32;
        }
        assert_eq!(admitted, 10, "the cluster admits one burst");
        let ip: IpAddr = "192.0.2.77".parse().unwrap();
        for l in [&a, &b, &a, &b] {
            assert_eq!(l.record_failure(ip).await, Ok(None));
        }
        assert!(a.ip_blocked(Some(ip)).await.unwrap().is_some());
        assert!(b.ip_blocked(Some(ip)).await.unwrap().is_some());
    }

    #[test]
    fn which_limits_are_sliced() {
        // 1/min: far too small, the exact path.
        assert_eq!(slice_size(&cfg(1, 60, 3)), None);
        // 100/s: 10 per 100 ms, at most half the burst.
        assert_eq!(slice_size(&cfg(100, 1, 20)), Some(10));
        assert_eq!(slice_size(&cfg(100, 1, 12)), Some(6));
        assert_eq!(slice_size(&cfg(100, 1, 6)), None);
        // 30/s: 3 per 100 ms, too small.
        assert_eq!(slice_size(&cfg(30, 1, 100)), None);
        assert_eq!(slice_size(&cfg(1_000_000, 1, 1_000_000)), Some(MAX_SLICE));
        let s = Slices::new(&cfg(100, 1, 20)).unwrap();
        assert_eq!(s.lifetime, SLICE_LIFETIME);
        let s = Slices::new(&cfg(1_000_000, 1, 1_000_000)).unwrap();
        assert_eq!(s.lifetime, LONG_SLICE_LIFETIME);
    }

    /// Scripts the server ran (`INFO commandstats`: EVALSHA and EVAL calls).
    async fn scripts_run(url: &str) -> u64 {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// A sliced limit: concurrent requests of one user share one slice (one script call),
    /// the slice's requests are admitted locally, and once Redis says the budget is spent the
    /// replica refuses locally (no call) with the wait Redis gave.
    #[tokio::test]
    async fn a_slice_serves_many_requests_with_one_call() {
        let server = gatepass_testkit::RedisServer::start();
        let c = RateLimitConfig {
            per_user: Some(cfg(100, 1, 20)),
            ..Default::default()
        };
        let l = Arc::new(Limits::redis(
            &c,
            shared(&server.url(), "local").await,
            metrics::Counter::noop(),
        ));
        let u = user("erin");
        // Loads the script (EVALSHA answered NOSCRIPT, then EVAL) for another user.
        assert_eq!(l.check_user(user("warm").limited(), false).await, Ok(()));
        let before = scripts_run(&server.url()).await;
        let checks: Vec<_> = (0..10)
            .map(|_| {
                let (l, key, id) = (l.clone(), u.limited().key, u.limited().id.to_vec());
                tokio::spawn(async move { l.check_user(LimitedUser { key, id: &id }, false).await })
            })
            .collect();
        for c in checks {
            assert_eq!(c.await.unwrap(), Ok(()));
        }
        assert_eq!(
            scripts_run(&server.url()).await - before,
            1,
            "one slice of 10"
        );
        // The burst (20) is two slices; then Redis says spent and the replica refuses locally.
        let mut admitted = 10;
        let mut refused = 0;
        for _ in 0..40 {
            match l.check_user(u.limited(), false).await {
                Ok(()) => admitted += 1,
                Err(Refusal::User(retry)) => {
                    assert_eq!(retry, 1, "a refill within the second");
                    refused += 1;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!((20..=22).contains(&admitted), "{admitted}");
        assert_eq!(admitted + refused, 50);
        let calls = scripts_run(&server.url()).await - before;
        assert!(calls <= 4, "{calls} calls for 50 requests");
        assert!(!l.is_empty(), "the slice is held");
    }

    /// Redis down: `local` lets the process decide (counted), `deny` refuses.
    #[tokio::test]
    async fn redis_down_falls_back_or_denies() {
        let mut server = gatepass_testkit::RedisServer::start();
        let fallbacks = metrics::Counter::noop();
        let local = Limits::redis(&conf(), shared(&server.url(), "local").await, fallbacks);
        let deny = Limits::redis(
            &conf(),
            shared(&server.url(), "deny").await,
            metrics::Counter::noop(),
        );
        server.stop();
        let u = user("dave");
        gatepass_testkit::wait_for(Duration::from_secs(10), "deny while down", || async {
            deny.check_user(u.limited(), false).await == Err(Refusal::Unavailable)
        })
        .await;
        assert_eq!(
            deny.ip_blocked(Some("192.0.2.1".parse().unwrap())).await,
            Err(Unavailable)
        );
        assert_eq!(
            deny.record_failure("192.0.2.1".parse().unwrap()).await,
            Err(Unavailable)
        );
        // The local limiter decides: its own burst of 3, then limited.
        gatepass_testkit::wait_for(Duration::from_secs(10), "local down", || async {
            local.shared.as_ref().is_some_and(|s| !s.redis.is_up())
        })
        .await;
        for _ in 0..3 {
            assert_eq!(local.check_user(u.limited(), false).await, Ok(()));
        }
        assert!(matches!(
            local.check_user(u.limited(), false).await,
            Err(Refusal::User(_))
        ));
    }
}
