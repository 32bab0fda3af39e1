//! One-time WebSocket tickets (SPEC §3.5): 256 random bits, base64url, redeemed at most once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatepass_service::state::{RedisState, StateError};
use moka::future::Cache;

use crate::config::TicketsConfig;
use crate::verify::verified::{now_secs, Verified};

/// Length of an encoded ticket (32 bytes, base64url without padding).
const TICKET_LEN: usize = 43;

/// The ticket store: issue once, redeem at most once. Two implementations behind one
/// interface: in process (one replica), or Redis (any replica issues, any replica redeems).
/// Tickets never fall back to the process: with Redis unreachable, both calls fail.
pub struct Tickets {
    backend: Backend,
    ttl: Duration,
    pub ttl_secs: u64,
}

enum Backend {
    /// Ticket -> (identity, deadline). moka's TTL only bounds memory: `remove` may still
    /// return an entry past its TTL, so the deadline is checked on redemption.
    Memory(Cache<String, (Arc<Verified>, Instant)>),
    /// `SET key value NX PX ttl` to issue, `GETDEL` to redeem; Redis's clock expires them.
    Redis(Arc<RedisState>),
}

impl Tickets {
    /// The in-process store.
    pub fn new(c: &TicketsConfig) -> Tickets {
        let cache = Cache::builder()
            .max_capacity(c.max_outstanding)
            .time_to_live(c.ttl.0)
            .build();
        Tickets::with(Backend::Memory(cache), c)
    }

    /// The store in Redis, shared by every replica on it.
    pub fn redis(c: &TicketsConfig, redis: Arc<RedisState>) -> Tickets {
        Tickets::with(Backend::Redis(redis), c)
    }

    fn with(backend: Backend, c: &TicketsConfig) -> Tickets {
        Tickets {
            backend,
            ttl: c.ttl.0,
            ttl_secs: c.ttl.0.as_secs(),
        }
    }

    /// The Redis key of a ticket: a digest, so whoever reads Redis's keys can't redeem them.
    fn key(redis: &RedisState, ticket: &str) -> String {
        redis.key(&format!(
            "ticket:{}",
            gatepass_service::digest::sha256_b64(ticket.as_bytes())
        ))
    }

    /// A new ticket carrying `identity`.
    pub async fn issue(&self, identity: Arc<Verified>) -> Result<String, StateError> {
        let bytes: [u8; 32] = rand::random();
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        match &self.backend {
            Backend::Memory(cache) => {
                cache
                    .insert(ticket.clone(), (identity, Instant::now() + self.ttl))
                    .await;
            }
            Backend::Redis(redis) => {
                let key = Tickets::key(redis, &ticket);
                let value = identity.to_stored();
                let set = redis
                    .set_new_replicated("ticket_issue", key, value, self.ttl)
                    .await?;
                // NX refused: 256 random bits collided. Never overwrite someone's ticket.
                if !set {
                    return Err(StateError::Failed("ticket collision"));
                }
            }
        }
        Ok(ticket)
    }

    /// Redeems a ticket: removal is atomic (moka `remove`, Redis `GETDEL`), so of concurrent
    /// redemptions one wins. `Ok(None)`: unknown, used, expired or unreadable.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Arc<Verified>>, StateError> {
        self.redeem_at(ticket, Instant::now()).await
    }

    async fn redeem_at(
        &self,
        ticket: &str,
        now: Instant,
    ) -> Result<Option<Arc<Verified>>, StateError> {
        if ticket.len() != TICKET_LEN {
            return Ok(None);
        }
        let v = match &self.backend {
            Backend::Memory(cache) => match cache.remove(ticket).await {
                Some((v, deadline)) if now < deadline => v,
                _ => return Ok(None),
            },
            Backend::Redis(redis) => {
                let key = Tickets::key(redis, ticket);
                let value: Option<Vec<u8>> = redis
                    .call("ticket_redeem", |mut c| async move {
                        redis::cmd("GETDEL").arg(key).query_async(&mut c).await
                    })
                    .await?;
                let Some(value) = value else { return Ok(None) };
                match Verified::from_stored(&value) {
                    Some(v) => Arc::new(v),
                    None => {
                        tracing::warn!("unreadable ticket value in shared state; refused");
                        return Ok(None);
                    }
                }
            }
        };
        Ok((v.exp > now_secs()).then_some(v))
    }

    /// Is the ticket still redeemable? Looks without redeeming (tests wait on it).
    pub async fn outstanding(&self, ticket: &str) -> Result<bool, StateError> {
        match &self.backend {
            Backend::Memory(cache) => Ok(cache
                .get(ticket)
                .await
                .is_some_and(|(_, deadline)| Instant::now() < deadline)),
            Backend::Redis(redis) => {
                let key = Tickets::key(redis, ticket);
                redis
                    .call("ticket_redeem", |mut c| async move {
                        redis::cmd("EXISTS").arg(key).query_async(&mut c).await
                    })
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;
    use gatepass_identity::Identity;
    use gatepass_service::state::{NoObserver, StateConfig};

    fn verified(id: &str, exp: u64) -> Arc<Verified> {
        Arc::new(Verified::new(
            Identity {
                id: id.into(),
                username: "Ünïcode, user".into(),
                role: "admin".into(),
                permissions: vec!["mcp:read".into(), "a,b".into()],
                expires: Some(exp),
            },
            exp,
        ))
    }

    fn cfg(ttl: Duration) -> TicketsConfig {
        TicketsConfig {
            ttl: Dur(ttl),
            ..TicketsConfig::default()
        }
    }

    /// A Redis client that has seen its server answer.
    pub(crate) async fn redis_client(url: &str) -> Arc<RedisState> {
        let c = StateConfig {
            backend: crate::config::Backend::Redis,
            url: url.into(),
            command_timeout: Dur(Duration::from_millis(500)),
            ..StateConfig::default()
        };
        let r = RedisState::start(&c, std::path::Path::new("."), Arc::new(NoObserver)).unwrap();
        gatepass_testkit::wait_for(Duration::from_secs(10), "redis up", || async { r.is_up() })
            .await;
        r
    }

    /// The conformance suite every ticket store passes: `store(ttl)` makes a fresh one (two
    /// calls with a shared backend stand for two replicas).
    async fn conformance<F, Fut>(store: F)
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Tickets>,
    {
        // Single use, and the identity comes back as it went in.
        let t = store(Duration::from_secs(30)).await;
        let v = verified("u1", now_secs() + 600);
        let ticket = t.issue(v.clone()).await.unwrap();
        assert_eq!(ticket.len(), TICKET_LEN);
        assert!(t.outstanding(&ticket).await.unwrap());
        let got = t.redeem(&ticket).await.unwrap().expect("redeemed");
        assert_eq!(got.headers, v.headers);
        assert_eq!((got.exp, got.user_key), (v.exp, v.user_key));
        assert!(t.redeem(&ticket).await.unwrap().is_none(), "second use");
        assert!(t.redeem("short").await.unwrap().is_none());
        assert!(t.redeem(&"A".repeat(TICKET_LEN)).await.unwrap().is_none());
        // Concurrent redemptions of one ticket: exactly one wins.
        let t = Arc::new(t);
        for _ in 0..5 {
            let ticket = t.issue(v.clone()).await.unwrap();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (t, ticket) = (t.clone(), ticket.clone());
                    tokio::spawn(async move { t.redeem(&ticket).await.unwrap().is_some() })
                })
                .collect();
            let mut won = 0;
            for task in tasks {
                won += task.await.unwrap() as u32;
            }
            assert_eq!(won, 1, "exactly one of 16 concurrent redemptions");
        }
        // Expiry: waited for (never slept), then refused.
        let short = store(Duration::from_millis(300)).await;
        let ticket = short.issue(v.clone()).await.unwrap();
        gatepass_testkit::wait_for(Duration::from_secs(5), "ticket expiry", || async {
            !short.outstanding(&ticket).await.unwrap()
        })
        .await;
        assert!(short.redeem(&ticket).await.unwrap().is_none(), "expired");
        // A ticket bought with a token that has expired since is refused.
        let ticket = t.issue(verified("u1", now_secs() - 1)).await.unwrap();
        assert!(t.redeem(&ticket).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn memory_tickets_conformance() {
        conformance(|ttl| async move { Tickets::new(&cfg(ttl)) }).await;
    }

    #[tokio::test]
    async fn redis_tickets_conformance() {
        let server = gatepass_testkit::RedisServer::start();
        let redis = redis_client(&server.url()).await;
        conformance(|ttl| {
            let redis = redis.clone();
            async move { Tickets::redis(&cfg(ttl), redis) }
        })
        .await;
        // Issued by one replica, redeemed once by another (two stores, two clients).
        let other = redis_client(&server.url()).await;
        let (a, b) = (
            Tickets::redis(&cfg(Duration::from_secs(30)), redis.clone()),
            Tickets::redis(&cfg(Duration::from_secs(30)), other),
        );
        let ticket = a.issue(verified("u2", now_secs() + 60)).await.unwrap();
        assert!(b.redeem(&ticket).await.unwrap().is_some());
        assert!(a.redeem(&ticket).await.unwrap().is_none());
    }

    /// A garbled value in Redis is an unknown ticket for that request, never a crash.
    #[tokio::test]
    async fn garbled_redis_value_is_refused() {
        let server = gatepass_testkit::RedisServer::start();
        let redis = redis_client(&server.url()).await;
        let t = Tickets::redis(&cfg(Duration::from_secs(30)), redis.clone());
        let good = verified("u3", now_secs() + 60).to_stored();
        let wrong_exp = good.replacen("\"exp\":", "\"exp\":1", 1);
        for garbage in [
            "not json".to_string(),
            "{}".into(),
            "{\"exp\":1,\"h\":[\"a\"]}".into(),
            good.replace("admin", "ad min"),
            wrong_exp,
            "\u{0}\u{1}".into(),
        ] {
            let ticket = t.issue(verified("u3", now_secs() + 60)).await.unwrap();
            let key = Tickets::key(&redis, &ticket);
            redis
                .call("test", |mut c| async move {
                    redis::cmd("SET")
                        .arg(key)
                        .arg(garbage)
                        .query_async::<()>(&mut c)
                        .await
                })
                .await
                .unwrap();
            assert!(t.redeem(&ticket).await.unwrap().is_none());
        }
    }

    /// Redis down: neither issue nor redeem falls back to the process.
    #[tokio::test]
    async fn redis_tickets_never_fall_back() {
        let mut server = gatepass_testkit::RedisServer::start();
        let redis = redis_client(&server.url()).await;
        let t = Tickets::redis(&cfg(Duration::from_secs(30)), redis.clone());
        let ticket = t.issue(verified("u4", now_secs() + 60)).await.unwrap();
        server.stop();
        gatepass_testkit::wait_for(Duration::from_secs(10), "redis down", || async {
            t.issue(verified("u4", now_secs() + 60)).await.is_err()
        })
        .await;
        assert!(t.redeem(&ticket).await.is_err());
    }
}
