//! Revocations: what gatepass's `GET /revocations` feed sends, and the one rule for whether a
//! revocation covers a token (gatepass, at ForwardAuth time) or an open connection
//! (mcp-status, which closes it). Both sides call [`Revocation::covers_token`] /
//! [`Revocation::covers_socket`], so the rule cannot drift between them.

use serde::{Deserialize, Serialize};

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token, by its `jti`.
    Jti,
    /// Every token of a user (`sub`), optionally only those issued before `not_before`.
    Sub,
    /// Every token of one session, by its `sid`.
    Sid,
}

/// One revocation, as gatepass's feed sends it:
/// `{"kind","value","iss"?,"not_before"?,"expires_at"}` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// What `value` names.
    pub kind: RevocationKind,
    /// The revoked jti, sub or sid.
    pub value: String,
    /// The issuer whose `jti`, `sub` or `sid` this is (its `issuer` URL). `None` only for
    /// entries written before revocations were per issuer: those apply to every issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// For `sub`: only tokens issued (sockets opened) before this instant are covered;
    /// `None` covers all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// When the revocation can be forgotten (no token it covers is valid any more).
    pub expires_at: u64,
}

/// A token as the rule sees it (borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRef<'a> {
    /// The token's issuer (`iss`); `None` when unknown, which any issuer's revocation covers.
    pub iss: Option<&'a str>,
    /// The token's `jti`.
    pub jti: Option<&'a str>,
    /// The token's session id.
    pub sid: Option<&'a str>,
    /// The token's subject (the user id).
    pub sub: &'a str,
    /// The token's `iat`, Unix seconds.
    pub iat: Option<u64>,
}

/// An open connection as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRef<'a> {
    /// The issuer of the token the connection was opened with (the assertion's `iss`);
    /// `None` when unknown (no assertion), which any issuer's revocation covers.
    pub iss: Option<&'a str>,
    /// The `jti` of the token the connection was opened with.
    pub tid: Option<&'a str>,
    /// The session id of that token.
    pub sid: Option<&'a str>,
    /// The user id (`X-User-Id`).
    pub user: &'a str,
    /// When the connection was opened, Unix seconds.
    pub opened_at: u64,
}

impl Revocation {
    /// Whether this revocation is about `iss`'s tokens: the same issuer, or either side
    /// unknown (an entry from before per-issuer revocations, a token or socket whose issuer
    /// is not known): in doubt, covered.
    pub fn same_issuer(&self, iss: Option<&str>) -> bool {
        match (self.iss.as_deref(), iss) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Whether this revocation covers the token: the same issuer ([`Self::same_issuer`]),
    /// and `jti`: the token's jti equals `value`; `sid`: its sid equals `value`; `sub`: its
    /// sub equals `value` and it was issued at or before `not_before` (`iat <= not_before`,
    /// so a token minted in the revocation's own second is covered; a token without `iat`
    /// counts as issued before; without `not_before` every token of that sub is covered).
    pub fn covers_token(&self, t: &TokenRef<'_>) -> bool {
        self.same_issuer(t.iss)
            && match self.kind {
                RevocationKind::Jti => t.jti == Some(self.value.as_str()),
                RevocationKind::Sid => t.sid == Some(self.value.as_str()),
                RevocationKind::Sub => {
                    t.sub == self.value
                        && match (self.not_before, t.iat) {
                            (Some(nb), Some(iat)) => iat <= nb,
                            // No iat: it cannot prove it is newer.
                            _ => true,
                        }
                }
            }
    }

    /// Whether this revocation covers the connection: the same issuer
    /// ([`Self::same_issuer`]), and `jti`: its `tid` equals `value`; `sid`: its sid equals
    /// `value`; `sub`: its user equals `value` and `opened_at <= not_before` (without
    /// `not_before` every connection of that user).
    pub fn covers_socket(&self, s: &SocketRef<'_>) -> bool {
        self.same_issuer(s.iss)
            && match self.kind {
                RevocationKind::Jti => s.tid == Some(self.value.as_str()),
                RevocationKind::Sid => s.sid == Some(self.value.as_str()),
                RevocationKind::Sub => {
                    s.user == self.value && self.not_before.is_none_or(|nb| s.opened_at <= nb)
                }
            }
    }

    /// Past its expiry at `now` (`expires_at <= now`).
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }

    /// One Server-Sent Events event: `"id: {id}\ndata: {json}\n\n"`, the JSON on one line.
    /// Line breaks and NULs in `id` would break the framing and are dropped.
    pub fn to_sse(&self, id: &str) -> String {
        // Cannot fail: the struct is strings, integers and a unit enum. serde_json's compact
        // form escapes line breaks inside strings, so the data stays on one line.
        let json = serde_json::to_string(self).unwrap_or_default();
        let id: String = id
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
            .collect();
        format!("id: {id}\ndata: {json}\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{SseEvent, SseParser};

    fn rev(kind: RevocationKind, value: &str, not_before: Option<u64>) -> Revocation {
        Revocation {
            kind,
            value: value.into(),
            iss: None,
            not_before,
            expires_at: 2_000,
        }
    }

    fn token(sub: &str, iat: Option<u64>) -> TokenRef<'_> {
        TokenRef {
            iss: Some("https://a.test"),
            jti: Some("j1"),
            sid: Some("s1"),
            sub,
            iat,
        }
    }

    fn socket(user: &str, opened_at: u64) -> SocketRef<'_> {
        SocketRef {
            iss: Some("https://a.test"),
            tid: Some("j1"),
            sid: Some("s1"),
            user,
            opened_at,
        }
    }

    #[test]
    fn jti_covers_that_token_and_socket_only() {
        let r = rev(RevocationKind::Jti, "j1", None);
        assert!(r.covers_token(&token("u1", Some(5))));
        assert!(r.covers_socket(&socket("u1", 5)));
        let other = rev(RevocationKind::Jti, "j2", None);
        assert!(!other.covers_token(&token("u1", Some(5))));
        assert!(!other.covers_socket(&socket("u1", 5)));
        let no_ids = TokenRef {
            iss: None,
            jti: None,
            sid: None,
            sub: "u1",
            iat: None,
        };
        assert!(!r.covers_token(&no_ids));
        let no_tid = SocketRef {
            iss: None,
            tid: None,
            sid: None,
            user: "u1",
            opened_at: 0,
        };
        assert!(!r.covers_socket(&no_tid));
        // A jti revocation is not about the subject, even if the value happens to match it.
        assert!(!rev(RevocationKind::Jti, "u1", None).covers_token(&no_ids));
    }

    #[test]
    fn sid_covers_that_session_only() {
        let r = rev(RevocationKind::Sid, "s1", Some(1));
        assert!(r.covers_token(&token("u1", Some(5))));
        assert!(r.covers_socket(&socket("u1", 5)));
        let other = rev(RevocationKind::Sid, "s2", None);
        assert!(!other.covers_token(&token("u1", Some(5))));
        assert!(!other.covers_socket(&socket("u1", 5)));
        let t = TokenRef {
            sid: None,
            ..token("u1", None)
        };
        assert!(!r.covers_token(&t));
    }

    /// Issue 20 finding 10: a token minted in the revocation's own second is covered.
    #[test]
    fn sub_token_boundary_is_inclusive() {
        let r = rev(RevocationKind::Sub, "u1", Some(100));
        assert!(r.covers_token(&token("u1", Some(99))));
        assert!(r.covers_token(&token("u1", Some(100))));
        assert!(!r.covers_token(&token("u1", Some(101))));
        assert!(r.covers_token(&token("u1", None)), "missing iat is covered");
        assert!(!r.covers_token(&token("u2", Some(1))), "another user");
        assert!(!r.covers_token(&token("u2", None)), "another user");
    }

    #[test]
    fn sub_socket_boundary_is_inclusive() {
        let r = rev(RevocationKind::Sub, "u1", Some(100));
        assert!(r.covers_socket(&socket("u1", 99)));
        assert!(r.covers_socket(&socket("u1", 100)));
        assert!(!r.covers_socket(&socket("u1", 101)));
        assert!(!r.covers_socket(&socket("u2", 1)), "another user");
    }

    #[test]
    fn sub_without_not_before_covers_everything_of_that_user() {
        let r = rev(RevocationKind::Sub, "u1", None);
        assert!(r.covers_token(&token("u1", Some(u64::MAX))));
        assert!(r.covers_token(&token("u1", None)));
        assert!(r.covers_socket(&socket("u1", u64::MAX)));
        assert!(!r.covers_token(&token("u2", None)));
        assert!(!r.covers_socket(&socket("u2", 0)));
    }

    /// Issue 20 finding 6: a revocation covers its own issuer's tokens and sockets only; an
    /// entry without an issuer (written before they were per issuer) covers every issuer,
    /// and so does any entry for a token or socket whose issuer is unknown.
    #[test]
    fn revocations_are_per_issuer() {
        for kind in [
            RevocationKind::Jti,
            RevocationKind::Sid,
            RevocationKind::Sub,
        ] {
            let value = match kind {
                RevocationKind::Jti => "j1",
                RevocationKind::Sid => "s1",
                RevocationKind::Sub => "u1",
            };
            let mut r = rev(kind, value, None);
            r.iss = Some("https://a.test".into());
            assert!(r.covers_token(&token("u1", Some(5))), "{kind:?}");
            assert!(r.covers_socket(&socket("u1", 5)), "{kind:?}");
            let other_token = TokenRef {
                iss: Some("https://b.test"),
                ..token("u1", Some(5))
            };
            let other_socket = SocketRef {
                iss: Some("https://b.test"),
                ..socket("u1", 5)
            };
            assert!(!r.covers_token(&other_token), "{kind:?}");
            assert!(!r.covers_socket(&other_socket), "{kind:?}");
            let unknown = TokenRef {
                iss: None,
                ..other_token
            };
            assert!(
                r.covers_token(&unknown),
                "{kind:?}: unknown issuer is covered"
            );
            r.iss = None;
            assert!(r.covers_token(&other_token), "{kind:?}: legacy entry");
            assert!(r.covers_socket(&other_socket), "{kind:?}: legacy entry");
        }
    }

    #[test]
    fn expiry_boundary() {
        let r = rev(RevocationKind::Jti, "j1", None);
        assert!(!r.is_expired(1_999));
        assert!(r.is_expired(2_000));
        assert!(r.is_expired(2_001));
    }

    #[test]
    fn json_field_names_and_round_trip() {
        let r = rev(RevocationKind::Sub, "u1", Some(100));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"sub","value":"u1","not_before":100,"expires_at":2000}"#
        );
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);

        let r = rev(RevocationKind::Jti, "j1", None);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"kind":"jti","value":"j1","expires_at":2000}"#);
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        let mut r = rev(RevocationKind::Sid, "s", None);
        r.iss = Some("https://a.test".into());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"sid","value":"s","iss":"https://a.test","expires_at":2000}"#
        );
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), r);
        let sid: Revocation =
            serde_json::from_str(r#"{"kind":"sid","value":"s","expires_at":1}"#).unwrap();
        assert_eq!(sid.kind, RevocationKind::Sid);

        for bad in [
            r#"{"kind":"JTI","value":"j","expires_at":1}"#,
            r#"{"kind":"device","value":"j","expires_at":1}"#,
            r#"{"kind":"jti","value":"j"}"#,
            r#"{"kind":"jti","expires_at":1}"#,
        ] {
            assert!(serde_json::from_str::<Revocation>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn to_sse_exact_text_and_parses_back() {
        let r = rev(RevocationKind::Sid, "s\n1", Some(7));
        let text = r.to_sse("42");
        assert_eq!(
            text,
            "id: 42\ndata: {\"kind\":\"sid\",\"value\":\"s\\n1\",\"not_before\":7,\"expires_at\":2000}\n\n"
        );
        assert_eq!(
            rev(RevocationKind::Jti, "j", None).to_sse("a\r\nb"),
            "id: ab\ndata: {\"kind\":\"jti\",\"value\":\"j\",\"expires_at\":2000}\n\n"
        );
        let mut out = Vec::new();
        SseParser::new().feed(text.as_bytes(), &mut out).unwrap();
        let [SseEvent { id, data }] = &out[..] else {
            panic!("one event expected: {out:?}")
        };
        assert_eq!(id.as_deref(), Some("42"));
        assert_eq!(serde_json::from_str::<Revocation>(data).unwrap(), r);
    }
}
