//! The identity assertion: a compact JWS (EdDSA over Ed25519) that gatepass attaches to every
//! allow as `X-User-Assertion`, binding the identity headers to the host they were issued for.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Identity;

/// Claims of the identity assertion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// The user id (`X-User-Id`).
    pub sub: String,
    /// `X-User-Username`.
    pub username: String,
    /// `X-User-Role`.
    pub role: String,
    /// `X-User-Permissions`, as a list.
    pub permissions: Vec<String>,
    /// Expiry: never later than the user's token nor than now + the assertion ttl.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// `X-Forwarded-Host` exactly as gatepass received it (port included).
    pub aud: String,
    /// Unique id of this assertion.
    pub jti: String,
    /// The user's token `exp` (= `X-User-Expires`), so a forged later expiry header is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exp: Option<u64>,
    /// The user's token's session id (`sid`), so a downstream can match `sid` revocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's token's `jti` (not this assertion's own [`jti`](Self::jti)), so a
    /// downstream can match `jti` revocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The user's token's issuer (`iss`), so a downstream matches revocations within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// The request method (`X-Forwarded-Method`) this assertion was issued for; a reused
    /// safe-method assertion names the safe method it was first issued for. A downstream
    /// accepts an assertion for a state-changing request only when this equals its method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htm: Option<String>,
    /// The key the user's token is bound to (RFC 9449 `cnf.jkt`), when the allow was decided
    /// on a DPoP-bound token (or a ticket bought with one), so a downstream can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// An assertion's `cnf`: the DPoP key thumbprint the user's token is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The RFC 7638 SHA-256 thumbprint (base64url) of the client's DPoP key.
    pub jkt: String,
}

/// GET, HEAD and OPTIONS: the methods whose assertion gatepass may reuse, and for which a
/// downstream accepts an assertion issued for another method. Every other method is
/// state-changing and needs an assertion issued for it (`htm`).
pub fn is_safe_method(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// The ids of the user's token that an assertion carries ([`AssertionSigner::sign_with_ids`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenIds<'a> {
    /// The token's session id; becomes [`AssertionClaims::sid`].
    pub sid: Option<&'a str>,
    /// The token's `jti`; becomes [`AssertionClaims::tid`].
    pub tid: Option<&'a str>,
    /// The token's issuer; becomes [`AssertionClaims::iss`].
    pub iss: Option<&'a str>,
    /// The token's DPoP key thumbprint; becomes [`AssertionClaims::cnf`].
    pub jkt: Option<&'a str>,
}

/// Why an assertion key could not be loaded, or an assertion was refused.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    /// The key file is not a PEM of the expected kind.
    #[error("not an Ed25519 {0} key in PEM form")]
    BadKey(&'static str),
    /// The JWKS document has no usable Ed25519 key.
    #[error("JWKS has no Ed25519 signing key")]
    NoKey,
    /// The JWKS could not be fetched.
    #[error("fetching JWKS failed: {0}")]
    Fetch(String),
    /// The assertion header is absent.
    #[error("assertion missing")]
    Missing,
    /// Signature, expiry or shape is wrong.
    #[error("assertion invalid")]
    Invalid,
    /// The assertion was issued for another host.
    #[error("assertion audience mismatch")]
    Audience,
    /// The identity headers do not match the assertion.
    #[error("identity headers do not match the assertion")]
    Mismatch,
    /// A state-changing request with an assertion issued for another method.
    #[error("assertion was issued for another method")]
    Method,
    /// Signing failed.
    #[error("signing the assertion failed")]
    Sign,
}

/// Extracts the DER body of the first PEM block.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let mut body = String::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            inside = true;
        } else if line.starts_with("-----END ") {
            break;
        } else if inside {
            body.push_str(line);
        }
    }
    STANDARD.decode(body).ok()
}

/// RFC 7638 thumbprint of an Ed25519 public key, used as `kid`.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Generates a new Ed25519 key as a PKCS#8 v1 PEM (RFC 5208, what `gatepass keygen` writes
/// and `openssl genpkey -algorithm ed25519` writes too). The v2 form (RFC 5958, with the public
/// key) is not readable by OpenSSL 3.0 or Python's `cryptography`; both forms are read.
pub fn generate_ed25519_pkcs8_pem() -> Result<String, AssertionError> {
    let doc = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| AssertionError::Sign)?;
    let b64 = STANDARD.encode(doc.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    Ok(pem)
}

/// Signs identity assertions (used by gatepass).
pub struct AssertionSigner {
    key: EncodingKey,
    header: Header,
    jwks: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.header.kid)
            .finish_non_exhaustive()
    }
}

impl AssertionSigner {
    /// Loads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, AssertionError> {
        let der = pem_der(pem).ok_or(AssertionError::BadKey("private"))?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| AssertionError::BadKey("private"))?;
        use aws_lc_rs::signature::KeyPair;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let kid = thumbprint(&x);
        let key = EncodingKey::from_ed_der(&der);
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        header.kid = Some(kid.clone());
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"
        }]})
        .to_string();
        Ok(AssertionSigner { key, header, jwks })
    }

    /// The public JWKS document served at `/.well-known/jwks.json`.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }

    /// Signs an assertion for `identity`, addressed to `aud`, for a request with method
    /// `htm`, valid until `min(identity.expires, now + ttl)`, without token ids (see
    /// [`Self::sign_with_ids`]).
    pub fn sign(
        &self,
        identity: &Identity,
        aud: &str,
        htm: &str,
        now: u64,
        ttl: Duration,
    ) -> Result<String, AssertionError> {
        self.sign_with_ids(identity, TokenIds::default(), aud, htm, now, ttl)
    }

    /// As [`Self::sign`], also carrying the user's token's session id, `jti` and issuer.
    pub fn sign_with_ids(
        &self,
        identity: &Identity,
        ids: TokenIds<'_>,
        aud: &str,
        htm: &str,
        now: u64,
        ttl: Duration,
    ) -> Result<String, AssertionError> {
        let mut exp = now.saturating_add(ttl.as_secs());
        if let Some(token_exp) = identity.expires {
            exp = exp.min(token_exp);
        }
        let jti: [u8; 16] = rand::random();
        let claims = AssertionClaims {
            sub: identity.id.clone(),
            username: identity.username.clone(),
            role: identity.role.clone(),
            permissions: identity.permissions.clone(),
            exp,
            iat: now,
            aud: aud.to_owned(),
            jti: URL_SAFE_NO_PAD.encode(jti),
            token_exp: identity.expires,
            sid: ids.sid.map(str::to_owned),
            tid: ids.tid.map(str::to_owned),
            iss: ids.iss.map(str::to_owned),
            htm: Some(htm.to_owned()),
            cnf: ids.jkt.map(|jkt| Confirmation {
                jkt: jkt.to_owned(),
            }),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|_| AssertionError::Sign)
    }
}

/// Verifies identity assertions (used by downstream services).
#[derive(Clone)]
pub struct AssertionVerifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
}

impl std::fmt::Debug for AssertionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionVerifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl AssertionVerifier {
    fn with_keys(keys: Vec<(Option<String>, DecodingKey)>) -> Result<Self, AssertionError> {
        if keys.is_empty() {
            return Err(AssertionError::NoKey);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 5;
        // The audience is compared by hand: it changes per request.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "aud"]);
        Ok(AssertionVerifier { keys, validation })
    }

    /// From an Ed25519 public key PEM (SubjectPublicKeyInfo).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, AssertionError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|_| AssertionError::BadKey("public"))?;
        Self::with_keys(vec![(None, key)])
    }

    /// From a JWKS document; only `OKP`/`Ed25519` signing keys are used.
    pub fn from_jwks_json(json: &str) -> Result<Self, AssertionError> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        let jwks: Jwks = serde_json::from_str(json).map_err(|_| AssertionError::NoKey)?;
        let mut keys = Vec::new();
        for k in jwks.keys {
            let field = |name: &str| k.get(name).and_then(|v| v.as_str());
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            if field("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let Some(x) = field("x") else { continue };
            if let Ok(key) = DecodingKey::from_ed_components(x) {
                keys.push((field("kid").map(str::to_owned), key));
            }
        }
        Self::with_keys(keys)
    }

    /// Fetches gatepass's `/.well-known/jwks.json` (feature `jwks-fetch`).
    #[cfg(feature = "jwks-fetch")]
    pub async fn from_jwks_url(url: &str, timeout: Duration) -> Result<Self, AssertionError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| AssertionError::Fetch(e.to_string()))?;
        let resp = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AssertionError::Fetch(e.without_url().to_string()))?;
        let body = resp
            .text()
            .await
            .map_err(|e| AssertionError::Fetch(e.without_url().to_string()))?;
        Self::from_jwks_json(&body)
    }

    /// Verifies signature, expiry and that `aud` equals `expected_aud`. An empty audience,
    /// expected or claimed, is never accepted: it binds the assertion to nothing.
    pub fn verify(
        &self,
        token: &str,
        expected_aud: &str,
    ) -> Result<AssertionClaims, AssertionError> {
        if expected_aud.is_empty() {
            return Err(AssertionError::Audience);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Invalid)?;
        let candidates = self
            .keys
            .iter()
            .filter(|(kid, _)| kid.is_none() || header.kid.is_none() || *kid == header.kid);
        for (_, key) in candidates {
            if let Ok(data) = jsonwebtoken::decode::<AssertionClaims>(token, key, &self.validation)
            {
                if data.claims.aud != expected_aud {
                    return Err(AssertionError::Audience);
                }
                return Ok(data.claims);
            }
        }
        Err(AssertionError::Invalid)
    }

    /// Verifies the assertion for a request with `method` ([`Self::verify`]), that it names
    /// exactly `identity`, and, for a state-changing method (not [`is_safe_method`]), that it
    /// was issued for that method (`htm`).
    pub fn verify_identity(
        &self,
        token: Option<&str>,
        expected_aud: &str,
        method: &str,
        identity: &Identity,
    ) -> Result<AssertionClaims, AssertionError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or(AssertionError::Missing)?;
        let claims = self.verify(token, expected_aud)?;
        if !is_safe_method(method) && claims.htm.as_deref() != Some(method) {
            return Err(AssertionError::Method);
        }
        if claims.sub != identity.id
            || claims.username != identity.username
            || claims.role != identity.role
            || claims.permissions != identity.permissions
            || claims.token_exp != identity.expires
        {
            return Err(AssertionError::Mismatch);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            id: "u1".into(),
            username: "alice".into(),
            role: "admin".into(),
            permissions: vec!["mcp:read".into()],
            expires: Some(jsonwebtoken::get_current_timestamp() + 3600),
        }
    }

    /// A signer with a freshly generated key.
    fn fresh_signer() -> AssertionSigner {
        AssertionSigner::from_pkcs8_pem(generate_ed25519_pkcs8_pem().unwrap().as_bytes()).unwrap()
    }

    /// A fresh signer and a verifier built from its JWKS.
    fn signer_and_verifier() -> (AssertionSigner, AssertionVerifier) {
        let signer = fresh_signer();
        let verifier = AssertionVerifier::from_jwks_json(signer.jwks_json()).unwrap();
        (signer, verifier)
    }

    #[test]
    fn sign_and_verify_via_jwks() {
        let (signer, verifier) = signer_and_verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let id = identity();
        let tok = signer
            .sign(&id, "app.test:8080", "GET", now, Duration::from_secs(60))
            .unwrap();
        let claims = verifier
            .verify_identity(Some(&tok), "app.test:8080", "GET", &id)
            .unwrap();
        assert_eq!(claims.exp, now + 60);
        assert!(matches!(
            verifier.verify(&tok, "app.test"),
            Err(AssertionError::Audience)
        ));
        let mut other = id.clone();
        other.role = "super_admin".into();
        assert!(matches!(
            verifier.verify_identity(Some(&tok), "app.test:8080", "GET", &other),
            Err(AssertionError::Mismatch)
        ));
        assert!(matches!(
            verifier.verify_identity(None, "app.test:8080", "GET", &id),
            Err(AssertionError::Missing)
        ));
    }

    #[test]
    fn forged_later_expiry_header_is_a_mismatch() {
        let (signer, verifier) = signer_and_verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let id = identity();
        let tok = signer
            .sign(&id, "h", "GET", now, Duration::from_secs(60))
            .unwrap();
        assert_eq!(verifier.verify(&tok, "h").unwrap().token_exp, id.expires);
        let mut later = id.clone();
        later.expires = id.expires.map(|e| e + 86_400);
        assert!(matches!(
            verifier.verify_identity(Some(&tok), "h", "GET", &later),
            Err(AssertionError::Mismatch)
        ));
        let mut none = id.clone();
        none.expires = None;
        assert!(matches!(
            verifier.verify_identity(Some(&tok), "h", "GET", &none),
            Err(AssertionError::Mismatch)
        ));
    }

    /// Issue 8 item 3: the v1 form (48 bytes: version 0, the Ed25519 OID, the 32-byte seed),
    /// and the v2 form with the public key is still read.
    #[test]
    fn keys_are_written_as_pkcs8_v1_and_both_forms_are_read() {
        let pem = generate_ed25519_pkcs8_pem().unwrap();
        let der = pem_der(pem.as_bytes()).unwrap();
        assert_eq!(der.len(), 48);
        assert_eq!(
            der[..16],
            [
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20
            ]
        );
        assert!(AssertionSigner::from_pkcs8_pem(pem.as_bytes()).is_ok());
        let v2 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let v2_pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(v2.as_ref())
        );
        assert!(AssertionSigner::from_pkcs8_pem(v2_pem.as_bytes()).is_ok());
    }

    #[test]
    fn token_ids_round_trip_and_are_absent_by_default() {
        let (signer, verifier) = signer_and_verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let id = identity();
        let ttl = Duration::from_secs(60);
        let ids = TokenIds {
            sid: Some("sess-1"),
            tid: Some("tok-1"),
            iss: Some("https://a.test"),
            jkt: Some("thumb-1"),
        };
        let tok = signer
            .sign_with_ids(&id, ids, "h", "GET", now, ttl)
            .unwrap();
        let claims = verifier
            .verify_identity(Some(&tok), "h", "GET", &id)
            .unwrap();
        assert_eq!(claims.iss.as_deref(), Some("https://a.test"));
        assert_eq!(claims.sid.as_deref(), Some("sess-1"));
        assert_eq!(claims.tid.as_deref(), Some("tok-1"));
        assert_eq!(
            claims.cnf,
            Some(Confirmation {
                jkt: "thumb-1".into()
            })
        );
        assert_ne!(claims.jti, "tok-1", "the assertion keeps its own jti");

        let only_sid = TokenIds {
            sid: Some("sess-1"),
            ..TokenIds::default()
        };
        let claims = verifier
            .verify(
                &signer
                    .sign_with_ids(&id, only_sid, "h", "GET", now, ttl)
                    .unwrap(),
                "h",
            )
            .unwrap();
        assert_eq!((claims.sid.as_deref(), claims.tid), (Some("sess-1"), None));

        let plain = signer.sign(&id, "h", "GET", now, ttl).unwrap();
        let claims = verifier.verify(&plain, "h").unwrap();
        assert_eq!((claims.sid, claims.tid), (None, None));
        // Absent from the payload, not `null`: older verifiers see the claims they know.
        let payload = plain.split('.').nth(1).unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        for absent in ["sid", "tid", "cnf"] {
            assert!(payload.get(absent).is_none(), "{absent}");
        }
    }

    /// Issue 20 finding 7: an assertion issued for a GET (or for no method) is refused on a
    /// state-changing request; one issued for that method passes; an empty audience never.
    #[test]
    fn state_changing_requests_need_their_own_method_and_an_audience() {
        let (signer, verifier) = signer_and_verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let id = identity();
        let ttl = Duration::from_secs(60);
        let get = signer.sign(&id, "h", "GET", now, ttl).unwrap();
        let post = signer.sign(&id, "h", "POST", now, ttl).unwrap();
        for (token, method, ok) in [
            (&get, "GET", true),
            (&get, "HEAD", true),
            (&post, "GET", true),
            (&post, "POST", true),
            (&get, "POST", false),
            (&get, "DELETE", false),
            (&post, "PUT", false),
        ] {
            let got = verifier.verify_identity(Some(token), "h", method, &id);
            match ok {
                true => assert!(got.is_ok(), "{method}: {got:?}"),
                false => assert!(matches!(got, Err(AssertionError::Method)), "{method}"),
            }
        }
        // An assertion from before `htm` (none in it) is good for safe methods only.
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = signer.header.kid.clone();
        let mut claims = verifier.verify(&get, "h").unwrap();
        claims.htm = None;
        let old = jsonwebtoken::encode(&header, &claims, &signer.key).unwrap();
        assert!(verifier
            .verify_identity(Some(&old), "h", "GET", &id)
            .is_ok());
        assert!(matches!(
            verifier.verify_identity(Some(&old), "h", "POST", &id),
            Err(AssertionError::Method)
        ));
        // Empty audiences: expected (a request without Host) or signed.
        let empty = signer.sign(&id, "", "GET", now, ttl).unwrap();
        assert!(matches!(
            verifier.verify(&empty, ""),
            Err(AssertionError::Audience)
        ));
        assert!(matches!(
            verifier.verify(&get, ""),
            Err(AssertionError::Audience)
        ));
        assert!(matches!(
            verifier.verify(&empty, "h"),
            Err(AssertionError::Audience)
        ));
    }

    #[test]
    fn exp_capped_by_token() {
        let (signer, verifier) = signer_and_verifier();
        let now = jsonwebtoken::get_current_timestamp();
        let mut id = identity();
        id.expires = Some(now + 10);
        let tok = signer
            .sign(&id, "h", "GET", now, Duration::from_secs(60))
            .unwrap();
        assert_eq!(verifier.verify(&tok, "h").unwrap().exp, now + 10);
    }

    #[test]
    fn foreign_key_rejected() {
        let a = fresh_signer();
        let b = fresh_signer();
        let verifier = AssertionVerifier::from_jwks_json(a.jwks_json()).unwrap();
        let tok = b
            .sign(
                &identity(),
                "h",
                "GET",
                jsonwebtoken::get_current_timestamp(),
                Duration::from_secs(60),
            )
            .unwrap();
        assert!(matches!(
            verifier.verify(&tok, "h"),
            Err(AssertionError::Invalid)
        ));
        assert!(AssertionSigner::from_pkcs8_pem(b"not a pem").is_err());
    }
}
