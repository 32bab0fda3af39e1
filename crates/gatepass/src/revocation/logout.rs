//! OpenID Connect Back-Channel Logout 1.0 (SPEC §6): the logout token's checks, and the
//! memory of the `jti`s already used (in process, or in Redis for the cluster).

use std::time::Duration;

use gatepass_identity::{Revocation, RevocationKind};
use gatepass_service::state::StateError;
use serde_json::{Map, Value};

use crate::policy::deny::DenyReason;
use crate::verify::replay::Replays;
use crate::verify::typ::Typ;
use crate::verify::verified::{now_secs, seconds};
pub use crate::verify::LOGOUT_EVENT;
use crate::verify::{claims_of, light_header, signature_ok, Verifier};

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
            // Within its own issuer: another issuer's user with the same `sub` is someone else.
            (Some(sid), _) => Revocation {
                kind: RevocationKind::Sid,
                value: sid.clone(),
                iss: Some(self.iss.clone()),
                not_before: None,
                expires_at: now.saturating_add(retain.as_secs()),
            },
            (None, sub) => Revocation {
                kind: RevocationKind::Sub,
                value: sub.clone().unwrap_or_default(),
                iss: Some(self.iss.clone()),
                not_before: Some(self.iat),
                expires_at: self.iat.max(now).saturating_add(retain.as_secs()),
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

/// Verifies a logout token with its issuer's keys and algorithms, read by the same strict
/// reader as access tokens (no second decoder: SPEC §3.9): `iss`; `aud` has the issuer's
/// `backchannel_logout_audience`; `iat` within leeway; `exp` if present; the logout event;
/// `sub` and/or `sid`; no `nonce`; `typ`, if present, `logout+jwt` or `JWT`; a `jti`.
pub async fn verify(verifier: &Verifier, token: &str) -> Result<LogoutToken, Refused> {
    if token.len() > 16 * 1024 || !crate::verify::token::is_jws(token) {
        return Err("not a JWS");
    }
    let header = light_header(token).map_err(|r| match r {
        DenyReason::AlgorithmNotAllowed => "algorithm not allowed",
        _ => "unreadable header",
    })?;
    if !matches!(header.typ, Typ::Absent | Typ::LogoutJwt | Typ::Jwt) {
        return Err("typ is neither logout+jwt nor JWT");
    }
    if header.crit {
        return Err("unsupported crit");
    }
    let (message, signature) = token.rsplit_once('.').ok_or("not a JWS")?;
    let claims = claims_of(message).map_err(|_| "unreadable claims")?;
    let issuer = verifier
        .select_issuer(&claims)
        .map_err(|_| "unknown issuer")?;
    let Some(aud) = &issuer.backchannel_audience else {
        return Err("issuer has no backchannel_logout_audience");
    };
    if !issuer.algorithms.contains(&header.alg) {
        return Err("algorithm not allowed");
    }
    let kid = header.kid.as_deref();
    let keys = issuer.keys_for(kid).await.map_err(|_| "no key")?;
    let signed = keys
        .candidates(kid, header.alg)
        .any(|key| signature_ok(key, header.alg, message, signature).is_ok());
    if !signed {
        return Err("bad signature");
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.iss.as_str()) {
        return Err("wrong iss");
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == aud,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(aud)),
        _ => false,
    };
    if !aud_ok {
        return Err("wrong aud");
    }
    let now = now_secs();
    let leeway = issuer.leeway;
    let iat = seconds(&claims, "iat").ok_or("no iat")?;
    if now.abs_diff(iat) > leeway {
        return Err("iat outside the leeway");
    }
    if let Some(exp) = claims.get("exp") {
        let exp = exp.as_f64().ok_or("exp is not a number")? as u64;
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

/// True the first time `t`'s `jti` (for its issuer) is seen.
pub async fn first_use(replays: &Replays, t: &LogoutToken) -> Result<bool, StateError> {
    let id = gatepass_service::digest::sha256(format!("{}\n{}", t.iss, t.jti).as_bytes());
    replays.first_use(&id, t.remember, false).await
}
