//! Shared pieces of the benchmarks: key material and token minting for each algorithm.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

pub const ISS: &str = "https://bench.example.test";
pub const SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

/// The algorithms benchmarked.
pub const ALGS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// A signing key and its public PEM (empty for HMAC).
pub struct Key {
    pub alg: Algorithm,
    pub private_pem: String,
    pub public_pem: String,
}

impl Key {
    pub fn generate(alg: Algorithm) -> Key {
        let sig = match alg {
            Algorithm::HS256 => {
                return Key {
                    alg,
                    private_pem: String::new(),
                    public_pem: String::new(),
                }
            }
            Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            _ => &rcgen::PKCS_ED25519,
        };
        let (private_pem, public_pem) = gatepass_testkit::keypair(sig);
        Key {
            alg,
            private_pem,
            public_pem,
        }
    }

    /// The private PEM, or the shared secret for HMAC.
    fn signing_key(&self) -> &str {
        match self.alg {
            Algorithm::HS256 => SECRET,
            _ => &self.private_pem,
        }
    }

    pub fn encoding_key(&self) -> EncodingKey {
        gatepass_testkit::encoding_key(self.alg, self.signing_key())
    }

    /// The `[[issuers]]` key source line for gatepass.
    pub fn source(&self, dir: &str) -> String {
        match self.alg {
            Algorithm::HS256 => format!("secret_file = \"{dir}/hs256.key\""),
            a => format!("public_key_file = \"{dir}/{a:?}.pub.pem\""),
        }
    }

    pub fn mint(&self, sub: &str) -> String {
        self.mint_with(sub, json!({}))
    }

    /// [`Key::mint`] with `extra` claims added (a `cnf`, say).
    pub fn mint_with(&self, sub: &str, extra: serde_json::Value) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = json!({"iss": ISS, "sub": sub, "exp": now + 7200, "iat": now,
            "preferred_username": sub, "role": "admin", "permissions": ["mcp:read", "mcp:write"]});
        if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        gatepass_testkit::sign(self.alg, self.signing_key(), None, &claims)
    }
}
