//! A DPoP client (RFC 9449) for tests: a key pair, its public JWK and RFC 7638 thumbprint,
//! and proofs: well-formed by default, with every part replaceable to build a bad one.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// A client's DPoP key.
pub struct DpopKey {
    /// The JWS `alg` a proof names.
    pub alg_name: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    /// The private key (PKCS#8 PEM).
    pub private_pem: String,
    /// The public JWK: the members RFC 7638 needs, nothing else.
    pub jwk: Value,
}

impl DpopKey {
    /// A fresh P-256 key (ES256).
    pub fn es256() -> DpopKey {
        DpopKey::generate(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, "ES256")
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn eddsa() -> DpopKey {
        DpopKey::generate(&rcgen::PKCS_ED25519, Algorithm::EdDSA, "EdDSA")
    }

    /// A fresh RSA 2048 key, proofs signed RS256 (or PS256 with [`DpopKey::with_alg`]).
    pub fn rs256() -> DpopKey {
        DpopKey::generate(&rcgen::PKCS_RSA_SHA256, Algorithm::RS256, "RS256")
    }

    /// The same key, signing with another algorithm of its family (`PS256` for RSA).
    pub fn with_alg(self, alg: Algorithm, name: &'static str) -> DpopKey {
        DpopKey {
            alg,
            alg_name: name,
            ..self
        }
    }

    fn generate(
        kind: &'static rcgen::SignatureAlgorithm,
        alg: Algorithm,
        name: &'static str,
    ) -> DpopKey {
        let pair = rcgen::KeyPair::generate_for(kind).expect("keygen");
        let private_pem = pair.serialize_pem();
        let key = crate::encoding_key(alg, &private_pem);
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| Value::from(URL_SAFE_NO_PAD.encode(b));
        let jwk = match alg {
            // Uncompressed point: 04 || x || y.
            Algorithm::ES256 => {
                json!({"kty": "EC", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..])})
            }
            Algorithm::EdDSA => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}),
            _ => {
                let full = serde_json::to_value(
                    jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).expect("public JWK"),
                )
                .expect("JWK as JSON");
                json!({"kty": "RSA", "n": full["n"], "e": full["e"]})
            }
        };
        DpopKey {
            alg_name: name,
            alg,
            key,
            private_pem,
            jwk,
        }
    }

    /// RFC 7638: SHA-256 of the required members in lexicographic order, base64url.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk)
    }

    /// The proof header: `typ` dpop+jwt, `alg`, `jwk`.
    pub fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg_name, "jwk": self.jwk})
    }

    /// A fresh proof for `htm` `htu` (and `ath` of `token`).
    pub fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        self.sign(&self.header(), &claims(htm, htu, token))
    }

    /// Signs any header and claims with this key (the header is taken as given).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let message = format!("{}.{}", b64(header), b64(claims));
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.alg)
            .expect("signing a proof");
        format!("{message}.{sig}")
    }
}

/// A proof's claims: a unique `jti`, `htm`, `htu`, `iat` now, and `ath` for `token`.
pub fn claims(htm: &str, htu: &str, token: Option<&str>) -> Value {
    let mut c = json!({"jti": jti(), "htm": htm, "htu": htu, "iat": crate::now()});
    if let Some(t) = token {
        c["ath"] = ath(t).into();
    }
    c
}

/// A value no other proof of this process has.
pub fn jti() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `ath`: base64url(SHA-256(token)).
pub fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        token.as_bytes(),
    ))
}

/// The RFC 7638 thumbprint of a public JWK (EC, OKP or RSA).
pub fn thumbprint(jwk: &Value) -> String {
    let s = |m: &str| jwk[m].as_str().unwrap_or_default();
    let canonical = match s("kty") {
        "RSA" => json!({"e": s("e"), "kty": "RSA", "n": s("n")}),
        "OKP" => json!({"crv": s("crv"), "kty": "OKP", "x": s("x")}),
        _ => json!({"crv": s("crv"), "kty": s("kty"), "x": s("x"), "y": s("y")}),
    };
    // serde_json's map is ordered by key: the canonical member order, no whitespace.
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.to_string().as_bytes(),
    ))
}

/// The `x5t#S256` of a certificate (PEM): SHA-256 of its DER, base64url; and its DER in
/// base64 (what Traefik's `passTLSClientCert` sends).
pub fn certificate_thumbprint(cert_pem: &str) -> (String, String) {
    let body: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .expect("certificate PEM");
    let x5t = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der));
    (x5t, body)
}
