//! Shared pieces of the benchmarks: key material and token minting for each algorithm.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
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
        let k = rcgen::KeyPair::generate_for(sig).expect("keygen");
        Key {
            alg,
            private_pem: k.serialize_pem(),
            public_pem: k.public_key_pem(),
        }
    }

    pub fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(self.private_pem.as_bytes()).unwrap(),
        }
    }

    /// The `[[issuers]]` key source line for gatepass.
    pub fn source(&self, dir: &str) -> String {
        match self.alg {
            Algorithm::HS256 => format!("secret_file = \"{dir}/hs256.key\""),
            a => format!("public_key_file = \"{dir}/{a:?}.pub.pem\""),
        }
    }

    pub fn mint(&self, sub: &str) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"iss": ISS, "sub": sub, "exp": now + 7200, "iat": now,
            "preferred_username": sub, "role": "admin", "permissions": ["mcp:read", "mcp:write"]});
        jsonwebtoken::encode(&Header::new(self.alg), &claims, &self.encoding_key()).unwrap()
    }
}
