//! The TOML configuration (SPEC §3.2): parsing, defaults and validation. Every error is
//! one line that names the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use gatepass_service::config::{ConfigError, Dur};
pub use gatepass_service::state::{Backend, OnUnavailable, StateConfig};
pub use gatepass_service::telemetry::TelemetryConfig;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default)]
    pub jwks: JwksConfig,
    #[serde(default)]
    pub claims: ClaimsConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    #[serde(default)]
    pub default_rule: DefaultRuleConfig,
    #[serde(default)]
    pub websocket: WebsocketConfig,
    #[serde(default)]
    pub cors: CorsConfig,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    pub assertion: Option<AssertionConfig>,
    #[serde(default)]
    pub tickets: TicketsConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    /// Where tickets and rate limits live: in process, or Redis shared by replicas.
    #[serde(default)]
    pub state: StateConfig,
    /// Who may revoke, the feed's secret, how long entries live (SPEC §6).
    #[serde(default)]
    pub revocation: RevocationConfig,
    /// OAuth protected resources (MCP servers) behind Traefik (SPEC §8, RFC 9728).
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
    /// OpenTelemetry traces over OTLP/HTTP; read at start only (a reload keeps the first).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Directory that relative paths are resolved against (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file this config was read from, re-read on SIGHUP.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:9091".into()
}

/// One `[[resources]]`: an OAuth protected resource (RFC 9728), e.g. an MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Its canonical URI: tokens for it must have it in `aud` (RFC 8707).
    pub resource: String,
    /// Requests under this path prefix belong to it; its metadata is at
    /// `/.well-known/oauth-protected-resource{path}`.
    pub path: String,
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// `[revocation]` (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// Roles whose bearer tokens may `POST /revocations`.
    pub admin_roles: Vec<String>,
    /// The bearer secret of `GET /revocations`; without it there is no feed (404).
    pub feed_secret_file: Option<PathBuf>,
    /// Lifetime of `sub` and `sid` entries (and of a `jti` entry given no `exp`): the longest
    /// token lifetime.
    pub retain: Dur,
    /// Most live entries; a revocation beyond it is refused (503), never silently dropped.
    pub max_entries: usize,
    /// Whether a `POST /revocations` caller may revoke another issuer's tokens (`iss`).
    pub cross_issuer: bool,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        RevocationConfig {
            admin_roles: vec!["admin".into(), "super_admin".into()],
            feed_secret_file: None,
            retain: Dur::secs(24 * 3600),
            max_entries: 100_000,
            cross_issuer: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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
}

/// An access-token profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// RFC 9068: `typ` `at+jwt`; `sub`, `client_id`, `iat`, `jti` required; `aud` checked.
    Rfc9068,
}

impl gatepass_service::Listen for Config {
    fn listen(&mut self) -> &mut String {
        &mut self.listen
    }

    fn telemetry(&self) -> Option<&TelemetryConfig> {
        Some(&self.telemetry)
    }
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub host: Option<String>,
    #[serde(default = "default_rule_path")]
    pub path: String,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub permissions: Vec<String>,
    #[serde(default)]
    pub anonymous: bool,
}

fn default_rule_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Authenticated,
    Deny,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DefaultRuleConfig {
    #[serde(default)]
    pub policy: Policy,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebsocketConfig {
    pub allowed_origins: Vec<String>,
    pub allow_missing_origin: bool,
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        WebsocketConfig {
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub rate: u32,
    pub per: Dur,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub per_user: Option<LimitConfig>,
    pub per_ip_failures: Option<LimitConfig>,
    pub upgrades_per_user: Option<LimitConfig>,
    /// Proxies in front of Traefik (CIDRs); the client is the rightmost
    /// `X-Forwarded-For` entry outside them.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// A class of percent-encoded (or raw) characters in a path that backends may read
/// differently from gatepass (SPEC §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodedClass {
    /// `%2F`
    Slash,
    /// `%5C` and a raw `\`
    Backslash,
    /// `%3B` and a raw `;`
    Semicolon,
    /// `%3F`
    QuestionMark,
    /// `%23`
    Hash,
    /// `%25`
    Percent,
}

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Classes re-allowed for backends that need them; all are refused by default.
    pub allow_encoded: Vec<EncodedClass>,
    /// Rule and `[[resources]]` paths match ignoring ASCII case (for backends that route
    /// case-insensitively); by default they match case-sensitively, as Traefik routes.
    pub case_insensitive: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    pub key_file: PathBuf,
    #[serde(default = "default_assertion_ttl")]
    pub ttl: Dur,
}

fn default_assertion_ttl() -> Dur {
    Dur::secs(60)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketsConfig {
    pub ttl: Dur,
    pub max_outstanding: u64,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig {
            ttl: Dur::secs(30),
            max_outstanding: 100_000,
        }
    }
}

/// The algorithms gatepass verifies; `none` is not among them.
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

impl gatepass_service::config::ConfigFile for Config {
    fn set_base_dir(&mut self, dir: PathBuf) {
        self.base_dir = dir;
    }

    /// Checks every section; each error is one line naming the key. Compiling rules and
    /// token sources (and loading keys) happens once, in `State::build`.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen()?;
        self.validate_issuers()?;
        self.validate_jwks()?;
        self.validate_claims()?;
        self.validate_tokens()?;
        self.validate_cache()?;
        self.validate_origins()?;
        self.validate_limits()?;
        self.validate_assertion_and_tickets()?;
        self.validate_revocation()?;
        self.validate_resources()?;
        self.state.validate()?;
        self.telemetry.validate()?;
        Ok(())
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = gatepass_service::config::load(path)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates TOML text; relative paths resolve against the current directory.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        gatepass_service::config::parse(text)
    }

    /// Resolves a configured path against the config file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        gatepass_service::config::resolve(&self.base_dir, p)
    }

    fn validate_resources(&self) -> Result<(), ConfigError> {
        let mut paths = std::collections::HashSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let key = |k: &str| format!("resources[{i}].{k}");
            let url = |u: &str| {
                (u.starts_with("https://") || u.starts_with("http://"))
                    && reqwest::Url::parse(u).is_ok()
            };
            if !url(&r.resource) {
                return Err(ConfigError::new(
                    key("resource"),
                    "must be the resource's absolute http(s) URI, like https://mcp.example.com/mcp",
                ));
            }
            if !r.path.starts_with('/') || r.path.len() < 2 || r.path.contains(['?', '#', '%']) {
                return Err(ConfigError::new(
                    key("path"),
                    "must be a path prefix like /mcp (not `/`, no query, no percent-encoding)",
                ));
            }
            if !paths.insert(r.path.trim_end_matches('/')) {
                return Err(ConfigError::new(
                    key("path"),
                    format!("`{}` is listed twice", r.path),
                ));
            }
            if r.authorization_servers.is_empty() || !r.authorization_servers.iter().all(|a| url(a))
            {
                return Err(ConfigError::new(
                    key("authorization_servers"),
                    "must list at least one issuer URL",
                ));
            }
            if r.scopes_supported
                .iter()
                .any(|s| s.is_empty() || s.contains(' '))
            {
                return Err(ConfigError::new(
                    key("scopes_supported"),
                    "scopes are non-empty and contain no space",
                ));
            }
        }
        Ok(())
    }

    fn validate_revocation(&self) -> Result<(), ConfigError> {
        let r = &self.revocation;
        if r.admin_roles.iter().any(|role| role.is_empty()) {
            return Err(ConfigError::new(
                "revocation.admin_roles",
                "roles must be non-empty",
            ));
        }
        if r.retain.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("revocation.retain", "must be at least 1s"));
        }
        if r.max_entries == 0 {
            return Err(ConfigError::new(
                "revocation.max_entries",
                "must be greater than 0",
            ));
        }
        for (i, iss) in self.issuers.iter().enumerate() {
            if iss
                .backchannel_logout_audience
                .as_ref()
                .is_some_and(|a| a.is_empty())
            {
                return Err(ConfigError::new(
                    format!("issuers[{i}].backchannel_logout_audience"),
                    "must be the client id logout tokens name in `aud`",
                ));
            }
        }
        Ok(())
    }

    fn validate_listen(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:9091", self.listen),
            ));
        }
        Ok(())
    }

    fn validate_issuers(&self) -> Result<(), ConfigError> {
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

    fn validate_jwks(&self) -> Result<(), ConfigError> {
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

    fn validate_claims(&self) -> Result<(), ConfigError> {
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

    fn validate_tokens(&self) -> Result<(), ConfigError> {
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

    fn validate_cache(&self) -> Result<(), ConfigError> {
        if self.cache.max_tokens == 0 {
            return Err(ConfigError::new(
                "cache.max_tokens",
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    fn validate_origins(&self) -> Result<(), ConfigError> {
        for (name, list) in [
            ("websocket.allowed_origins", &self.websocket.allowed_origins),
            ("cors.allowed_origins", &self.cors.allowed_origins),
        ] {
            for o in list {
                if o != "*" && !is_origin(o) {
                    return Err(ConfigError::new(
                        name,
                        format!("`{o}` is not an origin like https://app.example.com"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        for (name, limit) in [
            ("rate_limit.per_user", &self.rate_limit.per_user),
            (
                "rate_limit.per_ip_failures",
                &self.rate_limit.per_ip_failures,
            ),
            (
                "rate_limit.upgrades_per_user",
                &self.rate_limit.upgrades_per_user,
            ),
        ] {
            if let Some(l) = limit {
                if l.rate == 0 || l.burst == 0 || l.per.0.is_zero() {
                    return Err(ConfigError::new(
                        name,
                        "rate, burst and per must be greater than 0",
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_assertion_and_tickets(&self) -> Result<(), ConfigError> {
        if let Some(a) = &self.assertion {
            if a.ttl.0 < Duration::from_secs(1) {
                return Err(ConfigError::new("assertion.ttl", "must be at least 1s"));
            }
        }
        if self.tickets.ttl.0 < Duration::from_secs(1) {
            return Err(ConfigError::new("tickets.ttl", "must be at least 1s"));
        }
        if self.tickets.max_outstanding == 0 {
            return Err(ConfigError::new(
                "tickets.max_outstanding",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// True for `scheme://host[:port]` with nothing after.
pub fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[issuers]]
name = "local"
issuer = "https://auth.example.test"
algorithms = ["HS256"]
secret_env = "X"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9091");
        assert_eq!(c.tokens.websocket_protocol, "jwt-auth");
        assert_eq!(c.cache.max_tokens, 100_000);
        assert_eq!(c.issuers[0].leeway, Dur::secs(30));
        assert!(Config::parse(&format!("{MINIMAL}leeway = \"24h\"\n")).is_ok());
        assert_eq!(
            err("leeway = \"25h\"\n"),
            "config error: issuers[0].leeway: must be at most 24h"
        );
    }

    fn err(extra: &str) -> String {
        Config::parse(&format!("{MINIMAL}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            Config::parse(&MINIMAL.replace("[\"HS256\"]", "[\"none\"]"))
                .unwrap_err()
                .to_string(),
            "config error: issuers[0].algorithms: `none` is never allowed"
        );
        assert_eq!(
            err("[cache]\nttl = \"5 minutes\"\n"),
            "config error: ttl (line 8): `5 minutes` has an unknown unit (use ms, s, m, h or d)"
        );
        assert!(err("[cache]\nmax_tokenz = 5\n")
            .starts_with("config error: max_tokenz (line 8): unknown field `max_tokenz`"));
        assert_eq!(
            err("[websocket]\nallowed_origins = [\"example.com\"]\n"),
            "config error: websocket.allowed_origins: `example.com` is not an origin like https://app.example.com"
        );
        assert_eq!(
            Config::parse(&MINIMAL.replace("secret_env = \"X\"", "")).unwrap_err().to_string(),
            "config error: issuers[0]: exactly one of secret_file, secret_env, public_key_file, jwks_file, jwks_url (or discovery = true) is required"
        );
        assert_eq!(
            Config::parse(&MINIMAL.replace("example.test\"", "example.test\\u001f\""))
                .unwrap_err()
                .to_string(),
            "config error: issuers[0].issuer: must not contain control characters"
        );
        assert_eq!(
            err("[rate_limit]\nper_user = { rate = 0, per = \"1s\", burst = 1 }\n"),
            "config error: rate_limit.per_user: rate, burst and per must be greater than 0"
        );
        assert_eq!(
            err("[state]\non_unavailable = \"open\"\n"),
            "config error: state.on_unavailable: must be `local` or `deny`"
        );
        assert_eq!(
            err("[state]\nbackend = \"redis\"\nurl = \"localhost:6379\"\n"),
            "config error: state.url: must be a URL like redis://127.0.0.1:6379/0 (rediss:// for TLS)"
        );
        assert!(err("[state]\nkey_prefixx = \"a\"\n").contains("unknown field `key_prefixx`"));
        let c = Config::parse(&format!("{MINIMAL}[state]\nbackend = \"redis\"\n")).unwrap();
        assert!(c.state.is_redis());
        assert_eq!(c.state.on_unavailable, OnUnavailable::Local);
    }

    /// `[telemetry]`: off by default; bad values are one line naming the key.
    #[test]
    fn telemetry_table() {
        let c = Config::parse(MINIMAL).unwrap();
        assert!(!c.telemetry.enabled());
        let c = Config::parse(&format!(
            "{MINIMAL}[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsampling_ratio = 0.25\n"
        ))
        .unwrap();
        assert!(c.telemetry.enabled());
        assert_eq!(c.telemetry.sampling_ratio, 0.25);
        assert_eq!(c.telemetry.service_name, None);
        for (text, want) in [
            ("otlp_endpoint = \"localhost:4318\"", "config error: telemetry.otlp_endpoint: must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces"),
            ("otlp_endpoint = \"http://localhost:4318\"", "config error: telemetry.otlp_endpoint: must name the traces path, like http://127.0.0.1:4318/v1/traces"),
            ("sampling_ratio = 2.0", "config error: telemetry.sampling_ratio: must be between 0.0 and 1.0"),
            ("service_name = \"\"", "config error: telemetry.service_name: must be a non-empty name without control characters"),
        ] {
            let e = err(&format!("[telemetry]\n{text}\n"));
            assert_eq!(e, want, "{text}");
        }
        let e = err("[telemetry]\nsample_rate = 1.0\n");
        assert!(
            e.starts_with("config error: sample_rate (line 8): unknown field `sample_rate`")
                && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.toml");
        std::fs::write(&p, MINIMAL).unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.path(Path::new("k.pem")), dir.path().join("k.pem"));
        assert_eq!(c.path(Path::new("/abs/k.pem")), PathBuf::from("/abs/k.pem"));
    }
}
