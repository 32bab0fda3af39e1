//! OpenID Connect Back-Channel Logout 1.0 (SPEC §6): the logout token's checks, and the
//! memory of the `jti`s already used (in process, or in Redis for the cluster).

use std::sync::Arc;
use std::time::Duration;

use gatepass_identity::{Revocation, RevocationKind};
use gatepass_service::state::{RedisState, StateError};
use moka::future::Cache;
use serde_json::{Map, Value};

use crate::verified::now_secs;
use crate::verify::{light_header, Verifier};

/// The `events` member a logout token must have.
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Why a logout token was refused (logged; the response is always the same 400).
pub type Refused = &'static str;

/// A verified logout token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    pub iss: String,
    pub jti: String,
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub iat: u64,
    /// How long its `jti` must be remembered: past this, its `iat` is out of the window.
    pub remember: Duration,
}

impl LogoutToken {
    /// What it revokes: the session, or (without one) the user's tokens issued before it.
    pub fn revocation(&self, retain: Duration) -> Revocation {
        let now = now_secs();
        match (&self.sid, &self.sub) {
            (Some(sid), _) => Revocation {
                kind: RevocationKind::Sid,
                value: sid.clone(),
                not_before: None,
                expires_at: now + retain.as_secs(),
            },
            (None, sub) => Revocation {
                kind: RevocationKind::Sub,
                value: sub.clone().unwrap_or_default(),
                not_before: Some(self.iat),
                expires_at: self.iat.max(now) + retain.as_secs(),
            },
        }
    }
}

fn text(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Refused> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err("a claim has the wrong type"),
    }
}

/// Verifies a logout token with its issuer's keys and algorithms: `iss`; `aud` has the
/// issuer's `backchannel_logout_audience`; `iat` within leeway; `exp` if present; the logout
/// event; `sub` and/or `sid`; no `nonce`; `typ`, if present, `logout+jwt` or `JWT`; a `jti`.
pub async fn verify(verifier: &Verifier, token: &str) -> Result<LogoutToken, Refused> {
    if token.len() > 16 * 1024 || !crate::token::is_jws(token) {
        return Err("not a JWS");
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| "unreadable header")?;
    if let Some(typ) = &header.typ {
        if !(typ.eq_ignore_ascii_case("logout+jwt") || typ.eq_ignore_ascii_case("JWT")) {
            return Err("typ is neither logout+jwt nor JWT");
        }
    }
    let light = light_header(token).map_err(|_| "algorithm not allowed")?;
    let issuer = verifier
        .select_issuer(token)
        .map_err(|_| "unknown issuer")?;
    let Some(aud) = &issuer.backchannel_audience else {
        return Err("issuer has no backchannel_logout_audience");
    };
    if !issuer.algorithms.contains(&light.alg) {
        return Err("algorithm not allowed");
    }
    let keys = issuer
        .keys_for(light.kid.as_deref())
        .await
        .map_err(|_| "no key")?;
    let mut claims = None;
    for key in keys.candidates(light.kid.as_deref(), light.alg) {
        let mut v = key.validation.clone();
        v.set_audience(&[aud]);
        v.validate_aud = true;
        // `exp` is optional in a logout token; checked below when present.
        v.validate_exp = false;
        v.set_required_spec_claims(&["iss", "aud"]);
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidAudience => return Err("wrong aud"),
                    ErrorKind::InvalidIssuer => return Err("wrong iss"),
                    ErrorKind::MissingRequiredClaim(_) => return Err("missing iss or aud"),
                    _ => {}
                }
            }
        }
    }
    let claims = claims.ok_or("bad signature")?;
    let now = now_secs();
    let leeway = issuer.leeway;
    let iat = claims.get("iat").and_then(Value::as_u64).ok_or("no iat")?;
    if now.abs_diff(iat) > leeway {
        return Err("iat outside the leeway");
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_u64().ok_or("exp is not a number")?;
        if exp.saturating_add(leeway) <= now {
            return Err("expired");
        }
    }
    let event_ok = claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !event_ok {
        return Err("no back-channel logout event");
    }
    if claims.contains_key("nonce") {
        return Err("has a nonce");
    }
    let (sub, sid) = (text(&claims, "sub")?, text(&claims, "sid")?);
    if sub.is_none() && sid.is_none() {
        return Err("neither sub nor sid");
    }
    let jti = text(&claims, "jti")?.ok_or("no jti")?;
    Ok(LogoutToken {
        iss: issuer.iss.clone(),
        jti,
        sid,
        sub,
        iat,
        // Once iat + leeway has passed, the iat check refuses the token anyway.
        remember: Duration::from_secs(2 * leeway + 1),
    })
}

/// The `jti`s of logout tokens already used.
pub enum Replays {
    Memory(Cache<String, ()>),
    Redis(Arc<RedisState>),
}

impl Replays {
    pub fn new(redis: Option<Arc<RedisState>>) -> Replays {
        match redis {
            Some(r) => Replays::Redis(r),
            None => Replays::Memory(
                Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(Duration::from_secs(3600))
                    .build(),
            ),
        }
    }

    /// True the first time `t`'s `jti` (for its issuer) is seen.
    pub async fn first_use(&self, t: &LogoutToken) -> Result<bool, StateError> {
        let id = crate::verified::sha256_b64(format!("{}\n{}", t.iss, t.jti).as_bytes());
        match self {
            Replays::Memory(cache) => {
                let entry = cache.entry(id).or_insert(()).await;
                Ok(entry.is_fresh())
            }
            Replays::Redis(redis) => {
                let key = redis.key(&format!("logout-jti:{id}"));
                redis
                    .set_new("logout_jti", key, "1".into(), t.remember)
                    .await
            }
        }
    }
}
