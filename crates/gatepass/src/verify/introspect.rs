//! Opaque tokens (SPEC §7): RFC 7662 introspection at the one issuer that has an endpoint,
//! with client_secret_basic. Answers are cached by a SHA-256 of the token (the token itself is
//! never a key, a log field or a label): active ones until min(`exp`, now + `cache.ttl`),
//! inactive ones for `cache.negative_ttl`, errors never. Concurrent requests for one token
//! make one call. A failing endpoint is a 503, fast: the call is bounded by `fetch_timeout`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, Label};
use moka::future::Cache;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::policy::deny::DenyReason;
use crate::verify::claims::ClaimMap;
use crate::verify::verified::{now_secs, TokenIds, Verified};
use gatepass_service::digest::sha256;

/// Largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Clone)]
enum Answer {
    Active(Arc<Verified>),
    Inactive,
}

struct AnswerExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<[u8; 32], Answer> for AnswerExpiry {
    fn expire_after_create(&self, _k: &[u8; 32], a: &Answer, _at: Instant) -> Option<Duration> {
        Some(match a {
            Answer::Active(v) => {
                Duration::from_secs(v.exp.saturating_sub(now_secs())).min(self.ttl)
            }
            Answer::Inactive => self.negative_ttl,
        })
    }
}

/// The introspecting issuer's client.
pub struct Introspector {
    /// Index into the verifier's issuers.
    pub issuer: usize,
    iss: String,
    /// The issuer's binding settings: an answer they refuse is never cached as active.
    binding: crate::verify::dpop::BindingPolicy,
    /// Configured; else the discovery document's `introspection_endpoint` (looked up per call).
    url: Option<String>,
    /// `Basic base64(client_id:secret)`.
    authorization: http::HeaderValue,
    client: reqwest::Client,
    cache: Cache<[u8; 32], Answer>,
    ttl: u64,
    active: Counter,
    inactive: Counter,
    error: Counter,
}

fn digest(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

impl Introspector {
    /// The introspector of the issuer that has `introspection_client_id` (validation allows one).
    pub fn new(config: &Config, metrics: &Metrics) -> Result<Option<Introspector>, ConfigError> {
        let Some((i, ic)) = config
            .issuers
            .iter()
            .enumerate()
            .find(|(_, ic)| ic.introspection_client_id.is_some())
        else {
            return Ok(None);
        };
        let key = |k: &str| format!("issuers[{i}].{k}");
        let (Some(id), Some(file)) = (&ic.introspection_client_id, &ic.introspection_secret_file)
        else {
            return Ok(None);
        };
        let secret = config.read_secret(&key("introspection_secret_file"), file, 1)?;
        let authorization =
            crate::verify::jwks::client_secret_basic(id, &secret).ok_or_else(|| {
                ConfigError::new(key("introspection_client_id"), "not usable in a header")
            })?;
        let client =
            crate::verify::jwks::http_client(config, ic, reqwest::redirect::Policy::limited(3))
                .map_err(|e| ConfigError::new(key("ca_file"), e.to_string()))?;
        let c = &config.cache;
        let result = |r: &'static str| {
            metrics.counter(
                "gatepass_introspections_total",
                vec![Label::new("result", r)],
            )
        };
        Ok(Some(Introspector {
            issuer: i,
            iss: ic.issuer.clone(),
            binding: crate::verify::dpop::BindingPolicy::of(ic),
            url: ic.introspection_url.clone(),
            authorization,
            client,
            cache: Cache::builder()
                .max_capacity(c.max_tokens)
                .expire_after(AnswerExpiry {
                    ttl: c.ttl.0,
                    negative_ttl: c.negative_ttl.0,
                })
                .build(),
            ttl: c.ttl.0.as_secs(),
            active: result("active"),
            inactive: result("inactive"),
            error: result("error"),
        }))
    }

    /// A cached active answer for `token` (the cache-hit path: no call).
    pub async fn cached(&self, token: &str) -> Option<Arc<Verified>> {
        match self.cache.get(&digest(token)).await? {
            Answer::Active(v) if v.exp > now_secs() => Some(v),
            _ => None,
        }
    }

    /// The token's identity, from the cache or one call shared by concurrent requests.
    pub async fn verify(
        &self,
        token: &str,
        claims: &ClaimMap,
        discovered: Option<String>,
    ) -> Result<Arc<Verified>, DenyReason> {
        let answer = self
            .cache
            .try_get_with(digest(token), self.ask(token, claims, discovered))
            .await
            .map_err(|e| *e)?;
        match answer {
            Answer::Active(v) if v.exp > now_secs() => Ok(v),
            _ => Err(DenyReason::InactiveToken),
        }
    }

    async fn ask(
        &self,
        token: &str,
        claims: &ClaimMap,
        discovered: Option<String>,
    ) -> Result<Answer, DenyReason> {
        // The call's span: its answer and status, never the token (it travels in the form).
        let span = if gatepass_service::telemetry::enabled() {
            tracing::info_span!(
                "gatepass.introspect",
                otel.kind = "client",
                gatepass.introspection = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let result = self
            .call(token, claims, discovered)
            .instrument(span.clone())
            .await;
        span.record(
            "gatepass.introspection",
            match &result {
                Ok(Answer::Active(_)) => "active",
                Ok(Answer::Inactive) => "inactive",
                Err(_) => "error",
            },
        );
        match &result {
            Ok(Answer::Active(_)) => self.active.increment(1),
            Ok(Answer::Inactive) => self.inactive.increment(1),
            Err(_) => self.error.increment(1),
        }
        result
    }

    async fn call(
        &self,
        token: &str,
        claims: &ClaimMap,
        discovered: Option<String>,
    ) -> Result<Answer, DenyReason> {
        let unavailable = DenyReason::IntrospectionUnavailable;
        let url = self.url.clone().or(discovered).ok_or(unavailable)?;
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let resp = self
            .client
            .post(&url)
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e.without_url(), "introspection call failed");
                unavailable
            })?;
        if gatepass_service::telemetry::enabled() {
            tracing::Span::current().record("http.response.status_code", resp.status().as_u16());
        }
        if !resp.status().is_success() {
            tracing::warn!(
                status = resp.status().as_u16(),
                "introspection endpoint refused the call"
            );
            return Err(unavailable);
        }
        let body = resp.bytes().await.map_err(|_| unavailable)?;
        if body.len() > MAX_ANSWER {
            return Err(unavailable);
        }
        // The one strict reader (SPEC §3.9): an answer with a repeated member is no answer.
        let map: Map<String, Value> = match crate::verify::json::object(&body) {
            Ok(m) if crate::verify::json::times_ok(&m) => m,
            _ => {
                tracing::warn!("introspection answer is not a well-formed JSON object");
                return Err(unavailable);
            }
        };
        if map.get("active") != Some(&Value::Bool(true)) {
            return Ok(Answer::Inactive);
        }
        if let Some(iss) = map.get("iss") {
            if iss.as_str() != Some(self.iss.as_str()) {
                tracing::warn!("introspection answer names another issuer; token refused");
                return Ok(Answer::Inactive);
            }
        }
        let now = now_secs();
        let exp = match map.get("exp") {
            Some(v) => v.as_u64().ok_or(DenyReason::MissingClaim)?,
            None => now + self.ttl,
        };
        if exp <= now {
            return Ok(Answer::Inactive);
        }
        let identity = claims.identity(&map, exp).ok_or(DenyReason::MissingClaim)?;
        let mut ids = TokenIds::from_claims(&map);
        ids.iss = Some(self.iss.as_str().into());
        // RFC 9449 §6.2 / RFC 8705 §3.2: the answer's `cnf` binds the token like a JWT's.
        self.binding.check(&ids.cnf)?;
        Ok(Answer::Active(Arc::new(Verified::with_ids(
            identity, exp, ids,
        ))))
    }
}
