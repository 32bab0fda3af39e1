//! mcp-status: the WebSocket service behind gatepass. It trusts only gatepass's identity
//! headers (checked against the assertion when configured) and broadcasts MCP health.

pub mod app;
pub mod auth;
pub mod broadcast;
pub mod config;
pub mod demo;
pub mod health;
pub mod leases;
pub mod mcp;
pub mod mcp_log;
pub mod metrics;
pub mod revocation;
pub mod server;
pub mod ws;

pub use app::App;
pub use config::Config;
pub use server::{run, serve};

/// `mcp-status check-config`: validates the config and loads the key file it names (as
/// `serve` would, without binding or fetching anything), and returns the effective config
/// (defaults filled in) as TOML, with URL credentials and query strings redacted.
pub fn check_config(config: &Config) -> Result<String, config::ConfigError> {
    auth::Auth::new(config)?;
    revocation::feed(config)?;
    let mut c = config.clone();
    for u in [&mut c.auth.assertion_jwks_url, &mut c.revocation.feed_url]
        .into_iter()
        .flatten()
    {
        *u = redact_url(u);
    }
    for m in &mut c.mcps {
        m.health_url = redact_url(&m.health_url);
    }
    toml::to_string(&c).map_err(|e| config::ConfigError::new("config", e.to_string()))
}

/// `https://user:pw@host/p?token=x` → `https://<redacted>@host/p?<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("<redacted>@{host}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, q)) => {
            let fragment = q.find('#').map_or("", |i| &q[i..]);
            format!("{path}?<redacted>{fragment}")
        }
        None => tail.to_string(),
    };
    let sep = if url.contains("://") { "://" } else { "" };
    format!("{scheme}{sep}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_url_secrets() {
        use super::redact_url;
        assert_eq!(
            redact_url("https://u:pw@h:1/p?token=x#f"),
            "https://<redacted>@h:1/p?<redacted>#f"
        );
        assert_eq!(redact_url("http://h/health"), "http://h/health");
        assert_eq!(redact_url("http://h?k=v"), "http://h?<redacted>");
    }

    #[test]
    fn check_config_prints_state_without_credentials() {
        let c = crate::Config::parse(
            "[state]\nbackend = \"redis\"\nurl = \"redis://user:s3cret@redis.internal:6379/0\"\n",
        )
        .unwrap();
        let out = super::check_config(&c).unwrap();
        assert!(!out.contains("s3cret"), "{out}");
        assert!(out.contains("[state]"), "{out}");
        assert!(out.contains("backend = \"redis\""), "{out}");
        assert!(
            out.contains("url = \"redis://<redacted>@redis.internal:6379/0\""),
            "{out}"
        );
    }
}
