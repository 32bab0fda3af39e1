//! The ForwardAuth decision (SPEC §3.4) and its responses. Denial reasons are one enum, so the
//! metric label, the log line and the response body can't disagree.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use gatepass_identity::{headers as names, AssertionSigner};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use ipnet::IpNet;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::ratelimit::Limits;
use crate::rules::{self, Matched, Rules};
use crate::tickets::Tickets;
use crate::token::{self, Credential, ExtractError, TokenSource};
use crate::verify::{now_secs, Verified, Verifier};

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
    MissingForwardedHeaders => ("missing_forwarded_headers", UNAUTHORIZED, "invalid_request", "X-Forwarded-Method and X-Forwarded-Uri are required"),
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
    NotYetValid => ("not_yet_valid", UNAUTHORIZED, "invalid_token", "token is not valid yet"),
    WrongIssuer => ("wrong_issuer", UNAUTHORIZED, "invalid_token", "token issuer does not match"),
    WrongAudience => ("wrong_audience", UNAUTHORIZED, "invalid_token", "token audience is not accepted"),
    MissingClaim => ("missing_claim", UNAUTHORIZED, "invalid_token", "a required claim is missing or malformed"),
    TicketInvalid => ("ticket_invalid", UNAUTHORIZED, "invalid_token", "ticket is unknown, used or expired"),
    TicketNotUpgrade => ("ticket_not_upgrade", UNAUTHORIZED, "invalid_token", "tickets are only valid on WebSocket upgrades"),
    InsufficientRole => ("insufficient_role", FORBIDDEN, "insufficient_scope", "role not allowed for this route"),
    InsufficientPermissions => ("insufficient_permissions", FORBIDDEN, "insufficient_scope", "missing permissions for this route"),
    OriginNotAllowed => ("origin_not_allowed", FORBIDDEN, "access_denied", "origin not allowed"),
    CorsOriginNotAllowed => ("cors_origin_not_allowed", FORBIDDEN, "access_denied", "CORS origin not allowed"),
    DefaultDeny => ("default_deny", FORBIDDEN, "access_denied", "no rule allows this request"),
    RateLimitedUser => ("rate_limited_user", TOO_MANY_REQUESTS, "rate_limited", "too many requests for this user"),
    RateLimitedUpgrades => ("rate_limited_upgrades", TOO_MANY_REQUESTS, "rate_limited", "too many WebSocket connections for this user"),
    RateLimitedIp => ("rate_limited_ip", TOO_MANY_REQUESTS, "rate_limited", "too many failed attempts from this address"),
    KeysUnavailable => ("keys_unavailable", SERVICE_UNAVAILABLE, "temporarily_unavailable", "signing keys are unavailable"),
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
        let (_, status, error, description) = self.parts();
        let body =
            serde_json::json!({"error": error, "error_description": description}).to_string();
        let mut resp = json_response(status, body);
        let h = resp.headers_mut();
        let challenge = match (status, self) {
            (_, DenyReason::MissingToken) => Some(r#"Bearer realm="gatepass""#.to_string()),
            // RFC 6750 §3: the error code travels in the challenge, 400 included.
            (StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST, _)
            | (
                StatusCode::FORBIDDEN,
                DenyReason::InsufficientRole | DenyReason::InsufficientPermissions,
            ) => Some(format!(
                r#"Bearer realm="gatepass", error="{error}", error_description="{description}""#
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

impl From<ExtractError> for DenyReason {
    fn from(e: ExtractError) -> DenyReason {
        match e {
            ExtractError::MultipleAuthorization => DenyReason::MultipleAuthorization,
            ExtractError::UnsupportedScheme => DenyReason::UnsupportedScheme,
            ExtractError::Ambiguous => DenyReason::AmbiguousToken,
            ExtractError::TicketNotUpgrade => DenyReason::TicketNotUpgrade,
        }
    }
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

const IDENTITY_NAMES: [HeaderName; 5] = [
    HeaderName::from_static(names::USER_ID),
    HeaderName::from_static(names::USER_USERNAME),
    HeaderName::from_static(names::USER_ROLE),
    HeaderName::from_static(names::USER_PERMISSIONS),
    HeaderName::from_static(names::USER_EXPIRES),
];
const ASSERTION_NAME: HeaderName = HeaderName::from_static(names::USER_ASSERTION);

/// An allow: 200, empty body, `no-store`, every identity header (empty when anonymous).
pub fn allow_response(
    verified: Option<&Verified>,
    assertion: Option<HeaderValue>,
) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    let h = resp.headers_mut();
    h.reserve(8);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (i, name) in IDENTITY_NAMES.iter().enumerate() {
        let value = verified.map_or(HeaderValue::from_static(""), |v| v.headers[i].clone());
        h.insert(name.clone(), value);
    }
    if let Some(a) = assertion {
        h.insert(ASSERTION_NAME, a);
    }
    resp
}

/// The outcome of `/validate`.
pub enum Decision {
    Allow(Option<Arc<Verified>>),
    /// Reason, `Retry-After` seconds, and the user when the token was valid.
    Deny(DenyReason, Option<u64>, Option<Arc<Verified>>),
}

/// The request as Traefik described it in `X-Forwarded-*`.
pub struct Ctx<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub host: &'a str,
    pub ip: Option<IpAddr>,
    pub origin: Option<&'a str>,
    pub upgrade: bool,
}

// Prebuilt names: a lookup by `&str` would parse and validate the name on every request.
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

impl<'a> Ctx<'a> {
    pub fn parse(h: &'a HeaderMap, trusted: &[IpNet]) -> Option<Ctx<'a>> {
        let method = header(h, &X_FORWARDED_METHOD).filter(|m| !m.is_empty())?;
        let uri = header(h, &X_FORWARDED_URI).filter(|u| !u.is_empty())?;
        Some(Ctx {
            method,
            uri,
            host: header(h, &X_FORWARDED_HOST).unwrap_or(""),
            ip: client_ip(h, trusted),
            origin: header(h, &http::header::ORIGIN),
            upgrade: h.contains_key(http::header::SEC_WEBSOCKET_KEY)
                && header(h, &http::header::SEC_WEBSOCKET_VERSION)
                    .is_some_and(|v| v.trim() == "13"),
        })
    }
}

/// Logs an optional client IP as the address or an empty string.
struct LogIp(Option<IpAddr>);

impl std::fmt::Display for LogIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

/// The client: the rightmost `X-Forwarded-For` entry (over every header line) that is not a
/// trusted proxy. With no trusted proxies that is the last entry, the peer Traefik appended.
/// Entries left of the client are written by the client and never read. An entry that is not
/// an address where the client should be leaves the request to the last trusted hop, so it is
/// still limited.
pub fn client_ip(h: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let mut hop = None;
    for line in h.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in line.to_str().ok()?.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return hop;
            };
            if !trusted.iter().any(|net| net.contains(&ip)) {
                return Some(ip);
            }
            hop = Some(ip);
        }
    }
    hop
}

/// Everything a decision needs; rebuilt as a whole on reload.
pub struct State {
    pub config: Config,
    pub verifier: Verifier,
    pub rules: Rules,
    pub sources: Vec<TokenSource>,
    pub limits: Limits,
    pub tickets: Tickets,
    pub assertion: Option<(AssertionSigner, std::time::Duration)>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for State {
    fn drop(&mut self) {
        if let Ok(tasks) = self.tasks.get_mut() {
            for t in tasks.iter() {
                t.abort();
            }
        }
    }
}

impl State {
    /// Loads every key and certificate the config names. Must run inside a Tokio runtime.
    pub fn build(config: Config, metrics: &Metrics) -> Result<State, ConfigError> {
        let verifier = Verifier::new(&config, metrics)?;
        let assertion = match &config.assertion {
            Some(a) => {
                let path = config.path(&a.key_file);
                let pem = std::fs::read(&path).map_err(|e| {
                    ConfigError::new(
                        "assertion.key_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?;
                let signer = AssertionSigner::from_pkcs8_pem(&pem)
                    .map_err(|e| ConfigError::new("assertion.key_file", e.to_string()))?;
                Some((signer, a.ttl.0))
            }
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some(crate::server::tls_acceptor(
                &config.path(&t.cert),
                &config.path(&t.key),
            )?),
            None => None,
        };
        let sources = token::parse_sources(&config.tokens.sources)
            .map_err(|m| ConfigError::new("tokens.sources", m))?;
        Ok(State {
            rules: Rules::compile(&config.rules, config.default_rule.policy, &config.paths)?,
            limits: Limits::new(&config.rate_limit),
            tickets: Tickets::new(&config.tickets),
            sources,
            verifier,
            assertion,
            tls,
            tasks: Default::default(),
            config,
        })
    }

    /// Starts key refreshers and limiter upkeep; they stop when the state is dropped.
    pub fn start(&self, this: std::sync::Weak<arc_swap::ArcSwap<State>>) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        for issuer in &self.verifier.issuers {
            if let Some(t) = issuer.keys.spawn_upkeep() {
                tasks.push(t);
            }
        }
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(app) = this.upgrade() else { return };
                app.load().limits.upkeep();
            }
        }));
    }

    /// Issuers without usable keys.
    pub fn unready_issuers(&self) -> Vec<&str> {
        self.verifier
            .issuers
            .iter()
            .filter(|i| i.keys.current().is_none_or(|k| k.keys.is_empty()))
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Decides a `/validate` request.
    pub async fn decide(&self, h: &HeaderMap, metrics: &Metrics) -> Decision {
        let trusted = &self.config.rate_limit.trusted_proxies;
        let ctx = Ctx::parse(h, trusted);
        let ip = match &ctx {
            Some(c) => c.ip,
            None => client_ip(h, trusted),
        };
        let (method, uri, host, origin, upgrade) = match &ctx {
            Some(c) => (c.method, c.uri, c.host, c.origin.unwrap_or(""), c.upgrade),
            None => ("", "", "", "", false),
        };
        if let Some(name) = h.keys().find(|n| names::is_identity_like(n.as_str())) {
            metrics.spoofed.increment(1);
            tracing::warn!(client_ip = %LogIp(ip), header = name.as_str(), method, path = rules::path_of(uri), "client sent an identity header; ignored");
        }
        let decision = match &ctx {
            Some(ctx) => self.decide_ctx(h, ctx, metrics).await,
            None => self.fail(DenyReason::MissingForwardedHeaders, ip),
        };
        if let Decision::Deny(reason, _, user) = &decision {
            let sub = user.as_ref().map(|u| u.identity().id).unwrap_or_default();
            tracing::info!(
                reason = reason.code(),
                sub = sub.as_str(),
                status = reason.status().as_u16(),
                client_ip = %LogIp(ip),
                method,
                host,
                path = rules::path_of(uri),
                origin,
                upgrade,
                "request denied"
            );
        }
        decision
    }

    /// Counts a 400/401 toward the client IP's failure budget; the answer that exceeds the
    /// budget becomes a 429 with its `Retry-After`.
    pub fn count_failure(
        &self,
        reason: DenyReason,
        ip: Option<IpAddr>,
    ) -> (DenyReason, Option<u64>) {
        let counted = matches!(
            reason.status(),
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
        );
        match ip
            .filter(|_| counted)
            .and_then(|ip| self.limits.record_failure(ip))
        {
            Some(retry) => (DenyReason::RateLimitedIp, Some(retry)),
            None => (reason, None),
        }
    }

    /// A denial; 400/401 count toward the per-IP failure budget.
    fn fail(&self, reason: DenyReason, ip: Option<IpAddr>) -> Decision {
        let (reason, retry) = self.count_failure(reason, ip);
        Decision::Deny(reason, retry, None)
    }

    async fn decide_ctx(&self, h: &HeaderMap, ctx: &Ctx<'_>, metrics: &Metrics) -> Decision {
        // A spent failure budget: only requests that cost no verification are decided as
        // usual (anonymous routes, tokens already in the cache); everything else is a 429.
        let blocked = ctx.ip.and_then(|ip| self.limits.ip_blocked(ip));
        let rate_limited = |retry| Decision::Deny(DenyReason::RateLimitedIp, Some(retry), None);
        if self.rules.ambiguous(ctx.uri) {
            return match blocked {
                Some(retry) => rate_limited(retry),
                None => self.fail(DenyReason::AmbiguousPath, ctx.ip),
            };
        }
        let rule = match self.rules.find(ctx.host, ctx.uri, ctx.method) {
            Matched::Rule(r) => Some(r),
            Matched::DefaultDeny => None,
        };
        if ctx.upgrade {
            let ws = &self.config.websocket;
            let ok = match ctx.origin {
                Some(o) => rules::origin_allowed(&ws.allowed_origins, o),
                None => ws.allow_missing_origin,
            };
            if !ok {
                return Decision::Deny(DenyReason::OriginNotAllowed, None, None);
            }
        }
        if rule.is_some_and(|r| r.anonymous) {
            return Decision::Allow(None);
        }
        let marker = &self.config.tokens.websocket_protocol;
        let cred = token::extract(h, ctx.uri, ctx.upgrade, &self.sources, marker);
        if let Some(retry) = blocked {
            let cached = match &cred {
                Ok(Some(Credential::Jwt(t))) => self.verifier.lookup(t, metrics).await,
                _ => None,
            };
            return match (cached, rule) {
                (Some(v), Some(rule)) => self.authorize(rule, v, ctx),
                (Some(v), None) => Decision::Deny(DenyReason::DefaultDeny, None, Some(v)),
                (None, _) => rate_limited(retry),
            };
        }
        // A preflight carries no credentials (browsers never send them on one); a request
        // that does is judged by its token.
        if ctx.method.eq_ignore_ascii_case("OPTIONS")
            && matches!(cred, Ok(None))
            && !h.contains_key(http::header::AUTHORIZATION)
            && h.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            if let Some(origin) = ctx.origin {
                return if rules::origin_allowed(&self.config.cors.allowed_origins, origin) {
                    Decision::Allow(None)
                } else {
                    Decision::Deny(DenyReason::CorsOriginNotAllowed, None, None)
                };
            }
        }
        let Some(rule) = rule else {
            return Decision::Deny(DenyReason::DefaultDeny, None, None);
        };
        let cred = match cred {
            Ok(Some(c)) => c,
            Ok(None) => return self.fail(DenyReason::MissingToken, ctx.ip),
            Err(e) => return self.fail(e.into(), ctx.ip),
        };
        let verified = match cred {
            Credential::Jwt(t) => self.verifier.verify(&t, metrics).await,
            Credential::Ticket(t) => match self.tickets.redeem(&t).await {
                Some(v) => {
                    metrics.tickets_redeemed.increment(1);
                    Ok(v)
                }
                None => Err(DenyReason::TicketInvalid),
            },
        };
        match verified {
            Ok(v) => self.authorize(rule, v, ctx),
            Err(reason) => self.fail(reason, ctx.ip),
        }
    }

    /// Roles, permissions and per-user limits for a verified caller.
    fn authorize(&self, rule: &rules::Rule, verified: Arc<Verified>, ctx: &Ctx<'_>) -> Decision {
        if !rule.role_ok(verified.role()) {
            return Decision::Deny(DenyReason::InsufficientRole, None, Some(verified));
        }
        if !rule.permissions_ok(verified.permissions()) {
            return Decision::Deny(DenyReason::InsufficientPermissions, None, Some(verified));
        }
        if let Err(retry) = self.limits.check_user(verified.user_key) {
            return Decision::Deny(DenyReason::RateLimitedUser, Some(retry), Some(verified));
        }
        if ctx.upgrade {
            if let Err(retry) = self.limits.check_upgrade(verified.user_key) {
                return Decision::Deny(
                    DenyReason::RateLimitedUpgrades,
                    Some(retry),
                    Some(verified),
                );
            }
        }
        Decision::Allow(Some(verified))
    }

    /// The allow response, with a fresh assertion when configured.
    pub fn allow(&self, h: &HeaderMap, verified: Option<&Verified>) -> Response<Body> {
        let assertion = match (verified, &self.assertion) {
            (Some(v), Some((signer, ttl))) => {
                let aud = header(h, &X_FORWARDED_HOST).unwrap_or("");
                signer
                    .sign(&v.identity(), aud, now_secs(), *ttl)
                    .ok()
                    .and_then(|a| HeaderValue::from_str(&a).ok())
            }
            _ => None,
        };
        allow_response(verified, assertion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// SPEC §3.8: the rightmost entry outside `trusted_proxies`, over every header line.
    #[test]
    fn client_ip_is_the_rightmost_untrusted_entry() {
        let cdn: Vec<IpNet> = vec![
            "198.51.100.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert_eq!(client_ip(&xff(&["1.1.1.1, 2.2.2.2"]), &[]), ip("2.2.2.2"));
        assert_eq!(
            client_ip(&xff(&["1.1.1.1", "2.2.2.2 , 3.3.3.3"]), &[]),
            ip("3.3.3.3")
        );
        assert_eq!(
            client_ip(&xff(&["6.6.6.6, 2.2.2.2, 198.51.100.9"]), &cdn),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(&xff(&["2.2.2.2, 198.51.100.9", "198.51.100.1"]), &cdn),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(&xff(&["2001:db9::5, 2001:db8::1"]), &cdn),
            ip("2001:db9::5")
        );
        // Whatever the client wrote left of itself is never read.
        assert_eq!(
            client_ip(&xff(&["not-an-ip, 2.2.2.2, 198.51.100.9"]), &cdn),
            ip("2.2.2.2")
        );
        // All trusted: the first hop. Garbage where the client should be: the last trusted hop.
        assert_eq!(
            client_ip(&xff(&["198.51.100.3, 198.51.100.9"]), &cdn),
            ip("198.51.100.3")
        );
        assert_eq!(
            client_ip(&xff(&["junk, 198.51.100.9"]), &cdn),
            ip("198.51.100.9")
        );
        assert_eq!(client_ip(&xff(&["junk"]), &[]), None);
        assert_eq!(client_ip(&HeaderMap::new(), &cdn), None);
    }
}
