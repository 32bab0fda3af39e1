//! Who is calling: identity comes only from the gatepass headers, checked against
//! `X-User-Assertion` when an assertion key is configured.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gatepass_identity::{headers, AssertionVerifier, Identity};
use http::HeaderMap;

use crate::broadcast::View;
use crate::config::{AuthConfig, Config, ConfigError};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    pub identity: Identity,
    pub view: View,
    pub admin: bool,
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Identity headers missing or malformed, or the assertion missing/invalid/mismatched.
    Unauthenticated,
    /// `X-User-Expires` has passed.
    Expired,
    /// Role not in `allowed_roles`.
    Forbidden,
}

pub struct Auth {
    cfg: AuthConfig,
    /// Some(..) when configured; the inner option is empty until the keys are loaded.
    verifier: Option<ArcSwapOption<AssertionVerifier>>,
    jwks_url: Option<String>,
}

impl Auth {
    pub fn new(config: &Config) -> Result<Auth, ConfigError> {
        let cfg = config.auth.clone();
        let verifier = match (&cfg.assertion_public_key_file, &cfg.assertion_jwks_url) {
            (Some(p), _) => {
                let path = config.path(p);
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "auth.assertion_public_key_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                let v = AssertionVerifier::from_public_key_pem(&pem).map_err(|e| {
                    ConfigError::new("auth.assertion_public_key_file", e.to_string())
                })?;
                Some(ArcSwapOption::from_pointee(v))
            }
            (None, Some(_)) => Some(ArcSwapOption::empty()),
            (None, None) => None,
        };
        Ok(Auth {
            jwks_url: cfg.assertion_jwks_url.clone(),
            cfg,
            verifier,
        })
    }

    /// Loads (and periodically refreshes) the assertion JWKS; retries quickly until the
    /// first success, since every request is refused until then.
    pub async fn refresh_jwks(self: Arc<Self>) {
        let (Some(url), Some(slot)) = (self.jwks_url.clone(), self.verifier.as_ref()) else {
            return;
        };
        loop {
            let next = match AssertionVerifier::from_jwks_url(&url, Duration::from_secs(2)).await {
                Ok(v) => {
                    slot.store(Some(Arc::new(v)));
                    Duration::from_secs(300)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "assertion JWKS unavailable");
                    if slot.load().is_some() {
                        Duration::from_secs(30)
                    } else {
                        Duration::from_secs(1)
                    }
                }
            };
            tokio::time::sleep(next).await;
        }
    }

    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self
                .cfg
                .allowed_origins
                .iter()
                .any(|a| a == "*" || a.eq_ignore_ascii_case(o)),
        }
    }

    /// The caller's identity; `host` is the request's Host (the assertion audience).
    pub fn identify(&self, h: &HeaderMap, host: &str) -> Result<Identity, Denied> {
        let identity = Identity::from_headers(h).map_err(|_| Denied::Unauthenticated)?;
        if let Some(slot) = &self.verifier {
            let guard = slot.load();
            let verifier = guard.as_ref().ok_or(Denied::Unauthenticated)?;
            let aud = self.cfg.assertion_audience.as_deref().unwrap_or(host);
            let assertion = h.get(headers::USER_ASSERTION).and_then(|v| v.to_str().ok());
            verifier
                .verify_identity(assertion, aud, &identity)
                .map_err(|_| Denied::Unauthenticated)?;
        }
        if identity.expires.is_some_and(|e| e <= now_secs()) {
            return Err(Denied::Expired);
        }
        Ok(identity)
    }

    /// Role checks on top of `identify`.
    pub fn authorize(&self, identity: Identity) -> Result<User, Denied> {
        let role = identity.role.as_str();
        if !self.cfg.allowed_roles.iter().any(|r| r == role) {
            return Err(Denied::Forbidden);
        }
        Ok(User {
            view: if self.cfg.full_view_roles.iter().any(|r| r == role) {
                View::Full
            } else {
                View::Redacted
            },
            admin: self.cfg.admin_roles.iter().any(|r| r == role),
            identity,
        })
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
