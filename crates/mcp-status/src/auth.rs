//! Who is calling: identity comes only from the gatepass headers, checked against
//! `X-User-Assertion` when an assertion key is configured.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use gatepass_identity::{headers, AssertionClaims, AssertionVerifier, Identity};
use http::HeaderMap;

use crate::broadcast::View;
use crate::config::{AuthConfig, Config, ConfigError};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    pub identity: Identity,
    pub view: View,
    pub admin: bool,
    /// The token's `jti`, `sid` and issuer, from the assertion (none without one).
    pub tid: Option<String>,
    pub sid: Option<String>,
    pub iss: Option<String>,
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
    /// The assertion keys are not loaded yet: nobody can be checked (503, not 401).
    Unavailable,
}

pub struct Auth {
    cfg: AuthConfig,
    /// Some(..) when configured; the inner option is empty until the keys are loaded.
    verifier: Option<ArcSwapOption<AssertionVerifier>>,
    jwks_url: Option<String>,
    /// `jti`s of assertions already used for a state-changing call; each is kept until the
    /// assertion expires (plus the verifier's leeway), at most `SEEN_JTI_CAPACITY` of them.
    seen_jti: moka::sync::Cache<String, u64>,
}

/// Bound of the replay set: with 60 s assertions, ~1600 state-changing calls a second.
pub const SEEN_JTI_CAPACITY: u64 = 100_000;
/// The assertion verifier accepts `exp` this many seconds late, so a jti is kept as long.
const JTI_LEEWAY: Duration = Duration::from_secs(5);

/// A seen jti lives until its assertion's `exp` (the cached value) has passed.
struct UntilExp;

impl moka::Expiry<String, u64> for UntilExp {
    fn expire_after_create(
        &self,
        _jti: &String,
        exp: &u64,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(exp.saturating_sub(now_secs())) + JTI_LEEWAY)
    }
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
            seen_jti: moka::sync::Cache::builder()
                .max_capacity(SEEN_JTI_CAPACITY)
                .expire_after(UntilExp)
                .build(),
        })
    }

    /// Loads (and periodically refreshes) the assertion JWKS. Until the first success every
    /// request is refused, so it retries fast at first (100 ms, doubling to 1 s): at start
    /// gatepass (or Traefik in front of it) is often a moment behind.
    pub async fn refresh_jwks(self: Arc<Self>) {
        let (Some(url), Some(slot)) = (self.jwks_url.clone(), self.verifier.as_ref()) else {
            return;
        };
        let mut retry = Duration::from_millis(100);
        loop {
            let next = match AssertionVerifier::from_jwks_url(&url, Duration::from_secs(2)).await {
                Ok(v) => {
                    if slot.load().is_none() {
                        tracing::info!("assertion keys loaded");
                    }
                    slot.store(Some(Arc::new(v)));
                    Duration::from_secs(300)
                }
                Err(e) if slot.load().is_some() => {
                    tracing::warn!(error = %e, "assertion JWKS unavailable; keeping the last keys");
                    Duration::from_secs(30)
                }
                Err(e) => {
                    // Quiet while the stack comes up; loud once it takes a while.
                    if retry >= Duration::from_secs(1) {
                        tracing::warn!(error = %e, "assertion JWKS unavailable");
                    } else {
                        tracing::debug!(error = %e, "assertion JWKS not reachable yet");
                    }
                    let now = retry;
                    retry = (retry * 2).min(Duration::from_secs(1));
                    now
                }
            };
            tokio::time::sleep(next).await;
        }
    }

    /// False while an assertion key is required but not loaded yet.
    pub fn ready(&self) -> bool {
        self.verifier
            .as_ref()
            .is_none_or(|slot| slot.load().is_some())
    }

    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => gatepass_identity::origin_allowed(&self.cfg.allowed_origins, o),
        }
    }

    /// The caller's identity; `host` is the request's Host (the assertion audience).
    /// Assertions may be reused here (GET, WebSocket upgrades): gatepass reuses them for
    /// safe methods.
    pub fn identify(&self, h: &HeaderMap, host: &str) -> Result<Identity, Denied> {
        self.verified(h, host, "GET").map(|(identity, _)| identity)
    }

    /// `identify` and `authorize`, keeping the token ids the assertion carries (a socket is
    /// closed by a revocation that names them).
    pub fn user(&self, h: &HeaderMap, host: &str) -> Result<User, Denied> {
        let (identity, claims) = self.verified(h, host, "GET")?;
        let mut user = self.authorize(identity)?;
        if let Some(c) = claims {
            user.tid = c.tid;
            user.sid = c.sid;
            user.iss = c.iss;
        }
        Ok(user)
    }

    /// `identify` for a state-changing call with `method`: the assertion must have been
    /// issued for that method (`htm`), and its `jti` is accepted once.
    pub fn identify_once(
        &self,
        h: &HeaderMap,
        host: &str,
        method: &str,
    ) -> Result<Identity, Denied> {
        let (identity, claims) = self.verified(h, host, method)?;
        if let Some(c) = claims {
            if !self
                .seen_jti
                .entry(c.jti.clone())
                .or_insert(c.exp)
                .is_fresh()
            {
                tracing::warn!(user = %identity.id, jti = %c.jti, "assertion replayed");
                return Err(Denied::Unauthenticated);
            }
        }
        Ok(identity)
    }

    fn verified(
        &self,
        h: &HeaderMap,
        host: &str,
        method: &str,
    ) -> Result<(Identity, Option<AssertionClaims>), Denied> {
        let identity = Identity::from_headers(h).map_err(|_| Denied::Unauthenticated)?;
        let mut claims = None;
        if let Some(slot) = &self.verifier {
            let guard = slot.load();
            let verifier = guard.as_ref().ok_or(Denied::Unavailable)?;
            let aud = self.cfg.assertion_audience.as_deref().unwrap_or(host);
            let assertion = h.get(headers::USER_ASSERTION).and_then(|v| v.to_str().ok());
            // A mismatched `X-User-Expires` (claims.token_exp), an assertion issued for
            // another method on a state-changing call, and an empty audience (a request
            // without Host) are refused here too.
            claims = Some(
                verifier
                    .verify_identity(assertion, aud, method, &identity)
                    .map_err(|_| Denied::Unauthenticated)?,
            );
        }
        if identity.expires.is_some_and(|e| e <= now_secs()) {
            return Err(Denied::Expired);
        }
        Ok((identity, claims))
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
            tid: None,
            sid: None,
            iss: None,
        })
    }
}

pub use gatepass_identity::now_secs;

#[cfg(test)]
mod tests {
    use super::*;
    use gatepass_identity::{AssertionSigner, AssertionVerifier};
    use http::{HeaderName, HeaderValue};

    fn auth(toml: &str) -> Auth {
        Auth::new(&Config::parse(toml).unwrap_or_else(|e| panic!("{e}"))).unwrap()
    }

    fn person(role: &str, expires: u64) -> Identity {
        Identity {
            id: "u1".into(),
            username: "alice".into(),
            role: role.into(),
            permissions: vec!["mcp:read".into()],
            expires: Some(expires),
        }
    }

    fn headers(id: &Identity, assertion: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in headers::IDENTITY.iter().zip(id.header_values()) {
            h.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        if let Some(a) = assertion {
            h.insert(headers::USER_ASSERTION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    /// With an assertion key: identity only from the headers, and only when the assertion
    /// (signature, audience, every header, `token_exp`) matches; 503-worthy until keys load;
    /// a `jti` is accepted once for a state-changing call.
    #[test]
    fn identity_needs_a_matching_assertion() {
        let a = auth("[auth]\nassertion_jwks_url = \"http://127.0.0.1:1/jwks.json\"\n");
        let now = now_secs();
        let id = person("admin", now + 600);
        assert!(!a.ready());
        assert_eq!(
            a.identify(&headers(&id, None), "h"),
            Err(Denied::Unavailable)
        );
        let signer = AssertionSigner::from_pkcs8_pem(
            gatepass_identity::generate_ed25519_pkcs8_pem()
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let verifier = AssertionVerifier::from_jwks_json(signer.jwks_json()).unwrap();
        a.verifier.as_ref().unwrap().store(Some(Arc::new(verifier)));
        assert!(a.ready());
        let ttl = Duration::from_secs(60);
        let good = signer.sign(&id, "h", "POST", now, ttl).unwrap();
        assert_eq!(a.identify(&headers(&id, Some(&good)), "h"), Ok(id.clone()));
        let mut forged = id.clone();
        forged.role = "super_admin".into();
        let mut later = id.clone();
        later.expires = Some(now + 86_400);
        for (what, h, host) in [
            ("no assertion", headers(&id, None), "h"),
            ("another host", headers(&id, Some(&good)), "other"),
            ("forged role", headers(&forged, Some(&good)), "h"),
            ("later expiry", headers(&later, Some(&good)), "h"),
            ("no identity", HeaderMap::new(), "h"),
            ("no Host: an empty audience", headers(&id, Some(&good)), ""),
        ] {
            assert_eq!(a.identify(&h, host), Err(Denied::Unauthenticated), "{what}");
        }
        let h = headers(&id, Some(&good));
        assert_eq!(a.identify_once(&h, "h", "POST"), Ok(id.clone()));
        assert_eq!(
            a.identify_once(&h, "h", "POST"),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(a.identify(&h, "h"), Ok(id.clone()), "reads may reuse it");
        // Issue 20 finding 7: an assertion gatepass issued for a GET (reusable for reads) is
        // never good for a POST, even once; nor one signed for an empty audience.
        let get = signer.sign(&id, "h", "GET", now, ttl).unwrap();
        let h = headers(&id, Some(&get));
        assert_eq!(a.identify(&h, "h"), Ok(id.clone()));
        assert_eq!(
            a.identify_once(&h, "h", "POST"),
            Err(Denied::Unauthenticated)
        );
        let empty = signer.sign(&id, "", "GET", now, ttl).unwrap();
        let h = headers(&id, Some(&empty));
        assert_eq!(a.identify(&h, ""), Err(Denied::Unauthenticated));
    }

    /// Without an assertion key: the headers alone, expiry enforced, roles decide view and
    /// admin.
    #[test]
    fn roles_decide_view_and_admin() {
        let a = auth("");
        let now = now_secs();
        let expired = person("admin", now - 1);
        assert_eq!(
            a.identify(&headers(&expired, None), "h"),
            Err(Denied::Expired)
        );
        let user = |role: &str| a.authorize(person(role, now + 60));
        assert_eq!(user("viewer").map(|u| u.view), Err(Denied::Forbidden));
        let dev = user("developer").unwrap();
        assert_eq!((dev.view, dev.admin), (View::Redacted, false));
        let dba = user("dba").unwrap();
        assert_eq!((dba.view, dba.admin), (View::Full, false));
        let admin = user("admin").unwrap();
        assert_eq!((admin.view, admin.admin), (View::Full, true));
    }
}
