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
    DpopWithBearer => ("dpop_with_bearer", BAD_REQUEST, "invalid_request", "a DPoP proof goes with Authorization: DPoP, not Bearer"),
    MultipleDpopProofs => ("multiple_dpop_proofs", BAD_REQUEST, "invalid_request", "more than one DPoP header"),
    DpopProofMissing => ("dpop_proof_missing", UNAUTHORIZED, "invalid_dpop_proof", "Authorization: DPoP needs one DPoP proof header"),
    DpopProofMalformed => ("dpop_proof_malformed", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof is not a well-formed JWS"),
    DpopProofType => ("dpop_proof_type", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's typ must be dpop+jwt"),
    DpopProofAlgorithm => ("dpop_proof_algorithm", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's algorithm is not allowed"),
    DpopProofKey => ("dpop_proof_key", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's jwk must be a public key of its algorithm"),
    DpopProofClaims => ("dpop_proof_claims", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof needs jti (at most 256 characters), htm, htu and iat"),
    DpopProofMethod => ("dpop_proof_method", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's htm is not the request's method"),
    DpopProofUrl => ("dpop_proof_url", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's htu is not the request's URL"),
    DpopProofTime => ("dpop_proof_time", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's iat is outside the accepted window"),
    DpopProofAth => ("dpop_proof_ath", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's ath is not the hash of the access token"),
    DpopProofSignature => ("dpop_proof_signature", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof's signature is invalid"),
    DpopProofReplayed => ("dpop_proof_replayed", UNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof was already used"),
    DpopNonceRequired => ("dpop_nonce_required", UNAUTHORIZED, "use_dpop_nonce", "the DPoP proof needs the current nonce"),
    DpopKeyMismatch => ("dpop_key_mismatch", UNAUTHORIZED, "invalid_token", "the token is bound to another key"),
    DpopBoundAsBearer => ("dpop_bound_as_bearer", UNAUTHORIZED, "invalid_token", "a DPoP-bound token goes with Authorization: DPoP and a proof"),
    DpopUnbound => ("dpop_unbound", UNAUTHORIZED, "invalid_token", "the token is not DPoP-bound"),
    BindingNotAccepted => ("binding_not_accepted", UNAUTHORIZED, "invalid_token", "the token is bound (cnf) in a way its issuer is not configured to accept"),
    CertificateMissing => ("certificate_missing", UNAUTHORIZED, "invalid_token", "the token is bound to a client certificate and none was presented"),
    CertificateMismatch => ("certificate_mismatch", UNAUTHORIZED, "invalid_token", "the token is bound to another client certificate"),
    CertificateRequired => ("certificate_required", UNAUTHORIZED, "invalid_token", "the token is not bound to a client certificate"),
    TokenNotInHeader => ("token_not_in_header", UNAUTHORIZED, "invalid_request", "tokens for this resource go in the Authorization header"),
    McpProtocolVersion => ("mcp_protocol_version", BAD_REQUEST, "invalid_request", "this resource needs MCP-Protocol-Version 2026-07-28 or later"),
    ResourceOriginNotAllowed => ("resource_origin_not_allowed", FORBIDDEN, "access_denied", "origin not allowed for this resource"),
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

    /// The challenge is DPoP's (RFC 9449 §7.1) rather than Bearer's.
    pub fn dpop_challenge(self) -> bool {
        matches!(self.parts().2, "invalid_dpop_proof" | "use_dpop_nonce")
            || matches!(
                self,
                DenyReason::DpopKeyMismatch
                    | DenyReason::DpopBoundAsBearer
                    | DenyReason::DpopUnbound
            )
    }

    /// The response, its challenge naming a protected resource's metadata (RFC 9728) and the
    /// scope needed (RFC 6750 §3.1), in DPoP's scheme with its algorithms when that is the
    /// failure (RFC 9449 §7.1), with both schemes for a missing token when DPoP is on.
    pub fn response_for(self, retry_after: Option<u64>, extra: &Challenge) -> Response<Body> {
        let (_, status, error, description) = self.parts();
        let body =
            serde_json::json!({"error": error, "error_description": description}).to_string();
        let mut resp = json_response(status, body);
        let h = resp.headers_mut();
        let mut params = String::new();
        if let Some(url) = &extra.resource_metadata {
            params.push_str(&format!(r#", resource_metadata="{url}""#));
        }
        let with_error = format!(r#", error="{error}", error_description="{description}""#);
        let scope = match &extra.scope {
            Some(s) => format!(r#", scope="{s}""#),
            None => String::new(),
        };
        let algs = match &extra.dpop_algs {
            Some(a) => format!(r#", algs="{a}""#),
            None => String::new(),
        };
        let bearer = |error: &str| format!(r#"Bearer realm="gatepass"{params}{error}{scope}"#);
        let dpop = |error: &str| format!(r#"DPoP realm="gatepass"{params}{error}{scope}{algs}"#);
        let challenges = match (status, self) {
            (_, DenyReason::MissingToken) if extra.dpop_algs.is_some() => {
                vec![bearer(""), dpop("")]
            }
            (_, DenyReason::MissingToken) => vec![bearer("")],
            (_, r) if r.dpop_challenge() => vec![dpop(&with_error)],
            // RFC 6750 §3: the error code travels in the challenge, 400 included.
            (StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST, _)
            | (
                StatusCode::FORBIDDEN,
                DenyReason::InsufficientRole
                | DenyReason::InsufficientPermissions
                | DenyReason::CrossIssuerRevocation,
            ) => vec![bearer(&with_error)],
            _ => Vec::new(),
        };
        for c in challenges {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(WWW_AUTHENTICATE, v);
            }
        }
        if self == DenyReason::DpopNonceRequired {
            if let Some(v) = extra
                .dpop_nonce
                .as_deref()
                .and_then(|n| HeaderValue::from_str(n).ok())
            {
                h.insert(DPOP_NONCE, v);
            }
        }
        if let Some(secs) = retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// RFC 9449 §8: the nonce a client must put in its next proof.
pub const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// What a challenge adds for a protected resource (SPEC §8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    /// `<proto>://<host>/.well-known/oauth-protected-resource<path>`.
    pub resource_metadata: Option<String>,
    /// The permissions the route needs, space-separated.
    pub scope: Option<String>,
    /// The DPoP algorithms (`algs`), when any issuer accepts DPoP-bound tokens.
    pub dpop_algs: Option<std::sync::Arc<str>>,
    /// The current DPoP nonce, for `use_dpop_nonce`.
    pub dpop_nonce: Option<String>,
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
