//! Shared state between replicas: the `[state]` config table and a small Redis client.
//!
//! One [`RedisState`] per process holds one `ConnectionManager` (it reconnects by itself, with
//! backoff). Every call is bounded by `command_timeout`; a call made while the server is known
//! to be down fails at once, without a round trip, and a background probe notices when it is
//! back. Only the request path's connection errors mark the server down at once; a late
//! reply, or an error on a follower's own connection, wakes the probe, whose PING (with its
//! longer timeout) decides. Errors are counted through a [`StateObserver`] and logged once
//! per transition (up → down, down → up), never per failure. Credentials never reach a log
//! line or an error: errors are described by kind only.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{IntoConnectionInfo, RedisError, RedisResult};
use serde::{Deserialize, Serialize};

use crate::config::{resolve, ConfigError, Dur};

mod topology;

pub use topology::Conn;
use topology::{HaUrl, Kind, URL_HELP};

/// Where shared state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process (one replica).
    #[default]
    Memory,
    /// Redis, shared between replicas.
    Redis,
    /// Anything else; refused by [`StateConfig::validate`] with a line naming the key.
    #[serde(other, skip_serializing)]
    Unknown,
}

/// What a limit does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// The in-process limiter decides.
    #[default]
    Local,
    /// 503 `temporarily_unavailable`.
    Deny,
    #[serde(other, skip_serializing)]
    Unknown,
}

/// The `[state]` table.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: Backend,
    /// `redis://`, `redis+sentinel://` or `redis+cluster://` (`rediss…` for TLS). Printed
    /// with its credentials redacted.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    /// Environment variable holding the password (else the URL's credentials).
    pub password_env: Option<String>,
    /// Environment variable holding the sentinels' password (they have none otherwise).
    pub sentinel_password_env: Option<String>,
    /// Root CA for a `rediss…` server (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// Every key starts with it.
    pub key_prefix: String,
    /// Longest wait for one Redis call.
    pub command_timeout: Dur,
    pub on_unavailable: OnUnavailable,
    /// Replicas that must hold a ticket, session, revocation or DPoP `jti` before it is
    /// answered (`WAIT`); 0: none (a failover may lose the last writes).
    pub replicas_ack: u32,
    /// gatepass: where the last good discovery document and JWKS of every issuer are kept,
    /// read at start when the live fetch fails.
    pub dir: Option<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::Memory,
            url: "redis://127.0.0.1:6379/0".into(),
            password_env: None,
            sentinel_password_env: None,
            ca_file: None,
            key_prefix: "gatepass:".into(),
            command_timeout: Dur(Duration::from_millis(100)),
            on_unavailable: OnUnavailable::Local,
            replicas_ack: 0,
            dir: None,
        }
    }
}

pub use crate::config::redact_url;

// By hand: the URL may carry a password, and a config is printed with `{:?}` now and then.
impl std::fmt::Debug for StateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateConfig")
            .field("backend", &self.backend)
            .field("url", &redact_url(&self.url))
            .field("password_env", &self.password_env)
            .field("sentinel_password_env", &self.sentinel_password_env)
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .field("on_unavailable", &self.on_unavailable)
            .field("replicas_ack", &self.replicas_ack)
            .field("dir", &self.dir)
            .finish()
    }
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

impl StateConfig {
    pub fn is_redis(&self) -> bool {
        self.backend == Backend::Redis
    }

    fn tls(&self) -> bool {
        self.url.starts_with("rediss://") || self.url.starts_with("rediss+")
    }

    /// Checks the table; errors are one line naming the key, and never quote the URL (it may
    /// carry a password).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backend == Backend::Unknown {
            return Err(ConfigError::new(
                "state.backend",
                "must be `memory` or `redis`",
            ));
        }
        if self.on_unavailable == OnUnavailable::Unknown {
            return Err(ConfigError::new(
                "state.on_unavailable",
                "must be `local` or `deny`",
            ));
        }
        let ha = HaUrl::parse(&self.url);
        let url_ok = match &ha {
            Ok(Some(_)) => true,
            Ok(None) => {
                (self.url.starts_with("redis://") || self.url.starts_with("rediss://"))
                    && self.url.as_str().into_connection_info().is_ok()
            }
            Err(()) => false,
        };
        if !url_ok {
            return Err(ConfigError::new("state.url", URL_HELP));
        }
        if self.ca_file.is_some() && !self.tls() {
            return Err(ConfigError::new(
                "state.ca_file",
                "only applies with a TLS url (rediss://, rediss+sentinel://, rediss+cluster://)",
            ));
        }
        let sentinel = matches!(&ha, Ok(Some(h)) if matches!(h.kind, Kind::Sentinel { .. }));
        if self.sentinel_password_env.is_some() && !sentinel {
            return Err(ConfigError::new(
                "state.sentinel_password_env",
                "only applies with a redis+sentinel:// url",
            ));
        }
        for (key, name) in [
            ("state.password_env", &self.password_env),
            ("state.sentinel_password_env", &self.sentinel_password_env),
        ] {
            if name.as_ref().is_some_and(|n| n.is_empty()) {
                return Err(ConfigError::new(key, "must name an environment variable"));
            }
        }
        if self.replicas_ack > 16 {
            return Err(ConfigError::new(
                "state.replicas_ack",
                "must be between 0 and 16",
            ));
        }
        if self.key_prefix.is_empty() || !self.key_prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "state.key_prefix",
                "must be non-empty visible ASCII, like `gatepass:`",
            ));
        }
        let t = self.command_timeout.0;
        if t < Duration::from_millis(1) || t > Duration::from_secs(10) {
            return Err(ConfigError::new(
                "state.command_timeout",
                "must be between 1ms and 10s",
            ));
        }
        Ok(())
    }
}

/// 128 random bits in hex: an id that tells replicas, sockets and leases apart.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Receives the client's measurements, so each service names its own metrics.
pub trait StateObserver: Send + Sync + 'static {
    /// The server went up (`true`) or down.
    fn up(&self, up: bool);
    /// A call `op` failed (timeout included).
    fn error(&self, op: &'static str);
    /// A call `op` took `secs`.
    fn seconds(&self, op: &'static str, secs: f64);
    /// Under Sentinel: the master in use is now `addr` (was `previous`).
    fn master(&self, _previous: Option<&str>, _addr: &str) {}
    /// Under Sentinel: the master changed while running.
    fn failover(&self) {}
}

/// The observer both services use: an up gauge, one error counter per known `op` (in the order
/// of `ops`; an unknown op is not counted), and an optional call-time histogram. Each service
/// registers its own metric names and hands the handles over.
pub struct StateMetrics {
    up: metrics::Gauge,
    ops: &'static [&'static str],
    errors: Vec<metrics::Counter>,
    seconds: Option<metrics::Histogram>,
    topology: Option<TopologyMetrics>,
}

/// `{service}_state_master{addr}` and `{service}_state_failovers_total`.
pub struct TopologyMetrics {
    /// The gauge for one master address (registered when first used).
    master: Box<dyn Fn(&str) -> metrics::Gauge + Send + Sync>,
    failovers: metrics::Counter,
}

impl TopologyMetrics {
    /// The gauge `master_name{addr}` registered on `recorder` for each address in use, and
    /// the counter of failovers.
    pub fn on<R: metrics::Recorder + Send + Sync + 'static>(
        recorder: Arc<R>,
        master_name: &'static str,
        meta: &'static metrics::Metadata<'static>,
        failovers: metrics::Counter,
    ) -> TopologyMetrics {
        TopologyMetrics {
            master: Box::new(move |addr| {
                let labels = vec![metrics::Label::new("addr", addr.to_owned())];
                recorder.register_gauge(&metrics::Key::from_parts(master_name, labels), meta)
            }),
            failovers,
        }
    }
}

impl StateMetrics {
    /// `errors[i]` counts failures of `ops[i]`.
    pub fn new(
        up: metrics::Gauge,
        ops: &'static [&'static str],
        errors: Vec<metrics::Counter>,
        seconds: Option<metrics::Histogram>,
    ) -> StateMetrics {
        StateMetrics {
            up,
            ops,
            errors,
            seconds,
            topology: None,
        }
    }

    /// Also report the master in use and the failovers seen.
    pub fn with_topology(mut self, t: TopologyMetrics) -> StateMetrics {
        self.topology = Some(t);
        self
    }
}

impl StateObserver for StateMetrics {
    fn up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }

    fn error(&self, op: &'static str) {
        if let Some(c) = self
            .ops
            .iter()
            .position(|o| *o == op)
            .and_then(|i| self.errors.get(i))
        {
            c.increment(1);
        }
    }

    fn seconds(&self, _op: &'static str, secs: f64) {
        if let Some(h) = &self.seconds {
            h.record(secs);
        }
    }

    fn master(&self, previous: Option<&str>, addr: &str) {
        if let Some(t) = &self.topology {
            if let Some(old) = previous {
                (t.master)(old).set(0.0);
            }
            (t.master)(addr).set(1.0);
        }
    }

    fn failover(&self) {
        if let Some(t) = &self.topology {
            t.failovers.increment(1);
        }
    }
}

/// An observer that drops everything (tests, tools).
pub struct NoObserver;

impl StateObserver for NoObserver {
    fn up(&self, _: bool) {}
    fn error(&self, _: &'static str) {}
    fn seconds(&self, _: &'static str, _: f64) {}
}

/// Why a call gave no answer. Descriptions never carry a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Known to be down: not attempted.
    #[error("shared state is unavailable")]
    Unavailable,
    #[error("shared state call timed out")]
    Timeout,
    #[error("shared state call failed: {0}")]
    Failed(&'static str),
    /// `replicas_ack`: fewer replicas confirmed the write within `command_timeout`.
    #[error("shared state write not confirmed by enough replicas")]
    NotReplicated,
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// How often the probe pings while the server is up, and while it is down.
const PROBE_UP: Duration = Duration::from_secs(1);
const PROBE_DOWN: Duration = Duration::from_millis(250);

/// The Redis client of one process.
pub struct RedisState {
    /// The connection calls use, swapped when Sentinel names a new master. `None` until the
    /// sentinels first name one.
    current: RwLock<Option<Current>>,
    source: Source,
    manager_config: ConnectionManagerConfig,
    timeout: Duration,
    probe_timeout: Duration,
    prefix: String,
    on_unavailable: OnUnavailable,
    replicas_ack: u32,
    /// Which of the replicated-write connections the next such write takes.
    replicated_turn: std::sync::atomic::AtomicUsize,
    status: AtomicU8,
    observer: Arc<dyn StateObserver>,
    /// Wakes the probe at once, to decide with a PING whether the server is down (and, under
    /// Sentinel, to ask the sentinels first).
    recheck: Arc<tokio::sync::Notify>,
}

/// The connection in use and where it goes.
#[derive(Clone)]
struct Current {
    conn: Conn,
    /// With `replicas_ack`: writes that must reach replicas, each followed by `WAIT` on this
    /// connection of their own (WAIT must follow the write on its connection, and a WAIT that
    /// waits must hold up nothing else).
    replicated: Vec<Conn>,
    /// One server (or the master Sentinel named): its client, for
    /// [`RedisState::blocking_connection`] and to say which master is in use.
    client: Option<redis::Client>,
    /// Bumped on every swap, so blocking connections know theirs is stale.
    generation: u64,
}

impl Current {
    /// The shared connection and, with `replicas_ack`, the pool for replicated writes, each
    /// made by `make`.
    fn new<E>(
        make: impl Fn() -> Result<Conn, E>,
        replicas_ack: u32,
        client: Option<redis::Client>,
        generation: u64,
    ) -> Result<Current, E> {
        Ok(Current {
            conn: make()?,
            replicated: (0..replicated_pool(replicas_ack))
                .map(|_| make())
                .collect::<Result<_, _>>()?,
            client,
            generation,
        })
    }
}

/// Where connections come from.
enum Source {
    Single,
    /// Only the probe asks the sentinels (one question at a time).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(ClusterClient),
}

/// Whose call failed, which decides what a failure says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// The request path, on the shared connection: a connection error marks the server down
    /// at once, so the next request fails fast. A late reply does not: one slow answer (a
    /// busy Redis, a starved replica) is not an outage, so it fails alone and the probe
    /// pings at once.
    Request,
    /// A follower on a connection of its own: its error may be stale (a reconnect that
    /// failed while the server was away), so the probe decides.
    Follower,
    /// The probe's PING: the probe loop itself draws the conclusion.
    Probe,
}

/// What went wrong, by kind only: a Redis error's text may quote the connection info.
fn describe(e: &RedisError) -> &'static str {
    let code = e.code().unwrap_or("");
    if e.is_timeout() {
        "timed out"
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code, "WRONGPASS" | "NOAUTH" | "NOPERM")
    {
        "authentication failed"
    } else if code == "READONLY" {
        "read-only replica"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_connection_dropped() {
        "connection dropped"
    } else if e.is_io_error() {
        "I/O error"
    } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
        "invalid client configuration"
    } else if matches!(
        e.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        "unexpected reply"
    } else {
        "server error"
    }
}

/// Errors that say the server (not one command) is unusable. `READONLY` counts: the server
/// was demoted to a replica, so (under Sentinel) the master must be asked for again.
fn is_outage(e: &RedisError) -> bool {
    e.is_timeout()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(
            e.code(),
            Some("WRONGPASS" | "NOAUTH" | "LOADING" | "READONLY" | "MASTERDOWN")
        )
}

/// The password in environment variable `name`, for the config key `key`.
fn password_from(key: &'static str, name: &str) -> Result<String, ConfigError> {
    std::env::var(name)
        .ok()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                key,
                format!("environment variable {name} is not set or empty"),
            )
        })
}

impl RedisState {
    /// Builds the client and starts its probe; never waits for the server (the connection is
    /// made in the background). Must run inside a Tokio runtime. Errors name the key.
    pub fn start(
        c: &StateConfig,
        base_dir: &Path,
        observer: Arc<dyn StateObserver>,
    ) -> Result<Arc<RedisState>, ConfigError> {
        let bad_url = || ConfigError::new("state.url", URL_HELP);
        let ha = HaUrl::parse(&c.url).map_err(|_| bad_url())?;
        let password = match &c.password_env {
            Some(name) => Some(password_from("state.password_env", name)?),
            None => None,
        };
        let sentinel_password = match &c.sentinel_password_env {
            Some(name) => Some(password_from("state.sentinel_password_env", name)?),
            None => None,
        };
        let certificates = match &c.ca_file {
            Some(ca) => {
                let path = resolve(base_dir, ca);
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "state.ca_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            }
            None => None,
        };
        let has_ca = c.ca_file.is_some();
        let bad_ca = || {
            if has_ca {
                ConfigError::new("state.ca_file", "cannot use: no PEM certificate in it")
            } else {
                ConfigError::new("state.url", URL_HELP)
            }
        };
        let timeout = c.command_timeout.0;
        // Connecting (TLS included) may take longer than one command; the request path never
        // waits for it: it only calls while the probe has seen the server up.
        let probe_timeout = timeout.max(Duration::from_secs(1));
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(probe_timeout))
            .set_response_timeout(None)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_number_of_retries(3);
        let (source, current) = match ha {
            None => {
                let mut info = c
                    .url
                    .as_str()
                    .into_connection_info()
                    .map_err(|_| bad_url())?;
                if let Some(password) = password {
                    let settings = info.redis_settings().clone().set_password(password);
                    info = info.set_redis_settings(settings);
                }
                let client = match certificates {
                    Some(certs) => {
                        redis::Client::build_with_tls(info, certs).map_err(|_| bad_ca())?
                    }
                    None => redis::Client::open(info).map_err(|_| bad_url())?,
                };
                let single = || {
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
                        .map(Conn::Single)
                        .map_err(|e| ConfigError::new("state.url", describe(&e)))
                };
                let current = Current::new(single, c.replicas_ack, Some(client.clone()), 0)?;
                (Source::Single, Some(current))
            }
            Some(ha) => {
                let password = password.or(ha.password.clone());
                match &ha.kind {
                    Kind::Sentinel { master, db } => {
                        let mut b = SentinelClientBuilder::new(
                            ha.addrs(),
                            master,
                            SentinelServerType::Master,
                        )
                        .map_err(|_| bad_url())?
                        .set_client_to_redis_db(*db);
                        if let Some(u) = &ha.username {
                            b = b.set_client_to_redis_username(u);
                        }
                        if let Some(p) = &password {
                            b = b.set_client_to_redis_password(p);
                        }
                        if let Some(p) = &sentinel_password {
                            b = b.set_client_to_sentinel_password(p);
                        }
                        if ha.tls {
                            b = b
                                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                            if let Some(certs) = &certificates {
                                b = b
                                    .set_client_to_redis_certificates(certs.clone())
                                    .set_client_to_sentinel_certificates(certs.clone());
                            }
                        }
                        let client = b.build().map_err(|_| bad_ca())?;
                        (Source::Sentinel(tokio::sync::Mutex::new(client)), None)
                    }
                    Kind::Cluster => {
                        let mut b = ClusterClientBuilder::new(ha.addrs())
                            .connection_timeout(probe_timeout)
                            .retries(2)
                            .min_retry_wait(20)
                            .max_retry_wait(200);
                        if let Some(u) = &ha.username {
                            b = b.username(u);
                        }
                        if let Some(p) = &password {
                            b = b.password(p);
                        }
                        if ha.tls {
                            b = b.tls(redis::TlsMode::Secure);
                            if let Some(certs) = &certificates {
                                b = b.certs(certs.clone());
                            }
                        }
                        let client = b.build().map_err(|_| bad_ca())?;
                        let cluster = || {
                            let conn = cluster_connection(&client, probe_timeout, CLUSTER_RESPONSE);
                            Ok::<_, ConfigError>(Conn::Cluster(conn))
                        };
                        let current = Current::new(cluster, c.replicas_ack, None, 0)?;
                        (Source::Cluster(client), Some(current))
                    }
                }
            }
        };
        let state = Arc::new(RedisState {
            current: RwLock::new(current),
            source,
            manager_config,
            timeout,
            probe_timeout,
            prefix: c.key_prefix.clone(),
            on_unavailable: c.on_unavailable,
            replicas_ack: c.replicas_ack,
            replicated_turn: std::sync::atomic::AtomicUsize::new(0),
            status: AtomicU8::new(UNKNOWN),
            observer,
            recheck: Arc::new(tokio::sync::Notify::new()),
        });
        state.observer.up(false);
        tokio::spawn(probe(Arc::downgrade(&state), state.recheck.clone()));
        Ok(state)
    }

    /// Was the last call (or probe) answered? Cheap: one atomic load.
    pub fn is_up(&self) -> bool {
        self.status.load(Ordering::Relaxed) == UP
    }

    pub fn on_unavailable(&self) -> OnUnavailable {
        self.on_unavailable
    }

    pub fn command_timeout(&self) -> Duration {
        self.timeout
    }

    /// Under Sentinel, the master in use (`host:port`), once the sentinels named one.
    pub fn master(&self) -> Option<String> {
        if !matches!(self.source, Source::Sentinel(_)) {
            return None;
        }
        let current = self.read_current();
        let client = current.as_ref()?.client.as_ref()?;
        Some(client.get_connection_info().addr().to_string())
    }

    fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    fn read_current(&self) -> std::sync::RwLockReadGuard<'_, Option<Current>> {
        // Nothing panics while holding it (clones and a swap), so a poisoned lock is sound.
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection `which` takes from the ones in use; fails at once while the server is
    /// known to be down (but for the probe, which is how it comes back).
    fn pick(
        &self,
        caller: Caller,
        which: impl FnOnce(&Current) -> Option<Conn>,
    ) -> Result<Conn, StateError> {
        if caller != Caller::Probe && !self.is_up() {
            return Err(StateError::Unavailable);
        }
        let current = self.read_current();
        current
            .as_ref()
            .and_then(which)
            .ok_or(StateError::Unavailable)
    }

    /// `key_prefix` + `name`. On a Cluster, `name` is a hash tag of its own (`{name}`), so
    /// single keys spread over the slots.
    pub fn key(&self, name: &str) -> String {
        if self.is_cluster() {
            return self.group_key(name, name);
        }
        let mut k = String::with_capacity(self.prefix.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(name);
        k
    }

    /// The key `name` of a group whose keys a script or a hash + stream pair use together:
    /// `key_prefix` + `name` as for [`RedisState::key`], but on a Cluster every key of the
    /// group shares the hash tag `{group}` (`gatepass:{revocations}:log`), hence one slot.
    pub fn group_key(&self, group: &str, name: &str) -> String {
        if !self.is_cluster() {
            return self.key(name);
        }
        let rest = name.strip_prefix(group).unwrap_or(name);
        let sep = if rest.is_empty() || rest.starts_with(':') {
            ""
        } else {
            ":"
        };
        format!("{}{{{group}}}{sep}{rest}", self.prefix)
    }

    /// Runs one call on the shared connection, bounded by `command_timeout`. Fails at once
    /// while the server is known to be down.
    pub async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.pick(Caller::Request, |c| Some(c.conn.clone()))?;
        self.timed(conn, op, self.timeout, Caller::Request, f).await
    }

    /// `SET key value NX PX ttl`: true when the key was set, false when it already existed.
    pub async fn set_new(
        &self,
        op: &'static str,
        key: String,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let set = self.call(op, |c| set_nx(c, key, value, ttl)).await?;
        Ok(set.is_some())
    }

    /// [`RedisState::set_new`] for a value that must survive a failover (see
    /// [`RedisState::call_replicated`]).
    pub async fn set_new_replicated(
        &self,
        op: &'static str,
        key: String,
        value: String,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let set = self
            .call_replicated(op, |c| set_nx(c, key, value, ttl))
            .await?;
        Ok(set.is_some())
    }

    /// A write that must survive a failover. With `replicas_ack = n ≥ 1` it runs on a
    /// connection of its own, followed there by `WAIT n command_timeout`: fewer than `n`
    /// replicas holding it is [`StateError::NotReplicated`] (the write itself stays on the
    /// master). The whole is bounded by twice `command_timeout` (the write, then the wait).
    /// With 0, it is [`RedisState::call`].
    pub async fn call_replicated<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let n = self.replicas_ack;
        if n == 0 {
            return self.call(op, f).await;
        }
        // Round robin over the pool: a WAIT holds up its connection, so concurrent replicated
        // writes each take another.
        let turn = self.replicated_turn.fetch_add(1, Ordering::Relaxed);
        let conn = self.pick(Caller::Request, |c| {
            let pool = &c.replicated;
            pool.get(turn % pool.len().max(1)).cloned()
        })?;
        let ms = self.timeout.as_millis().max(1) as u64;
        let (value, acked) = self
            .timed(
                conn,
                op,
                self.timeout * 2,
                Caller::Request,
                |c| async move {
                    let mut wait_on = c.clone();
                    let value = f(c).await?;
                    let acked: i64 = redis::cmd("WAIT")
                        .arg(n)
                        .arg(ms)
                        .query_async(&mut wait_on)
                        .await?;
                    Ok((value, acked))
                },
            )
            .await?;
        if acked < i64::from(n) {
            self.observer.error(op);
            return Err(StateError::NotReplicated);
        }
        Ok(value)
    }

    /// A second connection for blocking reads (`XREAD BLOCK`), which would otherwise stall
    /// every command queued behind them on the shared one. It follows the shared one to a new
    /// master.
    pub fn blocking_connection(self: &Arc<Self>) -> BlockingConnection {
        BlockingConnection {
            own: std::sync::Mutex::new(None),
            state: self.clone(),
        }
    }

    /// A connection of its own on the current server (or cluster), and the generation it
    /// belongs to.
    fn own_connection(&self) -> Result<Option<(u64, Conn)>, StateError> {
        let current = self.read_current().clone();
        let Some(current) = current else {
            return Ok(None);
        };
        let conn = match (&self.source, &current.client) {
            (Source::Cluster(client), _) => Conn::Cluster(cluster_connection(
                client,
                self.probe_timeout,
                BLOCKING_RESPONSE,
            )),
            (_, Some(client)) => Conn::Single(
                ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    self.manager_config.clone(),
                )
                .map_err(|e| StateError::Failed(describe(&e)))?,
            ),
            (_, None) => return Ok(None),
        };
        Ok(Some((current.generation, conn)))
    }

    fn generation(&self) -> Option<u64> {
        self.read_current().as_ref().map(|c| c.generation)
    }

    /// One call bounded by `limit`, with what its failure says about the server recorded.
    async fn timed<T, F, Fut>(
        &self,
        conn: Conn,
        op: &'static str,
        limit: Duration,
        caller: Caller,
        f: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        // One span per call, only inside another span (a request's): the probe's PINGs and
        // other background calls make no trace of their own.
        let span = if crate::telemetry::enabled() && !tracing::Span::current().is_none() {
            tracing::info_span!(
                "redis",
                otel.kind = "client",
                db.system.name = "redis",
                op,
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let start = Instant::now();
        let result =
            tracing::Instrument::instrument(tokio::time::timeout(limit, f(conn)), span.clone())
                .await;
        self.observer.seconds(op, start.elapsed().as_secs_f64());
        span.record(
            "outcome",
            match &result {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            },
        );
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.observer.error(op);
                let what = describe(&e);
                match (is_outage(&e), caller) {
                    (true, Caller::Request) => {
                        self.set(false, what);
                        self.recheck.notify_one();
                    }
                    (true, Caller::Follower) => self.recheck.notify_one(),
                    _ => tracing::debug!(op, error = what, "shared state call failed"),
                }
                Err(StateError::Failed(what))
            }
            Err(_) => {
                self.observer.error(op);
                if caller != Caller::Probe {
                    self.recheck.notify_one();
                }
                Err(StateError::Timeout)
            }
        }
    }

    /// One PING, attempted even while down; updates the status.
    /// Under Sentinel the question is `ROLE`, not `PING`: a demoted master (a replica) answers
    /// PING, and must count as down until the sentinels name the new one.
    pub async fn ping(&self) -> bool {
        let Ok(conn) = self.pick(Caller::Probe, |c| Some(c.conn.clone())) else {
            return false;
        };
        let sentinel = matches!(self.source, Source::Sentinel(_));
        let r = self
            .timed(
                conn,
                "ping",
                self.probe_timeout,
                Caller::Probe,
                |mut c| async move {
                    if sentinel {
                        let role: redis::Role = redis::cmd("ROLE").query_async(&mut c).await?;
                        Ok(matches!(role, redis::Role::Primary { .. }))
                    } else {
                        let pong: RedisResult<String> =
                            redis::cmd("PING").query_async(&mut c).await;
                        pong.map(|_| true)
                    }
                },
            )
            .await;
        let up = r == Ok(true);
        if up {
            self.set(true, "");
        }
        up
    }

    /// Under Sentinel: asks the sentinels for the master (redis-rs checks with `ROLE` that it
    /// is one) and, if it is another than the one in use, swaps every connection to it. The
    /// old connections are dropped, so a demoted master is never written to again.
    async fn follow_master(&self) {
        let Source::Sentinel(sentinels) = &self.source else {
            return;
        };
        let asked = tokio::time::timeout(self.probe_timeout.max(DISCOVERY_TIMEOUT), async {
            sentinels.lock().await.async_get_client().await
        })
        .await;
        let client = match asked {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::debug!(error = describe(&e), "sentinels named no usable master");
                return;
            }
            Err(_) => {
                tracing::debug!("sentinels did not answer in time");
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        let previous = self.master();
        if previous.as_deref() == Some(addr.as_str()) {
            return;
        }
        let single = || {
            ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone())
                .map(Conn::Single)
        };
        let generation = self.generation().map_or(0, |g| g + 1);
        let new = match Current::new(single, self.replicas_ack, Some(client.clone()), generation) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = describe(&e), "cannot connect to the new master");
                return;
            }
        };
        // Only the probe swaps, so nothing changed `current` since `generation` was read.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(new);
        self.observer.master(previous.as_deref(), &addr);
        match previous {
            Some(old) => {
                self.observer.failover();
                tracing::warn!(from = %old, to = %addr, "shared state (redis) master changed");
            }
            None => tracing::info!(master = %addr, "shared state (redis) master found"),
        }
    }

    /// Records a transition and logs it once.
    fn set(&self, up: bool, why: &str) {
        let new = if up { UP } else { DOWN };
        let old = self.status.swap(new, Ordering::Relaxed);
        if old == new {
            return;
        }
        self.observer.up(up);
        match (old, up) {
            (UNKNOWN, true) => tracing::info!("shared state (redis) connected"),
            (_, true) => tracing::info!("shared state (redis) available again"),
            (UNKNOWN, false) => tracing::warn!(
                error = why,
                on_unavailable = ?self.on_unavailable,
                "shared state (redis) unavailable at start; retrying in the background"
            ),
            (_, false) => tracing::warn!(
                error = why,
                on_unavailable = ?self.on_unavailable,
                "shared state (redis) unavailable"
            ),
        }
    }
}

/// Connections for replicated writes: none without `replicas_ack`, else a few, each of which
/// a waiting WAIT holds up alone.
fn replicated_pool(replicas_ack: u32) -> usize {
    if replicas_ack == 0 {
        0
    } else {
        REPLICATED_CONNECTIONS
    }
}

const REPLICATED_CONNECTIONS: usize = 4;

/// How long the sentinels may take to name the master: their own connect timeout (1 s in
/// redis-rs) for an unreachable first sentinel, plus the next one's answer.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// `SET key value NX PX ttl` on `c`.
async fn set_nx(
    mut c: Conn,
    key: String,
    value: String,
    ttl: Duration,
) -> redis::RedisResult<Option<String>> {
    let ms = ttl.as_millis().max(1) as u64;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .query_async(&mut c)
        .await
}

/// A cluster's response timeout for the shared connection: never the limit (each call has its
/// own `command_timeout`), only a backstop.
const CLUSTER_RESPONSE: Duration = Duration::from_secs(10);
/// And for blocking reads, above any block time the followers use.
const BLOCKING_RESPONSE: Duration = Duration::from_secs(60);

/// A cluster connection that connects in the background, so start never waits for it.
fn cluster_connection(
    client: &ClusterClient,
    connect: Duration,
    response: Duration,
) -> ClusterConnection {
    client.get_pending_async_connection_with_config(
        ClusterConfig::new()
            .set_connection_timeout(connect)
            .set_response_timeout(response),
    )
}

/// A connection of its own for calls that block on the server (see
/// [`RedisState::blocking_connection`]).
pub struct BlockingConnection {
    /// Made at the first call, and again after the shared connection moved to a new master.
    own: std::sync::Mutex<Option<(u64, Conn)>>,
    state: Arc<RedisState>,
}

impl BlockingConnection {
    /// Like [`RedisState::call`], for a command that may block on the server for up to
    /// `block`: bounded by `block` plus the probe's margin (at least 1 s), so an answer that
    /// is merely late never marks the server down.
    pub async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        block: Duration,
        f: F,
    ) -> Result<T, StateError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let s = &self.state;
        if !s.is_up() {
            return Err(StateError::Unavailable);
        }
        let conn = {
            let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
            let stale = own.as_ref().map(|(g, _)| Some(*g)) != Some(s.generation());
            if stale {
                *own = s.own_connection()?;
            }
            match own.as_ref() {
                Some((_, c)) => c.clone(),
                None => return Err(StateError::Unavailable),
            }
        };
        s.timed(conn, op, block + s.probe_timeout, Caller::Follower, f)
            .await
    }
}

/// Pings until the client is dropped: often while down, so recovery is seen quickly, and at
/// once when a call asks for a verdict. Under Sentinel, asks the sentinels before each PING,
/// so a new master is in use within one probe period of the sentinels naming it.
async fn probe(this: Weak<RedisState>, recheck: Arc<tokio::sync::Notify>) {
    loop {
        let Some(state) = this.upgrade() else { return };
        state.follow_master().await;
        let up = state.ping().await;
        if !up {
            state.set(false, "no answer to PING");
        }
        drop(state);
        tokio::select! {
            _ = tokio::time::sleep(if up { PROBE_UP } else { PROBE_DOWN }) => {}
            _ = recheck.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StateConfig, ConfigError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            state: StateConfig,
        }
        let f: File = crate::config::from_toml(text)?;
        f.state.validate()?;
        Ok(f.state)
    }

    fn err(text: &str) -> String {
        parse(&format!("[state]\n{text}\n"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = parse("").unwrap();
        assert_eq!(c, StateConfig::default());
        assert!(!c.is_redis());
        let c = parse("[state]\nbackend = \"redis\"\non_unavailable = \"deny\"\ncommand_timeout = \"250ms\"\n").unwrap();
        assert!(c.is_redis());
        assert_eq!(c.on_unavailable, OnUnavailable::Deny);
        assert_eq!(
            err("backend = \"etcd\""),
            "config error: state.backend: must be `memory` or `redis`"
        );
        assert_eq!(
            err("on_unavailable = \"allow\""),
            "config error: state.on_unavailable: must be `local` or `deny`"
        );
        let url = format!("config error: state.url: {URL_HELP}");
        assert_eq!(err("url = \"http://x:s3cret@h/0\""), url);
        assert_eq!(err("url = \"redis://\""), url);
        assert!(!err("url = \"http://x:s3cret@h/0\"").contains("s3cret"));
        assert_eq!(
            err("ca_file = \"ca.pem\""),
            "config error: state.ca_file: only applies with a TLS url (rediss://, rediss+sentinel://, rediss+cluster://)"
        );
        assert_eq!(
            err("sentinel_password_env = \"P\""),
            "config error: state.sentinel_password_env: only applies with a redis+sentinel:// url"
        );
        assert_eq!(
            err("url = \"redis+sentinel://s1,s2/m\"\nsentinel_password_env = \"\""),
            "config error: state.sentinel_password_env: must name an environment variable"
        );
        assert_eq!(
            err("replicas_ack = 17"),
            "config error: state.replicas_ack: must be between 0 and 16"
        );
        assert_eq!(err("url = \"redis+sentinel://s1:26379\""), url);
        assert_eq!(err("url = \"redis+cluster://n1:6379/2\""), url);
        let c = parse("[state]\nurl = \"rediss+sentinel://:pw@s1,s2/m/1\"\nca_file = \"ca.pem\"\nsentinel_password_env = \"P\"\nreplicas_ack = 1\n").unwrap();
        assert_eq!(c.replicas_ack, 1);
        parse("[state]\nurl = \"redis+cluster://n1:6379,n2:6379\"\n").unwrap();
        assert_eq!(
            err("key_prefix = \"\""),
            "config error: state.key_prefix: must be non-empty visible ASCII, like `gatepass:`"
        );
        assert_eq!(
            err("command_timeout = \"0ms\""),
            "config error: state.command_timeout: must be between 1ms and 10s"
        );
        assert_eq!(
            err("command_timeout = \"1m\""),
            "config error: state.command_timeout: must be between 1ms and 10s"
        );
    }

    #[test]
    fn printed_url_has_no_credentials() {
        let c = StateConfig {
            url: "rediss://user:s3cret@redis.internal:6380/1".into(),
            ..StateConfig::default()
        };
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(
            text.contains("rediss://<redacted>@redis.internal:6380/1"),
            "{text}"
        );
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[tokio::test]
    async fn missing_password_env_names_the_key() {
        let c = StateConfig {
            backend: Backend::Redis,
            password_env: Some("GATEPASS_STATE_TEST_UNSET_PASSWORD".into()),
            ..StateConfig::default()
        };
        let e = RedisState::start(&c, Path::new("."), Arc::new(NoObserver))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "config error: state.password_env: environment variable GATEPASS_STATE_TEST_UNSET_PASSWORD is not set or empty"
        );
    }

    /// A client of the server at `url`, default settings.
    fn client(url: String) -> Arc<RedisState> {
        let c = StateConfig {
            backend: Backend::Redis,
            url,
            ..StateConfig::default()
        };
        RedisState::start(&c, Path::new("."), Arc::new(NoObserver)).unwrap()
    }

    async fn wait_up(s: &RedisState, up: bool) {
        gatepass_testkit::wait_for(Duration::from_secs(10), "redis status", || async {
            s.is_up() == up
        })
        .await;
    }

    /// Up once the probe answers; a stopped server is down at the next call, and a call then
    /// fails at once; a restarted one (same port) is up again without a new client.
    #[tokio::test]
    async fn follows_the_server_down_and_up_again() {
        let mut redis = gatepass_testkit::RedisServer::start();
        let s = client(redis.url());
        wait_up(&s, true).await;
        let set = |k: String| {
            move |mut c: Conn| async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg("1")
                    .query_async::<()>(&mut c)
                    .await
            }
        };
        s.call("test", set(s.key("k"))).await.unwrap();
        redis.stop();
        wait_up(&s, false).await;
        let start = Instant::now();
        assert_eq!(
            s.call("test", set(s.key("k"))).await,
            Err(StateError::Unavailable)
        );
        assert!(start.elapsed() < Duration::from_millis(20));
        redis.restart();
        wait_up(&s, true).await;
        s.call("test", set(s.key("k"))).await.unwrap();
    }

    /// A reply later than `command_timeout` fails that call alone: the server stays up and
    /// the next call works. A server that answers nothing for longer than the probe's
    /// timeout (1 s) is down, and up again once it answers.
    #[tokio::test]
    async fn a_late_reply_is_not_an_outage_but_silence_is() {
        let redis = gatepass_testkit::RedisServer::start();
        let s = client(redis.url());
        wait_up(&s, true).await;
        let ping =
            |mut c: Conn| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
        redis.pause();
        assert_eq!(s.call("test", ping).await, Err(StateError::Timeout));
        assert!(s.is_up(), "one late reply marked the server down");
        redis.resume();
        assert_eq!(s.call("test", ping).await.as_deref(), Ok("PONG"));
        assert!(s.is_up());
        redis.pause();
        wait_up(&s, false).await;
        assert_eq!(s.call("test", ping).await, Err(StateError::Unavailable));
        redis.resume();
        wait_up(&s, true).await;
        assert_eq!(s.call("test", ping).await.as_deref(), Ok("PONG"));
    }

    /// A wrong password or no server at all: the client starts, stays down, never panics.
    #[tokio::test]
    async fn wrong_password_or_no_server_is_down_not_an_error() {
        let redis = gatepass_testkit::RedisServer::start_with(Some("right-password"));
        let port = gatepass_testkit::free_port();
        for url in [
            format!("redis://:wrong-password@127.0.0.1:{}/0", redis.port()),
            format!("redis://127.0.0.1:{port}/0"),
        ] {
            let s = client(url);
            assert!(!s.ping().await);
            assert!(!s.is_up());
        }
        let s = client(format!(
            "redis://:right-password@127.0.0.1:{}/0",
            redis.port()
        ));
        wait_up(&s, true).await;
    }
}
