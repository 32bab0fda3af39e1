//! `[signin]` (SPEC §9): browser sign-in at an OpenID Provider, read by `session/` and the
//! sign-in endpoints.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Dur};

/// Whose claims become the identity of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionIdentity {
    /// The access token's, verified exactly as a bearer token of the issuer.
    #[default]
    AccessToken,
    /// The ID token's.
    IdToken,
}

/// `[signin]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SigninConfig {
    /// The `name` of an `[[issuers]]` entry with `discovery = true`.
    pub issuer: String,
    pub client_id: String,
    /// client_secret_basic; none: a public client (PKCE alone).
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// `X-Forwarded-Host` values (port included) that may start a sign-in.
    pub hosts: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub identity: SessionIdentity,
    #[serde(default = "default_session_ttl")]
    pub session_ttl: Dur,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    #[serde(default = "default_refresh_before")]
    pub refresh_before: Dur,
    /// One base64 32-byte key a line: the first encrypts, all decrypt.
    pub key_file: PathBuf,
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    #[serde(default = "default_post_logout_redirect")]
    pub post_logout_redirect: String,
    /// RFC 8707 resource for the access token.
    pub resource: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}

fn default_prefix() -> String {
    "/_gatepass".into()
}

fn default_session_ttl() -> Dur {
    Dur::secs(12 * 3600)
}

fn default_idle_timeout() -> Dur {
    Dur::secs(3600)
}

fn default_refresh_before() -> Dur {
    Dur::secs(60)
}

fn default_cookie_name() -> String {
    "gatepass_session".into()
}

fn default_post_logout_redirect() -> String {
    "/".into()
}

/// A same-host path: starts with one `/`, not `//` or `/\` (which browsers read as another
/// host), no control characters.
pub fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.chars().any(|c| c.is_control())
}

/// A cookie name (RFC 6265 token characters).
fn is_cookie_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    pub(super) fn validate_signin(&self) -> Result<(), ConfigError> {
        let Some(s) = &self.signin else {
            if self.tokens.sources.iter().any(|x| x == "session") {
                return Err(ConfigError::new(
                    "tokens.sources",
                    "`session` needs a [signin] table",
                ));
            }
            return Ok(());
        };
        let key = |k: &str| format!("signin.{k}");
        match self.issuers.iter().find(|i| i.name == s.issuer) {
            None => {
                return Err(ConfigError::new(
                    key("issuer"),
                    format!("`{}` is not the name of an [[issuers]] entry", s.issuer),
                ))
            }
            Some(i) if !i.discovery => {
                return Err(ConfigError::new(
                    key("issuer"),
                    format!(
                        "issuer `{}` needs discovery = true (sign-in reads its endpoints from the discovery document)",
                        s.issuer
                    ),
                ))
            }
            Some(_) => {}
        }
        if !self.tokens.sources.iter().any(|x| x == "session") {
            return Err(ConfigError::new(
                "tokens.sources",
                "must list `session` when [signin] is set (its position is its precedence)",
            ));
        }
        if s.client_id.is_empty() || s.client_id.chars().any(|c| c.is_control()) {
            return Err(ConfigError::new(key("client_id"), "must be non-empty"));
        }
        if !s.scopes.iter().any(|x| x == "openid") {
            return Err(ConfigError::new(key("scopes"), "must include `openid`"));
        }
        if s.scopes
            .iter()
            .any(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        {
            return Err(ConfigError::new(
                key("scopes"),
                "scopes are non-empty and have no spaces or quotes",
            ));
        }
        if s.hosts.is_empty()
            || s.hosts.iter().any(|h| {
                h.is_empty()
                    || !h
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            })
        {
            return Err(ConfigError::new(
                key("hosts"),
                "must list the hosts a sign-in may start on, as in X-Forwarded-Host (like app.example.com or 127.0.0.1:8080)",
            ));
        }
        let p = &s.prefix;
        if !is_local_path(p) || p.len() < 2 || p.ends_with('/') || p.contains(['?', '#', '%']) {
            return Err(ConfigError::new(
                key("prefix"),
                "must be a path like /_gatepass (not `/`, no trailing `/`, no query)",
            ));
        }
        if !is_local_path(&s.post_logout_redirect) {
            return Err(ConfigError::new(
                key("post_logout_redirect"),
                "must be a path on the same host, like /",
            ));
        }
        if s.session_ttl.0 < Duration::from_secs(1) {
            return Err(ConfigError::new(key("session_ttl"), "must be at least 1s"));
        }
        if !s.idle_timeout.0.is_zero() && s.idle_timeout.0 < Duration::from_secs(1) {
            return Err(ConfigError::new(
                key("idle_timeout"),
                "must be 0s (never) or at least 1s",
            ));
        }
        if !is_cookie_name(&s.cookie_name) || s.cookie_name.len() > 64 {
            return Err(ConfigError::new(
                key("cookie_name"),
                "must be a cookie name (letters, digits, `_`, `-`...), at most 64 characters",
            ));
        }
        if let Some(r) = &s.resource {
            let ok = (r.starts_with("https://") || r.starts_with("http://"))
                && reqwest::Url::parse(r).is_ok_and(|u| u.fragment().is_none());
            if !ok {
                return Err(ConfigError::new(
                    key("resource"),
                    "must be an absolute http(s) URI without a fragment (RFC 8707)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUERS: &str = r#"
[[issuers]]
name = "local"
issuer = "https://auth.example.test"
algorithms = ["HS256"]
secret_env = "X"

[[issuers]]
name = "corp"
issuer = "https://idp.example.test"
discovery = true
algorithms = ["RS256"]
"#;

    fn err(tokens: &str, signin: &str) -> String {
        let text = format!("{ISSUERS}\n[tokens]\nsources = {tokens}\n\n[signin]\nclient_id = \"gatepass\"\nhosts = [\"app.test\"]\nkey_file = \"session.keys\"\n{signin}\n");
        match Config::parse(&text) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    /// Every `[signin]` mistake is one line naming the key.
    #[test]
    fn signin_errors_name_the_key() {
        let ok = r#"["session", "bearer"]"#;
        assert_eq!(err(ok, "issuer = \"corp\""), "");
        for (tokens, signin, want) in [
            (ok, "issuer = \"local\"", "config error: signin.issuer: issuer `local` needs discovery = true (sign-in reads its endpoints from the discovery document)"),
            (ok, "issuer = \"nope\"", "config error: signin.issuer: `nope` is not the name of an [[issuers]] entry"),
            (r#"["bearer"]"#, "issuer = \"corp\"", "config error: tokens.sources: must list `session` when [signin] is set (its position is its precedence)"),
            (ok, "issuer = \"corp\"\npost_logout_redirect = \"https://evil.test/\"", "config error: signin.post_logout_redirect: must be a path on the same host, like /"),
            (ok, "issuer = \"corp\"\npost_logout_redirect = \"//evil.test\"", "config error: signin.post_logout_redirect: must be a path on the same host, like /"),
            (ok, "issuer = \"corp\"\nprefix = \"/\"", "config error: signin.prefix: must be a path like /_gatepass (not `/`, no trailing `/`, no query)"),
            (ok, "issuer = \"corp\"\nscopes = [\"profile\"]", "config error: signin.scopes: must include `openid`"),
            (ok, "issuer = \"corp\"\ncookie_name = \"a b\"", "config error: signin.cookie_name: must be a cookie name (letters, digits, `_`, `-`...), at most 64 characters"),
            (ok, "issuer = \"corp\"\nidle_timeout = \"500ms\"", "config error: signin.idle_timeout: must be 0s (never) or at least 1s"),
            (ok, "issuer = \"corp\"\nresource = \"app\"", "config error: signin.resource: must be an absolute http(s) URI without a fragment (RFC 8707)"),
        ] {
            assert_eq!(err(tokens, signin), want, "{signin}");
        }
        // `session` without [signin].
        let e =
            Config::parse(&format!("{ISSUERS}\n[tokens]\nsources = [\"session\"]\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config error: tokens.sources: `session` needs a [signin] table"
        );
    }
}
