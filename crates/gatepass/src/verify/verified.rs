//! A verified token, as every allow needs it: the vocabulary shared by verification, tickets,
//! the decision and its responses.

use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use arc_swap::ArcSwapOption;
use gatepass_identity::{Identity, TokenRef};
use http::HeaderValue;

/// What revocations (and the assertion) know a token by: its `jti`, `sid`, `sub` and `iat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenIds {
    /// The issuer's `issuer` URL (revocations are per issuer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Box<str>>,
    /// The `sub` claim (the user id when the token has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The `aud` values (a protected resource needs its URI among them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<Box<str>>,
    /// The key the token is bound to (RFC 7800 `cnf`), if any.
    #[serde(default, skip_serializing_if = "Cnf::is_empty")]
    pub cnf: Cnf,
}

/// A token's confirmation (`cnf`): the key it is bound to. Read from the token itself (or its
/// introspection answer), never from the request, so the mechanism can't be downgraded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cnf {
    /// RFC 9449: the SHA-256 JWK thumbprint of the client's DPoP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<Box<str>>,
    /// RFC 8705: the SHA-256 thumbprint of the client's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "x5t#S256")]
    pub x5t_s256: Option<Box<str>>,
    /// A `cnf` member of another kind (or a malformed one): bound, but not to anything
    /// gatepass can check, so never usable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

impl Cnf {
    pub fn is_empty(&self) -> bool {
        self.jkt.is_none() && self.x5t_s256.is_none() && !self.unknown
    }

    /// The `cnf` claim (or introspection member), absent when the token is unbound.
    fn of(v: Option<&serde_json::Value>) -> Cnf {
        let Some(v) = v else { return Cnf::default() };
        let Some(members) = v.as_object() else {
            return Cnf {
                unknown: true,
                ..Cnf::default()
            };
        };
        let mut cnf = Cnf::default();
        for (name, value) in members {
            let text = value.as_str().filter(|s| !s.is_empty()).map(Box::from);
            match (name.as_str(), text) {
                ("jkt", Some(t)) => cnf.jkt = Some(t),
                ("x5t#S256", Some(t)) => cnf.x5t_s256 = Some(t),
                _ => cnf.unknown = true,
            }
        }
        // `"cnf": {}` binds to nothing: refused like an unknown member.
        if members.is_empty() {
            cnf.unknown = true;
        }
        cnf
    }
}

impl TokenIds {
    /// The ids in a token's claims (or an introspection answer's members).
    pub fn from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> TokenIds {
        use serde_json::Value;
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(Box::from);
        TokenIds {
            iss: text("iss"),
            jti: text("jti"),
            sid: text("sid"),
            sub: text("sub"),
            iat: seconds(claims, "iat"),
            aud: match claims.get("aud") {
                Some(Value::String(a)) => vec![a.as_str().into()],
                Some(Value::Array(a)) => {
                    a.iter().filter_map(Value::as_str).map(Box::from).collect()
                }
                _ => Vec::new(),
            },
            cnf: Cnf::of(claims.get("cnf")),
        }
    }
}

/// A time claim in seconds (an integer, or a non-negative number truncated: never later than
/// it says, so an `iat` is never moved past a revocation's `not_before`, nor a lifetime
/// shortened). A negative one is no time (the strict reader refuses it before this).
pub fn seconds(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<u64> {
    claims.get(name).and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    })
}

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
    pub ids: TokenIds,
    /// The revocation list generation this token was last found clean at (see
    /// `Revocations::is_revoked`): a cache hit re-checks only when the list changed.
    pub clean_at: AtomicU64,
    /// The last assertion signed for a safe method, reused while 3/4 of its life is left.
    assertion: ArcSwapOption<KeptAssertion>,
}

/// An assertion kept for reuse: for which host, and its lifetime.
#[derive(Debug)]
struct KeptAssertion {
    aud: Box<str>,
    value: HeaderValue,
    iat: u64,
    exp: u64,
}

impl Verified {
    pub fn new(identity: Identity, exp: u64) -> Verified {
        Verified::with_ids(identity, exp, TokenIds::default())
    }

    /// A verified token known by `ids`.
    pub fn with_ids(identity: Identity, exp: u64, mut ids: TokenIds) -> Verified {
        if ids.sub.is_none() {
            ids.sub = Some(identity.id.as_str().into());
        }
        let mut buf = String::with_capacity(64);
        let bounds = identity.header_values_into(&mut buf);
        let buf = bytes::Bytes::from(buf.into_bytes());
        // The encoding only emits visible ASCII, so these never fail.
        let headers = bounds.map(|r| {
            HeaderValue::from_maybe_shared(buf.slice(r)).unwrap_or(HeaderValue::from_static(""))
        });
        Verified {
            user_key: user_key(&identity.id),
            exp,
            headers,
            ids,
            clean_at: AtomicU64::new(0),
            assertion: ArcSwapOption::empty(),
        }
    }

    /// The kept assertion for `aud`, while at least 3/4 of its lifetime is left at `now`.
    pub fn assertion_for(&self, aud: &str, now: u64) -> Option<HeaderValue> {
        let guard = self.assertion.load();
        let a = guard.as_ref()?;
        let life = a.exp.saturating_sub(a.iat);
        let left = a.exp.saturating_sub(now);
        (*a.aud == *aud && left * 4 >= life * 3 && left > 0).then(|| a.value.clone())
    }

    /// Keeps `value`, an assertion for `aud` issued at `iat` and valid until `exp`.
    pub fn keep_assertion(&self, aud: &str, value: HeaderValue, iat: u64, exp: u64) {
        self.assertion
            .store(Some(std::sync::Arc::new(KeptAssertion {
                aud: aud.into(),
                value,
                iat,
                exp,
            })));
    }

    /// The token as revocations see it.
    pub fn token_ref(&self) -> TokenRef<'_> {
        TokenRef {
            iss: self.ids.iss.as_deref(),
            jti: self.ids.jti.as_deref(),
            sid: self.ids.sid.as_deref(),
            sub: self.ids.sub.as_deref().unwrap_or_default(),
            iat: self.ids.iat,
        }
    }

    /// The form shared state stores (a ticket in Redis): the five encoded header values,
    /// `exp` and the token's ids, as JSON. Never the token.
    pub fn to_stored(&self) -> String {
        let h: Vec<&str> = self
            .headers
            .iter()
            .map(|v| v.to_str().unwrap_or_default())
            .collect();
        serde_json::json!({"exp": self.exp, "h": h, "t": self.ids}).to_string()
    }

    /// Reads [`Verified::to_stored`] back; `None` for anything it did not write (the values
    /// must decode and re-encode to themselves, and `X-User-Expires` must equal `exp`).
    pub fn from_stored(text: &[u8]) -> Option<Verified> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Stored {
            exp: u64,
            h: [String; 5],
            #[serde(default)]
            t: TokenIds,
        }
        let s: Stored = serde_json::from_slice(text).ok()?;
        let ok = |i: usize| gatepass_identity::decode_value(&s.h[i]).ok();
        let identity = Identity {
            id: ok(0)?,
            username: ok(1)?,
            role: ok(2)?,
            permissions: gatepass_identity::decode_list(&s.h[3]).ok()?,
            expires: (!s.h[4].is_empty()).then_some(s.exp),
        };
        let v = Verified::with_ids(identity, s.exp, s.t);
        let same = v
            .headers
            .iter()
            .zip(&s.h)
            .all(|(a, b)| a.as_bytes() == b.as_bytes());
        (same && !s.h[0].is_empty()).then_some(v)
    }

    /// The user as per-user limits count it.
    pub fn limited(&self) -> crate::policy::ratelimit::LimitedUser<'_> {
        crate::policy::ratelimit::LimitedUser {
            key: self.user_key,
            id: self.headers[0].as_bytes(),
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
