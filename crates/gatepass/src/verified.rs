//! A verified token, as every allow needs it: the vocabulary shared by verification, tickets,
//! the decision and its responses.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use gatepass_identity::Identity;
use http::HeaderValue;

/// A verified token: what an allow needs, precomputed once per token. The identity is kept
/// only in its encoded header form (one shared buffer): that is what every allow sends, rules
/// compare encoded bytes (the encoding is injective), and cold paths decode it on demand.
#[derive(Debug)]
pub struct Verified {
    pub exp: u64,
    /// Encoded header values, in the order of `gatepass_identity::headers::IDENTITY`.
    pub headers: [HeaderValue; 5],
    /// Key for per-user rate limits.
    pub user_key: u64,
}

impl Verified {
    pub fn new(identity: Identity, exp: u64) -> Verified {
        let values = identity.header_values();
        let mut buf = Vec::with_capacity(values.iter().map(String::len).sum());
        let bounds = values.map(|v| {
            let start = buf.len();
            buf.extend_from_slice(v.as_bytes());
            (start, buf.len())
        });
        let buf = bytes::Bytes::from(buf);
        // The encoding only emits visible ASCII, so these never fail.
        let headers = bounds.map(|(a, b)| {
            HeaderValue::from_maybe_shared(buf.slice(a..b)).unwrap_or(HeaderValue::from_static(""))
        });
        Verified {
            user_key: user_key(&identity.id),
            exp,
            headers,
        }
    }

    /// The encoded `X-User-Role` value.
    pub fn role(&self) -> &[u8] {
        self.headers[2].as_bytes()
    }

    /// The encoded `X-User-Permissions` value (items joined by `,`).
    pub fn permissions(&self) -> &[u8] {
        self.headers[3].as_bytes()
    }

    /// The identity, decoded from the header values (for the assertion and logs).
    pub fn identity(&self) -> Identity {
        let text = |i: usize| {
            gatepass_identity::decode_value(self.headers[i].to_str().unwrap_or_default())
                .unwrap_or_default()
        };
        Identity {
            id: text(0),
            username: text(1),
            role: text(2),
            permissions: gatepass_identity::decode_list(
                self.headers[3].to_str().unwrap_or_default(),
            )
            .unwrap_or_default(),
            expires: Some(self.exp),
        }
    }
}

/// A stable (per process) hash of a user id, so limiter keys need no allocation.
pub fn user_key(id: &str) -> u64 {
    static STATE: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(id)
}

pub use gatepass_identity::now_secs;
