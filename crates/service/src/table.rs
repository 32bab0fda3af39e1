//! A table every replica keeps a copy of: on Redis, a hash of the current values and a stream
//! of the changes made to it (each change is written to both by one script of its owner).
//! Every replica takes a snapshot (the hash and the stream position, at one instant), then
//! follows the stream on a connection of its own; after Redis was away, or when its copy says
//! it missed a change, it takes a new snapshot.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::state::{BlockingConnection, RedisState, StateError};

/// `KEYS` hash, stream: the last entry's id and the whole hash, at one instant.
const SNAPSHOT_LUA: &str = r#"
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {id, redis.call('HGETALL', KEYS[1])}
"#;

static SNAPSHOT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SNAPSHOT_LUA));

/// How long one read waits for a change before asking again.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Between attempts while Redis is unreachable.
const RETRY: Duration = Duration::from_millis(250);
/// Changes read at once.
const READ_COUNT: usize = 100;

/// The hash at one instant, and the stream position it is as of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSnapshot {
    pub last_id: String,
    /// Field → value, in Redis's order.
    pub entries: Vec<(String, String)>,
}

/// One change, as read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl Change {
    /// The value of field `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A replica's copy of a table.
pub trait Replica: Send + Sync {
    /// Replaces the copy with `snapshot`.
    fn reload(&self, snapshot: TableSnapshot);
    /// Applies one change; false when the copy can tell it missed changes (the follower then
    /// reloads).
    fn apply(&self, change: Change) -> bool;
}

/// A table on Redis: its hash, its stream, and the `op` names its calls are counted under.
pub struct SharedTable {
    redis: Arc<RedisState>,
    hash: String,
    stream: String,
    ops: [&'static str; 2],
}

impl SharedTable {
    /// The table `{key_prefix}{hash}` with the change stream `{key_prefix}{stream}`, both in
    /// key group `group` (one Cluster slot: the scripts use both); snapshot and read calls are
    /// counted as `ops[0]` and `ops[1]`.
    pub fn new(
        redis: Arc<RedisState>,
        group: &str,
        hash: &str,
        stream: &str,
        ops: [&'static str; 2],
    ) -> SharedTable {
        SharedTable {
            hash: redis.group_key(group, hash),
            stream: redis.group_key(group, stream),
            redis,
            ops,
        }
    }

    pub fn redis(&self) -> &Arc<RedisState> {
        &self.redis
    }

    /// The hash's full key.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The stream's full key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The whole table, consistent with the stream position returned.
    pub async fn snapshot(&self) -> Result<TableSnapshot, StateError> {
        let (hash, stream) = (self.hash.clone(), self.stream.clone());
        let (last_id, flat): (String, Vec<String>) = self
            .redis
            .call(self.ops[0], |mut c| async move {
                SNAPSHOT.key(hash).key(stream).invoke_async(&mut c).await
            })
            .await?;
        let mut entries = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            entries.push((k, v));
        }
        Ok(TableSnapshot { last_id, entries })
    }

    /// The changes after `after`, waiting up to `block` for one.
    async fn read(
        &self,
        conn: &BlockingConnection,
        after: &str,
        block: Duration,
    ) -> Result<Vec<Change>, StateError> {
        type Reply = Option<Vec<(String, Vec<(String, Vec<String>)>)>>;
        let (stream, after) = (self.stream.clone(), after.to_owned());
        let reply: Reply = conn
            .call(self.ops[1], block, |mut c| async move {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(READ_COUNT)
                    .arg("BLOCK")
                    .arg(block.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(stream)
                    .arg(after)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let entries = reply.into_iter().flatten().flat_map(|(_, entries)| entries);
        Ok(entries
            .map(|(id, flat)| {
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    fields.push((k, v));
                }
                Change { id, fields }
            })
            .collect())
    }

    /// Keeps `replica` current until the task is dropped: a snapshot first, then every
    /// change in order; a new snapshot after any failure or when `apply` says so.
    pub async fn follow(&self, replica: &impl Replica) {
        let conn = self.redis.blocking_connection();
        let mut after: Option<String> = None;
        loop {
            let Some(from) = after.clone() else {
                match self.snapshot().await {
                    Ok(s) => {
                        let id = s.last_id.clone();
                        replica.reload(s);
                        after = Some(id);
                    }
                    Err(_) => tokio::time::sleep(RETRY).await,
                }
                continue;
            };
            match self.read(&conn, &from, READ_BLOCK).await {
                Ok(changes) => {
                    for c in changes {
                        let id = c.id.clone();
                        if !replica.apply(c) {
                            after = None;
                            break;
                        }
                        after = Some(id);
                    }
                }
                Err(_) => {
                    // Changes may have been missed while Redis was away: reload once back.
                    after = None;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
