//! The sections `verify/` reads: `[[issuers]]`, `[jwks]`, `[claims]`, `[tokens]`, `[cache]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    pub public_key_file: Option<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    pub signing_key_file: Option<PathBuf>,
    /// The client id this issuer's back-channel logout tokens name in `aud`; set, it accepts
    /// `POST /backchannel-logout` for this issuer.
    pub backchannel_logout_audience: Option<String>,
    /// `issuer` is an OpenID issuer URL: its discovery document names the JWKS (and the
    /// introspection endpoint).
    #[serde(default)]
    pub discovery: bool,
    /// `rfc9068`: JWT access tokens with strict `typ` and claims.
    pub profile: Option<Profile>,
    /// `exp - iat` must not exceed it.
    pub max_token_lifetime: Option<Dur>,
    /// RFC 7662 endpoint for opaque tokens (at most one issuer).
    pub introspection_url: Option<String>,
    pub introspection_client_id: Option<String>,
    /// client_secret_basic secret for `introspection_url`.
    pub introspection_secret_file: Option<PathBuf>,
    /// DPoP-bound tokens (RFC 9449, SPEC §10): `cnf.jkt` checked against a proof.
    #[serde(default)]
    pub dpop: Binding,
    /// The algorithms a DPoP proof may be signed with (asymmetric only).
    pub dpop_algorithms: Option<Vec<String>>,
    /// Certificate-bound tokens (RFC 8705): `cnf.x5t#S256` checked against the client
    /// certificate Traefik passes.
    #[serde(default)]
    pub mtls_bound: Binding,
}

/// How an issuer's tokens may be bound to a key the client holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Binding {
    /// A token bound this way is refused (never downgraded to a bearer token).
    #[default]
    Off,
    /// Bound tokens need their proof; unbound tokens pass as bearer tokens.
    Allowed,
    /// Every token must be bound this way.
    Required,
}

/// The algorithms a DPoP proof may use by default (SPEC §10).
pub const DPOP_DEFAULT_ALGORITHMS: &[&str] = &["ES256", "EdDSA", "PS256", "RS256"];

/// Every algorithm gatepass verifies a DPoP proof with: asymmetric only (`Ed25519` is the
/// fully-specified name of EdDSA over Ed25519, RFC 9864).
pub const DPOP_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "EdDSA", "Ed25519", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
];

impl IssuerConfig {
    /// The issuer's DPoP proof algorithms (the default list when unset).
    pub fn dpop_algorithms(&self) -> Vec<&str> {
        match &self.dpop_algorithms {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => DPOP_DEFAULT_ALGORITHMS.to_vec(),
        }
    }
}

/// `[dpop]`: how proofs are checked (SPEC §10).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// A proof's `iat` may be this far in the past or the future.
    pub iat_window: Dur,
    /// Demand server nonces (`use_dpop_nonce`).
    pub nonce: bool,
    /// The nonce HMAC key, the same on every replica.
    pub nonce_secret_file: Option<PathBuf>,
    /// A nonce is good for the step it was issued in and the next.
    pub nonce_step: Dur,
}

impl Default for DpopConfig {
    fn default() -> Self {
        DpopConfig {
            iat_window: Dur::secs(300),
            nonce: false,
            nonce_secret_file: None,
            nonce_step: Dur::secs(60),
        }
    }
}

/// An access-token profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// RFC 9068: `typ` `at+jwt`; `sub`, `client_id`, `iat`, `jti` required; `aud` checked.
    Rfc9068,
}
impl IssuerConfig {
    /// The configured key source's name (validation makes it exactly one).
    pub fn key_source(&self) -> &'static str {
        if self.secret_file.is_some() {
            "secret_file"
        } else if self.secret_env.is_some() {
            "secret_env"
        } else if self.public_key_file.is_some() {
            "public_key_file"
        } else if self.jwks_file.is_some() {
            "jwks_file"
        } else {
            "jwks_url"
        }
    }
}

fn default_leeway() -> Dur {
    Dur::secs(30)
}
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    pub refresh_interval: Dur,
    pub min_refresh_interval: Dur,
    pub fetch_timeout: Dur,
    pub stale_for: Dur,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            refresh_interval: Dur::secs(300),
            min_refresh_interval: Dur::secs(30),
            fetch_timeout: Dur::secs(2),
            stale_for: Dur::secs(86_400),
        }
    }
}

/// Dotted claim paths (`realm_access.roles`), tried in order: the first present wins.
pub type ClaimPaths = Vec<String>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimsConfig {
    pub user_id: ClaimPaths,
    pub username: ClaimPaths,
    pub role: ClaimPaths,
    pub permissions: ClaimPaths,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        ClaimsConfig {
            user_id: v(&["sub"]),
            username: v(&["preferred_username", "username", "email", "sub"]),
            role: v(&["role", "roles", "realm_access.roles"]),
            permissions: v(&["permissions", "scope", "scp"]),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    pub sources: Vec<String>,
    pub websocket_protocol: String,
    /// Tokens longer than this are refused with 401 before any parsing.
    pub max_token_bytes: usize,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            sources: [
                "bearer",
                "websocket_protocol",
                "cookie:access_token",
                "ticket",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            websocket_protocol: gatepass_identity::WEBSOCKET_PROTOCOL_MARKER.into(),
            max_token_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub max_tokens: u64,
    pub ttl: Dur,
    /// How long an inactive introspection answer is cached; `0s`: never.
    pub negative_ttl: Dur,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_tokens: 100_000,
            ttl: Dur::secs(300),
            negative_ttl: Dur::secs(5),
        }
    }
}
/// The algorithms gatepass verifies; `none` is not among them.
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl Config {
    pub(super) fn validate_issuers(&self) -> Result<(), ConfigError> {
        if self.issuers.is_empty() {
            return Err(ConfigError::new(
                "issuers",
                "at least one [[issuers]] is required",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut isses = std::collections::HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let key = |k: &str| format!("issuers[{i}].{k}");
            if iss.name.is_empty() || !names.insert(iss.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    "must be non-empty and unique",
                ));
            }
            if iss.issuer.is_empty() || !isses.insert(iss.issuer.as_str()) {
                return Err(ConfigError::new(
                    key("issuer"),
                    "must be non-empty and unique (tokens are matched to issuers by `iss`)",
                ));
            }
            // It names revocation entries in the shared table, where a control character
            // separates it from the value.
            if iss.issuer.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    key("issuer"),
                    "must not contain control characters",
                ));
            }
            if iss.algorithms.is_empty() {
                return Err(ConfigError::new(
                    key("algorithms"),
                    "must list at least one",
                ));
            }
            for alg in &iss.algorithms {
                if alg.eq_ignore_ascii_case("none") {
                    return Err(ConfigError::new(
                        key("algorithms"),
                        "`none` is never allowed",
                    ));
                }
                if !ALGORITHMS.contains(&alg.as_str()) {
                    return Err(ConfigError::new(
                        key("algorithms"),
                        format!(
                            "unknown algorithm `{alg}` (one of {})",
                            ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
            let sources = [
                iss.secret_file.is_some(),
                iss.secret_env.is_some(),
                iss.public_key_file.is_some(),
                iss.jwks_file.is_some(),
                iss.jwks_url.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if iss.discovery {
                if sources != 0 {
                    return Err(ConfigError::new(
                        key("discovery"),
                        "takes the keys from the discovery document: remove secret_file, secret_env, public_key_file, jwks_file and jwks_url",
                    ));
                }
                if !(iss.issuer.starts_with("https://") || iss.issuer.starts_with("http://")) {
                    return Err(ConfigError::new(
                        key("issuer"),
                        "must be the issuer's http(s) URL with discovery = true",
                    ));
                }
            } else if sources != 1 && !(sources == 0 && iss.introspection_url.is_some()) {
                return Err(ConfigError::new(
                    format!("issuers[{i}]"),
                    "exactly one of secret_file, secret_env, public_key_file, jwks_file, jwks_url (or discovery = true) is required",
                ));
            }
            if iss.profile.is_some() && iss.audiences.is_none() {
                return Err(ConfigError::new(
                    key("profile"),
                    "rfc9068 requires `aud` to be checked: set audiences",
                ));
            }
            // Clock skew, not validity: a day is already far more than any clock is off by.
            if iss.leeway.0 > Duration::from_secs(86_400) {
                return Err(ConfigError::new(key("leeway"), "must be at most 24h"));
            }
            if let Some(l) = iss.max_token_lifetime {
                if l.0 < Duration::from_secs(1) {
                    return Err(ConfigError::new(
                        key("max_token_lifetime"),
                        "must be at least 1s",
                    ));
                }
            }
            if let Some(url) = &iss.introspection_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        key("introspection_url"),
                        "must be an http:// or https:// URL",
                    ));
                }
            }
            let introspects = iss.introspection_url.is_some()
                || iss.introspection_client_id.is_some()
                || iss.introspection_secret_file.is_some();
            if introspects
                && (iss.introspection_client_id.is_none()
                    || iss.introspection_secret_file.is_none())
            {
                return Err(ConfigError::new(
                    key("introspection_client_id"),
                    "introspection needs introspection_client_id and introspection_secret_file (client_secret_basic)",
                ));
            }
            if introspects && iss.introspection_url.is_none() && !iss.discovery {
                return Err(ConfigError::new(
                    key("introspection_url"),
                    "is required (or discovery = true, whose document names it)",
                ));
            }
            if let Some(url) = &iss.jwks_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        key("jwks_url"),
                        "must be an http:// or https:// URL",
                    ));
                }
            }
            if iss.ca_file.is_some()
                && iss.jwks_url.is_none()
                && !iss.discovery
                && iss.introspection_url.is_none()
            {
                return Err(ConfigError::new(
                    key("ca_file"),
                    "only applies with jwks_url, discovery or introspection_url",
                ));
            }
            if let Some(aud) = &iss.audiences {
                if aud.is_empty() {
                    return Err(ConfigError::new(
                        key("audiences"),
                        "omit it to not check `aud`, or list at least one",
                    ));
                }
            }
            if let Some(algs) = &iss.dpop_algorithms {
                if iss.dpop == Binding::Off {
                    return Err(ConfigError::new(
                        key("dpop_algorithms"),
                        "only applies with dpop = \"allowed\" or \"required\"",
                    ));
                }
                if algs.is_empty() {
                    return Err(ConfigError::new(
                        key("dpop_algorithms"),
                        "must list at least one",
                    ));
                }
                for alg in algs {
                    if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
                        return Err(ConfigError::new(
                            key("dpop_algorithms"),
                            format!("`{alg}` is not allowed: a proof is signed with the client's private key (asymmetric algorithms only)"),
                        ));
                    }
                    if !DPOP_ALGORITHMS.contains(&alg.as_str()) {
                        return Err(ConfigError::new(
                            key("dpop_algorithms"),
                            format!(
                                "unknown algorithm `{alg}` (one of {})",
                                DPOP_ALGORITHMS.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        let introspecting: Vec<usize> = (0..self.issuers.len())
            .filter(|i| self.issuers[*i].introspection_client_id.is_some())
            .collect();
        if let [_, second, ..] = introspecting[..] {
            return Err(ConfigError::new(
                format!("issuers[{second}].introspection_url"),
                "at most one issuer may introspect opaque tokens",
            ));
        }
        Ok(())
    }

    pub(super) fn validate_dpop(&self) -> Result<(), ConfigError> {
        let d = &self.dpop;
        if d.iat_window.0 < Duration::from_secs(1) || d.iat_window.0 > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "dpop.iat_window",
                "must be between 1s and 1h",
            ));
        }
        if d.nonce_step.0 < Duration::from_secs(1) || d.nonce_step.0 > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "dpop.nonce_step",
                "must be between 1s and 24h",
            ));
        }
        if d.nonce && d.nonce_secret_file.is_none() {
            return Err(ConfigError::new(
                "dpop.nonce_secret_file",
                "is required with nonce = true (the same secret on every replica)",
            ));
        }
        if !d.nonce && d.nonce_secret_file.is_some() {
            return Err(ConfigError::new(
                "dpop.nonce_secret_file",
                "only applies with nonce = true",
            ));
        }
        Ok(())
    }

    /// Any issuer accepts DPoP-bound tokens.
    pub fn dpop_enabled(&self) -> bool {
        self.issuers.iter().any(|i| i.dpop != Binding::Off)
    }

    pub(super) fn validate_jwks(&self) -> Result<(), ConfigError> {
        if self.jwks.refresh_interval.0 < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "jwks.refresh_interval",
                "must be at least 1s",
            ));
        }
        if self.jwks.fetch_timeout.0.is_zero() {
            return Err(ConfigError::new(
                "jwks.fetch_timeout",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    pub(super) fn validate_claims(&self) -> Result<(), ConfigError> {
        for (name, list) in [
            ("claims.user_id", &self.claims.user_id),
            ("claims.username", &self.claims.username),
            ("claims.role", &self.claims.role),
            ("claims.permissions", &self.claims.permissions),
        ] {
            if list.is_empty()
                || list
                    .iter()
                    .any(|p| p.is_empty() || p.split('.').any(str::is_empty))
            {
                return Err(ConfigError::new(
                    name,
                    "must list claim paths like `sub` or `realm_access.roles`",
                ));
            }
        }
        Ok(())
    }

    pub(super) fn validate_tokens(&self) -> Result<(), ConfigError> {
        if self.tokens.websocket_protocol.is_empty()
            || !self
                .tokens
                .websocket_protocol
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(ConfigError::new(
                "tokens.websocket_protocol",
                "must be a subprotocol token like `jwt-auth`",
            ));
        }
        if self.tokens.max_token_bytes < 256 {
            return Err(ConfigError::new(
                "tokens.max_token_bytes",
                "must be at least 256",
            ));
        }
        Ok(())
    }

    pub(super) fn validate_cache(&self) -> Result<(), ConfigError> {
        if self.cache.max_tokens == 0 {
            return Err(ConfigError::new(
                "cache.max_tokens",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
