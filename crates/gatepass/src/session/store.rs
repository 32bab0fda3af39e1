//! Where sessions live (SPEC §9): in the process with `[state] backend = "memory"`, in Redis
//! with `redis` (any replica serves any session). A session is stored under the SHA-256 of its
//! id, its tokens sealed (`seal.rs`): a Redis dump reveals no cookie and no token. The same
//! backend remembers used sign-in flows (a callback is good once) and holds the refresh leases
//! (one refresh per session for the cluster).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use gatepass_service::state::{RedisState, StateError};

use crate::verify::verified::now_secs;

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Bumped by every token replacement (a refresh): the compare in compare-and-set.
    pub version: u64,
    /// The sealed tokens.
    pub tokens: String,
    /// When the access token expires (Unix seconds).
    pub access_exp: u64,
    /// The session's `sid`: the provider's, else a public id of this session.
    pub sid: String,
    pub created: u64,
    /// Absolute end (`created + session_ttl`).
    pub expires: u64,
    /// The last recorded use.
    pub used: u64,
}

/// A session's key: the SHA-256 of its id.
pub type Hash = [u8; 32];

/// `KEYS` session; `ARGV` expected version, new version, tokens, access_exp: replaces the
/// tokens only if nobody replaced them since `expected` (and the session still exists).
const REPLACE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 't', ARGV[3], 'ax', ARGV[4])
return 1
"#;

/// `KEYS` session; `ARGV` now: records a use of a session that still exists (an ended one
/// must not come back as a partial hash without expiry).
const TOUCH_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1])
return 1
"#;

static REPLACE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLACE_LUA));
static TOUCH: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TOUCH_LUA));

/// The session store of one process, kept across reloads that leave `[state]` unchanged.
pub enum Store {
    Memory(Memory),
    Redis(Arc<RedisState>),
}

/// The in-process store: sessions, used flows and refresh leases, each with its deadline.
#[derive(Default)]
pub struct Memory {
    sessions: Mutex<HashMap<Hash, Stored>>,
    flows: Mutex<HashMap<Hash, Instant>>,
    leases: Mutex<HashMap<Hash, Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn b64(hash: &Hash) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash)
}

impl Store {
    pub fn new(redis: Option<Arc<RedisState>>) -> Store {
        match redis {
            Some(r) => Store::Redis(r),
            None => Store::Memory(Memory::default()),
        }
    }

    fn key(redis: &RedisState, kind: &str, hash: &Hash) -> String {
        redis.key(&format!("{kind}:{}", b64(hash)))
    }

    /// Stores a new session until its absolute end.
    pub async fn create(&self, hash: Hash, s: &Stored) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                lock(&m.sessions).insert(hash, s.clone());
                Ok(())
            }
            Store::Redis(r) => {
                let key = Store::key(r, "session", &hash);
                let s = s.clone();
                r.call_replicated("session_create", |mut c| async move {
                    redis::pipe()
                        .atomic()
                        .hset_multiple(
                            &key,
                            &[
                                ("v", s.version.to_string()),
                                ("t", s.tokens),
                                ("ax", s.access_exp.to_string()),
                                ("s", s.sid),
                                ("c", s.created.to_string()),
                                ("e", s.expires.to_string()),
                                ("u", s.used.to_string()),
                            ],
                        )
                        .ignore()
                        .cmd("EXPIREAT")
                        .arg(&key)
                        .arg(s.expires)
                        .ignore()
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
            }
        }
    }

    /// The session, while it has not reached its absolute end.
    pub async fn load(&self, hash: Hash) -> Result<Option<Stored>, StateError> {
        let found = match self {
            Store::Memory(m) => lock(&m.sessions).get(&hash).cloned(),
            Store::Redis(r) => {
                let key = Store::key(r, "session", &hash);
                let map: HashMap<String, String> = r
                    .call("session_load", |mut c| async move {
                        redis::cmd("HGETALL").arg(key).query_async(&mut c).await
                    })
                    .await?;
                parse(&map)
            }
        };
        Ok(found.filter(|s| s.expires > now_secs()))
    }

    /// Replaces the tokens of version `expected`; false when they were replaced since, or the
    /// session is gone.
    pub async fn replace(
        &self,
        hash: Hash,
        expected: u64,
        tokens: String,
        access_exp: u64,
    ) -> Result<bool, StateError> {
        match self {
            Store::Memory(m) => Ok(match lock(&m.sessions).get_mut(&hash) {
                Some(s) if s.version == expected => {
                    s.version += 1;
                    s.tokens = tokens;
                    s.access_exp = access_exp;
                    true
                }
                _ => false,
            }),
            Store::Redis(r) => {
                let key = Store::key(r, "session", &hash);
                let done: i64 = r
                    .call_replicated("session_replace", |mut c| async move {
                        REPLACE
                            .key(key)
                            .arg(expected)
                            .arg(expected + 1)
                            .arg(tokens)
                            .arg(access_exp)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await?;
                Ok(done == 1)
            }
        }
    }

    /// Records a use at `now`.
    pub async fn touch(&self, hash: Hash, now: u64) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                if let Some(s) = lock(&m.sessions).get_mut(&hash) {
                    s.used = s.used.max(now);
                }
                Ok(())
            }
            Store::Redis(r) => {
                let key = Store::key(r, "session", &hash);
                r.call("session_touch", |mut c| async move {
                    TOUCH.key(key).arg(now).invoke_async::<i64>(&mut c).await
                })
                .await
                .map(|_| ())
            }
        }
    }

    /// Ends the session here (sign-out, logout, a failed refresh, idle).
    pub async fn delete(&self, hash: Hash) -> Result<(), StateError> {
        match self {
            Store::Memory(m) => {
                lock(&m.sessions).remove(&hash);
                Ok(())
            }
            Store::Redis(r) => {
                let key = Store::key(r, "session", &hash);
                r.call_replicated("session_delete", |mut c| async move {
                    redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await
                })
                .await
                .map(|_| ())
            }
        }
    }

    /// Takes the session's refresh lease for `ttl`: true when nobody else holds it.
    pub async fn lease(&self, hash: Hash, ttl: Duration) -> Result<bool, StateError> {
        match self {
            Store::Memory(m) => Ok(first_until(&m.leases, hash, ttl)),
            Store::Redis(r) => {
                let key = Store::key(r, "session-lease", &hash);
                r.set_new("session_lease", key, "1".into(), ttl).await
            }
        }
    }

    /// Gives the lease back (it also lapses on its own).
    pub async fn release(&self, hash: Hash) {
        match self {
            Store::Memory(m) => {
                lock(&m.leases).remove(&hash);
            }
            Store::Redis(r) => {
                let key = Store::key(r, "session-lease", &hash);
                let _ = r
                    .call("session_lease", |mut c| async move {
                        redis::cmd("DEL").arg(key).query_async::<i64>(&mut c).await
                    })
                    .await;
            }
        }
    }

    /// True the first time the flow with this `state` digest comes back (remembered for
    /// `ttl`, the flow's life): a callback is good once.
    pub async fn first_callback(&self, state: Hash, ttl: Duration) -> Result<bool, StateError> {
        match self {
            Store::Memory(m) => Ok(first_until(&m.flows, state, ttl)),
            Store::Redis(r) => {
                let key = Store::key(r, "signin-flow", &state);
                r.set_new("signin_flow", key, "1".into(), ttl).await
            }
        }
    }

    /// Drops what has ended (memory only: Redis expires its own keys); the number of live
    /// sessions held here (memory), for `gatepass_sessions`.
    pub fn upkeep(&self) -> Option<usize> {
        let Store::Memory(m) = self else { return None };
        let now = now_secs();
        let mut sessions = lock(&m.sessions);
        sessions.retain(|_, s| s.expires > now);
        let at = Instant::now();
        lock(&m.flows).retain(|_, until| *until > at);
        lock(&m.leases).retain(|_, until| *until > at);
        Some(sessions.len())
    }
}

/// Sets `hash` in `map` until `ttl` from now unless it is there and unexpired.
fn first_until(map: &Mutex<HashMap<Hash, Instant>>, hash: Hash, ttl: Duration) -> bool {
    let now = Instant::now();
    let mut map = lock(map);
    match map.get(&hash) {
        Some(until) if *until > now => false,
        _ => {
            map.insert(hash, now + ttl);
            true
        }
    }
}

/// A stored hash read back; `None` when absent or not what `create` wrote.
fn parse(map: &HashMap<String, String>) -> Option<Stored> {
    let num = |k: &str| map.get(k)?.parse::<u64>().ok();
    Some(Stored {
        version: num("v")?,
        tokens: map.get("t")?.clone(),
        access_exp: num("ax")?,
        sid: map.get("s")?.clone(),
        created: num("c")?,
        expires: num("e")?,
        used: num("u")?,
    })
}
