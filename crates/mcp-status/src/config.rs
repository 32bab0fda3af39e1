//! mcp-status configuration (SPEC §4.1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use gatepass_service::config::{ConfigError, Dur};
pub use gatepass_service::state::{Backend, OnUnavailable, StateConfig};
pub use gatepass_service::telemetry::TelemetryConfig;

/// Every section is optional; what is left out takes its default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on; `serve --listen` overrides it.
    pub listen: String,
    /// Who may connect and how the identity headers are checked.
    pub auth: AuthConfig,
    /// Connection, message and queue limits.
    pub limits: LimitsConfig,
    /// The MCP servers whose health is polled and broadcast.
    pub mcps: Vec<McpConfig>,
    /// Shared state, the same table as gatepass's: with `backend = "redis"`,
    /// `limits.max_connections_per_user` counts the user's sockets on every replica.
    #[serde(default)]
    pub state: StateConfig,
    /// gatepass's revocation feed: sockets opened with a revoked token are closed.
    pub revocation: RevocationConfig,
    /// OpenTelemetry traces over OTLP/HTTP, the same table as gatepass's.
    pub telemetry: TelemetryConfig,
    /// Directory relative paths resolve against.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Loopback, the port the README's stack gives mcp-status.
            listen: "127.0.0.1:9092".into(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            mcps: Vec::new(),
            state: StateConfig::default(),
            revocation: RevocationConfig::default(),
            telemetry: TelemetryConfig::default(),
            base_dir: PathBuf::new(),
        }
    }
}

/// `[revocation]`: where gatepass's `GET /revocations` is and its bearer secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationConfig {
    /// `https://gatepass:9091/revocations` (or through Traefik); none: no feed followed.
    pub feed_url: Option<String>,
    /// The feed secret (gatepass's `[revocation] feed_secret_file`).
    pub feed_secret_file: Option<PathBuf>,
    /// Root CA for an https feed_url with a private CA (else the system roots).
    pub ca_file: Option<PathBuf>,
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

impl gatepass_service::Listen for Config {
    fn listen(&mut self) -> &mut String {
        &mut self.listen
    }

    fn telemetry(&self) -> Option<&TelemetryConfig> {
        Some(&self.telemetry)
    }
}

/// `X-User-Role` values; any of them matches.
pub type Roles = Vec<String>;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Roles (`X-User-Role`) allowed in at all.
    pub allowed_roles: Roles,
    /// Roles that see reasons and messages; the others get the redacted view.
    pub full_view_roles: Roles,
    /// Roles that may enable and disable MCPs.
    pub admin_roles: Roles,
    /// gatepass's JWKS, to check `X-User-Assertion` (not with `assertion_public_key_file`).
    pub assertion_jwks_url: Option<String>,
    /// An Ed25519 public key PEM, to check `X-User-Assertion` (not with the JWKS URL).
    pub assertion_public_key_file: Option<PathBuf>,
    /// The audience an assertion must name; the request's Host when unset.
    pub assertion_audience: Option<String>,
    /// Origins allowed to open the WebSocket (`*` for any); a request without Origin passes.
    pub allowed_origins: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allowed_roles: strings(&["admin", "developer", "dba", "super_admin"]),
            full_view_roles: strings(&["admin", "super_admin", "dba"]),
            admin_roles: strings(&["admin", "super_admin"]),
            assertion_jwks_url: None,
            assertion_public_key_file: None,
            assertion_audience: None,
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub messages_per_minute: u32,
    pub idle_timeout: Dur,
    pub heartbeat_interval: Dur,
    pub send_queue: usize,
    /// How often `system_metrics` goes out even without a change.
    pub metrics_interval: Dur,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1000,
            max_connections_per_user: 5,
            max_message_bytes: 1024 * 1024,
            messages_per_second: 10,
            messages_per_minute: 100,
            idle_timeout: Dur::secs(300),
            heartbeat_interval: Dur::secs(30),
            send_queue: 256,
            metrics_interval: Dur::secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    pub name: String,
    pub health_url: String,
    #[serde(default = "d10s")]
    pub interval: Dur,
    #[serde(default = "d2s")]
    pub timeout: Dur,
    #[serde(default = "three")]
    pub failure_threshold: u32,
    #[serde(default = "d30s")]
    pub recovery_timeout: Dur,
    #[serde(default = "three")]
    pub disable_after_cycles: u32,
}

fn d10s() -> Dur {
    Dur::secs(10)
}
fn d2s() -> Dur {
    Dur::secs(2)
}
fn d30s() -> Dur {
    Dur::secs(30)
}
fn three() -> u32 {
    3
}

impl gatepass_service::config::ConfigFile for Config {
    fn set_base_dir(&mut self, dir: PathBuf) {
        self.base_dir = dir;
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "listen",
                format!("`{}` is not an address like 127.0.0.1:9092", self.listen),
            ));
        }
        let a = &self.auth;
        if a.allowed_roles.is_empty() {
            return Err(ConfigError::new(
                "auth.allowed_roles",
                "must list at least one role",
            ));
        }
        if a.assertion_jwks_url.is_some() && a.assertion_public_key_file.is_some() {
            return Err(ConfigError::new(
                "auth",
                "set assertion_jwks_url or assertion_public_key_file, not both",
            ));
        }
        if let Some(u) = &a.assertion_jwks_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(ConfigError::new(
                    "auth.assertion_jwks_url",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        let l = &self.limits;
        for (k, v) in [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_connections_per_user",
                l.max_connections_per_user,
            ),
            ("limits.max_message_bytes", l.max_message_bytes),
            ("limits.send_queue", l.send_queue),
            ("limits.messages_per_second", l.messages_per_second as usize),
            ("limits.messages_per_minute", l.messages_per_minute as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be greater than 0"));
            }
        }
        for (k, v) in [
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.heartbeat_interval", l.heartbeat_interval),
            ("limits.metrics_interval", l.metrics_interval),
        ] {
            if v.0 < Duration::from_millis(10) {
                return Err(ConfigError::new(k, "must be at least 10ms"));
            }
        }
        self.state.validate()?;
        self.telemetry.validate()?;
        let r = &self.revocation;
        match (&r.feed_url, &r.feed_secret_file) {
            (Some(u), Some(_)) if u.starts_with("http://") || u.starts_with("https://") => {}
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "revocation.feed_url",
                    "must be an http:// or https:// URL",
                ))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "revocation.feed_secret_file",
                    "is required with feed_url",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "revocation.feed_url",
                    "is required with feed_secret_file",
                ))
            }
            (None, None) if r.ca_file.is_some() => {
                return Err(ConfigError::new(
                    "revocation.ca_file",
                    "only applies with feed_url",
                ))
            }
            (None, None) => {}
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.mcps.iter().enumerate() {
            let key = |k: &str| format!("mcps[{i}].{k}");
            if m.name.is_empty()
                || !m
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            {
                return Err(ConfigError::new(
                    key("name"),
                    "must be letters, digits, `_`, `-` or `.`",
                ));
            }
            if !names.insert(m.name.as_str()) {
                return Err(ConfigError::new(
                    key("name"),
                    format!("`{}` is listed twice", m.name),
                ));
            }
            if !(m.health_url.starts_with("http://") || m.health_url.starts_with("https://")) {
                return Err(ConfigError::new(
                    key("health_url"),
                    "must be an http:// or https:// URL",
                ));
            }
            if m.failure_threshold == 0 || m.disable_after_cycles == 0 {
                return Err(ConfigError::new(
                    key("failure_threshold"),
                    "failure_threshold and disable_after_cycles must be greater than 0",
                ));
            }
            for (k, v) in [
                ("interval", m.interval),
                ("timeout", m.timeout),
                ("recovery_timeout", m.recovery_timeout),
            ] {
                if v.0 < Duration::from_millis(10) {
                    return Err(ConfigError::new(key(k), "must be at least 10ms"));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        gatepass_service::config::load(path)
    }

    pub fn path(&self, p: &Path) -> PathBuf {
        gatepass_service::config::resolve(&self.base_dir, p)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        gatepass_service::config::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092");
        assert_eq!(c.limits.send_queue, 256);
        assert_eq!(c.auth.admin_roles, vec!["admin", "super_admin"]);
        let e = Config::parse("[limits]\nsend_queue = 0\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "config error: limits.send_queue: must be greater than 0");
        let e = Config::parse("[[mcps]]\nname = \"a b\"\nhealth_url = \"http://x\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "config error: mcps[0].name: must be letters, digits, `_`, `-` or `.`"
        );
        let e = Config::parse("[auth]\nallowed_rolez = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config error: allowed_rolez (line 2): unknown field `allowed_rolez`"),
            "{e}"
        );
    }

    /// `[state]` is gatepass's table: bad values are one line naming the key.
    #[test]
    fn state_errors_name_the_key() {
        let c = Config::parse("[state]\nbackend = \"redis\"\non_unavailable = \"deny\"\n").unwrap();
        assert!(c.state.is_redis());
        assert_eq!(c.state.on_unavailable, OnUnavailable::Deny);
        assert!(!Config::parse("").unwrap().state.is_redis());
        let err = |t: &str| {
            Config::parse(&format!("[state]\n{t}\n"))
                .unwrap_err()
                .to_string()
        };
        for (text, want) in [
            ("backend = \"etcd\"", "config error: state.backend: must be `memory` or `redis`"),
            ("on_unavailable = \"open\"", "config error: state.on_unavailable: must be `local` or `deny`"),
            ("url = \"localhost:6379\"", "config error: state.url: must be a URL like redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/mymaster/0 or redis+cluster://h1:6379,h2:6379 (rediss… for TLS)"),
            ("key_prefix = \"\"", "config error: state.key_prefix: must be non-empty visible ASCII, like `gatepass:`"),
            ("command_timeout = \"0ms\"", "config error: state.command_timeout: must be between 1ms and 10s"),
        ] {
            let e = err(text);
            assert_eq!(e, want, "{text}");
            assert!(!e.contains('\n'));
        }
        let e = err("key_prefixx = \"a\"");
        assert!(
            e.contains("unknown field `key_prefixx`") && !e.contains('\n'),
            "{e}"
        );
        assert!(!err("url = \"http://u:s3cret@h/0\"").contains("s3cret"));
    }

    /// `[telemetry]` is gatepass's table: off by default, bad values name the key.
    #[test]
    fn telemetry_errors_name_the_key() {
        assert!(!Config::parse("").unwrap().telemetry.enabled());
        let c = Config::parse(
            "[telemetry]\notlp_endpoint = \"https://collector:4318/v1/traces\"\nservice_name = \"status-eu\"\n",
        )
        .unwrap();
        assert!(c.telemetry.enabled());
        assert_eq!(c.telemetry.service_name.as_deref(), Some("status-eu"));
        let err = |t: &str| {
            Config::parse(&format!("[telemetry]\n{t}\n"))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("sampling_ratio = -1.0"),
            "config error: telemetry.sampling_ratio: must be between 0.0 and 1.0"
        );
        assert_eq!(
            err("otlp_endpoint = \"udp://c:4318/v1/traces\""),
            "config error: telemetry.otlp_endpoint: must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces"
        );
        let e = err("otlp_endpointt = \"x\"");
        assert!(
            e.contains("unknown field `otlp_endpointt`") && !e.contains('\n'),
            "{e}"
        );
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mcp-status.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.mcps.len(), 1);
        assert_eq!(c.limits.metrics_interval, Dur::secs(30));
    }
}
