//! `[limits] max_connections_per_user` across replicas (`[state] backend = "redis"`): each
//! socket holds a lease in one sorted set per user, `{key_prefix}conn:{sha256(user id)}`, whose
//! members are connection ids scored by their expiry (ms, Redis's `TIME`). A lease is renewed
//! every [`RENEW`] while its socket lives and removed when it closes; a dead replica's leases
//! lapse within [`TTL`]. Redis going away never closes an open socket.

use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use gatepass_service::state::{RedisState, StateError};

/// How long a lease lasts without renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// How often a live socket renews its lease.
pub const RENEW: Duration = Duration::from_secs(10);

/// `KEYS[1]` the user's set, `ARGV` = member, limit (0: add whatever the count), TTL in ms.
/// Drops lapsed members; refuses (0) a new member when `limit` are already there; else adds or
/// renews it (1) and extends the key's expiry.
const LEASE_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if limit > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"#;

static LEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEASE_LUA));

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A socket's lease: renewed in the background, removed when dropped.
pub struct Lease {
    redis: Arc<RedisState>,
    key: String,
    member: String,
    renewer: tokio::task::JoinHandle<()>,
}

async fn run(
    redis: &RedisState,
    op: &'static str,
    key: &str,
    member: &str,
    limit: usize,
) -> Result<bool, StateError> {
    let (key, member) = (key.to_owned(), member.to_owned());
    redis
        .call(op, |mut c| async move {
            LEASE_SCRIPT
                .key(key)
                .arg(member)
                .arg(limit)
                .arg(TTL.as_millis() as u64)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|r| r == 1)
}

/// The user's set and a fresh connection id.
fn ids(redis: &RedisState, user: &str) -> (String, String) {
    let d = gatepass_service::digest::sha256(user.as_bytes());
    let key = redis.key(&format!("conn:{}", hex(&d)));
    (key, gatepass_service::state::random_id())
}

impl Lease {
    fn start(redis: Arc<RedisState>, key: String, member: String) -> Lease {
        let renewer = tokio::spawn({
            let (redis, key, member) = (redis.clone(), key.clone(), member.clone());
            async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEW, RENEW);
                loop {
                    tick.tick().await;
                    // Adds it back too when it was lost (Redis restarted, or admitted while
                    // Redis was unreachable); a failure waits for the next tick.
                    let _ = run(&redis, "conn_renew", &key, &member, 0).await;
                }
            }
        });
        Lease {
            redis,
            key,
            member,
            renewer,
        }
    }

    /// Takes a lease for `user` if fewer than `limit` are held on every replica: `Ok(None)`
    /// when the user is at the limit, `Err` when Redis gave no answer.
    pub async fn acquire(
        redis: &Arc<RedisState>,
        user: &str,
        limit: usize,
    ) -> Result<Option<Lease>, StateError> {
        let (key, member) = ids(redis, user);
        if run(redis, "conn_acquire", &key, &member, limit.max(1)).await? {
            Ok(Some(Lease::start(redis.clone(), key, member)))
        } else {
            Ok(None)
        }
    }

    /// A lease for a socket admitted while Redis was unreachable: not held yet, added by the
    /// first renewal that reaches Redis.
    pub fn pending(redis: &Arc<RedisState>, user: &str) -> Lease {
        let (key, member) = ids(redis, user);
        Lease::start(redis.clone(), key, member)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (redis, key, member) = (
            self.redis.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.member),
        );
        rt.spawn(async move {
            let _ = redis
                .call("conn_release", |mut c| async move {
                    redis::cmd("ZREM")
                        .arg(key)
                        .arg(member)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
        });
    }
}
