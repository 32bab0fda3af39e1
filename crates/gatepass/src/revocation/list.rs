//! Revocations (SPEC §6): the list every decision reads, kept in the process. A token is
//! looked up once per change of the list, not once per request: the list has a generation,
//! and a cached token remembers the generation it was last found clean at, so the cache-hit
//! path pays two atomic loads.
//!
//! With `[state] backend = "redis"` the list is a shared table (`{key_prefix}revocations`,
//! field `kind:value` → `id not_before expires_at`; changes on the stream
//! `{key_prefix}revocations:log`; expiries in the sorted set `{key_prefix}revocations:expiry`)
//! that every replica follows, so a revocation made on one replica is enforced by all within
//! a second. The replica that takes a revocation enforces it at once. Redis restarted empty:
//! each replica writes back the live entries it holds, so a revocation outlives a Redis restart
//! while one replica runs.
//!
//! The same changes, in order, feed `GET /revocations` (Server-Sent Events); a recent window
//! of them lets a reconnecting downstream resume from its `Last-Event-ID`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use gatepass_identity::{Revocation, RevocationKind};
use gatepass_service::state::{RedisState, StateError};
use gatepass_service::table::{Change, Replica, SharedTable, TableSnapshot};
use metrics::{Counter, Gauge, Label};
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;
use crate::verify::verified::{now_secs, Verified};

/// Changes kept for `Last-Event-ID` resumes.
const RECENT: usize = 10_000;
/// Changes a feed subscriber may fall behind by before it is cut off (it then resumes).
const FEED_QUEUE: usize = 1024;
/// How often expired entries are dropped (locally, and in Redis).
pub const PURGE_EVERY: Duration = Duration::from_secs(10);

/// `KEYS` hash, stream, expiry set; `ARGV` field, kind, value, not_before (`-`: none),
/// expires_at, stream length, iss (empty: none). Merges with what is stored (the later
/// `expires_at`, the later `not_before`), logs the result, returns `{id, not_before,
/// expires_at}`.
const COMMIT_LUA: &str = r#"
local nb, exp = ARGV[4], tonumber(ARGV[5])
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local _, onb, oexp = string.match(cur, '^(%S+) (%S+) (%S+)$')
  if oexp and tonumber(oexp) and tonumber(oexp) > exp then exp = tonumber(oexp) end
  if onb and onb ~= '-' and tonumber(onb) and (nb == '-' or tonumber(onb) > tonumber(nb)) then nb = onb end
end
local e = string.format('%d', exp)
local fields = {'kind', ARGV[2], 'value', ARGV[3], 'nb', nb, 'exp', e}
if ARGV[7] ~= '' then
  table.insert(fields, 'iss')
  table.insert(fields, ARGV[7])
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(fields))
redis.call('HSET', KEYS[1], ARGV[1], id .. ' ' .. nb .. ' ' .. e)
redis.call('ZADD', KEYS[3], exp, ARGV[1])
return {id, nb, e}
"#;

/// `KEYS` hash, expiry set; `ARGV` now: drops up to 1000 expired entries.
const PURGE_LUA: &str = r#"
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, f in ipairs(gone) do redis.call('HDEL', KEYS[1], f) end
if #gone > 0 then redis.call('ZREM', KEYS[2], unpack(gone)) end
return #gone
"#;

static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(COMMIT_LUA));
static PURGE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PURGE_LUA));

/// Where a revocation came from (the `source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Api,
    Backchannel,
    /// A sign-in session ended (sign-out, a failed refresh): its `sid`.
    Session,
}

/// Why a revocation was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    #[error("the revocation list is full")]
    Full,
    #[error(transparent)]
    Unavailable(#[from] StateError),
}

/// A feed event: its id and the revocation.
pub type FeedEvent = Arc<(String, Revocation)>;

struct Entry {
    id: String,
    rev: Revocation,
}

/// `a-b` (a stream id, or `0-n` in process) as numbers, for ordering.
fn id_order(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// One map per kind: value → the entries for it, one per issuer (almost always one).
type Entries = HashMap<String, Vec<Entry>>;

#[derive(Default)]
struct List {
    jti: Entries,
    sid: Entries,
    sub: Entries,
    /// Live entries over the three maps.
    count: usize,
    /// The latest changes, in order.
    recent: VecDeque<FeedEvent>,
    /// In process: the last change's number.
    seq: u64,
    /// The latest change sent to the feed (an id's order).
    fed: (u64, u64),
}

impl List {
    fn map(&self, kind: RevocationKind) -> &Entries {
        match kind {
            RevocationKind::Jti => &self.jti,
            RevocationKind::Sid => &self.sid,
            RevocationKind::Sub => &self.sub,
        }
    }

    fn map_mut(&mut self, kind: RevocationKind) -> &mut Entries {
        match kind {
            RevocationKind::Jti => &mut self.jti,
            RevocationKind::Sid => &mut self.sid,
            RevocationKind::Sub => &mut self.sub,
        }
    }

    fn len(&self) -> usize {
        self.count
    }

    fn contains(&self, r: &Revocation) -> bool {
        self.map(r.kind)
            .get(&r.value)
            .is_some_and(|all| all.iter().any(|e| e.rev.iss == r.iss))
    }

    /// Records `r` (merged with what is there for the same issuer: the later expiry, the
    /// later `not_before`); returns the merged revocation.
    fn merge(&mut self, r: Revocation, id: &str) -> Revocation {
        let all = self.map_mut(r.kind).entry(r.value.clone()).or_default();
        let entry = match all.iter().position(|e| e.rev.iss == r.iss) {
            Some(i) => &mut all[i],
            None => {
                all.push(Entry {
                    id: id.to_owned(),
                    rev: r.clone(),
                });
                self.count += 1;
                return r;
            }
        };
        let e = &mut entry.rev;
        e.expires_at = e.expires_at.max(r.expires_at);
        e.not_before = match (e.not_before, r.not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if id_order(id) > id_order(&entry.id) {
            entry.id = id.to_owned();
        }
        entry.rev.clone()
    }

    /// Does a live entry cover the token?
    fn covers(&self, v: &Verified, now: u64) -> bool {
        let t = v.token_ref();
        let hit = |map: &Entries, key: Option<&str>| {
            key.and_then(|k| map.get(k)).is_some_and(|all| {
                all.iter()
                    .any(|e| !e.rev.is_expired(now) && e.rev.covers_token(&t))
            })
        };
        hit(&self.jti, t.jti) || hit(&self.sid, t.sid) || hit(&self.sub, Some(t.sub))
    }

    fn purge(&mut self, now: u64) -> usize {
        let before = self.count;
        let mut count = 0;
        for map in [&mut self.jti, &mut self.sid, &mut self.sub] {
            map.retain(|_, all| {
                all.retain(|e| !e.rev.is_expired(now));
                count += all.len();
                !all.is_empty()
            });
        }
        self.count = count;
        before - count
    }

    /// Every live entry, oldest change first.
    fn live(&self, now: u64) -> Vec<FeedEvent> {
        let mut all: Vec<FeedEvent> = [&self.jti, &self.sid, &self.sub]
            .into_iter()
            .flat_map(|m| m.values().flatten())
            .filter(|e| !e.rev.is_expired(now))
            .map(|e| Arc::new((e.id.clone(), e.rev.clone())))
            .collect();
        all.sort_by_key(|e| id_order(&e.0));
        all
    }
}

struct RevocationMetrics {
    /// `[kind][source]`.
    revoked: [[Counter; 3]; 3],
    entries: Gauge,
    subscribers: Gauge,
    full: Counter,
}

fn kind_index(k: RevocationKind) -> usize {
    match k {
        RevocationKind::Jti => 0,
        RevocationKind::Sub => 1,
        RevocationKind::Sid => 2,
    }
}

impl RevocationMetrics {
    fn new(m: &Metrics) -> RevocationMetrics {
        let c = |kind: &'static str, source: &'static str| {
            m.counter(
                "gatepass_revocations_total",
                vec![Label::new("kind", kind), Label::new("source", source)],
            )
        };
        RevocationMetrics {
            revoked: [
                [
                    c("jti", "api"),
                    c("jti", "backchannel"),
                    c("jti", "session"),
                ],
                [
                    c("sub", "api"),
                    c("sub", "backchannel"),
                    c("sub", "session"),
                ],
                [
                    c("sid", "api"),
                    c("sid", "backchannel"),
                    c("sid", "session"),
                ],
            ],
            entries: m.gauge("gatepass_revocation_entries", vec![]),
            subscribers: m.gauge("gatepass_revocation_feed_subscribers", vec![]),
            full: m.counter("gatepass_revocation_list_full_total", vec![]),
        }
    }
}

/// The revocation list of one process.
pub struct Revocations {
    list: RwLock<List>,
    /// Bumped (under the write lock, after the change) whenever an entry is added or grows.
    generation: AtomicU64,
    table: Option<SharedTable>,
    expiry_key: String,
    feed: broadcast::Sender<FeedEvent>,
    closing: watch::Sender<bool>,
    metrics: RevocationMetrics,
}

impl Revocations {
    /// The list, in process, or shared through `redis`.
    pub fn new(metrics: &Metrics, redis: Option<Arc<RedisState>>) -> Arc<Revocations> {
        let expiry_key = redis
            .as_ref()
            .map(|r| r.group_key("revocations", "revocations:expiry"))
            .unwrap_or_default();
        let table = redis.map(|r| {
            SharedTable::new(
                r,
                "revocations",
                "revocations",
                "revocations:log",
                ["revocation_snapshot", "revocation_read"],
            )
        });
        Arc::new(Revocations {
            list: RwLock::new(List::default()),
            generation: AtomicU64::new(1),
            table,
            expiry_key,
            feed: broadcast::channel(FEED_QUEUE).0,
            closing: watch::channel(false).0,
            metrics: RevocationMetrics::new(metrics),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, List> {
        self.list.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, List> {
        self.list.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Is `v` revoked? Looks the token up only when the list changed since it was last
    /// found clean.
    pub fn is_revoked(&self, v: &Verified) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        if v.clean_at.load(Ordering::Relaxed) == generation {
            return false;
        }
        let revoked = self.read().covers(v, now_secs());
        if !revoked {
            v.clean_at.store(generation, Ordering::Relaxed);
        }
        revoked
    }

    /// Records `r` here and, with Redis, for the cluster; returns it as recorded (merged with
    /// an earlier entry for the same value). At `max_entries` live entries a new one is
    /// refused.
    pub async fn revoke(
        &self,
        r: Revocation,
        source: Source,
        max_entries: usize,
    ) -> Result<Revocation, RevokeError> {
        {
            let mut list = self.write();
            if !list.contains(&r) && list.len() >= max_entries {
                list.purge(now_secs());
                if list.len() >= max_entries {
                    self.metrics.full.increment(1);
                    tracing::error!(
                        max_entries,
                        "revocation list full: revocation refused (raise [revocation] max_entries)"
                    );
                    return Err(RevokeError::Full);
                }
            }
        }
        let (kind, value) = (r.kind, r.value.clone());
        let recorded = match &self.table {
            None => {
                let mut list = self.write();
                list.seq += 1;
                let id = format!("0-{}", list.seq);
                let merged = list.merge(r, &id);
                self.changed(&mut list, id, merged.clone());
                merged
            }
            Some(table) => {
                let (id, merged) = self.commit(table, &r).await?;
                // Enforced here at once; the feed and the other replicas get it from the log.
                let mut list = self.write();
                let merged = list.merge(merged, &id);
                self.generation.fetch_add(1, Ordering::Release);
                self.metrics.entries.set(list.len() as f64);
                merged
            }
        };
        let s = match source {
            Source::Api => 0,
            Source::Backchannel => 1,
            Source::Session => 2,
        };
        self.metrics.revoked[kind_index(kind)][s].increment(1);
        tracing::info!(kind = ?kind, source = ?source, expires_at = recorded.expires_at, value_len = value.len(), "revoked");
        Ok(recorded)
    }

    /// After a change under the write lock: bumps the generation, logs it for resumes and
    /// sends it to feed subscribers (under the lock, so `subscribe` sees a consistent cut).
    fn changed(&self, list: &mut List, id: String, r: Revocation) {
        self.generation.fetch_add(1, Ordering::Release);
        list.fed = list.fed.max(id_order(&id));
        let event = Arc::new((id, r));
        if list.recent.len() == RECENT {
            list.recent.pop_front();
        }
        list.recent.push_back(event.clone());
        let _ = self.feed.send(event);
        self.metrics.entries.set(list.len() as f64);
    }

    async fn commit(
        &self,
        table: &SharedTable,
        r: &Revocation,
    ) -> Result<(String, Revocation), StateError> {
        let kind = kind_name(r.kind);
        let (hash, stream, expiry) = (
            table.hash().to_owned(),
            table.stream().to_owned(),
            self.expiry_key.clone(),
        );
        let field = field_of(r);
        let value = r.value.clone();
        let iss = r.iss.clone().unwrap_or_default();
        let nb = r.not_before.map_or("-".to_owned(), |n| n.to_string());
        let exp = r.expires_at;
        let (id, nb, exp): (String, String, String) = table
            .redis()
            .call_replicated("revocation_commit", |mut c| async move {
                COMMIT
                    .key(hash)
                    .key(stream)
                    .key(expiry)
                    .arg(field)
                    .arg(kind)
                    .arg(value)
                    .arg(nb)
                    .arg(exp)
                    .arg(RECENT.max(100_000))
                    .arg(iss)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let parsed = Revocation {
            kind: r.kind,
            value: r.value.clone(),
            iss: r.iss.clone(),
            not_before: nb.parse().ok(),
            expires_at: exp
                .parse()
                .map_err(|_| StateError::Failed("unexpected reply"))?,
        };
        Ok((id, parsed))
    }

    /// The feed for a subscriber that last saw `last_event_id`: what it missed (every live
    /// entry when that id is unknown or absent), then each new change.
    pub fn subscribe(
        &self,
        last_event_id: Option<&str>,
    ) -> (Vec<FeedEvent>, broadcast::Receiver<FeedEvent>) {
        // The write lock orders this with `changed`: nothing is both missed and replayed.
        let list = self.write();
        let rx = self.feed.subscribe();
        let now = now_secs();
        let resumed = last_event_id
            .and_then(|id| list.recent.iter().position(|e| e.0 == id))
            .map(|at| {
                list.recent
                    .iter()
                    .skip(at + 1)
                    .filter(|e| !e.1.is_expired(now))
                    .cloned()
                    .collect()
            });
        (resumed.unwrap_or_else(|| list.live(now)), rx)
    }

    /// A receiver that turns true on shutdown: feed streams end then.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every feed stream (shutdown).
    pub fn close_feeds(&self) {
        self.closing.send_replace(true);
    }

    /// Counts a feed subscriber in or out.
    pub fn subscribers(&self, delta: f64) {
        self.metrics.subscribers.increment(delta);
    }

    /// Drops expired entries here and, with Redis, in the shared table.
    pub async fn purge(&self) {
        let now = now_secs();
        let len = {
            let mut list = self.write();
            list.purge(now);
            list.len()
        };
        self.metrics.entries.set(len as f64);
        if let Some(table) = &self.table {
            let (hash, expiry) = (table.hash().to_owned(), self.expiry_key.clone());
            let _ = table
                .redis()
                .call("revocation_purge", |mut c| async move {
                    PURGE
                        .key(hash)
                        .key(expiry)
                        .arg(now)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
        }
    }

    /// Background work until the list is dropped: with Redis, following the shared table;
    /// always, purging expired entries.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let weak = Arc::downgrade(self);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_EVERY);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                this.purge().await;
            }
        }));
        if self.table.is_some() {
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(table) = &this.table {
                    table.follow(&Follower(this.clone())).await;
                }
            }));
        }
        tasks
    }

    /// Live entries, for tests and `/metrics`.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SHA-256 of a feed secret: compared in constant time, and the secret itself is not kept.
pub fn secret_digest(secret: &[u8]) -> [u8; 32] {
    gatepass_service::digest::sha256(secret)
}

/// Does `presented` match the secret whose digest is `expected`? Constant time.
pub fn secret_matches(expected: &[u8; 32], presented: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(expected, &secret_digest(presented)).is_ok()
}

fn kind_name(k: RevocationKind) -> &'static str {
    match k {
        RevocationKind::Jti => "jti",
        RevocationKind::Sub => "sub",
        RevocationKind::Sid => "sid",
    }
}

fn parse_kind(s: &str) -> Option<RevocationKind> {
    match s {
        "jti" => Some(RevocationKind::Jti),
        "sub" => Some(RevocationKind::Sub),
        "sid" => Some(RevocationKind::Sid),
        _ => None,
    }
}

/// The shared table's field for a revocation: `kind:value` for an entry without an issuer
/// (as versions before per-issuer revocations wrote every entry), else
/// `kind@iss` + U+001F + `value` (an issuer URL has no control character).
fn field_of(r: &Revocation) -> String {
    let kind = kind_name(r.kind);
    match &r.iss {
        None => format!("{kind}:{}", r.value),
        Some(iss) => format!("{kind}@{iss}\u{1f}{}", r.value),
    }
}

/// [`field_of`] read back: kind, issuer, value.
fn parse_field(field: &str) -> Option<(&str, Option<&str>, &str)> {
    let at = field.find([':', '@'])?;
    let (kind, rest) = (&field[..at], &field[at + 1..]);
    if field.as_bytes()[at] == b':' {
        return Some((kind, None, rest));
    }
    let (iss, value) = rest.split_once('\u{1f}')?;
    Some((kind, Some(iss), value))
}

/// `kind`, `value`, `iss` (none: every issuer), `nb` (`-`: none) and `exp` as stored; `None`
/// when unreadable.
fn parse_stored(
    kind: &str,
    value: &str,
    iss: Option<&str>,
    nb: &str,
    exp: &str,
) -> Option<Revocation> {
    Some(Revocation {
        kind: parse_kind(kind)?,
        value: value.to_owned(),
        iss: iss.map(str::to_owned),
        not_before: if nb == "-" {
            None
        } else {
            Some(nb.parse().ok()?)
        },
        expires_at: exp.parse().ok()?,
    })
}

/// Follows the shared table for a [`Revocations`].
struct Follower(Arc<Revocations>);

impl Replica for Follower {
    fn reload(&self, snapshot: TableSnapshot) {
        let this = &self.0;
        let now = now_secs();
        let mut stored = std::collections::HashSet::new();
        {
            let mut list = this.write();
            for (field, value) in &snapshot.entries {
                let parsed = parse_field(field).and_then(|(kind, iss, v)| {
                    let mut parts = value.splitn(3, ' ');
                    let (id, nb, exp) = (parts.next()?, parts.next()?, parts.next()?);
                    Some((id.to_owned(), parse_stored(kind, v, iss, nb, exp)?))
                });
                let Some((id, r)) = parsed else {
                    tracing::warn!("unreadable revocation in redis; ignored");
                    continue;
                };
                stored.insert(field_of(&r));
                // Not yet fed from here (missed while Redis was away): tell the feed too.
                let unfed = id_order(&id) > list.fed;
                let merged = list.merge(r, &id);
                if unfed && !merged.is_expired(now) {
                    this.changed(&mut list, id, merged);
                }
            }
            this.generation.fetch_add(1, Ordering::Release);
            this.metrics.entries.set(list.len() as f64);
        }
        // What this replica holds and Redis lost (it restarted empty): write it back.
        let missing: Vec<Revocation> = this
            .read()
            .live(now)
            .iter()
            .filter(|e| !stored.contains(&field_of(&e.1)))
            .map(|e| e.1.clone())
            .collect();
        if missing.is_empty() {
            return;
        }
        tracing::warn!(
            entries = missing.len(),
            "shared revocation list lacks entries this replica holds; writing them back"
        );
        let this = this.clone();
        tokio::spawn(async move {
            if let Some(table) = &this.table {
                for r in missing {
                    let _ = this.commit(table, &r).await;
                }
            }
        });
    }

    fn apply(&self, change: Change) -> bool {
        let this = &self.0;
        let parsed = (|| {
            parse_stored(
                change.get("kind")?,
                change.get("value")?,
                change.get("iss"),
                change.get("nb")?,
                change.get("exp")?,
            )
        })();
        match parsed {
            Some(r) => {
                let mut list = this.write();
                let merged = list.merge(r, &change.id);
                if id_order(&change.id) > list.fed {
                    this.changed(&mut list, change.id, merged);
                } else {
                    this.generation.fetch_add(1, Ordering::Release);
                }
            }
            None => tracing::warn!("unreadable revocation change in redis; ignored"),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verified::TokenIds;
    use gatepass_identity::Identity;

    fn token(jti: &str, sid: &str, sub: &str, iat: u64) -> Verified {
        let identity = Identity {
            id: sub.into(),
            username: sub.into(),
            role: "admin".into(),
            permissions: vec![],
            expires: Some(now_secs() + 3600),
        };
        let ids = TokenIds {
            iss: Some("https://a.test".into()),
            jti: Some(jti.into()),
            sid: Some(sid.into()),
            sub: Some(sub.into()),
            iat: Some(iat),
            ..TokenIds::default()
        };
        Verified::with_ids(identity, now_secs() + 3600, ids)
    }

    fn rev(kind: RevocationKind, value: &str, not_before: Option<u64>, exp: u64) -> Revocation {
        Revocation {
            kind,
            value: value.into(),
            iss: Some("https://a.test".into()),
            not_before,
            expires_at: exp,
        }
    }

    #[tokio::test]
    async fn a_cached_token_is_looked_up_again_only_after_a_change() {
        let r = Revocations::new(&Metrics::new(), None);
        let later = now_secs() + 3600;
        let v = token("j", "s", "u", now_secs() - 10);
        assert!(!r.is_revoked(&v));
        let generation = || r.generation.load(Ordering::Acquire);
        assert_eq!(v.clean_at.load(Ordering::Relaxed), generation());
        r.revoke(
            rev(RevocationKind::Jti, "other", None, later),
            Source::Api,
            10,
        )
        .await
        .unwrap();
        assert_ne!(v.clean_at.load(Ordering::Relaxed), generation());
        assert!(!r.is_revoked(&v));
        assert_eq!(v.clean_at.load(Ordering::Relaxed), generation());
        r.revoke(rev(RevocationKind::Sid, "s", None, later), Source::Api, 10)
            .await
            .unwrap();
        assert!(r.is_revoked(&v));
        assert!(r.is_revoked(&v), "stays revoked");
        assert_ne!(v.clean_at.load(Ordering::Relaxed), generation());
    }

    #[test]
    fn fields_name_the_issuer_and_read_entries_without_one() {
        let mut r = rev(RevocationKind::Sub, "a:b@c", None, 1);
        assert_eq!(
            parse_field(&field_of(&r)),
            Some(("sub", Some("https://a.test"), "a:b@c"))
        );
        r.iss = None;
        assert_eq!(field_of(&r), "sub:a:b@c");
        assert_eq!(parse_field("sub:a:b@c"), Some(("sub", None, "a:b@c")));
        assert_eq!(
            parse_field("jti@https://x\u{1f}"),
            Some(("jti", Some("https://x"), ""))
        );
        assert_eq!(parse_field("jti@https://x"), None);
        assert_eq!(parse_field("nothing"), None);
    }

    #[tokio::test]
    async fn entries_merge_expire_and_feed_in_order() {
        let r = Revocations::new(&Metrics::new(), None);
        let now = now_secs();
        r.revoke(
            rev(RevocationKind::Sub, "u", Some(now - 100), now + 10),
            Source::Api,
            10,
        )
        .await
        .unwrap();
        let merged = r
            .revoke(
                rev(RevocationKind::Sub, "u", Some(now - 200), now + 5),
                Source::Api,
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            (merged.not_before, merged.expires_at),
            (Some(now - 100), now + 10)
        );
        assert!(r.is_revoked(&token("a", "b", "u", now - 150)));
        assert!(
            r.is_revoked(&token("a", "b", "u", now - 100)),
            "the same second"
        );
        assert!(!r.is_revoked(&token("a", "b", "u", now - 50)));
        // An expired entry covers nothing and is purged.
        r.revoke(
            rev(RevocationKind::Jti, "gone", None, now - 1),
            Source::Api,
            10,
        )
        .await
        .unwrap();
        assert!(!r.is_revoked(&token("gone", "b", "x", now)));
        r.purge().await;
        assert_eq!(r.len(), 1);
        // The feed: everything live, in order; resuming from the first id skips it.
        r.revoke(
            rev(RevocationKind::Sid, "s2", None, now + 10),
            Source::Api,
            10,
        )
        .await
        .unwrap();
        let (all, _) = r.subscribe(None);
        let values: Vec<&str> = all.iter().map(|e| e.1.value.as_str()).collect();
        assert_eq!(values, ["u", "s2"]);
        let (rest, _) = r.subscribe(Some(&all[0].0));
        assert!(rest.iter().all(|e| e.1.value != "u"), "{rest:?}");
        assert_eq!(id_order("12-3"), (12, 3));
        // Another issuer's entry for the same value is its own entry.
        let mut other = rev(RevocationKind::Sid, "s2", None, now + 20);
        other.iss = Some("https://b.test".into());
        r.revoke(other, Source::Api, 10).await.unwrap();
        assert_eq!(r.len(), 3);
        let (all, _) = r.subscribe(None);
        assert_eq!(all.len(), 3);
        assert!(id_order("2-0") < id_order("10-0"));
    }
}
