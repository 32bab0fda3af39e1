//! Verification keys: one `Validation` per key, built from the issuer's allow-list
//! intersected with what the key type can verify (no HS/RS confusion by construction).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_lc_rs::hmac;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{Config, IssuerConfig};

/// Why key material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("environment variable {0} is not set or empty")]
    Env(String),
    #[error("{0} is empty")]
    Empty(String),
    #[error("{0} is not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM form")]
    Pem(String),
    #[error("no algorithm in `algorithms` can be verified with the key in {0}")]
    NoAlgorithm(String),
    #[error("{0}: not a JWKS document ({1})")]
    Jwks(String, String),
    #[error("cannot use {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
}

impl KeyError {
    /// The issuer key that the error is about, for a config error that names it.
    pub fn config_key(&self, issuer: &IssuerConfig) -> &'static str {
        match self {
            KeyError::CaFile { .. } => "ca_file",
            _ => issuer.key_source(),
        }
    }
}

/// What a key can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Hmac,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    pub fn supports(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Hmac, HS256 | HS384 | HS512)
                | (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::EcP256, ES256)
                | (KeyKind::EcP384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// A key with its own validation rules.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub validation: Validation,
    /// A shared secret, keyed once: `jsonwebtoken` keys an HMAC anew for every token.
    pub hmac: Option<HmacKeys>,
}

/// One HMAC secret keyed for each HS algorithm.
#[derive(Clone)]
pub struct HmacKeys {
    hs256: hmac::Key,
    hs384: hmac::Key,
    hs512: hmac::Key,
}

impl HmacKeys {
    pub fn new(secret: &[u8]) -> HmacKeys {
        HmacKeys {
            hs256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            hs384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            hs512: hmac::Key::new(hmac::HMAC_SHA512, secret),
        }
    }

    /// The key for `alg`, when it is an HMAC algorithm.
    pub fn get(&self, alg: Algorithm) -> Option<&hmac::Key> {
        match alg {
            Algorithm::HS256 => Some(&self.hs256),
            Algorithm::HS384 => Some(&self.hs384),
            Algorithm::HS512 => Some(&self.hs512),
            _ => None,
        }
    }
}

impl VerifyKey {
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.validation.algorithms.contains(&alg)
    }
}

/// The keys of one issuer.
#[derive(Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Keys that may verify a token with this `kid` and `alg`. Keys without a `kid` (static
    /// sources) match any `kid`.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| {
            k.supports(alg)
                && match (&k.kid, kid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parsed issuer algorithm allow-list.
pub fn algorithms(issuer: &IssuerConfig) -> Vec<Algorithm> {
    issuer
        .algorithms
        .iter()
        .filter_map(|a| Algorithm::from_str(a).ok())
        .collect()
}

/// Builds the validation for a key of `kind` (None when no allowed algorithm fits).
pub fn validation_for(
    issuer: &IssuerConfig,
    kind: KeyKind,
    only: Option<Algorithm>,
) -> Option<Validation> {
    let algs: Vec<Algorithm> = algorithms(issuer)
        .into_iter()
        .filter(|a| kind.supports(*a) && only.is_none_or(|o| o == *a))
        .collect();
    let first = *algs.first()?;
    let mut v = Validation::new(first);
    v.algorithms = algs;
    v.leeway = issuer.leeway.0.as_secs();
    v.validate_nbf = true;
    v.set_issuer(&[&issuer.issuer]);
    match &issuer.audiences {
        Some(aud) => {
            v.set_audience(aud);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
        }
        None => {
            v.validate_aud = false;
            v.set_required_spec_claims(&["exp", "iss"]);
        }
    }
    Some(v)
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::Read {
        path: path.to_path_buf(),
        reason: e.kind().to_string(),
    })
}

fn trim_trailing_ws(mut b: Vec<u8>) -> Vec<u8> {
    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
        b.pop();
    }
    b
}

/// The HMAC secret of an issuer (`secret_file` trimmed, or `secret_env`).
pub fn hmac_secret(config: &Config, issuer: &IssuerConfig) -> Result<Option<Vec<u8>>, KeyError> {
    if let Some(p) = &issuer.secret_file {
        let p = config.path(p);
        let s = trim_trailing_ws(read(&p)?);
        if s.is_empty() {
            return Err(KeyError::Empty(p.display().to_string()));
        }
        return Ok(Some(s));
    }
    if let Some(var) = &issuer.secret_env {
        use std::os::unix::ffi::OsStringExt;
        let v = std::env::var_os(var)
            .map(|v| v.into_vec())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| KeyError::Env(var.clone()))?;
        return Ok(Some(v));
    }
    Ok(None)
}

/// Parses a PEM public key of any supported type.
pub fn public_key_from_pem(pem: &[u8]) -> Option<(KeyKind, DecodingKey)> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Some((KeyKind::Rsa, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        // Uncompressed point: 65 bytes on P-256, 97 on P-384.
        let kind = match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => KeyKind::EcP256,
            Ok(97) => KeyKind::EcP384,
            _ => return None,
        };
        return Some((kind, k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Some((KeyKind::Ed25519, k));
    }
    None
}

/// Loads a non-JWKS issuer's single key.
pub fn load_static(config: &Config, issuer: &IssuerConfig) -> Result<Option<KeySet>, KeyError> {
    let mut hmac = None;
    let (kind, key, label) = if let Some(secret) = hmac_secret(config, issuer)? {
        let label = issuer
            .secret_file
            .as_ref()
            .map(|p| config.path(p).display().to_string())
            .or_else(|| issuer.secret_env.clone())
            .unwrap_or_default();
        let key = DecodingKey::from_secret(&secret).map_err(|_| KeyError::Empty(label.clone()))?;
        hmac = Some(HmacKeys::new(&secret));
        (KeyKind::Hmac, key, label)
    } else if let Some(p) = &issuer.public_key_file {
        let p = config.path(p);
        let label = p.display().to_string();
        let (kind, key) =
            public_key_from_pem(&read(&p)?).ok_or_else(|| KeyError::Pem(label.clone()))?;
        (kind, key, label)
    } else {
        return Ok(None);
    };
    let validation = validation_for(issuer, kind, None).ok_or(KeyError::NoAlgorithm(label))?;
    Ok(Some(KeySet {
        keys: vec![VerifyKey {
            kid: None,
            key,
            validation,
            hmac,
        }],
    }))
}

/// Parses a JWKS document, keeping only signature keys usable with the issuer's algorithms:
/// `use` other than `sig`, `kty: oct`, and algorithms outside the allow-list are skipped.
pub fn parse_jwks(issuer: &IssuerConfig, body: &[u8], label: &str) -> Result<KeySet, KeyError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(body)
        .map_err(|e| KeyError::Jwks(label.to_string(), e.to_string()))?;
    let mut set = KeySet::default();
    for k in &doc.keys {
        if let Some(vk) = jwk_to_key(issuer, k) {
            set.keys.push(vk);
        }
    }
    Ok(set)
}

fn jwk_to_key(issuer: &IssuerConfig, k: &serde_json::Value) -> Option<VerifyKey> {
    let s = |name: &str| k.get(name).and_then(serde_json::Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (kind, key) = match s("kty")? {
        "RSA" => (
            KeyKind::Rsa,
            DecodingKey::from_rsa_components(s("n")?, s("e")?).ok()?,
        ),
        "EC" => {
            let kind = match s("crv")? {
                "P-256" => KeyKind::EcP256,
                "P-384" => KeyKind::EcP384,
                _ => return None,
            };
            (
                kind,
                DecodingKey::from_ec_components(s("x")?, s("y")?).ok()?,
            )
        }
        "OKP" if s("crv")? == "Ed25519" => (
            KeyKind::Ed25519,
            DecodingKey::from_ed_components(s("x")?).ok()?,
        ),
        // `oct` (shared secrets) and anything else never come from a JWKS.
        _ => return None,
    };
    let only = match s("alg") {
        Some(a) => Some(Algorithm::from_str(a).ok()?),
        None => None,
    };
    let validation = validation_for(issuer, kind, only)?;
    Some(VerifyKey {
        kid: s("kid").map(str::to_owned),
        key,
        validation,
        hmac: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn issuer(algs: &[&str]) -> IssuerConfig {
        IssuerConfig {
            name: "t".into(),
            issuer: "https://i".into(),
            audiences: None,
            algorithms: algs.iter().map(|s| s.to_string()).collect(),
            secret_file: None,
            secret_env: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            ca_file: None,
            leeway: Dur::secs(0),
            signing_key_file: None,
            backchannel_logout_audience: None,
            discovery: false,
            profile: None,
            max_token_lifetime: None,
            introspection_url: None,
            introspection_client_id: None,
            introspection_secret_file: None,
            dpop: Default::default(),
            dpop_algorithms: None,
            mtls_bound: Default::default(),
        }
    }

    #[test]
    fn validation_never_mixes_families() {
        let i = issuer(&["HS256", "RS256", "ES256"]);
        let v = validation_for(&i, KeyKind::Rsa, None).unwrap();
        assert_eq!(v.algorithms, vec![Algorithm::RS256]);
        assert!(validation_for(&i, KeyKind::Ed25519, None).is_none());
        assert!(validation_for(&i, KeyKind::EcP384, None).is_none());
        assert!(validation_for(&i, KeyKind::Rsa, Some(Algorithm::HS256)).is_none());
    }

    #[test]
    fn jwks_filtering() {
        let i = issuer(&["RS256", "EdDSA"]);
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "es", "alg": "ES256"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "good"},
            {"kty": "weird", "kid": "w"}
        ]});
        let set = parse_jwks(&i, doc.to_string().as_bytes(), "t").unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["good"]);
        assert!(parse_jwks(&i, b"{}", "t").is_err());
    }
}
