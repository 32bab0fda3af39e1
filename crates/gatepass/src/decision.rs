//! The ForwardAuth decision (SPEC §3.4): from the `X-Forwarded-*` description of a request to
//! an allow or a denial, in the order of checks the README lists; and the ticket purchase.
//! Both log their denials through one function.

use std::net::IpAddr;
use std::sync::Arc;

use gatepass_identity::headers as names;
use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use ipnet::IpNet;

use crate::metrics::Metrics;
use crate::policy::deny::{Body, Challenge, DenyReason};
use crate::policy::ratelimit::{Refusal, Unavailable};
use crate::policy::rules::{self, Matched, McpOp};
use crate::session::Resolved;
use crate::state::State;
use crate::verify::dpop::{self, Proof, Target};
use crate::verify::token::{self, Credential, ExtractError};
use crate::verify::{now_secs, Verified};

// ---- what a decision comes to -----------------------------------------------------------------

static IDENTITY_NAMES: [HeaderName; 5] = [
    HeaderName::from_static(names::USER_ID),
    HeaderName::from_static(names::USER_USERNAME),
    HeaderName::from_static(names::USER_ROLE),
    HeaderName::from_static(names::USER_PERMISSIONS),
    HeaderName::from_static(names::USER_EXPIRES),
];
const ASSERTION_NAME: HeaderName = HeaderName::from_static(names::USER_ASSERTION);

/// An allow's headers with empty identity values. An allow clones it and sets the values in
/// place, rather than hashing six names into a new map on every request.
static ALLOW_HEADERS: std::sync::LazyLock<http::HeaderMap> = std::sync::LazyLock::new(|| {
    let mut h = http::HeaderMap::with_capacity(8);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for name in &IDENTITY_NAMES {
        h.insert(name.clone(), HeaderValue::from_static(""));
    }
    h
});

/// An allow: 200, empty body, `no-store`, every identity header (empty when anonymous).
pub fn allow_response(
    verified: Option<&Verified>,
    assertion: Option<HeaderValue>,
) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    let h = resp.headers_mut();
    *h = ALLOW_HEADERS.clone();
    if let Some(v) = verified {
        for (name, slot) in h.iter_mut() {
            if let Some(i) = IDENTITY_NAMES.iter().position(|n| n == name) {
                *slot = v.headers[i].clone();
            }
        }
    }
    if let Some(a) = assertion {
        h.insert(ASSERTION_NAME, a);
    }
    resp
}

/// The outcome of `/validate` (and of a ticket purchase).
pub enum Decision {
    /// Allowed; `None` for anonymous routes and CORS preflights (empty identity).
    Allow(Option<Arc<Verified>>),
    Deny(Denial),
    /// A navigation sent to sign in (SPEC §9): the 302 to the provider with its flow cookie,
    /// or the loop guard's 429 page.
    SignIn(Response<Body>),
}

/// A refusal: why, when to retry (429), and who, when the token was valid (for the log).
pub struct Denial {
    pub reason: DenyReason,
    pub retry_after: Option<u64>,
    pub user: Option<Arc<Verified>>,
}

impl Decision {
    pub fn deny(reason: DenyReason) -> Decision {
        Decision::Deny(Denial {
            reason,
            retry_after: None,
            user: None,
        })
    }

    pub fn rate_limited(
        reason: DenyReason,
        retry_after: u64,
        user: Option<Arc<Verified>>,
    ) -> Decision {
        Decision::Deny(Denial {
            reason,
            retry_after: Some(retry_after),
            user,
        })
    }
}

// ---- the decision ----------------------------------------------------------------------------

/// The request as Traefik described it in `X-Forwarded-*`.
pub struct Ctx<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub host: &'a str,
    /// `X-Forwarded-Proto` (`https` when absent: a DPoP `htu` is then compared to https).
    pub proto: &'a str,
    pub ip: Option<IpAddr>,
    pub origin: Option<&'a str>,
    pub upgrade: bool,
    /// The MCP operation the request names (`Mcp-Method`, `Mcp-Name`, `MCP-Protocol-Version`).
    pub mcp: McpOp<'a>,
}

// Prebuilt names: a lookup by `&str` would parse and validate the name on every request.
const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
/// The client certificate Traefik's `passTLSClientCert` passes (SPEC §2, §10).
const X_FORWARDED_TLS_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-tls-client-cert");
const DPOP: HeaderName = HeaderName::from_static("dpop");
const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

fn text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    text(h.get(name))
}

/// The headers `decide` reads, found in one pass over the map: a lookup by name hashes the
/// name and probes the map, once per name. Each is the first line of its name, as `get` gives.
#[derive(Default)]
struct Scan<'a> {
    method: Option<&'a HeaderValue>,
    uri: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
    proto: Option<&'a HeaderValue>,
    origin: Option<&'a HeaderValue>,
    ws_version: Option<&'a HeaderValue>,
    mcp_method: Option<&'a HeaderValue>,
    mcp_name: Option<&'a HeaderValue>,
    mcp_version: Option<&'a HeaderValue>,
    ws_key: bool,
    /// The first header named like an identity header (the client's, never Traefik's).
    spoofed: Option<&'a HeaderName>,
}

impl<'a> Scan<'a> {
    fn of(h: &'a HeaderMap) -> Scan<'a> {
        let mut s = Scan::default();
        for (name, value) in h {
            let slot = if name == X_FORWARDED_METHOD {
                &mut s.method
            } else if name == X_FORWARDED_URI {
                &mut s.uri
            } else if name == X_FORWARDED_HOST {
                &mut s.host
            } else if name == X_FORWARDED_PROTO {
                &mut s.proto
            } else if name == http::header::ORIGIN {
                &mut s.origin
            } else if name == http::header::SEC_WEBSOCKET_VERSION {
                &mut s.ws_version
            } else if name == MCP_METHOD {
                &mut s.mcp_method
            } else if name == MCP_NAME {
                &mut s.mcp_name
            } else if name == MCP_PROTOCOL_VERSION {
                &mut s.mcp_version
            } else {
                if name == http::header::SEC_WEBSOCKET_KEY {
                    s.ws_key = true;
                } else if s.spoofed.is_none() && names::is_identity_like(name.as_str()) {
                    s.spoofed = Some(name);
                }
                continue;
            };
            slot.get_or_insert(value);
        }
        s
    }
}

impl<'a> Ctx<'a> {
    pub fn parse(h: &'a HeaderMap, trusted: &[IpNet]) -> Option<Ctx<'a>> {
        Ctx::of(&Scan::of(h), h, trusted)
    }

    fn of(s: &Scan<'a>, h: &'a HeaderMap, trusted: &[IpNet]) -> Option<Ctx<'a>> {
        let method = text(s.method).filter(|m| !m.is_empty())?;
        let uri = text(s.uri).filter(|u| !u.is_empty())?;
        // SPEC §3.9: the host names the assertion's audience; without it (or with one that
        // is not ASCII) nothing can be bound to it, so the request fails closed.
        let host = text(s.host).filter(|h| !h.is_empty())?;
        Some(Ctx {
            method,
            uri,
            host,
            proto: text(s.proto).unwrap_or("https"),
            ip: client_ip(h, trusted),
            origin: text(s.origin),
            upgrade: s.ws_key && text(s.ws_version).is_some_and(|v| v.trim() == "13"),
            mcp: McpOp {
                method: text(s.mcp_method),
                name: text(s.mcp_name),
                version: text(s.mcp_version),
            },
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
pub use gatepass_identity::client_ip;

impl State {
    /// Decides a `/validate` request.
    pub async fn decide(&self, h: &HeaderMap, metrics: &Metrics) -> Decision {
        let trusted = &self.config.rate_limit.trusted_proxies;
        let scan = Scan::of(h);
        let ctx = Ctx::of(&scan, h, trusted);
        let ip = match &ctx {
            Some(c) => c.ip,
            None => client_ip(h, trusted),
        };
        let (method, uri, host, origin, upgrade) = match &ctx {
            Some(c) => (c.method, c.uri, c.host, c.origin.unwrap_or(""), c.upgrade),
            None => ("", "", "", "", false),
        };
        if let Some(name) = scan.spoofed {
            metrics.spoofed.increment(1);
            tracing::warn!(client_ip = %LogIp(ip), header = name.as_str(), method, path = rules::path_of(uri), "client sent an identity header; ignored");
        }
        let decision = match &ctx {
            Some(ctx) => self.decide_ctx(h, ctx, metrics).await,
            None => self.fail(DenyReason::MissingForwardedHeaders, ip).await,
        };
        if let Decision::Deny(d) = &decision {
            log_denial(d, ip, method, host, rules::path_of(uri), origin, upgrade);
        }
        decision
    }

    /// Counts a 400/401 toward the client IP's failure budget; the answer that exceeds the
    /// budget becomes a 429 with its `Retry-After`. A failure that can't be counted (shared
    /// state down, `on_unavailable = "deny"`) is a 503.
    pub async fn count_failure(
        &self,
        reason: DenyReason,
        ip: Option<IpAddr>,
    ) -> (DenyReason, Option<u64>) {
        let counted = matches!(
            reason.status(),
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED
        );
        let Some(ip) = ip.filter(|_| counted) else {
            return (reason, None);
        };
        match self.limits.record_failure(ip).await {
            Ok(Some(retry)) => (DenyReason::RateLimitedIp, Some(retry)),
            Ok(None) => (reason, None),
            Err(Unavailable) => (DenyReason::StateUnavailable, None),
        }
    }

    /// A denial; 400/401 count toward the per-IP failure budget.
    async fn fail(&self, reason: DenyReason, ip: Option<IpAddr>) -> Decision {
        let (reason, retry_after) = self.count_failure(reason, ip).await;
        Decision::Deny(Denial {
            reason,
            retry_after,
            user: None,
        })
    }

    async fn decide_ctx(&self, h: &HeaderMap, ctx: &Ctx<'_>, metrics: &Metrics) -> Decision {
        // A spent failure budget: only requests that cost no verification are decided as
        // usual (anonymous routes, tokens already in the cache); everything else is a 429.
        // The budget is only looked at where it can change the answer (never for a cached
        // token), so a cache-hit allow never pays a shared-state round trip for it.
        let rate_limited = |retry| Decision::rate_limited(DenyReason::RateLimitedIp, retry, None);
        if self.rules.ambiguous(ctx.uri) {
            return match self.limits.ip_blocked(ctx.ip).await {
                Ok(Some(retry)) => rate_limited(retry),
                Ok(None) => self.fail(DenyReason::AmbiguousPath, ctx.ip).await,
                Err(Unavailable) => Decision::deny(DenyReason::StateUnavailable),
            };
        }
        let rule = match self.rules.find_op(ctx.host, ctx.uri, ctx.method, &ctx.mcp) {
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
                return Decision::deny(DenyReason::OriginNotAllowed);
            }
        }
        if rule.is_some_and(|r| r.anonymous) {
            return Decision::Allow(None);
        }
        // A preflight carries no credentials (browsers never send them on one, nor the MCP
        // headers); a request that does is judged by its token.
        let preflight = ctx.method.eq_ignore_ascii_case("OPTIONS")
            && !h.contains_key(http::header::AUTHORIZATION)
            && h.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        // A protected resource (SPEC §10): its origins, its MCP protocol guard, and tokens
        // only from the Authorization header.
        let resource = self.rules.resource_for(ctx.uri);
        if let Some(r) = resource {
            let origins = &r.config.allowed_origins;
            if let Some(o) = ctx.origin.filter(|_| !origins.is_empty()) {
                if !rules::origin_allowed(origins, o) {
                    return Decision::deny(DenyReason::ResourceOriginNotAllowed);
                }
            }
            if r.mcp_guard && !preflight && !ctx.mcp.version_checks_headers() {
                return self.fail(DenyReason::McpProtocolVersion, ctx.ip).await;
            }
        }
        let marker = &self.config.tokens.websocket_protocol;
        let cred = match resource {
            Some(_) => token::extract_from_header(h, ctx.uri, ctx.upgrade, &self.sources, marker),
            None => token::extract(h, ctx.uri, ctx.upgrade, &self.sources, marker),
        };
        if let Ok(Some(Credential::Session(id))) = cred {
            return self.decide_session(h, ctx, rule, id).await;
        }
        // DPoP (SPEC §10): the scheme and the proof's cheap checks, before the token.
        let target = || Target::of(ctx.method, ctx.proto, ctx.host, rules::path_of(ctx.uri));
        let proof = match self.proof_of(h, &cred, target) {
            Ok(p) => p,
            Err(reason) => return self.fail(reason, ctx.ip).await,
        };
        let cached = match cred
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(Credential::access_token)
        {
            Some(t) => self.verifier.lookup(t).await,
            None => None,
        };
        // An already verified token is decided the same whatever the budget says.
        if let Some(v) = cached {
            if let Err(reason) = self.sender_ok(h, &v, proof.as_ref()).await {
                return self.refused(reason, v, ctx.ip).await;
            }
            return match rule {
                Some(rule) => self.authorize(rule, v, ctx, resource).await,
                None => denied_user(DenyReason::DefaultDeny, v),
            };
        }
        match self.limits.ip_blocked(ctx.ip).await {
            Ok(Some(retry)) => return rate_limited(retry),
            Ok(None) => {}
            Err(Unavailable) => return Decision::deny(DenyReason::StateUnavailable),
        }
        if preflight && matches!(cred, Ok(None)) {
            if let Some(origin) = ctx.origin {
                return if rules::origin_allowed(&self.config.cors.allowed_origins, origin) {
                    Decision::Allow(None)
                } else {
                    Decision::deny(DenyReason::CorsOriginNotAllowed)
                };
            }
        }
        let Some(rule) = rule else {
            return Decision::deny(DenyReason::DefaultDeny);
        };
        let cred = match cred {
            Ok(Some(c)) => c,
            Ok(None) => {
                if let Some(signin) = self.sign_in(h, ctx) {
                    return signin;
                }
                return self.fail(DenyReason::MissingToken, ctx.ip).await;
            }
            Err(e) => return self.fail(e.into(), ctx.ip).await,
        };
        let verified = match cred {
            Credential::Jwt(t) => self.verifier.verify(&t).await,
            Credential::Dpop(t) => self.verifier.verify(t).await,
            // Decided in `decide_session`.
            Credential::Session(_) => Err(DenyReason::SessionEnded),
            // A ticket's purchase proved the key (SPEC §10): it is redeemed without a proof.
            Credential::Ticket(t) => match self.tickets.redeem(&t).await {
                Ok(Some(v)) => {
                    metrics.tickets_redeemed.increment(1);
                    return self.authorize(rule, v, ctx, resource).await;
                }
                Ok(None) => Err(DenyReason::TicketInvalid),
                // Tickets never fall back: only the shared store knows if one was used.
                Err(_) => return Decision::deny(DenyReason::StateUnavailable),
            },
        };
        match verified {
            Ok(v) => match self.sender_ok(h, &v, proof.as_ref()).await {
                Ok(()) => self.authorize(rule, v, ctx, resource).await,
                Err(reason) => self.refused(reason, v, ctx.ip).await,
            },
            Err(reason) => self.fail(reason, ctx.ip).await,
        }
    }

    /// The DPoP proof of a request, after its cheap checks (SPEC §10): `None` for a bearer
    /// token without one. The `Bearer` scheme with a proof, several proofs, `DPoP` without
    /// one, and the `DPoP` scheme where no issuer accepts it are refused here.
    fn proof_of<'h, 't>(
        &self,
        h: &'h HeaderMap,
        cred: &Result<Option<Credential<'_>>, ExtractError>,
        target: impl FnOnce() -> Option<Target<'t>>,
    ) -> Result<Option<Proof<'h>>, DenyReason> {
        let Some(dpop) = &self.dpop else {
            return match cred {
                Ok(Some(Credential::Dpop(_))) => Err(DenyReason::UnsupportedScheme),
                _ => Ok(None),
            };
        };
        let mut lines = h.get_all(DPOP).iter();
        let proof = lines.next();
        if lines.next().is_some() {
            return Err(DenyReason::MultipleDpopProofs);
        }
        match cred {
            Ok(Some(Credential::Dpop(token))) => {
                let proof = proof
                    .and_then(|p| p.to_str().ok())
                    .ok_or(DenyReason::DpopProofMissing)?;
                let target = target().ok_or(DenyReason::DpopProofUrl)?;
                dpop.inspect(proof, token, &target, now_secs()).map(Some)
            }
            Ok(Some(Credential::Jwt(_))) if proof.is_some() => Err(DenyReason::DpopWithBearer),
            _ => Ok(None),
        }
    }

    /// The token's binding (its own `cnf`) holds for this request: a DPoP-bound token came
    /// with its key's proof, a certificate-bound one over its certificate. A token without
    /// `cnf` and without a proof costs two branches.
    async fn sender_ok(
        &self,
        h: &HeaderMap,
        v: &Verified,
        proof: Option<&Proof<'_>>,
    ) -> Result<(), DenyReason> {
        let cnf = &v.ids.cnf;
        match (proof, &self.dpop) {
            (Some(p), Some(dpop)) => {
                let algs = self.verifier.binding_of(v).dpop_algs;
                dpop.confirm(p, cnf, algs).await?;
            }
            _ if cnf.jkt.is_some() => return Err(DenyReason::DpopBoundAsBearer),
            _ => {}
        }
        if let Some(bound) = &cnf.x5t_s256 {
            let cert = header(h, &X_FORWARDED_TLS_CLIENT_CERT)
                .filter(|c| !c.is_empty())
                .ok_or(DenyReason::CertificateMissing)?;
            let presented = dpop::certificate_thumbprint(cert);
            if presented.as_deref() != Some(&**bound) {
                return Err(DenyReason::CertificateMismatch);
            }
        }
        Ok(())
    }

    /// A valid token refused for this request (revoked, another audience, its binding): 401,
    /// counted toward the address's failure budget, logged with who it was.
    async fn refused(&self, reason: DenyReason, v: Arc<Verified>, ip: Option<IpAddr>) -> Decision {
        let (reason, retry_after) = self.count_failure(reason, ip).await;
        Decision::Deny(Denial {
            reason,
            retry_after,
            user: Some(v),
        })
    }

    /// A navigation without a usable credential on a sign-in host is sent to sign in
    /// (SPEC §9); `None` for every other request.
    fn sign_in(&self, h: &HeaderMap, ctx: &Ctx<'_>) -> Option<Decision> {
        let sessions = self.sessions.as_ref()?;
        if !sessions.is_navigation(h, ctx.method, ctx.upgrade, ctx.host) {
            return None;
        }
        let at = crate::session::signin::At::of(h);
        Some(Decision::SignIn(sessions.start(h, &at, ctx.uri)))
    }

    /// A request authenticated by a sign-in session cookie (SPEC §9): resolved to the
    /// session's current token (a process cache on the hot path, the store otherwise), then
    /// decided as a bearer token would be, after the cross-site rule. An unknown or ended
    /// session sends a navigation to sign in, and is a 401 for anything else.
    async fn decide_session(
        &self,
        h: &HeaderMap,
        ctx: &Ctx<'_>,
        rule: Option<&rules::Rule>,
        id: &str,
    ) -> Decision {
        let Some(sessions) = &self.sessions else {
            return Decision::deny(DenyReason::SessionEnded);
        };
        let entry = match sessions.cached(id) {
            Some(e) => e,
            None => {
                // As for tokens: a blocked address keeps only what is already verified.
                match self.limits.ip_blocked(ctx.ip).await {
                    Ok(Some(retry)) => {
                        return Decision::rate_limited(DenyReason::RateLimitedIp, retry, None)
                    }
                    Ok(None) => {}
                    Err(Unavailable) => return Decision::deny(DenyReason::StateUnavailable),
                }
                match sessions.resolve(id).await {
                    Resolved::Valid(e) => e,
                    Resolved::Ended => return self.session_ended(h, ctx).await,
                    Resolved::Unavailable => return Decision::deny(DenyReason::SessionUnavailable),
                    Resolved::Refused(reason) => return self.fail(reason, ctx.ip).await,
                }
            }
        };
        // Ended on another replica (sign-out, back-channel logout): its sid is revoked.
        if self.revocations.is_revoked(&entry.verified) {
            sessions.forget(id, &entry);
            return self.session_ended(h, ctx).await;
        }
        let v = entry.verified.clone();
        if !sessions.same_site(h, ctx.method) {
            return denied_user(DenyReason::CrossSite, v);
        }
        // Never under a protected resource: there only the Authorization header carries a
        // token, so a session cookie is refused before this.
        match rule {
            Some(rule) => self.authorize(rule, v, ctx, None).await,
            None => denied_user(DenyReason::DefaultDeny, v),
        }
    }

    /// An unknown or ended session: a navigation signs in again, anything else is a 401
    /// (counted toward the failure budget).
    async fn session_ended(&self, h: &HeaderMap, ctx: &Ctx<'_>) -> Decision {
        match self.sign_in(h, ctx) {
            Some(signin) => signin,
            None => self.fail(DenyReason::SessionEnded, ctx.ip).await,
        }
    }

    /// Revocation, roles, permissions and per-user limits for a verified caller.
    async fn authorize(
        &self,
        rule: &rules::Rule,
        verified: Arc<Verified>,
        ctx: &Ctx<'_>,
        resource: Option<&rules::Resource>,
    ) -> Decision {
        if self.revocations.is_revoked(&verified) {
            return self
                .refused(DenyReason::TokenRevoked, verified, ctx.ip)
                .await;
        }
        // RFC 8707: a protected resource accepts only tokens issued for it.
        if let Some(r) = resource {
            if !verified.ids.aud.iter().any(|a| **a == *r.config.resource) {
                return self
                    .refused(DenyReason::WrongAudience, verified, ctx.ip)
                    .await;
            }
        }
        if !rule.role_ok(verified.role()) {
            return denied_user(DenyReason::InsufficientRole, verified);
        }
        if !rule.permissions_ok(verified.permissions()) {
            return denied_user(DenyReason::InsufficientPermissions, verified);
        }
        self.limited(verified, ctx.upgrade).await
    }

    /// The per-user (and, for upgrades, upgrade) limits: one shared-state call at most.
    async fn limited(&self, verified: Arc<Verified>, upgrade: bool) -> Decision {
        let (reason, retry) = match self.limits.check_user(verified.limited(), upgrade).await {
            Ok(()) => return Decision::Allow(Some(verified)),
            Err(Refusal::User(r)) => (DenyReason::RateLimitedUser, r),
            Err(Refusal::Upgrades(r)) => (DenyReason::RateLimitedUpgrades, r),
            Err(Refusal::Unavailable) => {
                return denied_user(DenyReason::StateUnavailable, verified)
            }
        };
        Decision::rate_limited(reason, retry, Some(verified))
    }

    /// A bearer token that is not revoked, within the per-user limit.
    async fn bearer_ok(&self, verified: Arc<Verified>, ip: IpAddr) -> Decision {
        if self.revocations.is_revoked(&verified) {
            return self
                .refused(DenyReason::TokenRevoked, verified, Some(ip))
                .await;
        }
        self.limited(verified, false).await
    }

    /// `POST /tickets` (and `POST /revocations`, at `path`): a valid token (and the per-user
    /// limit) buys a ticket. A DPoP-bound token needs `Authorization: DPoP` and a proof for
    /// this POST (SPEC §10). The same failure budget and blocked-address rule as `decide`;
    /// `peer` stands in for a missing `X-Forwarded-For`.
    pub async fn decide_bearer(&self, h: &HeaderMap, peer: IpAddr, path: &'static str) -> Decision {
        let ip = client_ip(h, &self.config.rate_limit.trusted_proxies).unwrap_or(peer);
        let decision = self.decide_post(h, ip, path).await;
        if let Decision::Deny(d) = &decision {
            log_denial(d, Some(ip), "POST", "", path, "", false);
        }
        decision
    }

    async fn decide_post(&self, h: &HeaderMap, ip: IpAddr, path: &'static str) -> Decision {
        let cred = token::authorization(h);
        let token = cred
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .and_then(Credential::access_token);
        let proof = match self.proof_of(h, &cred, || self.post_target(h, path)) {
            Ok(p) => p,
            Err(reason) => return self.fail(reason, Some(ip)).await,
        };
        let cached = match token {
            Some(t) => self.verifier.lookup(t).await,
            None => None,
        };
        // As in `decide`: a blocked address keeps only what is already verified.
        let verified = match cached {
            Some(v) => v,
            None => {
                match self.limits.ip_blocked(Some(ip)).await {
                    Ok(Some(retry)) => {
                        return Decision::rate_limited(DenyReason::RateLimitedIp, retry, None)
                    }
                    Err(Unavailable) => return Decision::deny(DenyReason::StateUnavailable),
                    Ok(None) => {}
                }
                let verified = match (token, &cred) {
                    (Some(t), _) => self.verifier.verify(t).await,
                    (None, Ok(_)) => Err(DenyReason::MissingToken),
                    (None, Err(e)) => Err((*e).into()),
                };
                match verified {
                    Ok(v) => v,
                    Err(reason) => return self.fail(reason, Some(ip)).await,
                }
            }
        };
        if let Err(reason) = self.sender_ok(h, &verified, proof.as_ref()).await {
            return self.refused(reason, verified, Some(ip)).await;
        }
        self.bearer_ok(verified, ip).await
    }

    /// The URL a client called to reach `path` (a DPoP proof's `htu`): through Traefik
    /// `<X-Forwarded-Proto>://<X-Forwarded-Host><X-Forwarded-Prefix><path>`, directly
    /// `http(s)://<Host><path>`.
    fn post_target(&self, h: &HeaderMap, path: &str) -> Option<Target<'static>> {
        match (header(h, &X_FORWARDED_PROTO), header(h, &X_FORWARDED_HOST)) {
            (Some(proto), Some(host)) => {
                let prefix = header(h, &X_FORWARDED_PREFIX).unwrap_or("");
                Target::of("POST", proto, host, &format!("{prefix}{path}"))
            }
            _ => {
                let proto = if self.tls.is_some() { "https" } else { "http" };
                Target::of("POST", proto, header(h, &http::header::HOST)?, path)
            }
        }
    }

    /// A denial's challenge additions: under a protected resource its metadata URL (from
    /// `X-Forwarded-Proto`/`-Host`) and the scope the operation needs (a 403 for a missing
    /// permission, and every 401: the matched rule's permissions, else the resource's
    /// `scopes_supported`); with DPoP on, the algorithms and (for `use_dpop_nonce`) a nonce.
    pub fn challenge(&self, h: &HeaderMap, reason: DenyReason) -> Challenge {
        let mut c = Challenge::default();
        if let Some(d) = &self.dpop {
            if reason == DenyReason::MissingToken || reason.dpop_challenge() {
                c.dpop_algs = Some(d.algs_text.clone());
            }
            if reason == DenyReason::DpopNonceRequired {
                c.dpop_nonce = d.nonce(now_secs());
            }
        }
        let uri = header(h, &X_FORWARDED_URI).unwrap_or("");
        let Some(r) = self.rules.resource_for(uri) else {
            return c;
        };
        let proto = match header(h, &X_FORWARDED_PROTO) {
            Some("http") => "http",
            _ => "https",
        };
        let host = header(h, &X_FORWARDED_HOST).unwrap_or("");
        // Only a plain host[:port] goes into the quoted challenge parameter.
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if !host_ok {
            return c;
        }
        let scoped = reason == DenyReason::InsufficientPermissions
            || reason.status() == StatusCode::UNAUTHORIZED;
        if scoped {
            let scan = Scan::of(h);
            let mcp = McpOp {
                method: text(scan.mcp_method),
                name: text(scan.mcp_name),
                version: None,
            };
            let method = header(h, &X_FORWARDED_METHOD).unwrap_or("GET");
            c.scope = self.rules.required_scope(host, uri, method, &mcp);
            if c.scope.is_none() && reason != DenyReason::InsufficientPermissions {
                let all = &r.config.scopes_supported;
                c.scope = (!all.is_empty()).then(|| all.join(" "));
            }
        }
        c.resource_metadata = Some(format!("{proto}://{host}{}", r.metadata_path));
        c
    }

    /// The HTML page a navigation gets for a denial when sign-in is configured (SPEC §9);
    /// `None` for every other request, which keeps the JSON of SPEC §3.4.
    pub fn page(&self, h: &HeaderMap, d: &Denial) -> Option<Response<Body>> {
        let sessions = self.sessions.as_ref()?;
        let ctx = Ctx::parse(h, &self.config.rate_limit.trusted_proxies)?;
        sessions
            .is_navigation(h, ctx.method, ctx.upgrade, ctx.host)
            .then(|| sessions.page_for(d.reason, d.retry_after, ctx.uri))
    }

    /// The allow response, with a fresh assertion when configured.
    pub fn allow(&self, h: &HeaderMap, verified: Option<&Verified>) -> Response<Body> {
        let assertion = match (verified, &self.assertion) {
            (Some(v), Some((signer, ttl))) => {
                let aud = header(h, &X_FORWARDED_HOST).unwrap_or("");
                let method = header(h, &X_FORWARDED_METHOD).unwrap_or("");
                // SPEC 3.6: safe methods (upgrades are GETs) may reuse a recent assertion for
                // the same token and host; every other method gets a fresh one (new jti)
                // naming its method (`htm`).
                let safe = gatepass_identity::is_safe_method(method);
                let now = now_secs();
                match v.assertion_for(aud, now).filter(|_| safe) {
                    Some(a) => Some(a),
                    None => {
                        let ids = gatepass_identity::TokenIds {
                            sid: v.ids.sid.as_deref(),
                            tid: v.ids.jti.as_deref(),
                            iss: v.ids.iss.as_deref(),
                            jkt: v.ids.cnf.jkt.as_deref(),
                        };
                        let signed = signer
                            .sign_with_ids(&v.identity(), ids, aud, method, now, *ttl)
                            .ok()
                            .and_then(|a| HeaderValue::from_str(&a).ok());
                        if let (Some(a), true) = (&signed, safe) {
                            let exp = now.saturating_add(ttl.as_secs()).min(v.exp);
                            v.keep_assertion(aud, a.clone(), now, exp);
                        }
                        signed
                    }
                }
            }
            _ => None,
        };
        allow_response(verified, assertion)
    }
}

fn denied_user(reason: DenyReason, user: Arc<Verified>) -> Decision {
    Decision::Deny(Denial {
        reason,
        retry_after: None,
        user: Some(user),
    })
}

/// The one denial log line (SPEC §3.7): reason, client IP, method, path without the query,
/// `sub` when the token was valid, origin. Never a token.
fn log_denial(
    d: &Denial,
    ip: Option<IpAddr>,
    method: &str,
    host: &str,
    path: &str,
    origin: &str,
    upgrade: bool,
) {
    let sub = d.user.as_ref().map(|u| u.identity().id).unwrap_or_default();
    tracing::info!(
        reason = d.reason.code(),
        sub = sub.as_str(),
        status = d.reason.status().as_u16(),
        client_ip = %LogIp(ip),
        method,
        host,
        path,
        origin,
        upgrade,
        "request denied"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "unit-test-secret-0123456789abcdef0123";

    /// A state from config text, with the HS256 secret in a temporary file.
    fn state(extra: &str) -> (State, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("hs.key");
        std::fs::write(&key, SECRET).unwrap();
        let text = format!(
            "[[issuers]]\nname = \"t\"\nissuer = \"https://t.test\"\nalgorithms = [\"HS256\"]\nsecret_file = \"{}\"\n\n{extra}",
            key.display()
        );
        let config = crate::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        (State::build(config, &Metrics::new()).unwrap(), dir)
    }

    fn token(role: &str) -> String {
        let now = now_secs();
        let claims = serde_json::json!({"iss": "https://t.test", "sub": "u1", "role": role,
            "exp": now + 600, "iat": now});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    /// Forwarded headers for `method uri`, plus `extra`.
    fn req(method: &str, uri: &str, extra: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-forwarded-method", method),
            ("x-forwarded-uri", uri),
            ("x-forwarded-host", "app.test"),
            ("x-forwarded-for", "192.0.2.1"),
        ]
        .iter()
        .chain(extra)
        {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    async fn outcome(s: &State, h: &HeaderMap) -> Result<Option<String>, DenyReason> {
        match s.decide(h, &Metrics::new()).await {
            Decision::Allow(v) => Ok(v.map(|v| v.identity().id)),
            Decision::Deny(d) => Err(d.reason),
            Decision::SignIn(_) => panic!("no [signin] here"),
        }
    }

    const RULES: &str = "[[rules]]\npath = \"/public\"\nanonymous = true\n[[rules]]\npath = \"/admin\"\nroles = [\"admin\"]\n[[rules]]\npath = \"/ws\"\n[websocket]\nallowed_origins = [\"https://app.test\"]\n[cors]\nallowed_origins = [\"https://app.test\"]\n[default_rule]\npolicy = \"deny\"\n";

    /// The order of checks the README lists: each request fails two checks and gets the
    /// earlier one's answer.
    #[tokio::test]
    async fn checks_run_in_the_documented_order() {
        let (s, _dir) = state(RULES);
        let upgrade = [("sec-websocket-key", "k"), ("sec-websocket-version", "13")];
        let bad = [("authorization", "Bearer not.a.jwt")];
        // Forwarded headers before anything.
        let mut h = req("GET", "/admin", &bad);
        h.remove("x-forwarded-uri");
        assert_eq!(
            outcome(&s, &h).await,
            Err(DenyReason::MissingForwardedHeaders)
        );
        // Ambiguous path before the rule (anonymous included) and before the token.
        assert_eq!(
            outcome(&s, &req("GET", "/public/..%2Fadmin", &bad)).await,
            Err(DenyReason::AmbiguousPath)
        );
        // Origin (upgrades) before anonymous and before the token.
        let foreign = [
            upgrade[0],
            upgrade[1],
            ("origin", "https://evil.test"),
            bad[0],
        ];
        assert_eq!(
            outcome(&s, &req("GET", "/public", &foreign)).await,
            Err(DenyReason::OriginNotAllowed)
        );
        // Anonymous before the token: a bad token on an anonymous route is ignored.
        assert_eq!(outcome(&s, &req("GET", "/public/x", &bad)).await, Ok(None));
        // A credential-free preflight before the default rule; one with a token is a request.
        let pre = [
            ("origin", "https://app.test"),
            ("access-control-request-method", "POST"),
        ];
        assert_eq!(
            outcome(&s, &req("OPTIONS", "/elsewhere", &pre)).await,
            Ok(None)
        );
        let pre_bad = [pre[0], pre[1], bad[0]];
        assert_eq!(
            outcome(&s, &req("OPTIONS", "/elsewhere", &pre_bad)).await,
            Err(DenyReason::DefaultDeny)
        );
        // Default deny before the token.
        assert_eq!(
            outcome(&s, &req("GET", "/elsewhere", &bad)).await,
            Err(DenyReason::DefaultDeny)
        );
        // Token before roles; roles last.
        assert_eq!(
            outcome(&s, &req("GET", "/admin", &bad)).await,
            Err(DenyReason::MalformedToken)
        );
        let viewer = format!("Bearer {}", token("viewer"));
        assert_eq!(
            outcome(&s, &req("GET", "/admin", &[("authorization", &viewer)])).await,
            Err(DenyReason::InsufficientRole)
        );
        let admin = format!("Bearer {}", token("admin"));
        assert_eq!(
            outcome(&s, &req("GET", "/admin", &[("authorization", &admin)])).await,
            Ok(Some("u1".into()))
        );
    }

    /// Every denial reason answers with its status, the JSON body and the challenge rules.
    #[test]
    fn every_denial_reason_has_one_response_shape() {
        for &reason in DenyReason::ALL {
            let r = reason.response(Some(7));
            assert_eq!(r.status(), reason.status(), "{reason:?}");
            let h = r.headers();
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(h["cache-control"], "no-store");
            assert_eq!(h["retry-after"], "7");
            let challenge = h
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_string());
            let status = reason.status().as_u16();
            match (status, reason) {
                (_, DenyReason::MissingToken) => {
                    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="gatepass""#))
                }
                (401, r) if r.dpop_challenge() => {
                    let c = challenge.unwrap_or_else(|| panic!("{reason:?} has no challenge"));
                    assert!(c.starts_with(r#"DPoP realm="gatepass", error=""#), "{c}");
                }
                (400 | 401, _)
                | (
                    403,
                    DenyReason::InsufficientRole
                    | DenyReason::InsufficientPermissions
                    | DenyReason::CrossIssuerRevocation,
                ) => {
                    let c = challenge.unwrap_or_else(|| panic!("{reason:?} has no challenge"));
                    assert!(c.starts_with(r#"Bearer realm="gatepass", error=""#), "{c}");
                }
                _ => assert_eq!(challenge, None, "{reason:?}"),
            }
            for name in gatepass_identity::headers::ALL {
                assert!(h.get(name).is_none(), "{reason:?} carries {name}");
            }
        }
        // With DPoP on: a missing token gets both challenges, a DPoP failure its algorithms,
        // `use_dpop_nonce` one nonce.
        let dpop = Challenge {
            dpop_algs: Some("ES256 EdDSA".into()),
            dpop_nonce: Some("n0nce".into()),
            ..Challenge::default()
        };
        let r = DenyReason::MissingToken.response_for(None, &dpop);
        let all: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(
            all,
            [
                r#"Bearer realm="gatepass""#,
                r#"DPoP realm="gatepass", algs="ES256 EdDSA""#
            ]
        );
        assert!(r.headers().get("dpop-nonce").is_none());
        let r = DenyReason::DpopNonceRequired.response_for(None, &dpop);
        assert_eq!(
            r.headers()["www-authenticate"],
            r#"DPoP realm="gatepass", error="use_dpop_nonce", error_description="the DPoP proof needs the current nonce", algs="ES256 EdDSA""#
        );
        assert_eq!(
            r.headers().get_all("dpop-nonce").iter().collect::<Vec<_>>(),
            ["n0nce"]
        );
        let codes: std::collections::HashSet<_> =
            DenyReason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes.len(),
            DenyReason::ALL.len(),
            "metric labels are unique"
        );
    }

    /// The ticket purchase: a missing, bad or good bearer token; failures count like `decide`.
    #[tokio::test]
    async fn ticket_purchase_decision() {
        let (s, _dir) =
            state("[rate_limit]\nper_ip_failures = { rate = 1, per = \"1m\", burst = 2 }\n");
        let peer: IpAddr = "198.51.100.4".parse().unwrap();
        let reason = |d: Decision| match d {
            Decision::Deny(d) => Some(d.reason),
            Decision::Allow(_) | Decision::SignIn(_) => None,
        };
        let good = format!("Bearer {}", token("admin"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(&good).unwrap());
        assert!(
            matches!(s.decide_bearer(&h, peer, "/tickets").await, Decision::Allow(Some(v)) if v.identity().id == "u1")
        );
        assert_eq!(
            reason(s.decide_bearer(&HeaderMap::new(), peer, "/tickets").await),
            Some(DenyReason::MissingToken)
        );
        let mut bad = HeaderMap::new();
        bad.insert("authorization", HeaderValue::from_static("Bearer x.y.z"));
        assert_eq!(
            reason(s.decide_bearer(&bad, peer, "/tickets").await),
            Some(DenyReason::MalformedToken)
        );
        // The budget (2) is spent: a fresh token is refused, the verified one still buys.
        assert_eq!(
            reason(s.decide_bearer(&bad, peer, "/tickets").await),
            Some(DenyReason::RateLimitedIp)
        );
        let mut fresh = HeaderMap::new();
        fresh.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", token("other"))).unwrap(),
        );
        assert_eq!(
            reason(s.decide_bearer(&fresh, peer, "/tickets").await),
            Some(DenyReason::RateLimitedIp)
        );
        assert!(matches!(
            s.decide_bearer(&h, peer, "/tickets").await,
            Decision::Allow(Some(_))
        ));
    }

    #[test]
    fn allow_sets_each_identity_header_once() {
        let v = Verified::new(
            gatepass_identity::Identity {
                id: "u 1".into(),
                username: "zoë".into(),
                role: "admin".into(),
                permissions: vec!["a".into(), "b,c".into()],
                expires: Some(42),
            },
            42,
        );
        let a = HeaderValue::from_static("eyJ.a.b");
        let r = allow_response(Some(&v), Some(a.clone()));
        let h = r.headers();
        assert_eq!(h.len(), 7);
        for (name, want) in IDENTITY_NAMES
            .iter()
            .zip(["u%201", "zo%C3%AB", "admin", "a,b%2Cc", "42"])
        {
            assert_eq!(h.get_all(name).iter().collect::<Vec<_>>(), [want], "{name}");
        }
        assert_eq!(h[CACHE_CONTROL], "no-store");
        assert_eq!(h[ASSERTION_NAME], a);
        let anon = allow_response(None, None);
        assert_eq!(anon.headers().len(), 6);
        for name in &IDENTITY_NAMES {
            assert_eq!(anon.headers()[name], "", "{name}");
        }
    }
}
