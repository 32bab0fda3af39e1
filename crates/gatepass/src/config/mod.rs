//! The TOML configuration (SPEC §3.2): one `Config` type, parsed, defaulted and validated at
//! load (every error one line naming the key). Each concept's sections live in the file named
//! after the folder that reads them (`verify.rs`, `policy.rs`, `revocation.rs`, `server.rs`);
//! this file holds the whole and the order of checks.
//!
//! Imports: nothing from gatepass (every folder reads its sections from here, so this is the
//! bottom); `gatepass-service` for the shared tables (`[state]`, `[telemetry]`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use gatepass_service::config::{ConfigError, Dur};
pub use gatepass_service::state::{Backend, OnUnavailable, StateConfig};
pub use gatepass_service::telemetry::TelemetryConfig;

mod policy;
mod revocation;
mod server;
mod session;
mod verify;

pub use policy::*;
pub use revocation::*;
pub use server::*;
pub use session::*;
pub use verify::*;

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
    /// How DPoP proofs are checked (SPEC §10).
    #[serde(default)]
    pub dpop: DpopConfig,
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
    /// Browser sign-in at an OpenID Provider, with server-side sessions (SPEC §9).
    pub signin: Option<SigninConfig>,
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

impl gatepass_service::Listen for Config {
    fn listen(&mut self) -> &mut String {
        &mut self.listen
    }

    fn telemetry(&self) -> Option<&TelemetryConfig> {
        Some(&self.telemetry)
    }
}

impl gatepass_service::config::ConfigFile for Config {
    fn set_base_dir(&mut self, dir: PathBuf) {
        self.base_dir = dir;
    }

    /// Checks every section; each error is one line naming the key. Compiling rules and
    /// token sources (and loading keys) happens once, in `State::build`.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen()?;
        self.validate_issuers()?;
        self.validate_dpop()?;
        self.validate_jwks()?;
        self.validate_claims()?;
        self.validate_tokens()?;
        self.validate_cache()?;
        self.validate_origins()?;
        self.validate_limits()?;
        self.validate_assertion_and_tickets()?;
        self.validate_revocation()?;
        self.validate_resources()?;
        self.validate_signin()?;
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

    /// A secret file's bytes with trailing whitespace trimmed (SPEC §3.8), at least `min`
    /// bytes; errors name `key` and the path, never the content.
    pub fn read_secret(&self, key: &str, file: &Path, min: usize) -> Result<Vec<u8>, ConfigError> {
        let path = self.path(file);
        let mut secret = std::fs::read(&path).map_err(|e| {
            ConfigError::new(key, format!("cannot read {}: {}", path.display(), e.kind()))
        })?;
        let len = secret.trim_ascii_end().len();
        secret.truncate(len);
        if secret.is_empty() || secret.len() < min {
            let what = if min > 1 {
                format!("must hold a secret of at least {min} bytes")
            } else {
                "is empty".into()
            };
            return Err(ConfigError::new(key, what));
        }
        Ok(secret)
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
            "config error: state.url: must be a URL like redis://127.0.0.1:6379/0, redis+sentinel://h1:26379,h2:26379/mymaster/0 or redis+cluster://h1:6379,h2:6379 (rediss… for TLS)"
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
