//! The revocation endpoints (SPEC §6): `POST /revocations`, the `GET /revocations` feed
//! (Server-Sent Events) and `POST /backchannel-logout`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatepass_identity::{Revocation, RevocationKind};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use tokio::sync::{broadcast, mpsc};

use crate::decision::Decision;
use crate::metrics::Metrics;
use crate::policy::deny::{json_response, Body, DenyReason};
use crate::revocation::list::{secret_matches, RevokeError, Source};
use crate::state::State;
use crate::verify::verified::now_secs;

/// Largest request body read (a revocation, a logout token form).
const MAX_BODY: usize = 16 * 1024;
/// Longest `jti`, `sub` or `sid` accepted.
const MAX_VALUE: usize = 1024;
/// A comment line this often keeps idle proxies and the client's idle timeout at bay.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A response body: whole, or the feed's stream.
pub type ServerBody = http_body_util::Either<Body, FeedBody>;

/// The feed's body: what its task writes, as it comes.
pub struct FeedBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for FeedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn invalid(description: &str) -> Response<Body> {
    let body = serde_json::json!({"error": "invalid_request", "error_description": description});
    json_response(StatusCode::BAD_REQUEST, body.to_string())
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(invalid("body too large or unreadable")),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    exp: Option<u64>,
    sub: Option<String>,
    not_before: Option<u64>,
    sid: Option<String>,
    iss: Option<String>,
}

/// The last second of year 9999: a time beyond it is no time a token can name.
const LATEST: u64 = 253_402_300_799;

/// A `POST /revocations` body: the revocation asked for, with its defaults (SPEC §6), and
/// the issuer it names (none: the caller's own).
fn revocation_of(
    body: &[u8],
    retain: Duration,
    now: u64,
) -> Result<(Revocation, Option<String>), &'static str> {
    let b: RevokeBody = serde_json::from_slice(body).map_err(|_| {
        "body must be JSON: {\"jti\",\"exp\"?} or {\"sub\",\"not_before\"?} or {\"sid\"}, and \"iss\"?"
    })?;
    const RANGE: &str = "exp and not_before must be Unix seconds no later than year 9999";
    if b.exp.is_some_and(|t| t > LATEST) || b.not_before.is_some_and(|t| t > LATEST) {
        return Err(RANGE);
    }
    // Checked: `now + retain` past year 9999 is as out of range as a huge `not_before`.
    let later = |from: u64| {
        from.checked_add(retain.as_secs())
            .filter(|t| *t <= LATEST)
            .ok_or(RANGE)
    };
    let (kind, value, not_before, expires_at) = match (b.jti, b.sub, b.sid) {
        (Some(jti), None, None) if b.not_before.is_none() => {
            let exp = match b.exp {
                Some(exp) => exp,
                None => later(now)?,
            };
            if exp <= now {
                return Err("exp is in the past: that token is no longer valid anyway");
            }
            (RevocationKind::Jti, jti, None, exp)
        }
        (None, Some(sub), None) if b.exp.is_none() => {
            let nb = b.not_before.unwrap_or(now);
            (RevocationKind::Sub, sub, Some(nb), later(nb.max(now))?)
        }
        (None, None, Some(sid)) if b.exp.is_none() && b.not_before.is_none() => {
            (RevocationKind::Sid, sid, None, later(now)?)
        }
        _ => {
            return Err(
                "exactly one of jti (with exp), sub (with not_before) or sid, and nothing else",
            )
        }
    };
    if value.is_empty() || value.len() > MAX_VALUE {
        return Err("the value must be 1 to 1024 bytes");
    }
    let r = Revocation {
        kind,
        value,
        iss: None,
        not_before,
        expires_at,
    };
    Ok((r, b.iss))
}

fn deny(metrics: &Metrics, reason: DenyReason, retry: Option<u64>) -> Response<Body> {
    metrics.denied(reason);
    reason.response(retry)
}

/// `POST /revocations`: a bearer token with a role in `admin_roles` revokes a token, a user's
/// tokens, or a session.
pub async fn post(
    state: &State,
    h: &HeaderMap,
    body: Incoming,
    peer: IpAddr,
    metrics: &Metrics,
) -> Response<Body> {
    let caller = match state.decide_bearer(h, peer, "/revocations").await {
        Decision::Allow(Some(v)) => v,
        Decision::Allow(None) | Decision::SignIn(_) => {
            return deny(metrics, DenyReason::MissingToken, None)
        }
        Decision::Deny(d) => return deny(metrics, d.reason, d.retry_after),
    };
    let role = caller.identity().role;
    if !state.config.revocation.admin_roles.contains(&role) {
        return deny(metrics, DenyReason::InsufficientRole, None);
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (mut r, iss) = match revocation_of(&body, state.config.revocation.retain.0, now_secs()) {
        Ok(r) => r,
        Err(why) => return invalid(why),
    };
    // SPEC §3.9: within an issuer; the caller's own unless it names another (by its exact
    // `issuer` URL) and `cross_issuer` lets it.
    let own = caller.ids.iss.as_deref();
    let target = match iss.as_deref() {
        None => own,
        Some(named) => match state.verifier.issuers.iter().find(|i| i.iss == named) {
            Some(i) => Some(i.iss.as_str()),
            None => return invalid("iss is not the issuer URL of a configured issuer"),
        },
    };
    if target != own && !state.config.revocation.cross_issuer {
        return deny(metrics, DenyReason::CrossIssuerRevocation, None);
    }
    r.iss = target.map(str::to_owned);
    let max = state.config.revocation.max_entries;
    match state.revocations.revoke(r, Source::Api, max).await {
        Ok(r) => {
            tracing::info!(by = %caller.identity().id, kind = ?r.kind, "revocation accepted");
            let body = serde_json::json!({"kind": r.kind, "value": r.value, "iss": r.iss,
                "expires_at": r.expires_at});
            json_response(StatusCode::OK, body.to_string())
        }
        Err(RevokeError::Full) => deny(metrics, DenyReason::RevocationListFull, None),
        Err(RevokeError::Unavailable(_)) => deny(metrics, DenyReason::StateUnavailable, None),
    }
}

/// The client address of a request to gatepass's own endpoints: as `/validate` finds it in
/// `X-Forwarded-For` (through Traefik), else the peer.
fn client(state: &State, h: &HeaderMap, peer: IpAddr) -> IpAddr {
    crate::decision::client_ip(h, &state.config.rate_limit.trusted_proxies).unwrap_or(peer)
}

/// A refusal counted toward the client's failure budget (SPEC §3.9): `reason`, or 429 once
/// the budget is spent.
async fn counted(
    state: &State,
    metrics: &Metrics,
    reason: DenyReason,
    ip: IpAddr,
) -> Result<DenyReason, Response<Body>> {
    match state.count_failure(reason, Some(ip)).await {
        (r, None) if r == reason => {
            metrics.denied(reason);
            Ok(reason)
        }
        (r, retry) => Err(deny(metrics, r, retry)),
    }
}

/// `GET /revocations`: the feed, for a bearer holding the feed secret. A wrong secret counts
/// toward the client's failure budget.
pub async fn feed(
    state: &State,
    h: &HeaderMap,
    peer: IpAddr,
    metrics: &Metrics,
) -> Response<ServerBody> {
    let left = http_body_util::Either::Left;
    let Some(expected) = &state.feed_secret else {
        return json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","error_description":"no [revocation] feed_secret_file configured"}"#,
        )
        .map(left);
    };
    let ok = matches!(crate::verify::token::bearer(h), Ok(Some(t)) if secret_matches(expected, t.as_bytes()));
    if !ok {
        let reason = DenyReason::FeedSecretInvalid;
        let ip = client(state, h, peer);
        return match counted(state, metrics, reason, ip).await {
            Ok(reason) => reason.response(None),
            Err(limited) => limited,
        }
        .map(left);
    }
    let last = h.get("last-event-id").and_then(|v| v.to_str().ok());
    let revocations = state.revocations.clone();
    let (backlog, mut events) = revocations.subscribe(last);
    let mut closing = revocations.closing();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        revocations.subscribers(1.0);
        let send = |text: String| tx.send(Bytes::from(text));
        let mut ok = send(": gatepass revocations\n\n".into()).await.is_ok();
        for e in backlog {
            if !ok {
                break;
            }
            ok = send(e.1.to_sse(&e.0)).await.is_ok();
        }
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        while ok && !*closing.borrow() {
            ok = tokio::select! {
                e = events.recv() => match e {
                    Ok(e) => send(e.1.to_sse(&e.0)).await.is_ok(),
                    // Too far behind: end it; the client resumes from its Last-Event-ID.
                    Err(broadcast::error::RecvError::Lagged(_)) => false,
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                _ = tick.tick() => send(":\n\n".into()).await.is_ok(),
                _ = closing.changed() => false,
                _ = tx.closed() => false,
            };
        }
        revocations.subscribers(-1.0);
    });
    let mut r = Response::new(http_body_util::Either::Right(FeedBody { rx }));
    let hd = r.headers_mut();
    hd.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    hd.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer (nginx) pass it through as it comes.
    hd.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// How long the body of `POST /backchannel-logout` may take after its head (SPEC §3.9): the
/// endpoint is unauthenticated, so a slow sender must not hold a connection.
const LOGOUT_BODY_DEADLINE: Duration = Duration::from_secs(5);

/// A refused logout: logged with why, counted toward the client's failure budget, answered
/// with the bare 400 of SPEC §6 (or 429 once the budget is spent).
async fn logout_refused(state: &State, metrics: &Metrics, ip: IpAddr, why: &str) -> Response<Body> {
    tracing::info!(reason = why, client_ip = %ip, "back-channel logout refused");
    match counted(state, metrics, DenyReason::LogoutTokenRefused, ip).await {
        Ok(_) => json_response(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#),
        Err(limited) => limited,
    }
}

/// `POST /backchannel-logout`: a logout token (form field `logout_token`) revokes its session,
/// or its user's tokens issued before it, within its issuer.
pub async fn backchannel(
    state: &State,
    h: &HeaderMap,
    body: Incoming,
    peer: IpAddr,
    metrics: &Metrics,
) -> Response<Body> {
    let ip = client(state, h, peer);
    // A spent budget: no signature check for this address (as `/validate` does).
    match state.limits.ip_blocked(Some(ip)).await {
        Ok(Some(retry)) => return deny(metrics, DenyReason::RateLimitedIp, Some(retry)),
        Ok(None) => {}
        Err(_) => return deny(metrics, DenyReason::StateUnavailable, None),
    }
    let body = match tokio::time::timeout(LOGOUT_BODY_DEADLINE, read_body(body)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return logout_refused(state, metrics, ip, "body too large or unreadable").await
        }
        Err(_) => {
            tracing::info!(client_ip = %ip, "back-channel logout body too slow; connection closed");
            let mut r = deny(metrics, DenyReason::BodyTimeout, None);
            r.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    let mut tokens = form_urlencoded::parse(&body).filter(|(k, _)| k == "logout_token");
    let token = match (tokens.next(), tokens.next()) {
        (Some((_, t)), None) => t,
        (None, _) => return logout_refused(state, metrics, ip, "no logout_token").await,
        (Some(_), Some(_)) => {
            return logout_refused(state, metrics, ip, "several logout_token fields").await
        }
    };
    let t = match crate::revocation::logout::verify(&state.verifier, &token).await {
        Ok(t) => t,
        Err(why) => return logout_refused(state, metrics, ip, why).await,
    };
    match crate::revocation::logout::first_use(&state.logout_replays, &t).await {
        Ok(true) => {}
        Ok(false) => return logout_refused(state, metrics, ip, "jti seen before (replay)").await,
        Err(_) => return deny(metrics, DenyReason::StateUnavailable, None),
    }
    let r = t.revocation(state.config.revocation.retain.0);
    let max = state.config.revocation.max_entries;
    match state.revocations.revoke(r, Source::Backchannel, max).await {
        Ok(_) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(RevokeError::Full) => deny(metrics, DenyReason::RevocationListFull, None),
        Err(RevokeError::Unavailable(_)) => deny(metrics, DenyReason::StateUnavailable, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_their_defaults() {
        let day = Duration::from_secs(86_400);
        let now = now_secs();
        let of = |body: &[u8]| revocation_of(body, day, now).map(|(r, _)| r);
        let r = of(br#"{"jti":"j1","exp":99999999999}"#).unwrap();
        assert_eq!(
            (r.kind, r.value.as_str(), r.expires_at),
            (RevocationKind::Jti, "j1", 99999999999)
        );
        let r = of(br#"{"jti":"j1"}"#).unwrap();
        assert_eq!(r.expires_at, now + 86_400);
        let r = of(br#"{"sub":"u","not_before":5}"#).unwrap();
        assert_eq!(r.not_before, Some(5));
        assert_eq!(r.expires_at, now + 86_400);
        let r = of(br#"{"sub":"u"}"#).unwrap();
        assert_eq!(r.not_before, Some(now));
        let r = of(br#"{"sid":"s"}"#).unwrap();
        assert_eq!((r.kind, r.not_before), (RevocationKind::Sid, None));
        let (_, iss) = revocation_of(br#"{"sid":"s","iss":"https://a.test"}"#, day, now).unwrap();
        assert_eq!(iss.as_deref(), Some("https://a.test"));
        for bad in [
            &br#"{}"#[..],
            br#"not json"#,
            br#"{"jti":"a","sid":"b"}"#,
            br#"{"jti":"a","not_before":1}"#,
            br#"{"sub":"a","exp":1}"#,
            br#"{"sid":"a","exp":99999999999}"#,
            br#"{"jti":""}"#,
            br#"{"jti":"a","exp":1}"#,
            br#"{"jti":"a","extra":1}"#,
            br#"{"jti":5}"#,
            br#"{"sid":"a","iss":5}"#,
        ] {
            assert!(of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"sid":"{}"}}"#, "x".repeat(1025));
        assert!(of(long.as_bytes()).is_err());
    }

    /// Issue 20 finding 5: a time past year 9999 (or one whose expiry would be) is a 400,
    /// never a wrapped expiry that makes the revocation do nothing.
    #[test]
    fn times_out_of_range_are_refused() {
        let day = Duration::from_secs(86_400);
        let now = now_secs();
        for body in [
            r#"{"sub":"v","not_before":18446744073709551615}"#.to_string(),
            format!(r#"{{"sub":"v","not_before":{}}}"#, LATEST),
            format!(r#"{{"sub":"v","not_before":{}}}"#, LATEST + 1),
            r#"{"jti":"j","exp":18446744073709551615}"#.to_string(),
            format!(r#"{{"jti":"j","exp":{}}}"#, LATEST + 1),
            r#"{"sub":"v","not_before":-1}"#.to_string(),
        ] {
            assert!(revocation_of(body.as_bytes(), day, now).is_err(), "{body}");
        }
        let edge = format!(r#"{{"jti":"j","exp":{LATEST}}}"#);
        assert_eq!(
            revocation_of(edge.as_bytes(), day, now)
                .unwrap()
                .0
                .expires_at,
            LATEST
        );
        // A retain that reaches past year 9999 from now is refused too.
        let huge = Duration::from_secs(LATEST);
        assert!(revocation_of(br#"{"sid":"s"}"#, huge, now).is_err());
    }
}
