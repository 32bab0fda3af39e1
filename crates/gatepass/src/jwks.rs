//! Where an issuer's keys come from: a static key, a JWKS file (re-read on change) or a JWKS
//! URL (background refresh, unknown-`kid` refetch at most once per `min_refresh_interval`,
//! single-flight, stale keys served for `stale_for`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Label};
use tokio::sync::watch;

use crate::config::{Config, IssuerConfig, JwksConfig};
use crate::keys::{self, KeyError, KeySet};
use crate::metrics::Metrics;

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The keys of one issuer and how they are kept fresh.
pub enum KeySource {
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
        let url = issuer.jwks_url.clone().unwrap_or_default();
        let mut builder = reqwest::Client::builder()
            .timeout(config.jwks.fetch_timeout.0)
            .connect_timeout(config.jwks.fetch_timeout.0)
            .redirect(reqwest::redirect::Policy::limited(3))
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
        let fetch = |result: &'static str| {
            metrics.counter(
                "gatepass_jwks_fetches_total",
                vec![
                    Label::new("issuer", issuer.name.clone()),
                    Label::new("result", result),
                ],
            )
        };
        Ok(KeySource::Remote(Arc::new(RemoteJwks {
            issuer: issuer.clone(),
            url,
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

    /// The keys usable now; `None` when never fetched or stale past `stale_for`.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        match self {
            KeySource::Static(k) => Some(k.clone()),
            KeySource::File(f) => f.keys.read().ok().map(|k| k.clone()),
            KeySource::Remote(r) => r.current(),
        }
    }

    /// Seconds since the keys were last loaded.
    pub fn age(&self) -> Option<Duration> {
        match self {
            KeySource::Static(_) => None,
            KeySource::File(f) => f.loaded_at.lock().ok().map(|t| t.elapsed()),
            KeySource::Remote(r) => r.loaded.read().ok()?.as_ref().map(|(_, t)| t.elapsed()),
        }
    }

    /// Background upkeep for this source, if it needs any.
    pub fn spawn_upkeep(&self) -> Option<tokio::task::JoinHandle<()>> {
        match self {
            KeySource::Static(_) => None,
            KeySource::File(f) => Some(tokio::spawn(f.clone().watch())),
            KeySource::Remote(r) => Some(tokio::spawn(r.clone().refresh_loop())),
        }
    }
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
    url: String,
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

impl RemoteJwks {
    fn current(&self) -> Option<Arc<KeySet>> {
        let guard = self.loaded.read().ok()?;
        let (keys, at) = guard.as_ref()?;
        (at.elapsed() <= self.cfg.stale_for.0).then(|| keys.clone())
    }

    /// One fetch; returns the server's `max-age` when it sent one.
    async fn fetch(&self) -> Result<Option<Duration>, String> {
        let mut resp = self
            .client
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
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
        let set = keys::parse_jwks(&self.issuer, &body, "jwks_url").map_err(|e| e.to_string())?;
        if set.keys.is_empty() {
            return Err("no usable signing keys".into());
        }
        if let Ok(mut l) = self.loaded.write() {
            *l = Some((Arc::new(set), Instant::now()));
        }
        Ok(max_age)
    }

    async fn fetch_logged(&self) -> Result<Option<Duration>, ()> {
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(Instant::now());
        }
        let res = self.fetch().await;
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
        loop {
            self.in_flight.store(true, Ordering::Release);
            let next = match self.fetch_logged().await {
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
            tokio::spawn(async move {
                let _ = this.fetch_logged().await;
            });
        }
        let _ = tokio::time::timeout(
            self.cfg.fetch_timeout.0 + Duration::from_millis(250),
            rx.changed(),
        )
        .await;
    }
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
