//! The sections `policy/` reads: `[[rules]]`, `[default_rule]`, `[paths]`, `[websocket]`,
//! `[cors]`, `[rate_limit]`, `[[resources]]`.

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur};

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
    /// Browser origins allowed to call it (an `Origin` not listed is refused); empty: any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
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
    /// MCP operations this rule matches, by the `Mcp-Method` header (`tools/call`).
    pub mcp_methods: Option<Vec<String>>,
    /// MCP names this rule matches, by the `Mcp-Name` header (a tool, a resource URI).
    pub mcp_names: Option<Vec<String>>,
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

impl Config {
    pub(super) fn validate_resources(&self) -> Result<(), ConfigError> {
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
            // MCP authorization 2026-07-28: a resource server never advertises refresh
            // tokens' scope; clients ask the authorization server for it.
            if r.scopes_supported.iter().any(|s| s == "offline_access") {
                return Err(ConfigError::new(
                    key("scopes_supported"),
                    "must not list offline_access (a scope of the authorization server, not of the resource)",
                ));
            }
            if let Some(o) = r.allowed_origins.iter().find(|o| !is_origin(o)) {
                return Err(ConfigError::new(
                    key("allowed_origins"),
                    format!("`{o}` is not an origin like https://app.example.com"),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn validate_origins(&self) -> Result<(), ConfigError> {
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

    pub(super) fn validate_limits(&self) -> Result<(), ConfigError> {
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
}
