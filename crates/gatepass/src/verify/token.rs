//! Finding the credential in a request (SPEC §3.4 step 3): the first configured source that
//! is *present* decides; a bad token there is never a fall-through to a later source.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

use crate::policy::deny::DenyReason;

/// A configured token source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Bearer,
    WebsocketProtocol,
    Cookie(String),
    Query(String),
    Ticket,
    /// The sign-in session cookie (`[signin] cookie_name`).
    Session(String),
}

/// Parses `tokens.sources`; `session` is the cookie named `session_cookie` (`[signin]`).
pub fn parse_sources(
    list: &[String],
    session_cookie: Option<&str>,
) -> Result<Vec<TokenSource>, String> {
    if list.is_empty() {
        return Err("must list at least one source".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        let src = match s.split_once(':') {
            None if s == "bearer" => TokenSource::Bearer,
            None if s == "websocket_protocol" => TokenSource::WebsocketProtocol,
            None if s == "ticket" => TokenSource::Ticket,
            None if s == "session" => match session_cookie {
                Some(name) => TokenSource::Session(name.into()),
                None => return Err("`session` needs a [signin] table".into()),
            },
            Some(("cookie", n)) if valid_name(n) => TokenSource::Cookie(n.into()),
            Some(("query", n)) if valid_name(n) && n != "ticket" => TokenSource::Query(n.into()),
            _ => {
                return Err(format!(
                    "unknown token source `{s}` (bearer, websocket_protocol, cookie:NAME, query:NAME, ticket, session)"
                ))
            }
        };
        if out.contains(&src) {
            return Err(format!("`{s}` is listed twice"));
        }
        out.push(src);
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// What was found.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A bearer token (`Authorization: Bearer`, a subprotocol, a cookie, a query parameter).
    Jwt(Cow<'a, str>),
    /// `Authorization: DPoP <token>` (RFC 9449): needs a proof.
    Dpop(&'a str),
    Ticket(Cow<'a, str>),
    /// A sign-in session's cookie value.
    Session(&'a str),
}

impl Credential<'_> {
    /// The access token of a `Bearer` or `DPoP` credential (tickets and sessions have none).
    pub fn access_token(&self) -> Option<&str> {
        match self {
            Credential::Jwt(t) => Some(t),
            Credential::Dpop(t) => Some(t),
            Credential::Ticket(_) | Credential::Session(_) => None,
        }
    }
}

/// Why the credential is unusable before any verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Several `Authorization` headers (400).
    MultipleAuthorization,
    /// `Authorization` with another scheme than Bearer, or no token after it (401).
    UnsupportedScheme,
    /// Several token-shaped subprotocols, token cookies or repeated query parameters (400).
    Ambiguous,
    /// A ticket on a request that is not a WebSocket upgrade (401; not consumed).
    TicketNotUpgrade,
    /// A token outside the `Authorization` header where only the header may carry one (401).
    NotInHeader,
}

impl From<ExtractError> for DenyReason {
    fn from(e: ExtractError) -> DenyReason {
        match e {
            ExtractError::MultipleAuthorization => DenyReason::MultipleAuthorization,
            ExtractError::UnsupportedScheme => DenyReason::UnsupportedScheme,
            ExtractError::Ambiguous => DenyReason::AmbiguousToken,
            ExtractError::TicketNotUpgrade => DenyReason::TicketNotUpgrade,
            ExtractError::NotInHeader => DenyReason::TokenNotInHeader,
        }
    }
}

/// Finds the credential, in the configured order.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    uri: &'a str,
    upgrade: bool,
    sources: &[TokenSource],
    marker: &str,
) -> Result<Option<Credential<'a>>, ExtractError> {
    for src in sources {
        let found = match src {
            TokenSource::Bearer => authorization(headers)?,
            TokenSource::WebsocketProtocol if upgrade => {
                protocol_token(headers, marker)?.map(|t| Credential::Jwt(Cow::Borrowed(t)))
            }
            TokenSource::WebsocketProtocol => None,
            TokenSource::Cookie(name) => {
                cookie(headers, name)?.map(|t| Credential::Jwt(Cow::Borrowed(t)))
            }
            TokenSource::Query(name) if upgrade => query_param(uri, name)?.map(Credential::Jwt),
            TokenSource::Query(_) => None,
            TokenSource::Session(name) => cookie(headers, name)?.map(Credential::Session),
            TokenSource::Ticket => match query_param(uri, "ticket")? {
                Some(_) if !upgrade => return Err(ExtractError::TicketNotUpgrade),
                t => t.map(Credential::Ticket),
            },
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// [`extract`] where only the `Authorization` header may carry a token (a protected
/// resource, SPEC §10): a token found in any other source is refused, not ignored.
pub fn extract_from_header<'a>(
    headers: &'a HeaderMap,
    uri: &'a str,
    upgrade: bool,
    sources: &[TokenSource],
    marker: &str,
) -> Result<Option<Credential<'a>>, ExtractError> {
    if let Some(c) = authorization(headers)? {
        return Ok(Some(c));
    }
    match extract(headers, uri, upgrade, sources, marker) {
        Ok(Some(_)) | Err(ExtractError::Ambiguous | ExtractError::TicketNotUpgrade) => {
            Err(ExtractError::NotInHeader)
        }
        other => other,
    }
}

/// The `Authorization` header's credential: `Bearer` or `DPoP` (case-insensitive), exactly
/// one header.
pub fn authorization(headers: &HeaderMap) -> Result<Option<Credential<'_>>, ExtractError> {
    Ok(match scheme_and_token(headers)? {
        None => None,
        Some((s, t)) if s.eq_ignore_ascii_case("bearer") => Some(Credential::Jwt(Cow::Borrowed(t))),
        Some((s, t)) if s.eq_ignore_ascii_case("dpop") => Some(Credential::Dpop(t)),
        Some(_) => return Err(ExtractError::UnsupportedScheme),
    })
}

/// `Authorization: Bearer <token>`; scheme case-insensitive; exactly one header.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ExtractError> {
    match scheme_and_token(headers)? {
        Some((s, t)) if s.eq_ignore_ascii_case("bearer") => Ok(Some(t)),
        Some(_) => Err(ExtractError::UnsupportedScheme),
        None => Ok(None),
    }
}

/// `Authorization: <scheme> <token>`, read once: exactly one header, ASCII, a token after the
/// scheme.
fn scheme_and_token(headers: &HeaderMap) -> Result<Option<(&str, &str)>, ExtractError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Ok(None);
    };
    if all.next().is_some() {
        return Err(ExtractError::MultipleAuthorization);
    }
    // ASCII, as `to_str` demands, checked a word at a time: a token is hundreds of bytes and
    // `to_str` looks at them one by one. (Control bytes never get past hyper's parser.)
    let value = std::str::from_utf8(value.as_bytes())
        .ok()
        .filter(|v| v.is_ascii())
        .ok_or(ExtractError::UnsupportedScheme)?;
    // The scheme ends at the first space: the search stops there, never runs through the token.
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(ExtractError::UnsupportedScheme)?;
    let token = token.trim();
    if token.is_empty() {
        return Err(ExtractError::UnsupportedScheme);
    }
    Ok(Some((scheme, token)))
}

/// True for a compact JWS: three base64url segments, the first two non-empty.
pub fn is_jws(s: &str) -> bool {
    let Some((h, rest)) = s.split_once('.') else {
        return false;
    };
    let Some((p, sig)) = rest.split_once('.') else {
        return false;
    };
    // Branch-free per byte, so the loop vectorizes: every request runs it over hundreds of
    // bytes. A further `.` in `sig` is outside the alphabet.
    let b64 = |x: &str| {
        x.bytes().fold(true, |ok, b| {
            let letter = (b | 0x20).wrapping_sub(b'a') < 26;
            ok & (letter | (b.wrapping_sub(b'0') < 10) | (b == b'-') | (b == b'_'))
        })
    };
    !h.is_empty() && !p.is_empty() && b64(h) & b64(p) & b64(sig)
}

/// The token offered next to the marker in `Sec-WebSocket-Protocol` (any order, any number of
/// header lines). Without the marker, or without a JWS-shaped entry, there is no token.
pub fn protocol_token<'a>(
    headers: &'a HeaderMap,
    marker: &str,
) -> Result<Option<&'a str>, ExtractError> {
    let entries = || gatepass_identity::subprotocols(headers);
    if !entries().any(|e| e == marker) {
        return Ok(None);
    }
    let mut tokens = entries().filter(|e| is_jws(e));
    let first = tokens.next();
    if tokens.next().is_some() {
        return Err(ExtractError::Ambiguous);
    }
    Ok(first)
}

/// The cookie called `name` (over every `Cookie` line). Several of that name are ambiguous:
/// gatepass and a backend could each pick a different one.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ExtractError> {
    let mut found = cookies(headers, name);
    let first = found.next();
    if found.next().is_some() {
        return Err(ExtractError::Ambiguous);
    }
    Ok(first.filter(|v| !v.is_empty()))
}

/// Every value of cookie `name` in the request (over every `Cookie` line).
pub fn cookies<'a, 'n>(
    h: &'a HeaderMap,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    h.get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// The percent-decoded value of query parameter `name`; a repeated parameter is ambiguous.
pub fn query_param<'a>(uri: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let Some(query) = crate::policy::rules::query_of(uri) else {
        return Ok(None);
    };
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            if found.is_some() {
                return Err(ExtractError::Ambiguous);
            }
            found = Some(v);
        }
    }
    Ok(found
        .filter(|v| !v.is_empty())
        .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";

    fn sources() -> Vec<TokenSource> {
        parse_sources(
            &[
                "bearer",
                "websocket_protocol",
                "cookie:access_token",
                "query:access_token",
                "ticket",
            ]
            .map(String::from),
            None,
        )
        .unwrap()
    }

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn jwt(c: Result<Option<Credential<'_>>, ExtractError>) -> Option<String> {
        match c.unwrap() {
            Some(Credential::Jwt(t)) => Some(t.into_owned()),
            _ => None,
        }
    }

    #[test]
    fn bearer_rules() {
        let s = sources();
        assert_eq!(
            jwt(extract(
                &h(&[("authorization", &format!("bEaReR {JWT}"))]),
                "/",
                false,
                &s,
                "jwt-auth"
            )),
            Some(JWT.into())
        );
        let cookie = format!("access_token={JWT}");
        for (pairs, want) in [
            (
                vec![
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer d.e.f"),
                ],
                ExtractError::MultipleAuthorization,
            ),
            (
                vec![("authorization", "Basic dXNlcjpwYXNz")],
                ExtractError::UnsupportedScheme,
            ),
            (
                vec![("authorization", "Bearer ")],
                ExtractError::UnsupportedScheme,
            ),
            // Bytes past ASCII (valid UTF-8 or not) are no token.
            (
                vec![("authorization", "Bearer a.b.cé")],
                ExtractError::UnsupportedScheme,
            ),
            // A bad bearer never falls through to a good cookie.
            (
                vec![("authorization", "Basic x"), ("cookie", cookie.as_str())],
                ExtractError::UnsupportedScheme,
            ),
        ] {
            assert_eq!(
                extract(&h(&pairs), "/", false, &s, "jwt-auth"),
                Err(want),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn websocket_protocol_rules() {
        let s = sources();
        for hs in [
            vec![("sec-websocket-protocol", format!("jwt-auth, {JWT}"))],
            vec![("sec-websocket-protocol", format!("{JWT}, jwt-auth"))],
            vec![
                ("sec-websocket-protocol", "jwt-auth".to_string()),
                ("sec-websocket-protocol", JWT.to_string()),
            ],
            vec![(
                "sec-websocket-protocol",
                format!("jwt-auth, {JWT}, chat.v2"),
            )],
        ] {
            let m = h(&hs.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
            assert_eq!(
                jwt(extract(&m, "/", true, &s, "jwt-auth")),
                Some(JWT.into()),
                "{hs:?}"
            );
            // Not an upgrade: the subprotocol source does not apply.
            assert_eq!(jwt(extract(&m, "/", false, &s, "jwt-auth")), None);
        }
        let no_marker = h(&[("sec-websocket-protocol", JWT)]);
        assert_eq!(jwt(extract(&no_marker, "/", true, &s, "jwt-auth")), None);
        let two = h(&[("sec-websocket-protocol", &format!("jwt-auth, {JWT}, {JWT}"))]);
        assert_eq!(
            extract(&two, "/", true, &s, "jwt-auth"),
            Err(ExtractError::Ambiguous)
        );
    }

    #[test]
    fn cookie_query_ticket() {
        let s = sources();
        let c = h(&[("cookie", &format!("a=b; access_token={JWT}; c=d"))]);
        assert_eq!(
            jwt(extract(&c, "/", false, &s, "jwt-auth")),
            Some(JWT.into())
        );
        let uri = format!("/ws?access_token={JWT}");
        assert_eq!(
            jwt(extract(&HeaderMap::new(), &uri, true, &s, "jwt-auth")),
            Some(JWT.into())
        );
        assert_eq!(
            jwt(extract(&HeaderMap::new(), &uri, false, &s, "jwt-auth")),
            None
        );
        assert_eq!(
            extract(&HeaderMap::new(), "/ws?ticket=abc", true, &s, "jwt-auth").unwrap(),
            Some(Credential::Ticket("abc".into()))
        );
        assert_eq!(
            extract(&HeaderMap::new(), "/x?ticket=abc", false, &s, "jwt-auth"),
            Err(ExtractError::TicketNotUpgrade)
        );
        assert_eq!(
            extract(
                &HeaderMap::new(),
                "/ws?ticket=a&ticket=b",
                true,
                &s,
                "jwt-auth"
            ),
            Err(ExtractError::Ambiguous)
        );
    }

    #[test]
    fn bearer_spacing() {
        let auth = |v: &str| bearer(&h(&[("authorization", v)])).map(|t| t.map(str::to_owned));
        assert_eq!(auth("Bearer   a.b.c "), Ok(Some("a.b.c".into())));
        assert_eq!(auth(" bearer a.b.c"), Ok(Some("a.b.c".into())));
        for v in [
            "Bearer\ta.b.c",
            "Bearer",
            "Bearer ",
            "Bearera.b.c",
            "Bear a.b.c",
        ] {
            assert_eq!(auth(v), Err(ExtractError::UnsupportedScheme), "{v:?}");
        }
    }

    #[test]
    fn jws_shape() {
        for (s, want) in [
            ("a.b.c", true),
            ("ab-_.Cd9.", true),
            ("", false),
            ("a.b", false),
            (".b.c", false),
            ("a..c", false),
            ("a.b.c.d", false),
            ("a.b.c=", false),
            ("a+b.c.d", false),
            ("a.b.cé", false),
        ] {
            assert_eq!(is_jws(s), want, "{s:?}");
        }
    }

    #[test]
    fn source_parsing() {
        assert!(parse_sources(&["bearer".into(), "bearer".into()], None).is_err());
        assert!(parse_sources(&["query:ticket".into()], None).is_err());
        assert!(parse_sources(&[], None).is_err());
        assert!(parse_sources(&["session".into()], None).is_err());
        assert_eq!(
            parse_sources(&["session".into(), "bearer".into()], Some("gp")).unwrap(),
            [TokenSource::Session("gp".into()), TokenSource::Bearer]
        );
    }

    proptest! {
        #[test]
        fn extraction_never_panics(auth in ".*", proto in ".*", cookie_v in ".*", uri in ".*", upgrade in any::<bool>()) {
            let mut m = HeaderMap::new();
            for (k, v) in [("authorization", &auth), ("sec-websocket-protocol", &proto), ("cookie", &cookie_v)] {
                if let Ok(v) = HeaderValue::from_str(v) { m.append(k, v); }
            }
            let _ = extract(&m, &uri, upgrade, &sources(), "jwt-auth");
        }

        #[test]
        fn protocol_order_does_not_matter(extra in proptest::collection::vec("[a-z][a-z0-9]{0,8}(\\.v[0-9])?", 0..4), pos in 0usize..6) {
            let mut entries: Vec<String> = extra.into_iter().filter(|e| e != "jwt-auth").collect();
            entries.insert(pos.min(entries.len()), JWT.to_string());
            entries.insert(0, "jwt-auth".to_string());
            let m = h(&[("sec-websocket-protocol", &entries.join(", "))]);
            prop_assert_eq!(protocol_token(&m, "jwt-auth").unwrap(), Some(JWT));
        }

        #[test]
        fn jws_shape_is_split_and_alphabet(s in "[A-Za-z0-9_.=+/é-]{0,12}") {
            let parts: Vec<&str> = s.split('.').collect();
            let b64 = |x: &str| x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let want = parts.len() == 3 && !parts[0].is_empty() && !parts[1].is_empty() && parts.iter().all(|p| b64(p));
            prop_assert_eq!(is_jws(&s), want);
        }

        #[test]
        fn bearer_round_trip(tok in "[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{1,40}\\.[A-Za-z0-9_-]{0,40}") {
            let m = h(&[("authorization", &format!("Bearer {tok}"))]);
            prop_assert_eq!(bearer(&m).unwrap(), Some(tok.as_str()));
            prop_assert!(is_jws(&tok));
        }
    }
}
