//! The gatepass identity contract.
//!
//! gatepass answers an allowed ForwardAuth request with identity headers that Traefik
//! copies onto the forwarded request. This crate is the single place that defines those
//! header names, how their values are encoded, how a downstream parses them
//! ([`Identity::from_headers`]), and the signed identity assertion
//! ([`AssertionSigner`], [`AssertionVerifier`]) that lets a downstream reject headers that
//! did not come from gatepass. [`request`] reads the forwarded request as gatepass does: the
//! WebSocket subprotocol marker, the Origin allow-list and the client address.
//!
//! [`Revocation`] is what gatepass's revocation feed sends and holds the one rule for whether
//! it covers a token or an open connection; [`sse`] parses that feed's Server-Sent Events.
//!
//! Feature `jwks-fetch` adds [`AssertionVerifier::from_jwks_url`] (HTTP via reqwest).
//! Feature `revocation-feed` adds [`RevocationFeed`], the feed's client (reqwest, tokio).

#![warn(missing_docs)]

mod assertion;
mod encoding;
#[cfg(feature = "revocation-feed")]
mod feed;
pub mod headers;
pub mod request;
mod revocation;
pub mod sse;

pub use assertion::{
    generate_ed25519_pkcs8_pem, is_safe_method, AssertionClaims, AssertionError, AssertionSigner,
    AssertionVerifier, Confirmation, TokenIds,
};
pub use encoding::{
    decode_list, decode_value, encode_into, encode_list, encode_value, EncodingError,
};
#[cfg(feature = "revocation-feed")]
pub use feed::{DownReason, FeedError, FeedStatus, RevocationFeed, DEFAULT_IDLE_TIMEOUT};
pub use request::{
    client_ip, now_millis, now_secs, offers_subprotocol, origin_allowed, subprotocols,
    WEBSOCKET_PROTOCOL_MARKER,
};
pub use revocation::{Revocation, RevocationKind, SocketRef, TokenRef};

use http::HeaderMap;

/// A caller's identity as carried by the `X-User-*` headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// Stable user id (`X-User-Id`), from the token's subject claim.
    pub id: String,
    /// Display name (`X-User-Username`).
    pub username: String,
    /// Role (`X-User-Role`); empty when the token carries none.
    pub role: String,
    /// Permissions (`X-User-Permissions`), in token order.
    pub permissions: Vec<String>,
    /// The token's `exp` as Unix seconds (`X-User-Expires`).
    pub expires: Option<u64>,
}

/// Why identity headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// A required header is absent or empty.
    #[error("identity header {0} is missing")]
    Missing(&'static str),
    /// A header appears more than once.
    #[error("identity header {0} appears more than once")]
    Duplicate(&'static str),
    /// A header's value is not valid in the gatepass encoding.
    #[error("identity header {0} is malformed")]
    Malformed(&'static str),
}

impl Identity {
    /// Parses the identity headers strictly: each of `X-User-Id`, `-Username`, `-Role`,
    /// `-Permissions` and `-Expires` must appear exactly once, values must be in the
    /// gatepass encoding, `X-User-Id` must be non-empty and `X-User-Expires` an integer.
    pub fn from_headers(map: &HeaderMap) -> Result<Identity, IdentityError> {
        let id = single(map, headers::USER_ID)?;
        if id.is_empty() {
            return Err(IdentityError::Missing(headers::USER_ID));
        }
        let id = decode_value(id).map_err(|_| IdentityError::Malformed(headers::USER_ID))?;
        let username = decode_value(single(map, headers::USER_USERNAME)?)
            .map_err(|_| IdentityError::Malformed(headers::USER_USERNAME))?;
        let role = decode_value(single(map, headers::USER_ROLE)?)
            .map_err(|_| IdentityError::Malformed(headers::USER_ROLE))?;
        let permissions = decode_list(single(map, headers::USER_PERMISSIONS)?)
            .map_err(|_| IdentityError::Malformed(headers::USER_PERMISSIONS))?;
        let expires = single(map, headers::USER_EXPIRES)?;
        let expires = if expires.is_empty() {
            None
        } else {
            Some(
                expires
                    .parse::<u64>()
                    .map_err(|_| IdentityError::Malformed(headers::USER_EXPIRES))?,
            )
        };
        Ok(Identity {
            id,
            username,
            role,
            permissions,
            expires,
        })
    }

    /// The encoded header values in the order of [`headers::IDENTITY`]:
    /// id, username, role, permissions, expires.
    pub fn header_values(&self) -> [String; 5] {
        let mut all = String::new();
        self.header_values_into(&mut all)
            .map(|r| all.get(r).unwrap_or_default().to_owned())
    }

    /// [`Identity::header_values`] appended to `out` one after another, without a separator:
    /// where each one is in `out`. (One buffer for all five: what a cache of verified
    /// tokens keeps.)
    pub fn header_values_into(&self, out: &mut String) -> [std::ops::Range<usize>; 5] {
        fn span(out: &mut String, write: impl FnOnce(&mut String)) -> std::ops::Range<usize> {
            let start = out.len();
            write(out);
            start..out.len()
        }
        [
            span(out, |o| encode_into(&self.id, o)),
            span(out, |o| encode_into(&self.username, o)),
            span(out, |o| encode_into(&self.role, o)),
            span(out, |o| encoding::encode_list_into(&self.permissions, o)),
            span(out, |o| {
                if let Some(e) = self.expires {
                    use std::fmt::Write;
                    let _ = write!(o, "{e}");
                }
            }),
        ]
    }
}

fn single<'a>(map: &'a HeaderMap, name: &'static str) -> Result<&'a str, IdentityError> {
    let mut values = map.get_all(name).iter();
    let first = values.next().ok_or(IdentityError::Missing(name))?;
    if values.next().is_some() {
        return Err(IdentityError::Duplicate(name));
    }
    first.to_str().map_err(|_| IdentityError::Malformed(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn full() -> HeaderMap {
        let mut m = HeaderMap::new();
        let id = Identity {
            id: "u-1".into(),
            username: "Zoë Admin".into(),
            role: "admin".into(),
            permissions: vec!["mcp:read".into(), "a,b".into()],
            expires: Some(1_900_000_000),
        };
        for (name, value) in headers::IDENTITY.iter().zip(id.header_values()) {
            m.insert(*name, HeaderValue::from_str(&value).unwrap());
        }
        m
    }

    /// [`full`] after `edit`, read back.
    fn from_full(edit: impl FnOnce(&mut HeaderMap)) -> Result<Identity, IdentityError> {
        let mut m = full();
        edit(&mut m);
        Identity::from_headers(&m)
    }

    #[test]
    fn round_trip() {
        let id = Identity::from_headers(&full()).unwrap();
        assert_eq!(id.username, "Zoë Admin");
        assert_eq!(id.permissions, vec!["mcp:read", "a,b"]);
        assert_eq!(id.expires, Some(1_900_000_000));
    }

    #[test]
    fn missing_and_empty_id() {
        let no_role = from_full(|m| {
            m.remove(headers::USER_ROLE);
        });
        assert_eq!(no_role, Err(IdentityError::Missing(headers::USER_ROLE)));
        let empty_id = from_full(|m| {
            m.insert(headers::USER_ID, HeaderValue::from_static(""));
        });
        assert_eq!(empty_id, Err(IdentityError::Missing(headers::USER_ID)));
    }

    #[test]
    fn duplicate_rejected() {
        let two_roles = from_full(|m| {
            m.append(headers::USER_ROLE, HeaderValue::from_static("super_admin"));
        });
        assert_eq!(two_roles, Err(IdentityError::Duplicate(headers::USER_ROLE)));
    }

    #[test]
    fn malformed_rejected() {
        for (name, bad) in [
            (headers::USER_ROLE, "ad min"),
            (headers::USER_ROLE, "a%zz"),
            (headers::USER_ROLE, "a,b"),
            (headers::USER_EXPIRES, "soon"),
            (headers::USER_PERMISSIONS, "a,,b"),
        ] {
            let mut m = full();
            m.insert(name, HeaderValue::from_str(bad).unwrap());
            assert_eq!(
                Identity::from_headers(&m),
                Err(IdentityError::Malformed(name)),
                "{name}: {bad}"
            );
        }
    }
}
