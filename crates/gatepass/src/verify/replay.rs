//! Values accepted once (a logout token's `jti`, a DPoP proof's `jti`): remembered for as long
//! as the value could be accepted, in process or in the shared state for the whole cluster.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use gatepass_service::state::{OnUnavailable, RedisState, StateError};

/// Shards of the in-process set: one lock per shard, held for one hash-set probe.
const SHARDS: usize = 16;

/// Values already used: in Redis (`SET NX` with expiry) when the state is shared, else (and,
/// with `on_unavailable = "local"`, while Redis is down) in this process.
pub struct Replays {
    local: Generations,
    redis: Option<Arc<RedisState>>,
    /// What the values are: their Redis key prefix (`logout-jti`) and metric op (`logout_jti`).
    kind: &'static str,
    op: &'static str,
}

impl Replays {
    /// Values of one `kind` (with its metric `op`), remembered in process for at least
    /// `remember` (the longest any caller asks for), at most `capacity` of them.
    pub fn new(
        redis: Option<Arc<RedisState>>,
        kind: &'static str,
        op: &'static str,
        remember: Duration,
        capacity: usize,
    ) -> Replays {
        Replays {
            local: Generations::new(remember, capacity),
            redis,
            kind,
            op,
        }
    }

    /// True the first time `digest` (of the value, never the value itself) is seen within
    /// `remember`. `fallback`: while Redis is down and `on_unavailable = "local"`, this
    /// process's memory decides instead of an error.
    pub async fn first_use(
        &self,
        digest: &[u8; 32],
        remember: Duration,
        fallback: bool,
    ) -> Result<bool, StateError> {
        let Some(redis) = &self.redis else {
            return Ok(self.local.insert(digest, Instant::now()));
        };
        let key = redis.key(&format!("{}:{}", self.kind, URL_SAFE_NO_PAD.encode(digest)));
        match redis
            .set_new_replicated(self.op, key, "1".into(), remember)
            .await
        {
            Err(StateError::Unavailable | StateError::Timeout)
                if fallback && redis.on_unavailable() == OnUnavailable::Local =>
            {
                Ok(self.local.insert(digest, Instant::now()))
            }
            r => r,
        }
    }
}

/// A set that forgets in whole generations: a value lives in the current generation, then
/// the previous one, so it is remembered for between one and two generation lengths. An
/// insert is one lock and at most two hash probes (no timers, no background task).
struct Generations {
    shards: Box<[Mutex<Shard>]>,
    length: Duration,
    per_shard: usize,
}

struct Shard {
    current: HashSet<u128, foldhash::fast::RandomState>,
    previous: HashSet<u128, foldhash::fast::RandomState>,
    since: Instant,
}

impl Generations {
    fn new(length: Duration, capacity: usize) -> Generations {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    current: HashSet::default(),
                    previous: HashSet::default(),
                    since: Instant::now(),
                })
            })
            .collect();
        Generations {
            shards,
            length,
            // Each generation holds half the capacity.
            per_shard: (capacity / SHARDS / 2).max(1),
        }
    }

    /// True when `digest` was not in the set (and is now), at `now`.
    fn insert(&self, digest: &[u8; 32], now: Instant) -> bool {
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        let key = u128::from_le_bytes(first);
        let shard = &self.shards[(digest[16] as usize) % SHARDS];
        let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
        let age = now.saturating_duration_since(s.since);
        if age >= self.length {
            // Past two lengths nothing in either generation needs remembering.
            let kept = if age >= 2 * self.length {
                HashSet::default()
            } else {
                std::mem::take(&mut s.current)
            };
            s.previous = kept;
            s.current.clear();
            s.since = now;
        }
        if s.current.contains(&key) || s.previous.contains(&key) {
            return false;
        }
        // Full: start a generation early. The previous one is dropped before its time, so
        // past `capacity` a value may be accepted twice (counted by the caller's metrics as
        // a normal allow); the alternative, refusing every new value, would stop all traffic.
        if s.current.len() >= self.per_shard {
            s.previous = std::mem::take(&mut s.current);
            s.since = now;
        }
        s.current.insert(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> [u8; 32] {
        gatepass_service::digest::sha256(&[n])
    }

    #[test]
    fn a_value_is_accepted_once_within_its_generations() {
        let g = Generations::new(Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(g.insert(&d(1), at(0)));
        assert!(!g.insert(&d(1), at(1)));
        assert!(g.insert(&d(2), at(1)));
        // One generation later: still remembered (now in the previous generation).
        assert!(!g.insert(&d(1), at(61)));
        assert!(!g.insert(&d(2), at(100)));
        // Two generations after the value's: forgotten.
        assert!(g.insert(&d(1), at(122)));
        // A long idle gap forgets both generations at once.
        assert!(g.insert(&d(2), at(1000)));
    }

    #[test]
    fn capacity_bounds_memory() {
        let g = Generations::new(Duration::from_secs(3600), SHARDS * 2 * 4);
        let now = Instant::now();
        for n in 0..=255u8 {
            g.insert(&d(n), now);
        }
        let held: usize = g
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                s.current.len() + s.previous.len()
            })
            .sum();
        assert!(held <= SHARDS * 2 * 4, "{held}");
    }
}
