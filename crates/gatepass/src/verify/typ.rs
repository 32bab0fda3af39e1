//! The JOSE header `typ` (explicit typing, RFC 8725 §3.11): what a token says it is, read
//! once, so an access token, a logout token and a DPoP proof can never pass for one another.

use serde_json::Value;

/// The JOSE header `typ` (RFC 7515 §4.1.9: case-insensitive, `application/` optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typ {
    Absent,
    /// `JWT`
    Jwt,
    /// `at+jwt` (RFC 9068)
    AtJwt,
    /// `logout+jwt` (OpenID Connect Back-Channel Logout)
    LogoutJwt,
    /// `dpop+jwt` (a DPoP proof, RFC 9449)
    DpopJwt,
    /// Anything else, `null` included.
    Other,
}

impl Typ {
    pub fn of(v: Option<&Value>) -> Typ {
        let Some(v) = v else { return Typ::Absent };
        let Some(t) = v.as_str() else {
            return Typ::Other;
        };
        let t = match t.get(..12) {
            Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
            _ => t,
        };
        if t.eq_ignore_ascii_case("jwt") {
            Typ::Jwt
        } else if t.eq_ignore_ascii_case("at+jwt") {
            Typ::AtJwt
        } else if t.eq_ignore_ascii_case("logout+jwt") {
            Typ::LogoutJwt
        } else if t.eq_ignore_ascii_case("dpop+jwt") {
            Typ::DpopJwt
        } else {
            Typ::Other
        }
    }

    /// Explicit typing (SPEC §3.9): only these may be access tokens.
    pub fn is_access_token(self) -> bool {
        matches!(self, Typ::Absent | Typ::Jwt | Typ::AtJwt)
    }
}
