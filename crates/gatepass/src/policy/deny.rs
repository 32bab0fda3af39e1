//! Why a request is refused, and the response for it. Denial reasons are one table, so the
//! metric label, the log line and the response body can't disagree. The bottom of the request
//! path: nothing here imports another gatepass module.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

pub type Body = Full<Bytes>;

/// Declares `DenyReason` from one table, so the variant list, `ALL` and the
/// (code, status, error, description) of each reason are written once.
macro_rules! deny_reasons {
    ($($variant:ident => ($code:literal, $status:ident, $error:literal, $desc:literal),)+) => {
        /// Why a request was refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DenyReason {
            $($variant,)+
        }

        impl DenyReason {
            pub const ALL: &'static [DenyReason] = &[$(DenyReason::$variant,)+];

            /// (metric/log code, status, OAuth error, description).
            fn parts(self) -> (&'static str, StatusCode, &'static str, &'static str) {
                match self {
                    $(DenyReason::$variant => ($code, StatusCode::$status, $error, $desc),)+
                }
            }
        }
    };
}

deny_reasons! {
    MissingForwardedHeaders => ("missing_forwarded_headers", UNAUTHORIZED, "invalid_request", "X-Forwarded-Method, X-Forwarded-Uri and X-Forwarded-Host are required"),
    AmbiguousPath => ("ambiguous_path", BAD_REQUEST, "invalid_request", "the request path has characters a backend may read differently"),
    MultipleAuthorization => ("multiple_authorization", BAD_REQUEST, "invalid_request", "more than one Authorization header"),
    AmbiguousToken => ("ambiguous_token", BAD_REQUEST, "invalid_request", "more than one token in the request"),
    MissingToken => ("missing_token", UNAUTHORIZED, "unauthorized", "no token presented"),
    UnsupportedScheme => ("unsupported_scheme", UNAUTHORIZED, "invalid_token", "Authorization must use the Bearer scheme"),
    TokenTooLarge => ("token_too_large", UNAUTHORIZED, "invalid_token", "token is too large"),
    MalformedToken => ("malformed_token", UNAUTHORIZED, "invalid_token", "token is malformed"),
    AlgorithmNotAllowed => ("algorithm_not_allowed", UNAUTHORIZED, "invalid_token", "token algorithm is not allowed"),
    UnknownIssuer => ("unknown_issuer", UNAUTHORIZED, "invalid_token", "token issuer is not trusted"),
    UnknownKey => ("unknown_key", UNAUTHORIZED, "invalid_token", "no key matches the token"),
    BadSignature => ("bad_signature", UNAUTHORIZED, "invalid_token", "token signature is invalid"),
    Expired => ("expired", UNAUTHORIZED, "invalid_token", "token expired"),
    TokenRevoked => ("token_revoked", UNAUTHORIZED, "invalid_token", "token revoked"),
    IssuedInFuture => ("issued_in_future", UNAUTHORIZED, "invalid_token", "token iat is in the future"),
    LifetimeTooLong => ("lifetime_too_long", UNAUTHORIZED, "invalid_token", "token lifetime exceeds the issuer's max_token_lifetime"),
    UnsupportedCritical => ("unsupported_crit", UNAUTHORIZED, "invalid_token", "token header names a critical extension gatepass does not implement"),
    NotAccessToken => ("not_access_token", UNAUTHORIZED, "invalid_token", "token is malformed"),
    WrongTokenType => ("wrong_token_type", UNAUTHORIZED, "invalid_token", "token typ must be at+jwt"),
    InactiveToken => ("inactive_token", UNAUTHORIZED, "invalid_token", "token is not active"),
    IntrospectionUnavailable => ("introspection_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "token introspection is unavailable"),
    NotYetValid => ("not_yet_valid", UNAUTHORIZED, "invalid_token", "token is not valid yet"),
    WrongIssuer => ("wrong_issuer", UNAUTHORIZED, "invalid_token", "token issuer does not match"),
    WrongAudience => ("wrong_audience", UNAUTHORIZED, "invalid_token", "token audience is not accepted"),
    MissingClaim => ("missing_claim", UNAUTHORIZED, "invalid_token", "a required claim is missing or malformed"),
    TicketInvalid => ("ticket_invalid", UNAUTHORIZED, "invalid_token", "ticket is unknown, used or expired"),
    TicketNotUpgrade => ("ticket_not_upgrade", UNAUTHORIZED, "invalid_token", "tickets are only valid on WebSocket upgrades"),
    SessionEnded => ("session_ended", UNAUTHORIZED, "invalid_token", "the session is unknown or has ended"),
    SessionUnavailable => ("session_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "the session's token expired and could not be refreshed"),
    SigninUnavailable => ("signin_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "the sign-in service is unavailable"),
    SigninLoop => ("signin_loop", TOO_MANY_REQUESTS, "rate_limited", "too many sign-ins from this browser"),
    CrossSite => ("cross_site", FORBIDDEN, "invalid_request", "cross-site request"),
    InsufficientRole => ("insufficient_role", FORBIDDEN, "insufficient_scope", "role not allowed for this route"),
    InsufficientPermissions => ("insufficient_permissions", FORBIDDEN, "insufficient_scope", "missing permissions for this route"),
    OriginNotAllowed => ("origin_not_allowed", FORBIDDEN, "access_denied", "origin not allowed"),
    CorsOriginNotAllowed => ("cors_origin_not_allowed", FORBIDDEN, "access_denied", "CORS origin not allowed"),
    DefaultDeny => ("default_deny", FORBIDDEN, "access_denied", "no rule allows this request"),
    RateLimitedUser => ("rate_limited_user", TOO_MANY_REQUESTS, "rate_limited", "too many requests for this user"),
    RateLimitedUpgrades => ("rate_limited_upgrades", TOO_MANY_REQUESTS, "rate_limited", "too many WebSocket connections for this user"),
    RateLimitedIp => ("rate_limited_ip", TOO_MANY_REQUESTS, "rate_limited", "too many failed attempts from this address"),
    KeysUnavailable => ("keys_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "signing keys are unavailable"),
    StateUnavailable => ("state_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "shared state is unavailable"),
    LogoutTokenRefused => ("logout_token_refused", BAD_REQUEST, "invalid_request", "the logout token was refused"),
    BodyTimeout => ("body_timeout", REQUEST_TIMEOUT, "invalid_request", "the request body did not arrive in time"),
    FeedSecretInvalid => ("feed_secret_invalid", UNAUTHORIZED, "invalid_token", "the revocation feed secret is missing or wrong"),
    CrossIssuerRevocation => ("cross_issuer_revocation", FORBIDDEN, "insufficient_scope", "a caller may revoke only its own issuer's tokens"),
    RevocationListFull => ("revocation_list_full", SERVICE_UNAVAILABLE, "temporarily_unavailable", "the revocation list is full"),
}

impl DenyReason {
    pub fn code(self) -> &'static str {
        self.parts().0
    }

    pub fn status(self) -> StatusCode {
        self.parts().1
    }

    pub fn rate_limit_name(self) -> Option<&'static str> {
        match self {
            DenyReason::RateLimitedUser => Some("per_user"),
            DenyReason::RateLimitedUpgrades => Some("upgrades_per_user"),
            DenyReason::RateLimitedIp => Some("per_ip_failures"),
            _ => None,
        }
    }

    /// The response for this denial.
    pub fn response(self, retry_after: Option<u64>) -> Response<Body> {
        self.response_for(retry_after, &Challenge::default())
    }

    /// The response, its challenge naming a protected resource's metadata (RFC 9728) and,
    /// for a missing permission, the scope needed (RFC 6750 §3.1).
    pub fn response_for(self, retry_after: Option<u64>, extra: &Challenge) -> Response<Body> {
        let (_, status, error, description) = self.parts();
        let body =
            serde_json::json!({"error": error, "error_description": description}).to_string();
        let mut resp = json_response(status, body);
        let h = resp.headers_mut();
        let mut head = String::from(r#"Bearer realm="gatepass""#);
        if let Some(url) = &extra.resource_metadata {
            head.push_str(&format!(r#", resource_metadata="{url}""#));
        }
        let scope = match (&extra.scope, self) {
            (Some(s), DenyReason::InsufficientPermissions) => format!(r#", scope="{s}""#),
            _ => String::new(),
        };
        let challenge = match (status, self) {
            (_, DenyReason::MissingToken) => Some(head),
            // RFC 6750 §3: the error code travels in the challenge, 400 included.
            (StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST, _)
            | (
                StatusCode::FORBIDDEN,
                DenyReason::InsufficientRole
                | DenyReason::InsufficientPermissions
                | DenyReason::CrossIssuerRevocation,
            ) => Some(format!(
                r#"{head}, error="{error}", error_description="{description}"{scope}"#
            )),
            _ => None,
        };
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(WWW_AUTHENTICATE, c);
        }
        if let Some(secs) = retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// What a challenge adds for a protected resource (SPEC §8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// `<proto>://<host>/.well-known/oauth-protected-resource<path>`.
    pub resource_metadata: Option<String>,
    /// The permissions the route needs, space-separated.
    pub scope: Option<String>,
}

/// A JSON response that is never cached: every denial and every gatepass endpoint's answer.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
