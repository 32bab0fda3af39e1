//! Where an issuer's keys come from: a static key, a JWKS file (re-read on change) or a JWKS
//! URL (background refresh, unknown-`kid` refetch at most once per `min_refresh_interval`,
//! single-flight, stale keys served for `stale_for`). With `discovery = true` the URL comes
//! from the issuer's discovery document, fetched on the same clock before each JWKS fetch.
//! With `[state] dir` the last good document and JWKS are saved, and read at start when the
//! live fetch fails (a restart during an IdP outage still verifies).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge, Label};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{Config, IssuerConfig, JwksConfig};
use crate::metrics::Metrics;
use crate::verify::keys::{self, KeyError, KeySet};
use crate::verify::verified::now_secs;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The keys of one issuer and how they are kept fresh.
pub enum KeySource {
    /// No keys: the issuer only introspects opaque tokens.
    None,
    Static(Arc<KeySet>),
    File(Arc<FileJwks>),
    Remote(Arc<RemoteJwks>),
}

impl KeySource {
    /// Loads static and file keys now; a URL source starts empty until its first fetch.
    pub fn new(
        config: &Config,
        issuer: &IssuerConfig,
        metrics: &Metrics,
    ) -> Result<KeySource, KeyError> {
        if let Some(set) = keys::load_static(config, issuer)? {
            return Ok(KeySource::Static(Arc::new(set)));
        }
        if let Some(p) = &issuer.jwks_file {
            let path = config.path(p);
            let (set, stamp) = FileJwks::read(issuer, &path)?;
            return Ok(KeySource::File(Arc::new(FileJwks {
                issuer: issuer.clone(),
                path,
                keys: RwLock::new(Arc::new(set)),
                stamp: Mutex::new(stamp),
                loaded_at: Mutex::new(Instant::now()),
            })));
        }
        if issuer.jwks_url.is_none() && !issuer.discovery {
            return Ok(KeySource::None);
        }
        let url = issuer.jwks_url.clone().unwrap_or_default();
        let client = http_client(config, issuer, reqwest::redirect::Policy::limited(3))?;
        let fetch = |result: &'static str| {
            metrics.counter(
                "gatepass_jwks_fetches_total",
                vec![
                    Label::new("issuer", issuer.name.clone()),
                    Label::new("result", result),
                ],
            )
        };
        let saved = config.state.dir.as_ref().map(|d| {
            let name: String = issuer
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            config.path(d).join(format!("{name}.json"))
        });
        Ok(KeySource::Remote(Arc::new(RemoteJwks {
            issuer: issuer.clone(),
            url: RwLock::new(url),
            discovery: issuer.discovery.then(|| issuer.issuer.clone()),
            discovered: RwLock::new(None),
            saved,
            from_saved: AtomicBool::new(false),
            from_saved_gauge: metrics.gauge(
                "gatepass_jwks_from_saved_state",
                vec![Label::new("issuer", issuer.name.clone())],
            ),
            client,
            cfg: config.jwks.clone(),
            loaded: RwLock::new(None),
            last_attempt: Mutex::new(None),
            in_flight: AtomicBool::new(false),
            done: watch::channel(0).0,
            fetch_ok: fetch("ok"),
            fetch_error: fetch("error"),
        })))
    }

    /// Were the keys read from the saved state (the IdP unreachable since start)?
    pub fn from_saved_state(&self) -> bool {
        match self {
            KeySource::Remote(r) => r.from_saved.load(Ordering::Relaxed),
            _ => false,
        }
    }

    /// The introspection endpoint the discovery document names.
    pub fn discovered_introspection(&self) -> Option<String> {
        self.discovered()?.introspection_endpoint
    }

    /// The last discovery document fetched (or read from `[state] dir`).
    pub fn discovered(&self) -> Option<Discovered> {
        match self {
            KeySource::Remote(r) => r.discovered.read().ok()?.clone(),
            _ => None,
        }
    }

    /// The keys usable now; `None` when never fetched or stale past `stale_for`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            KeySource::None => None,
            KeySource::Static(k) => Some(k.clone()),
            KeySource::File(f) => f.keys.read().ok().map(|k| k.clone()),
            KeySource::Remote(r) => r.current(),
        }
    }

    /// Seconds since the keys were last loaded.
    pub fn age(&self) -> Option<Duration> {
        match self {
            KeySource::None | KeySource::Static(_) => None,
            KeySource::File(f) => f.loaded_at.lock().ok().map(|t| t.elapsed()),
            KeySource::Remote(r) => r.loaded.read().ok()?.as_ref().map(|(_, t)| t.elapsed()),
        }
    }

    /// Background upkeep for this source, if it needs any.
    pub fn spawn_upkeep(&self) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            KeySource::None | KeySource::Static(_) => None,
            KeySource::File(f) => Some(tokio::spawn(f.clone().watch())),
            KeySource::Remote(r) => Some(tokio::spawn(r.clone().refresh_loop())),
        }
    }
}

/// RFC 6749 §2.3.1 client_secret_basic: id and secret form-urlencoded, then Basic; a
/// sensitive header value (never printed by `Debug`). `None` when it can't be a header.
pub fn client_secret_basic(id: &str, secret: &[u8]) -> Option<http::HeaderValue> {
    use base64::Engine;
    let enc = |s: &[u8]| form_urlencoded::byte_serialize(s).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        enc(id.as_bytes()),
        enc(secret)
    ));
    let mut value = http::HeaderValue::from_str(&format!("Basic {basic}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The HTTP client of an issuer's fetches (JWKS, discovery, introspection, sign-in's token
/// endpoint): bounded by `fetch_timeout`, with the issuer's `ca_file` trusted too, following
/// `redirects`.
pub fn http_client(
    config: &Config,
    issuer: &IssuerConfig,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, KeyError> {
    let url = issuer
        .jwks_url
        .clone()
        .unwrap_or_else(|| issuer.issuer.clone());
    let mut builder = reqwest::Client::builder()
        .timeout(config.jwks.fetch_timeout.0)
        .connect_timeout(config.jwks.fetch_timeout.0)
        .redirect(redirects)
        .user_agent(concat!("gatepass/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &issuer.ca_file {
        let path = config.path(ca);
        let pem = std::fs::read(&path).map_err(|e| KeyError::CaFile {
            path: path.clone(),
            reason: e.kind().to_string(),
        })?;
        // reqwest parses lazily and skips what it can't read: check the PEM here, so a
        // file that holds no certificate is a config error, not a silent no-op.
        let not_pem = || KeyError::CaFile {
            path: path.clone(),
            reason: "not a PEM certificate".into(),
        };
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let certs = tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| not_pem())?;
        if certs.is_empty() {
            return Err(not_pem());
        }
        for der in certs {
            let cert = reqwest::Certificate::from_der(&der).map_err(|_| not_pem())?;
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().map_err(|e| KeyError::Read {
        path: url.clone().into(),
        reason: e.to_string(),
    })?;
    Ok(client)
}

/// A JWKS file, re-read when its modification time or size changes.
pub struct FileJwks {
    issuer: IssuerConfig,
    path: std::path::PathBuf,
    keys: RwLock<Arc<KeySet>>,
    stamp: Mutex<(Option<SystemTime>, u64)>,
    loaded_at: Mutex<Instant>,
}

impl FileJwks {
    fn stamp(path: &std::path::Path) -> (Option<SystemTime>, u64) {
        std::fs::metadata(path)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    }

    fn read(
        issuer: &IssuerConfig,
        path: &std::path::Path,
    ) -> Result<(KeySet, (Option<SystemTime>, u64)), KeyError> {
        let stamp = Self::stamp(path);
        let body = std::fs::read(path).map_err(|e| KeyError::Read {
            path: path.to_path_buf(),
            reason: e.kind().to_string(),
        })?;
        let set = keys::parse_jwks(issuer, &body, &path.display().to_string())?;
        Ok((set, stamp))
    }

    async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = Self::stamp(&self.path);
            let changed = self.stamp.lock().map(|s| *s != now).unwrap_or(false);
            if !changed {
                continue;
            }
            let this = self.clone();
            let res =
                tokio::task::spawn_blocking(move || Self::read(&this.issuer, &this.path)).await;
            match res {
                Ok(Ok((set, stamp))) => {
                    tracing::info!(issuer = %self.issuer.name, keys = set.keys.len(), "jwks_file reloaded");
                    if let Ok(mut k) = self.keys.write() {
                        *k = Arc::new(set);
                    }
                    if let Ok(mut s) = self.stamp.lock() {
                        *s = stamp;
                    }
                    if let Ok(mut t) = self.loaded_at.lock() {
                        *t = Instant::now();
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(issuer = %self.issuer.name, error = %e, "jwks_file unreadable; keeping the last good keys");
                    if let Ok(mut s) = self.stamp.lock() {
                        *s = now;
                    }
                }
                Err(_) => {}
            }
        }
    }
}

/// A JWKS fetched over HTTP(S).
pub struct RemoteJwks {
    issuer: IssuerConfig,
    /// The JWKS URL: configured, or the discovery document's `jwks_uri`.
    url: RwLock<String>,
    /// With discovery: the issuer URL whose document names the JWKS.
    discovery: Option<String>,
    discovered: RwLock<Option<Discovered>>,
    /// `[state] dir`'s file for this issuer.
    saved: Option<PathBuf>,
    from_saved: AtomicBool,
    from_saved_gauge: Gauge,
    client: reqwest::Client,
    cfg: JwksConfig,
    loaded: RwLock<Option<(Arc<KeySet>, Instant)>>,
    last_attempt: Mutex<Option<Instant>>,
    in_flight: AtomicBool,
    /// Bumped after every fetch, so waiters for a refetch wake up.
    done: watch::Sender<u64>,
    fetch_ok: Counter,
    fetch_error: Counter,
}

/// What gatepass uses from a discovery document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub jwks_uri: String,
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// Sign-in (SPEC §9): where browsers are sent, where codes are exchanged, where a
    /// signed-out browser is sent (RP-initiated logout).
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// The saved state of one issuer: when, the discovery document (if any) and the JWKS.
#[derive(Serialize, Deserialize)]
struct Saved {
    fetched_at: u64,
    #[serde(default)]
    discovery: Option<Discovered>,
    jwks: serde_json::Value,
}

/// RFC 8414 §3: the well-known segment goes between the host and the issuer's path.
fn rfc8414_url(issuer: &str) -> Option<String> {
    let u = reqwest::Url::parse(issuer).ok()?;
    let path = u.path().trim_end_matches('/');
    Some(format!(
        "{}/.well-known/oauth-authorization-server{path}",
        u.origin().ascii_serialization()
    ))
}

fn http_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

impl RemoteJwks {
    fn current(&self) -> Option<Arc<KeySet>> {
        let guard = self.loaded.read().ok()?;
        let (keys, at) = guard.as_ref()?;
        (at.elapsed() <= self.cfg.stale_for.0).then(|| keys.clone())
    }

    /// GET `url`, at most 1 MiB: the status and body, and the server's `max-age`.
    async fn get(&self, url: &str) -> Result<(u16, Vec<u8>, Option<Duration>), String> {
        let mut resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        let max_age = resp
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("document larger than 1 MiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body, max_age))
    }

    /// The discovery document (OpenID Connect, else RFC 8414), whose `issuer` must equal the
    /// configured one exactly.
    async fn discover(&self, issuer: &str) -> Result<Discovered, String> {
        let oidc = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let mut last = String::new();
        for url in [Some(oidc), rfc8414_url(issuer)].into_iter().flatten() {
            let (status, body, _) = self.get(&url).await?;
            if status == 404 {
                last = format!("discovery document not found (404) at {url}");
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(format!("discovery document: status {status}"));
            }
            #[derive(Deserialize)]
            struct Doc {
                issuer: String,
                jwks_uri: Option<String>,
                introspection_endpoint: Option<String>,
                authorization_endpoint: Option<String>,
                token_endpoint: Option<String>,
                end_session_endpoint: Option<String>,
            }
            let doc: Doc = serde_json::from_slice(&body)
                .map_err(|_| "discovery document is not the expected JSON".to_string())?;
            if doc.issuer != issuer {
                return Err(format!(
                    "discovery document names issuer `{}`, configured `{issuer}`: they must be equal",
                    doc.issuer
                ));
            }
            let jwks_uri = doc
                .jwks_uri
                .filter(|u| http_url(u))
                .ok_or("discovery document has no http(s) jwks_uri")?;
            return Ok(Discovered {
                jwks_uri,
                introspection_endpoint: doc.introspection_endpoint.filter(|u| http_url(u)),
                authorization_endpoint: doc.authorization_endpoint.filter(|u| http_url(u)),
                token_endpoint: doc.token_endpoint.filter(|u| http_url(u)),
                end_session_endpoint: doc.end_session_endpoint.filter(|u| http_url(u)),
            });
        }
        Err(last)
    }

    /// One fetch (the discovery document first, with discovery); returns the server's
    /// `max-age` when it sent one.
    async fn fetch(&self) -> Result<Option<Duration>, String> {
        if let Some(issuer) = &self.discovery {
            let d = self.discover(issuer).await?;
            if let Ok(mut u) = self.url.write() {
                u.clone_from(&d.jwks_uri);
            }
            if let Ok(mut slot) = self.discovered.write() {
                *slot = Some(d);
            }
        }
        let url = self.url.read().map(|u| u.clone()).unwrap_or_default();
        let (status, body, max_age) = self.get(&url).await?;
        if gatepass_service::telemetry::enabled() {
            tracing::Span::current().record("http.response.status_code", status);
        }
        if !(200..300).contains(&status) {
            return Err(format!("status {status}"));
        }
        let set = keys::parse_jwks(&self.issuer, &body, "jwks_url").map_err(|e| e.to_string())?;
        if set.keys.is_empty() {
            return Err("no usable signing keys".into());
        }
        if let Ok(mut l) = self.loaded.write() {
            *l = Some((Arc::new(set), Instant::now()));
        }
        if self.from_saved.swap(false, Ordering::Relaxed) {
            self.from_saved_gauge.set(0.0);
            tracing::info!(issuer = %self.issuer.name, "keys fetched live again (no longer from the saved state)");
        }
        self.save(&body).await;
        Ok(max_age)
    }

    /// Writes the last good document and JWKS (temp file + rename, mode 0600).
    async fn save(&self, jwks: &[u8]) {
        let Some(path) = &self.saved else { return };
        let Ok(jwks) = serde_json::from_slice::<serde_json::Value>(jwks) else {
            return;
        };
        let saved = Saved {
            fetched_at: now_secs(),
            discovery: self.discovered.read().ok().and_then(|d| d.clone()),
            jwks,
        };
        let Ok(text) = serde_json::to_vec(&saved) else {
            return;
        };
        if let Err(e) = write_private(path, &text).await {
            tracing::warn!(issuer = %self.issuer.name, path = %path.display(), error = %e, "cannot save the issuer's keys to [state] dir");
        }
    }

    /// At start, the live fetch failed: the saved keys, if younger than `stale_for`.
    async fn load_saved(&self) -> bool {
        let Some(path) = &self.saved else {
            return false;
        };
        let Ok(text) = tokio::fs::read(path).await else {
            return false;
        };
        let Ok(saved) = serde_json::from_slice::<Saved>(&text) else {
            tracing::warn!(issuer = %self.issuer.name, path = %path.display(), "saved state unreadable; ignored");
            return false;
        };
        let age = Duration::from_secs(now_secs().saturating_sub(saved.fetched_at));
        if age > self.cfg.stale_for.0 {
            tracing::warn!(issuer = %self.issuer.name, age_secs = age.as_secs(), "saved keys older than stale_for; not used");
            return false;
        }
        let body = saved.jwks.to_string();
        let Ok(set) = keys::parse_jwks(&self.issuer, body.as_bytes(), "saved state") else {
            return false;
        };
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        if let Ok(mut l) = self.loaded.write() {
            *l = Some((Arc::new(set), at));
        }
        if let (Some(d), Ok(mut slot)) = (saved.discovery, self.discovered.write()) {
            if let Ok(mut u) = self.url.write() {
                u.clone_from(&d.jwks_uri);
            }
            *slot = Some(d);
        }
        self.from_saved.store(true, Ordering::Relaxed);
        self.from_saved_gauge.set(1.0);
        tracing::warn!(issuer = %self.issuer.name, age_secs = age.as_secs(), "IdP unreachable at start: verifying with the saved keys");
        true
    }

    async fn fetch_logged(&self) -> Result<Option<Duration>, ()> {
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(Instant::now());
        }
        // A span of its own: a child of the decision that asked for a refetch, else a trace
        // of its own (the background refresh).
        let span = if gatepass_service::telemetry::enabled() {
            tracing::info_span!(
                "gatepass.jwks.fetch",
                otel.kind = "client",
                gatepass.issuer = %self.issuer.name,
                gatepass.discovery = self.discovery.is_some(),
                gatepass.ok = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let res = self.fetch().instrument(span.clone()).await;
        span.record("gatepass.ok", res.is_ok());
        match &res {
            Ok(_) => {
                self.fetch_ok.increment(1);
                tracing::debug!(issuer = %self.issuer.name, "jwks fetched");
            }
            Err(e) => {
                self.fetch_error.increment(1);
                tracing::warn!(issuer = %self.issuer.name, error = %e, "jwks fetch failed; keeping the last good keys");
            }
        }
        self.in_flight.store(false, Ordering::Release);
        self.done.send_modify(|g| *g += 1);
        res.map_err(|_| ())
    }

    async fn refresh_loop(self: Arc<Self>) {
        let mut first = true;
        loop {
            self.in_flight.store(true, Ordering::Release);
            let result = self.fetch_logged().await;
            if first && result.is_err() {
                self.load_saved().await;
            }
            first = false;
            let next = match result {
                Ok(max_age) => {
                    next_refresh(self.cfg.refresh_interval.0, max_age, self.cfg.stale_for.0)
                }
                // Retry sooner after a failure, but never hammer the IdP.
                Err(()) => self
                    .cfg
                    .min_refresh_interval
                    .0
                    .clamp(Duration::from_secs(1), self.cfg.refresh_interval.0),
            };
            tokio::time::sleep(next).await;
        }
    }

    /// An unknown `kid` was seen: refetch unless one ran within `min_refresh_interval`, and wait
    /// (bounded by the fetch timeout) for the running or started fetch to finish.
    pub async fn refetch_for_unknown_kid(self: &Arc<Self>) {
        let mut rx = self.done.subscribe();
        let start = {
            let Ok(mut last) = self.last_attempt.lock() else {
                return;
            };
            if self.in_flight.load(Ordering::Acquire) {
                false
            } else if last.is_some_and(|t| t.elapsed() < self.cfg.min_refresh_interval.0) {
                return;
            } else {
                *last = Some(Instant::now());
                self.in_flight.store(true, Ordering::Release);
                true
            }
        };
        if start {
            // Spawned, so a client that goes away can't cancel the fetch halfway.
            let this = self.clone();
            tokio::spawn(
                async move {
                    let _ = this.fetch_logged().await;
                }
                .in_current_span(),
            );
        }
        let _ = tokio::time::timeout(
            self.cfg.fetch_timeout.0 + Duration::from_millis(250),
            rx.changed(),
        )
        .await;
    }
}

/// Writes `bytes` to `path` atomically (a temp file renamed over it), readable by the owner
/// only; creates the directory (0700) if needed.
async fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, &bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// When to refresh after a good fetch: `refresh_interval`, or the IdP's longer `max-age`,
/// but never later than `stale_for / 2`: a long max-age must not let the keys go stale while
/// the IdP is up.
fn next_refresh(refresh: Duration, max_age: Option<Duration>, stale_for: Duration) -> Duration {
    refresh
        .max(max_age.unwrap_or_default())
        .min(stale_for / 2)
        .max(Duration::from_secs(1))
}

fn parse_max_age(cc: &str) -> Option<Duration> {
    cc.split(',').find_map(|d| {
        let d = d.trim();
        let v = d
            .strip_prefix("max-age=")
            .or_else(|| d.strip_prefix("s-maxage="))?;
        v.trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=x"), None);
    }

    #[test]
    fn refresh_never_waits_past_half_of_stale_for() {
        let s = Duration::from_secs;
        assert_eq!(next_refresh(s(300), None, s(86_400)), s(300));
        assert_eq!(next_refresh(s(300), Some(s(600)), s(86_400)), s(600));
        assert_eq!(next_refresh(s(300), Some(s(60)), s(86_400)), s(300));
        assert_eq!(
            next_refresh(s(300), Some(s(31_536_000)), s(86_400)),
            s(43_200)
        );
        assert_eq!(next_refresh(s(3600), None, s(600)), s(300));
        assert_eq!(next_refresh(s(1), Some(s(100)), s(1)), s(1));
    }
}
