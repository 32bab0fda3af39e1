//! MCP state for the whole cluster (`[state] backend = "redis"`, SPEC §5): one hash of every
//! MCP's state and version, one stream of changes (the event log every replica follows), and
//! the lease of the one replica that polls health.
//!
//! - `{key_prefix}mcp:state`: `s:{name}` → the state (JSON), `v:{name}` → its version.
//! - `{key_prefix}mcp:events`: one entry per change: `mcp`, `v`, `state`, `events`, `wake`.
//! - `{key_prefix}mcp:poller`: the poller's id, with a TTL it renews.
//!
//! A change is committed only on the version it was computed from (compare-and-set in one
//! script), so a manual change on one replica and a health result on another never overwrite
//! each other; the loser recomputes. Versions of one MCP follow each other by one in the
//! stream, which is how a follower notices that it missed entries.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use gatepass_service::state::{RedisState, StateError};
use gatepass_service::table::{Change, SharedTable, TableSnapshot};

use crate::broadcast::Event;
use crate::mcp::McpState;

/// Entries the stream keeps (approximately): a follower further behind reloads the hash.
const STREAM_LEN: usize = 1000;

/// `KEYS` hash, stream; `ARGV` name, expected version, state, events, wake, stream length.
/// A missing or unreadable version accepts any expectation (first write, or Redis lost its
/// data): the write continues from the writer's version, so followers see no gap.
const COMMIT_LUA: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v:' .. ARGV[1]))
local expected = tonumber(ARGV[2])
if cur and cur ~= expected then return 0 end
local v = expected + 1
redis.call('HSET', KEYS[1], 's:' .. ARGV[1], ARGV[3], 'v:' .. ARGV[1], v)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'mcp', ARGV[1], 'v', v, 'state', ARGV[3], 'events', ARGV[4], 'wake', ARGV[5])
return v
"#;

/// `KEYS` lease; `ARGV` id, TTL ms: take it when free, renew it when ours.
const HOLD_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// `KEYS` lease; `ARGV` id: give it up when ours.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(COMMIT_LUA));
static HOLD: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HOLD_LUA));
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE_LUA));

/// An MCP's state as stored, and the version it is at. `None`: absent (never written, or
/// Redis lost its data) or unreadable; the next write replaces it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub state: Option<McpState>,
    pub version: Option<u64>,
}

/// One change, as read from the stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    pub mcp: String,
    pub version: u64,
    pub state: McpState,
    pub events: Vec<Event>,
    /// Wake the MCP's poller (a manual change).
    pub wake: bool,
}

/// Every MCP's state and version, and the stream position they are as of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub last_id: String,
    pub states: HashMap<String, (McpState, u64)>,
}

/// The cluster's MCP state on Redis.
pub struct McpLog {
    table: SharedTable,
    lease: String,
}

/// A value this code wrote but cannot read back: logged, never fatal.
fn garbled(what: &str, mcp: &str) {
    tracing::warn!(mcp, what, "unreadable MCP state in redis; ignored");
}

impl McpLog {
    pub fn new(redis: Arc<RedisState>) -> McpLog {
        McpLog {
            lease: redis.key("mcp:poller"),
            table: SharedTable::new(
                redis,
                "mcp",
                "mcp:state",
                "mcp:events",
                ["mcp_snapshot", "mcp_read"],
            ),
        }
    }

    /// The table every replica follows.
    pub fn table(&self) -> &SharedTable {
        &self.table
    }

    fn redis(&self) -> &RedisState {
        self.table.redis()
    }

    /// The state of `mcp` now.
    pub async fn load(&self, mcp: &str) -> Result<Stored, StateError> {
        let hash = self.table.hash().to_owned();
        let fields = [format!("s:{mcp}"), format!("v:{mcp}")];
        let (state, version): (Option<String>, Option<String>) = self
            .redis()
            .call("mcp_load", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(hash)
                    .arg(&fields[..])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let parsed = state.as_deref().map(serde_json::from_str::<McpState>);
        if let Some(Err(_)) = parsed {
            garbled("state", mcp);
        }
        Ok(Stored {
            state: parsed.and_then(Result::ok),
            version: version.and_then(|v| v.parse().ok()),
        })
    }

    /// Writes `state` (and appends the change to the stream) if `mcp` is still at `version`:
    /// the new version, or `None` when somebody else wrote first.
    pub async fn commit(
        &self,
        mcp: &str,
        version: u64,
        state: &McpState,
        events: &[Event],
        wake: bool,
    ) -> Result<Option<u64>, StateError> {
        let encode = |_| StateError::Failed("cannot encode");
        let state = serde_json::to_string(state).map_err(encode)?;
        let events = serde_json::to_string(events).map_err(encode)?;
        let (hash, stream) = (self.table.hash().to_owned(), self.table.stream().to_owned());
        let mcp = mcp.to_owned();
        let v: u64 = self
            .redis()
            .call("mcp_commit", |mut c| async move {
                COMMIT
                    .key(hash)
                    .key(stream)
                    .arg(mcp)
                    .arg(version)
                    .arg(state)
                    .arg(events)
                    .arg(u8::from(wake))
                    .arg(STREAM_LEN)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((v > 0).then_some(v))
    }

    /// Takes or renews the poller lease for `id`: true while this replica holds it.
    pub async fn hold(&self, id: &str, ttl: Duration) -> Result<bool, StateError> {
        let (key, id) = (self.lease.clone(), id.to_owned());
        let held: i64 = self
            .redis()
            .call("poller_lease", |mut c| async move {
                HOLD.key(key)
                    .arg(id)
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// Gives the lease up (when `id` holds it), so another replica takes over at once.
    pub async fn release(&self, id: &str) -> Result<(), StateError> {
        let (key, id) = (self.lease.clone(), id.to_owned());
        self.redis()
            .call("poller_lease", |mut c| async move {
                RELEASE.key(key).arg(id).invoke_async::<i64>(&mut c).await
            })
            .await
            .map(drop)
    }
}

/// Every MCP's state and version in a snapshot of the table; what is unreadable counts as
/// absent.
pub fn parse_snapshot(s: TableSnapshot) -> Snapshot {
    let mut states = HashMap::new();
    let mut versions = HashMap::new();
    for (field, value) in &s.entries {
        if let Some(mcp) = field.strip_prefix("s:") {
            match serde_json::from_str::<McpState>(value) {
                Ok(state) => {
                    states.insert(mcp.to_owned(), state);
                }
                Err(_) => garbled("state", mcp),
            }
        } else if let Some(mcp) = field.strip_prefix("v:") {
            match value.parse::<u64>() {
                Ok(v) => {
                    versions.insert(mcp.to_owned(), v);
                }
                Err(_) => garbled("version", mcp),
            }
        }
    }
    let states = states
        .into_iter()
        .filter_map(|(mcp, state)| Some((versions.remove(&mcp)?, mcp, state)))
        .map(|(v, mcp, state)| (mcp, (state, v)))
        .collect();
    Snapshot {
        last_id: s.last_id,
        states,
    }
}

/// One change from the stream; `None` (logged) when unreadable.
pub fn parse_entry(c: &Change) -> Option<Entry> {
    let mcp = c.get("mcp").unwrap_or("");
    let parsed = (|| {
        Some(Entry {
            version: c.get("v")?.parse().ok()?,
            state: serde_json::from_str(c.get("state")?).ok()?,
            events: serde_json::from_str(c.get("events")?).ok()?,
            wake: c.get("wake")? == "1",
            mcp: mcp.to_owned(),
            id: c.id.clone(),
        })
    })();
    if parsed.is_none() {
        garbled("stream entry", mcp);
    }
    parsed
}
