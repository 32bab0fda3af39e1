//! Values accepted once (a logout token's `jti`, a DPoP proof's `jti`): remembered for as long
//! as the value could be accepted, in process or in the shared state for the whole cluster.

use std::sync::Arc;
use std::time::Duration;

use gatepass_service::state::{OnUnavailable, RedisState, StateError};
use moka::future::Cache;
use moka::Expiry;

/// Remembers each entry for its own `remember`.
struct Remember;

impl Expiry<String, Duration> for Remember {
    fn expire_after_create(
        &self,
        _key: &String,
        remember: &Duration,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(*remember)
    }
}

/// Values already used: in Redis (`SET NX` with expiry) when the state is shared, else (and,
/// with `on_unavailable = "local"`, while Redis is down) in this process.
pub struct Replays {
    local: Cache<String, Duration>,
    redis: Option<Arc<RedisState>>,
}

impl Replays {
    /// At most `capacity` values are remembered in process; past it the oldest go first.
    pub fn new(redis: Option<Arc<RedisState>>, capacity: u64) -> Replays {
        Replays {
            local: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Remember)
                .build(),
            redis,
        }
    }

    /// True the first time `id` (a digest, never the value itself) is seen as a `kind`
    /// within `remember`. `fallback`: while Redis is down and `on_unavailable = "local"`,
    /// this process's memory decides instead of an error.
    pub async fn first_use(
        &self,
        kind: &'static str,
        id: &str,
        remember: Duration,
        fallback: bool,
    ) -> Result<bool, StateError> {
        let Some(redis) = &self.redis else {
            return Ok(self.first_local(kind, id, remember).await);
        };
        let key = redis.key(&format!("{kind}:{id}"));
        match redis.set_new(kind, key, "1".into(), remember).await {
            Err(StateError::Unavailable | StateError::Timeout)
                if fallback && redis.on_unavailable() == OnUnavailable::Local =>
            {
                Ok(self.first_local(kind, id, remember).await)
            }
            r => r,
        }
    }

    async fn first_local(&self, kind: &'static str, id: &str, remember: Duration) -> bool {
        let entry = self
            .local
            .entry(format!("{kind}:{id}"))
            .or_insert(remember)
            .await;
        entry.is_fresh()
    }
}
