//! The non-serving subcommands (`mint`, `keygen`, `check-config`) and tracing setup, kept in
//! the library so `main` stays thin and tests can call them.

use std::path::Path;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};

use crate::config::{Config, ConfigError, Dur};
use crate::metrics::Metrics;
use crate::state::State;
use crate::verify::keys;

/// `gatepass mint`'s flags: the config whose issuer signs, and the token.
#[derive(Debug, Clone, clap::Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub config: gatepass_service::ConfigArg,
    #[command(flatten)]
    pub token: MintRequest,
}

/// `gatepass keygen`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the PKCS#8 PEM (never overwritten).
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// What `gatepass mint` puts in a token (its command-line flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MintRequest {
    /// The `[[issuers]]` name whose key signs it.
    #[arg(long)]
    pub issuer: String,
    #[arg(long)]
    pub sub: String,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    /// Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub permissions: Vec<String>,
    /// Lifetime (default 1h).
    #[arg(long, value_parser = Dur::parse)]
    pub ttl: Option<Dur>,
    #[arg(long)]
    pub aud: Option<String>,
}

/// Signs a development token with the issuer's secret or `signing_key_file`.
pub fn mint(config: &Config, req: &MintRequest) -> Result<String, ConfigError> {
    let (i, issuer) = config
        .issuers
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == req.issuer)
        .ok_or_else(|| ConfigError::new("--issuer", format!("no issuer named `{}`", req.issuer)))?;
    let key_name = format!("issuers[{i}].signing_key_file");
    let secret = keys::hmac_secret(config, issuer)
        .map_err(|e| ConfigError::new(format!("issuers[{i}]"), e.to_string()))?;
    let pem = match (&secret, &issuer.signing_key_file) {
        (Some(_), _) => None,
        (None, Some(p)) => {
            let p = config.path(p);
            Some(std::fs::read(&p).map_err(|e| {
                ConfigError::new(
                    &key_name,
                    format!("cannot read {}: {}", p.display(), e.kind()),
                )
            })?)
        }
        (None, None) => {
            return Err(ConfigError::new(
                &key_name,
                "required to mint tokens for an issuer without a shared secret",
            ))
        }
    };
    let now = jsonwebtoken::get_current_timestamp();
    let ttl = req.ttl.unwrap_or(Dur::secs(3600)).0.as_secs();
    let mut claims = serde_json::json!({
        "iss": issuer.issuer,
        "sub": req.sub,
        "iat": now,
        "exp": now + ttl,
        "preferred_username": req.username.clone().unwrap_or_else(|| req.sub.clone()),
        "permissions": req.permissions,
    });
    if let Some(role) = &req.role {
        claims["role"] = role.clone().into();
    }
    if let Some(aud) = req
        .aud
        .clone()
        .or_else(|| issuer.audiences.as_ref().and_then(|a| a.first().cloned()))
    {
        claims["aud"] = aud.into();
    }
    for alg in issuer
        .algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
    {
        let key = match (alg.family(), &secret, &pem) {
            (AlgorithmFamily::Hmac, Some(s), _) => EncodingKey::from_secret(s).ok(),
            (AlgorithmFamily::Rsa, None, Some(p)) => EncodingKey::from_rsa_pem(p).ok(),
            (AlgorithmFamily::Ec, None, Some(p)) => EncodingKey::from_ec_pem(p).ok(),
            (AlgorithmFamily::Ed, None, Some(p)) => EncodingKey::from_ed_pem(p).ok(),
            _ => None,
        };
        // A P-384 key can't sign ES256 and so on: try the next allowed algorithm.
        if let Some(token) =
            key.and_then(|k| jsonwebtoken::encode(&Header::new(alg), &claims, &k).ok())
        {
            return Ok(token);
        }
    }
    Err(ConfigError::new(
        key_name,
        "no allowed algorithm can sign with this key",
    ))
}

/// Writes a new Ed25519 PKCS#8 PEM with mode 0600; refuses to overwrite.
pub fn keygen(out: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pem = gatepass_identity::generate_ed25519_pkcs8_pem()
        .map_err(|e| ConfigError::new("keygen", e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| {
            ConfigError::new(
                "--out",
                format!("cannot create {}: {}", out.display(), e.kind()),
            )
        })?;
    f.write_all(pem.as_bytes()).map_err(|e| {
        ConfigError::new(
            "--out",
            format!("cannot write {}: {}", out.display(), e.kind()),
        )
    })
}

/// Loads every key file the config names and returns the effective config as TOML.
pub fn check_config(config: &Config) -> Result<String, ConfigError> {
    let metrics = Metrics::new();
    State::build(config.clone(), &metrics)?;
    toml::to_string(config).map_err(|e| ConfigError::new("config", e.to_string()))
}

pub use gatepass_service::LogFormat;
