//! The OpenID Connect client of sign-in (SPEC §9): the authorization request (PKCE S256,
//! `state`, `nonce`), the token endpoint (code and refresh grants, client_secret_basic) and the
//! ID token's checks.
//!
//! Own code rather than the `openidconnect` crate: the endpoints come from the discovery
//! document gatepass already fetches and refreshes for the issuer (`verify/jwks.rs`), the ID
//! token is checked with the same keys, the same signature path and the one strict JSON reader
//! as every access token (SPEC §3.9: two readers must never see two tokens), and what is left
//! is two form POSTs and a handful of claim comparisons.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::verify::verified::{now_secs, seconds};
use crate::verify::{claims_of, light_header, signature_ok, Issuer};

/// Largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// 32 random bytes, base64url: a `state`, a `nonce`, a PKCE verifier, a session id.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(gatepass_service::digest::sha256(verifier.as_bytes()))
}

/// The provider's endpoints sign-in uses, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub end_session: Option<String>,
}

/// What an authorization request carries besides the client's fixed parameters.
pub struct AuthorizationRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
}

/// What the token endpoint answered.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSet { .. }")
    }
}

/// Why a grant gave no tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The code or refresh token is no good (RFC 6749 §5.2 `invalid_grant`): for a refresh,
    /// the session has ended.
    #[error("the provider answered invalid_grant")]
    InvalidGrant,
    /// Another error the provider named (its `error` code, sanitized).
    #[error("the provider refused the grant: {0}")]
    Refused(String),
    /// Unreachable, slow, a 5xx, or an answer that is not one.
    #[error("the token endpoint is unavailable")]
    Unavailable,
}

/// The OpenID client: the issuer's HTTP client (redirects off) and its credentials.
pub struct Client {
    pub client_id: String,
    /// client_secret_basic; none: a public client.
    pub authorization: Option<http::HeaderValue>,
    pub scope: String,
    pub resource: Option<String>,
    pub http: reqwest::Client,
}

impl Client {
    /// The URL a browser is sent to (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1, RFC 7636,
    /// RFC 8707).
    pub fn authorization_url(&self, endpoint: &str, r: &AuthorizationRequest<'_>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", r.redirect_uri)
            .append_pair("scope", &self.scope)
            .append_pair("state", r.state)
            .append_pair("nonce", r.nonce)
            .append_pair("code_challenge", r.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(resource) = &self.resource {
            q.append_pair("resource", resource);
        }
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        format!("{endpoint}{sep}{}", q.finish())
    }

    /// The code grant (with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        endpoint: &str,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenSet, GrantError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        if let Some(r) = &self.resource {
            form.push(("resource", r));
        }
        self.grant(endpoint, &form).await
    }

    /// The refresh grant.
    pub async fn refresh(
        &self,
        endpoint: &str,
        refresh_token: &str,
    ) -> Result<TokenSet, GrantError> {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(r) = &self.resource {
            form.push(("resource", r));
        }
        self.grant(endpoint, &form).await
    }

    async fn grant(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<TokenSet, GrantError> {
        // Finished before any await: the serializer is not `Send`.
        let body = {
            let mut pairs = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                pairs.append_pair(k, v);
            }
            if self.authorization.is_none() {
                // A public client names itself in the form (RFC 6749 §3.2.1).
                pairs.append_pair("client_id", &self.client_id);
            }
            pairs.finish()
        };
        let mut req = self
            .http
            .post(endpoint)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        if let Some(a) = &self.authorization {
            req = req.header(http::header::AUTHORIZATION, a.clone());
        }
        let resp = req.send().await.map_err(|e| {
            tracing::warn!(error = %e.without_url(), "token endpoint call failed");
            GrantError::Unavailable
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|_| GrantError::Unavailable)?;
        if body.len() > MAX_ANSWER || status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "token endpoint unavailable");
            return Err(GrantError::Unavailable);
        }
        let answer = crate::verify::json::object(&body).map_err(|_| GrantError::Unavailable)?;
        let text = |name: &str| answer.get(name).and_then(Value::as_str);
        if !status.is_success() {
            return Err(match text("error") {
                Some("invalid_grant") => GrantError::InvalidGrant,
                Some(e) => GrantError::Refused(sanitize(e)),
                None => GrantError::Refused(format!("status {}", status.as_u16())),
            });
        }
        // A sender-constrained (DPoP) token can't be a browser's session token.
        if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err(GrantError::Refused("token_type is not Bearer".into()));
        }
        let access_token = text("access_token")
            .filter(|t| !t.is_empty())
            .ok_or(GrantError::Refused("no access_token".into()))?;
        Ok(TokenSet {
            access_token: access_token.to_owned(),
            refresh_token: text("refresh_token")
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            id_token: text("id_token")
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        })
    }
}

/// A provider's error code as it may appear in a log line or a page: RFC 6749 §5.2 codes are
/// printable ASCII without `"` and `\`; anything else is dropped, and it is cut at 64.
pub fn sanitize(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(64)
        .collect()
}

/// A verified ID token: its claims (the identity when `identity = "id_token"`), `sid` and
/// `exp`.
pub struct IdToken {
    pub claims: Map<String, Value>,
    pub sid: Option<String>,
    pub exp: u64,
}

/// Why an ID token was refused (named on the error page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is malformed")]
    Malformed,
    #[error("the ID token's signature is not the provider's")]
    Signature,
    #[error("the ID token was issued by another issuer")]
    Issuer,
    #[error("the ID token is for another client")]
    Audience,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token has no valid iat")]
    IssuedAt,
    #[error("the ID token's nonce is not this sign-in's")]
    Nonce,
    #[error("the provider's keys are unavailable")]
    KeysUnavailable,
}

/// The ID token's checks, exactly SPEC §9's list: the signature with the issuer's keys and
/// algorithms, `iss`, `aud` = `client_id`, `exp`, `iat` (with the issuer's leeway) and, at
/// sign-in, `nonce` (a refreshed ID token carries the first one or none: `expected_nonce`
/// `None` skips it).
pub async fn verify_id_token(
    issuer: &Issuer,
    client_id: &str,
    token: &str,
    expected_nonce: Option<&str>,
) -> Result<IdToken, IdTokenError> {
    if token.len() > 16 * 1024 || !crate::verify::token::is_jws(token) {
        return Err(IdTokenError::Malformed);
    }
    let header = light_header(token).map_err(|_| IdTokenError::Malformed)?;
    if header.crit || !issuer.algorithms.contains(&header.alg) {
        return Err(IdTokenError::Signature);
    }
    let (message, signature) = token.rsplit_once('.').ok_or(IdTokenError::Malformed)?;
    let claims = claims_of(message).map_err(|_| IdTokenError::Malformed)?;
    let kid = header.kid.as_deref();
    let keys = issuer
        .keys_for(kid)
        .await
        .map_err(|_| IdTokenError::KeysUnavailable)?;
    let signed = keys
        .candidates(kid, header.alg)
        .any(|key| signature_ok(key, header.alg, message, signature).is_ok());
    if !signed {
        return Err(IdTokenError::Signature);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.iss.as_str()) {
        return Err(IdTokenError::Issuer);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(IdTokenError::Audience);
    }
    let now = now_secs();
    let exp = seconds(&claims, "exp").ok_or(IdTokenError::Expired)?;
    if exp.saturating_add(issuer.leeway) <= now {
        return Err(IdTokenError::Expired);
    }
    match seconds(&claims, "iat") {
        Some(iat) if iat <= now.saturating_add(issuer.leeway) => {}
        _ => return Err(IdTokenError::IssuedAt),
    }
    if let Some(nonce) = expected_nonce {
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(IdTokenError::Nonce);
        }
    }
    let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
    Ok(IdToken { claims, sid, exp })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, random_token());
    }

    #[test]
    fn authorization_url_carries_every_parameter_encoded() {
        let c = Client {
            client_id: "gate pass".into(),
            authorization: None,
            scope: "openid profile".into(),
            resource: Some("https://app.test".into()),
            http: reqwest::Client::new(),
        };
        let url = c.authorization_url(
            "https://op.test/auth?x=1",
            &AuthorizationRequest {
                redirect_uri: "https://app.test/_gatepass/callback",
                state: "s",
                nonce: "n",
                code_challenge: "c",
            },
        );
        assert_eq!(
            url,
            "https://op.test/auth?x=1&response_type=code&client_id=gate+pass&redirect_uri=https%3A%2F%2Fapp.test%2F_gatepass%2Fcallback&scope=openid+profile&state=s&nonce=n&code_challenge=c&code_challenge_method=S256&resource=https%3A%2F%2Fapp.test"
        );
    }

    #[test]
    fn error_codes_are_sanitized() {
        assert_eq!(sanitize("access_denied"), "access_denied");
        assert_eq!(sanitize("a\"b\\c<d>\n e"), "abc<d>e");
        assert_eq!(sanitize(&"x".repeat(100)).len(), 64);
    }
}
