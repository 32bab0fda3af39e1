//! Signed in with a browser (SPEC §9): sign-in at the organisation's OpenID Provider (`oidc`,
//! `flow`), server-side sessions in the state backend (`store`, tokens sealed by `seal`), and a
//! session resolved to its current token on every request, exactly as a bearer token would be.
//! The hot path is a process cache keyed by the cookie (like the token cache): no Redis round
//! trip; idle bookkeeping and refreshes run off the request path, one refresh per session for
//! the whole cluster (a lease in the state backend) and per process (single flight). A session
//! ends everywhere as a revocation of its `sid`, which every replica follows within a second.
//! The HTTP side (callback, sign-in, sign-out, `/session` and the redirect) is `signin.rs`.
//!
//! Imports: `config`, `metrics`, `policy` (the denial table), `verify` (the verifier, the
//! issuer's keys and discovery document), `revocation` (ending a session is revoking its sid).

pub mod flow;
pub mod oidc;
pub mod pages;
pub mod seal;
pub mod signin;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gatepass_identity::{Revocation, RevocationKind};
use gatepass_service::state::RedisState;
use metrics::{Counter, Gauge, Label};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, SessionIdentity, SigninConfig};
use crate::metrics::Metrics;
use crate::policy::deny::DenyReason;
use crate::revocation::list::{Revocations, Source};
use crate::verify::verified::{now_secs, TokenIds, Verified};
use crate::verify::{Issuer, Verifier};
use seal::SealKeys;
use store::{Hash, Store, Stored};

/// The process cache of verified sessions, keyed by the cookie (the client chooses it: a hash
/// seeded per process; a hit compares the whole id).
type Cache = quick_cache::sync::Cache<
    String,
    Arc<Entry>,
    quick_cache::UnitWeighter,
    foldhash::fast::RandomState,
>;

/// The tokens a session keeps, sealed at rest.
#[derive(Clone, Serialize, Deserialize)]
struct Tokens {
    #[serde(rename = "a")]
    access: String,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    refresh: Option<String>,
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

/// A session as the hot path uses it.
pub struct Entry {
    hash: Hash,
    /// The current token, verified, known by the session's `sid`.
    pub verified: Arc<Verified>,
    access_exp: u64,
    /// From here on, a request starts a refresh (in the background); a failed refresh moves
    /// it a second on, so a provider that is down is asked once a second, not per request.
    refresh_at: AtomicU64,
    /// The absolute end.
    pub expires: u64,
    version: u64,
    can_refresh: bool,
    sid: String,
    last_seen: AtomicU64,
    recorded: AtomicU64,
    refreshing: AtomicBool,
}

/// What a session cookie comes to.
pub enum Resolved {
    Valid(Arc<Entry>),
    /// Unknown, expired, idle, signed out, revoked, or its refresh failed for good.
    Ended,
    /// The state backend or the provider can't be reached and the token has expired.
    Unavailable,
    /// The provider's token is one gatepass refuses.
    Refused(DenyReason),
}

/// Counters of `gatepass_signin_total{outcome}` and `gatepass_session_refresh_total{outcome}`.
pub struct SessionMetrics {
    pub signin: HashMap<&'static str, Counter>,
    refresh_ok: Counter,
    refresh_invalid_grant: Counter,
    refresh_unavailable: Counter,
    sessions: Gauge,
}

/// The sign-in outcomes counted.
pub const SIGNIN_OUTCOMES: [&str; 9] = [
    "started",
    "completed",
    "flow_expired",
    "replayed",
    "provider_error",
    "exchange_failed",
    "token_refused",
    "loop_guard",
    "unavailable",
];

impl SessionMetrics {
    fn new(m: &Metrics) -> SessionMetrics {
        let refresh = |o: &'static str| {
            m.counter(
                "gatepass_session_refresh_total",
                vec![Label::new("outcome", o)],
            )
        };
        SessionMetrics {
            signin: SIGNIN_OUTCOMES
                .iter()
                .map(|o| {
                    (
                        *o,
                        m.counter("gatepass_signin_total", vec![Label::new("outcome", *o)]),
                    )
                })
                .collect(),
            refresh_ok: refresh("ok"),
            refresh_invalid_grant: refresh("invalid_grant"),
            refresh_unavailable: refresh("unavailable"),
            sessions: m.gauge("gatepass_sessions", vec![Label::new("backend", "memory")]),
        }
    }

    /// Counts a sign-in outcome (one of [`SIGNIN_OUTCOMES`]).
    pub fn signin(&self, outcome: &'static str) {
        if let Some(c) = self.signin.get(outcome) {
            c.increment(1);
        }
    }
}

/// Sign-in and the sessions of one process (rebuilt on reload; the store is kept).
pub struct Sessions {
    pub cfg: SigninConfig,
    /// Index of the sign-in issuer in the verifier's issuers.
    issuer: usize,
    pub keys: SealKeys,
    pub client: oidc::Client,
    store: Arc<Store>,
    cache: Cache,
    verifier: Arc<Verifier>,
    revocations: Arc<Revocations>,
    /// `[revocation] retain`: how long an ended session's `sid` stays revoked.
    retain: u64,
    /// `[revocation] max_entries`.
    max_entries: usize,
    /// The most a request waits for a refresh once its token has expired.
    pub fetch_timeout: Duration,
    refresh_before: u64,
    idle: u64,
    record_every: u64,
    /// One refresh per session in this process.
    flights: Mutex<HashMap<Hash, Weak<tokio::sync::Mutex<()>>>>,
    pub metrics: SessionMetrics,
}

/// The SHA-256 a session is stored under.
fn hash_of(id: &str) -> Hash {
    gatepass_service::digest::sha256(id.as_bytes())
}

/// The associated data a session's sealed tokens are bound to: its key.
fn aad(hash: &Hash) -> Vec<u8> {
    let mut a = b"session:".to_vec();
    a.extend_from_slice(hash);
    a
}

impl Sessions {
    /// Builds sign-in from `[signin]` (`None` without it). `store` is the previous state's
    /// when `[state]` is unchanged, so a reload keeps every session.
    pub fn new(
        config: &Config,
        verifier: Arc<Verifier>,
        revocations: Arc<Revocations>,
        store: Option<Arc<Store>>,
        redis: Option<Arc<RedisState>>,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Sessions>>, ConfigError> {
        let Some(cfg) = &config.signin else {
            return Ok(None);
        };
        let issuer = verifier
            .issuers
            .iter()
            .position(|i| i.name == cfg.issuer)
            .ok_or_else(|| ConfigError::new("signin.issuer", "names no [[issuers]] entry"))?;
        let text = std::fs::read_to_string(config.path(&cfg.key_file)).map_err(|e| {
            ConfigError::new(
                "signin.key_file",
                format!(
                    "cannot read {}: {}",
                    config.path(&cfg.key_file).display(),
                    e.kind()
                ),
            )
        })?;
        let keys = SealKeys::parse(&text)
            .map_err(|e| ConfigError::new("signin.key_file", e.to_string()))?;
        let authorization = match &cfg.client_secret_file {
            Some(f) => Some(
                crate::verify::jwks::client_secret_basic(
                    &cfg.client_id,
                    &config.read_secret("signin.client_secret_file", f, 1)?,
                )
                .ok_or_else(|| ConfigError::new("signin.client_id", "not usable in a header"))?,
            ),
            None => None,
        };
        let issuer_config = config
            .issuers
            .iter()
            .find(|i| i.name == cfg.issuer)
            .ok_or_else(|| ConfigError::new("signin.issuer", "names no [[issuers]] entry"))?;
        // Redirects off: a token endpoint that redirects is refusing, not moving.
        let http = crate::verify::jwks::http_client(
            config,
            issuer_config,
            reqwest::redirect::Policy::none(),
        )
        .map_err(|e| ConfigError::new("signin.issuer", e.to_string()))?;
        let idle = cfg.idle_timeout.0.as_secs();
        let cache = Cache::with(
            usize::try_from(config.cache.max_tokens).unwrap_or(usize::MAX),
            config.cache.max_tokens,
            quick_cache::UnitWeighter,
            foldhash::fast::RandomState::default(),
            Default::default(),
        );
        Ok(Some(Arc::new(Sessions {
            issuer,
            keys,
            client: oidc::Client {
                client_id: cfg.client_id.clone(),
                authorization,
                scope: cfg.scopes.join(" "),
                resource: cfg.resource.clone(),
                http,
            },
            store: store.unwrap_or_else(|| Arc::new(Store::new(redis))),
            cache,
            verifier,
            revocations,
            retain: config.revocation.retain.0.as_secs(),
            max_entries: config.revocation.max_entries,
            fetch_timeout: config.jwks.fetch_timeout.0,
            refresh_before: cfg.refresh_before.0.as_secs(),
            idle,
            // SPEC §9: at most every idle_timeout / 10, and at most once a minute.
            record_every: (idle / 10).max(60),
            flights: Mutex::new(HashMap::new()),
            metrics: SessionMetrics::new(metrics),
            cfg: cfg.clone(),
        })))
    }

    /// The store, for the next state to keep.
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The sign-in issuer.
    pub fn issuer(&self) -> &Issuer {
        &self.verifier.issuers[self.issuer]
    }

    /// The provider's endpoints, once its discovery document has been fetched.
    pub fn endpoints(&self) -> Option<oidc::Endpoints> {
        let d = self.issuer().keys.discovered()?;
        Some(oidc::Endpoints {
            authorization: d.authorization_endpoint?,
            token: d.token_endpoint?,
            end_session: d.end_session_endpoint,
        })
    }

    /// Memory backend upkeep: drops ended sessions, sets `gatepass_sessions`.
    pub fn upkeep(&self) {
        if let Some(n) = self.store.upkeep() {
            self.metrics.sessions.set(n as f64);
        }
    }

    /// The hot path: the cached session for this cookie while it is good to use now (no I/O),
    /// recording its use and starting its refresh in the background when due. `None`: ask
    /// [`Sessions::resolve`].
    pub fn cached(self: &Arc<Self>, id: &str) -> Option<Arc<Entry>> {
        let e = self.cache.get(id)?;
        let now = now_secs();
        if now >= e.expires || now >= e.access_exp || self.idle_over(&e, now) {
            return None;
        }
        e.last_seen.fetch_max(now, Ordering::Relaxed);
        let recorded = e.recorded.load(Ordering::Relaxed);
        if self.idle > 0
            && now >= recorded + self.record_every
            && e.recorded
                .compare_exchange(recorded, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let (this, hash) = (self.clone(), e.hash);
            tokio::spawn(async move {
                let _ = this.store.touch(hash, now).await;
            });
        }
        if now >= e.refresh_at.load(Ordering::Relaxed)
            && e.can_refresh
            && !e.refreshing.swap(true, Ordering::AcqRel)
        {
            let (this, id) = (self.clone(), id.to_owned());
            tokio::spawn(async move {
                this.refresh(&id).await;
            });
        }
        Some(e)
    }

    /// Idle past `idle_timeout` by what this process saw (another replica may have seen a
    /// later use: then the store says so).
    fn idle_over(&self, e: &Entry, now: u64) -> bool {
        self.idle > 0 && now > e.last_seen.load(Ordering::Relaxed) + self.idle
    }

    /// The session behind this cookie, from the store when it is not cached (or not good to
    /// use from the cache), refreshed first when its token has expired (a request waits for
    /// that at most `fetch_timeout`).
    pub async fn resolve(self: &Arc<Self>, id: &str) -> Resolved {
        if id.len() != 43 {
            return Resolved::Ended;
        }
        let hash = hash_of(id);
        let stored = match self.store.load(hash).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.cache.remove(id);
                return Resolved::Ended;
            }
            Err(_) => return Resolved::Unavailable,
        };
        let now = now_secs();
        let seen = self
            .cache
            .get(id)
            .map_or(0, |e| e.last_seen.load(Ordering::Relaxed));
        if self.idle > 0 && now > stored.used.max(seen) + self.idle {
            self.end(id, &stored.sid).await;
            return Resolved::Ended;
        }
        if stored.access_exp <= now {
            return match tokio::time::timeout(self.fetch_timeout, self.refresh(id)).await {
                Ok(r) => r,
                Err(_) => Resolved::Unavailable,
            };
        }
        self.admit(id, hash, stored, seen.max(now)).await
    }

    /// Opens a stored session, verifies its token and caches it.
    async fn admit(&self, id: &str, hash: Hash, stored: Stored, seen: u64) -> Resolved {
        let Some(tokens) = self.open(&hash, &stored.tokens) else {
            // Sealed with a key no longer in the file, or not by us: it can't be used.
            self.end(id, &stored.sid).await;
            return Resolved::Ended;
        };
        let verified = match self.verify(&tokens).await {
            Ok(v) => v,
            Err(reason) => return Resolved::Refused(reason),
        };
        let entry = Arc::new(self.entry(hash, &stored, verified, &tokens, seen));
        self.cache.insert(id.to_owned(), entry.clone());
        Resolved::Valid(entry)
    }

    fn entry(&self, hash: Hash, stored: &Stored, v: Verified, tokens: &Tokens, seen: u64) -> Entry {
        // The session's sid names it: the provider's, else its own public id.
        let ids = TokenIds {
            sid: Some(stored.sid.as_str().into()),
            ..v.ids.clone()
        };
        let lifetime = v.exp.saturating_sub(v.ids.iat.unwrap_or(v.exp));
        // Never more than half the token's life ahead, or every request would refresh.
        let before = self.refresh_before.min(lifetime / 2);
        let verified = Arc::new(Verified::with_ids(v.identity(), v.exp, ids));
        Entry {
            hash,
            access_exp: v.exp,
            refresh_at: AtomicU64::new(v.exp.saturating_sub(before)),
            expires: stored.expires,
            version: stored.version,
            can_refresh: tokens.refresh.is_some(),
            sid: stored.sid.clone(),
            last_seen: AtomicU64::new(seen),
            recorded: AtomicU64::new(stored.used),
            refreshing: AtomicBool::new(false),
            verified,
        }
    }

    fn open(&self, hash: &Hash, sealed: &str) -> Option<Tokens> {
        serde_json::from_slice(&self.keys.open(&aad(hash), sealed)?).ok()
    }

    fn seal(&self, hash: &Hash, tokens: &Tokens) -> String {
        // Serializing strings can't fail.
        self.keys
            .seal(&aad(hash), &serde_json::to_vec(tokens).unwrap_or_default())
    }

    /// The session's identity: its access token verified exactly as a bearer token of the
    /// issuer, or (`identity = "id_token"`) its ID token's claims.
    async fn verify(&self, tokens: &Tokens) -> Result<Verified, DenyReason> {
        match self.cfg.identity {
            SessionIdentity::AccessToken => {
                let v = self.verifier.verify(&tokens.access).await?;
                if v.ids.iss.as_deref() != Some(self.issuer().iss.as_str()) {
                    return Err(DenyReason::WrongIssuer);
                }
                Ok(Verified::with_ids(v.identity(), v.exp, v.ids.clone()))
            }
            SessionIdentity::IdToken => {
                let token = tokens.id.as_deref().ok_or(DenyReason::MissingClaim)?;
                let issuer = self.issuer();
                let id = oidc::verify_id_token(issuer, &self.client.client_id, token, None)
                    .await
                    .map_err(|e| match e {
                        oidc::IdTokenError::Expired => DenyReason::Expired,
                        oidc::IdTokenError::KeysUnavailable => DenyReason::KeysUnavailable,
                        _ => DenyReason::BadSignature,
                    })?;
                self.verifier.identity_of(&id.claims, &issuer.iss, id.exp)
            }
        }
    }

    fn flight(&self, hash: Hash) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        flights.retain(|_, w| w.strong_count() > 0);
        if let Some(f) = flights.get(&hash).and_then(Weak::upgrade) {
            return f;
        }
        let f = Arc::new(tokio::sync::Mutex::new(()));
        flights.insert(hash, Arc::downgrade(&f));
        f
    }

    /// Refreshes the session's tokens: once per session in this process (single flight) and
    /// once for the cluster (a lease in the state backend; a replica that finds it taken waits
    /// for the holder's result in the store). A rotated refresh token is stored before the
    /// lease is released, so nobody uses the old one again. `invalid_grant` ends the session;
    /// a provider that can't be reached leaves it as it is.
    pub async fn refresh(self: &Arc<Self>, id: &str) -> Resolved {
        let hash = hash_of(id);
        let flight = self.flight(hash);
        let _one = flight.lock().await;
        let result = self.refresh_locked(id, hash).await;
        if let Some(e) = self.cache.get(id) {
            e.refreshing.store(false, Ordering::Release);
        }
        result
    }

    async fn refresh_locked(self: &Arc<Self>, id: &str, hash: Hash) -> Resolved {
        let now = now_secs();
        let known = self.cache.get(id);
        // Refreshed by an earlier flight while this one waited.
        if let Some(e) = &known {
            if now < e.refresh_at.load(Ordering::Relaxed) && now < e.access_exp {
                return Resolved::Valid(e.clone());
            }
        }
        let seen = known
            .as_ref()
            .map_or(now, |e| e.last_seen.load(Ordering::Relaxed));
        let lease_ttl = self.fetch_timeout * 3;
        let deadline = tokio::time::Instant::now() + lease_ttl;
        let stored = loop {
            let stored = match self.store.load(hash).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    self.cache.remove(id);
                    return Resolved::Ended;
                }
                Err(_) => return self.keep_or_unavailable(known.as_ref()),
            };
            // Another replica (or flight) refreshed it: use that.
            let newer = known.as_ref().is_some_and(|e| stored.version > e.version);
            if newer && stored.access_exp > now {
                return self.admit(id, hash, stored, seen).await;
            }
            match self.store.lease(hash, lease_ttl).await {
                Ok(true) => break stored,
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    // Someone holds the lease: its result lands in the store.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                _ => return self.keep_or_unavailable(known.as_ref()),
            }
        };
        let result = self.refresh_leased(id, hash, stored, seen).await;
        self.store.release(hash).await;
        result
    }

    async fn refresh_leased(&self, id: &str, hash: Hash, stored: Stored, seen: u64) -> Resolved {
        let Some(tokens) = self.open(&hash, &stored.tokens) else {
            self.end(id, &stored.sid).await;
            return Resolved::Ended;
        };
        // Someone refreshed between our load and the lease: nothing to do.
        if let Some(e) = self.cache.get(id) {
            if stored.version > e.version && stored.access_exp > now_secs() {
                return self.admit(id, hash, stored, seen).await;
            }
        }
        let (Some(refresh), Some(endpoints)) = (tokens.refresh.as_deref(), self.endpoints()) else {
            return if stored.access_exp > now_secs() {
                self.admit(id, hash, stored, seen).await
            } else {
                Resolved::Unavailable
            };
        };
        match self.client.refresh(&endpoints.token, refresh).await {
            Ok(set) => {
                let next = Tokens {
                    access: set.access_token,
                    refresh: set.refresh_token.or(tokens.refresh),
                    id: set.id_token.or(tokens.id),
                };
                let verified = match self.verify(&next).await {
                    Ok(v) => v,
                    Err(reason) => {
                        tracing::warn!(reason = reason.code(), "the provider refreshed a session with a token gatepass refuses; session ended");
                        self.metrics.refresh_invalid_grant.increment(1);
                        self.end(id, &stored.sid).await;
                        return Resolved::Refused(reason);
                    }
                };
                let sealed = self.seal(&hash, &next);
                match self
                    .store
                    .replace(hash, stored.version, sealed, verified.exp)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return Resolved::Ended,
                    Err(_) => {
                        self.metrics.refresh_unavailable.increment(1);
                        return Resolved::Unavailable;
                    }
                }
                self.metrics.refresh_ok.increment(1);
                let replaced = Stored {
                    version: stored.version + 1,
                    access_exp: verified.exp,
                    ..stored
                };
                let entry = Arc::new(self.entry(hash, &replaced, verified, &next, seen));
                self.cache.insert(id.to_owned(), entry.clone());
                Resolved::Valid(entry)
            }
            Err(oidc::GrantError::InvalidGrant) => {
                tracing::info!("session refresh: invalid_grant; session ended");
                self.metrics.refresh_invalid_grant.increment(1);
                self.end(id, &stored.sid).await;
                Resolved::Ended
            }
            Err(e) => {
                tracing::warn!(error = %e, "session refresh failed; the session keeps its token until it expires");
                self.metrics.refresh_unavailable.increment(1);
                if stored.access_exp <= now_secs() {
                    return Resolved::Unavailable;
                }
                let kept = self.admit(id, hash, stored, seen).await;
                if let Resolved::Valid(e) = &kept {
                    e.refresh_at.store(now_secs() + 1, Ordering::Relaxed);
                }
                kept
            }
        }
    }

    /// A refresh that could not run: the cached session while its token lasts.
    fn keep_or_unavailable(&self, known: Option<&Arc<Entry>>) -> Resolved {
        match known {
            Some(e) if now_secs() < e.access_exp => Resolved::Valid(e.clone()),
            _ => Resolved::Unavailable,
        }
    }

    /// Ends a session everywhere: gone from this process and the store, and its `sid` revoked
    /// for the issuer, so every replica refuses it within a second and downstreams close its
    /// sockets (4001).
    pub async fn end(&self, id: &str, sid: &str) {
        self.cache.remove(id);
        if self.store.delete(hash_of(id)).await.is_err() {
            tracing::warn!("could not delete an ended session from the state backend; its revocation still ends it");
        }
        let now = now_secs();
        let r = Revocation {
            kind: RevocationKind::Sid,
            value: sid.to_owned(),
            iss: Some(self.issuer().iss.clone()),
            not_before: None,
            expires_at: now.saturating_add(self.retain.max(self.cfg.session_ttl.0.as_secs())),
        };
        if let Err(e) = self
            .revocations
            .revoke(r, Source::Session, self.max_entries)
            .await
        {
            tracing::warn!(error = %e, "could not revoke an ended session's sid");
        }
    }

    /// A session found revoked (back-channel logout, sign-out on another replica): forgotten
    /// here, and deleted from the store so a refresh can't bring it back.
    pub fn forget(self: &Arc<Self>, id: &str, entry: &Entry) {
        self.cache.remove(id);
        let (this, hash) = (self.clone(), entry.hash);
        tokio::spawn(async move {
            let _ = this.store.delete(hash).await;
        });
    }

    /// The stored session's ID token and sid (for sign-out), if the session exists.
    async fn id_token_and_sid(&self, id: &str) -> Option<(Option<String>, String)> {
        let hash = hash_of(id);
        let stored = self.store.load(hash).await.ok()??;
        let tokens = self.open(&hash, &stored.tokens);
        Some((tokens.and_then(|t| t.id), stored.sid))
    }
}

impl Entry {
    /// The session's `sid` (the provider's, or gatepass's public id for it).
    pub fn sid(&self) -> &str {
        &self.sid
    }
}
