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

use crate::metrics::Metrics;
use crate::outcome::{json_response, Body, Decision, DenyReason};
use crate::revocations::{secret_matches, RevokeError, Source};
use crate::state::State;
use crate::verified::now_secs;

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
}

/// The revocation a `POST /revocations` body asks for, with its defaults (SPEC §6).
fn revocation_of(body: &[u8], retain: Duration) -> Result<Revocation, &'static str> {
    let b: RevokeBody = serde_json::from_slice(body).map_err(|_| {
        "body must be JSON: {\"jti\",\"exp\"?} or {\"sub\",\"not_before\"?} or {\"sid\"}"
    })?;
    let now = now_secs();
    let retain = retain.as_secs();
    let (kind, value, not_before, expires_at) = match (b.jti, b.sub, b.sid) {
        (Some(jti), None, None) if b.not_before.is_none() => {
            let exp = b.exp.unwrap_or(now + retain);
            if exp <= now {
                return Err("exp is in the past: that token is no longer valid anyway");
            }
            (RevocationKind::Jti, jti, None, exp)
        }
        (None, Some(sub), None) if b.exp.is_none() => {
            let nb = b.not_before.unwrap_or(now);
            (RevocationKind::Sub, sub, Some(nb), nb.max(now) + retain)
        }
        (None, None, Some(sid)) if b.exp.is_none() && b.not_before.is_none() => {
            (RevocationKind::Sid, sid, None, now + retain)
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
    Ok(Revocation {
        kind,
        value,
        not_before,
        expires_at,
    })
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
    let caller = match state.decide_bearer(h, peer, metrics, "/revocations").await {
        Decision::Allow(Some(v)) => v,
        Decision::Allow(None) => return deny(metrics, DenyReason::MissingToken, None),
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
    let r = match revocation_of(&body, state.config.revocation.retain.0) {
        Ok(r) => r,
        Err(why) => return invalid(why),
    };
    let max = state.config.revocation.max_entries;
    match state.revocations.revoke(r, Source::Api, max).await {
        Ok(r) => {
            tracing::info!(by = %caller.identity().id, kind = ?r.kind, "revocation accepted");
            let body =
                serde_json::json!({"kind": r.kind, "value": r.value, "expires_at": r.expires_at});
            json_response(StatusCode::OK, body.to_string())
        }
        Err(RevokeError::Full) => deny(metrics, DenyReason::RevocationListFull, None),
        Err(RevokeError::Unavailable(_)) => deny(metrics, DenyReason::StateUnavailable, None),
    }
}

/// `GET /revocations`: the feed, for a bearer holding the feed secret.
pub fn feed(state: &State, h: &HeaderMap, metrics: &Metrics) -> Response<ServerBody> {
    let left = http_body_util::Either::Left;
    let Some(expected) = &state.feed_secret else {
        return json_response(
            StatusCode::NOT_FOUND,
            r#"{"error":"not_found","error_description":"no [revocation] feed_secret_file configured"}"#,
        )
        .map(left);
    };
    let presented = match crate::token::bearer(h) {
        Ok(Some(t)) => t,
        _ => return deny(metrics, DenyReason::FeedSecretInvalid, None).map(left),
    };
    if !secret_matches(expected, presented.as_bytes()) {
        return deny(metrics, DenyReason::FeedSecretInvalid, None).map(left);
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

fn logout_refused(why: &str) -> Response<Body> {
    tracing::info!(reason = why, "back-channel logout refused");
    json_response(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#)
}

/// `POST /backchannel-logout`: a logout token (form field `logout_token`) revokes its session,
/// or its user's tokens issued before it.
pub async fn backchannel(state: &State, body: Incoming) -> Response<Body> {
    let Ok(body) = read_body(body).await else {
        return logout_refused("body too large or unreadable");
    };
    let mut tokens = form_urlencoded::parse(&body).filter(|(k, _)| k == "logout_token");
    let token = match (tokens.next(), tokens.next()) {
        (Some((_, t)), None) => t,
        (None, _) => return logout_refused("no logout_token"),
        (Some(_), Some(_)) => return logout_refused("several logout_token fields"),
    };
    let t = match crate::logout::verify(&state.verifier, &token).await {
        Ok(t) => t,
        Err(why) => return logout_refused(why),
    };
    match state.logout_replays.first_use(&t).await {
        Ok(true) => {}
        Ok(false) => return logout_refused("jti seen before (replay)"),
        Err(_) => {
            return DenyReason::StateUnavailable.response(None);
        }
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
        Err(RevokeError::Full) => DenyReason::RevocationListFull.response(None),
        Err(RevokeError::Unavailable(_)) => DenyReason::StateUnavailable.response(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_their_defaults() {
        let day = Duration::from_secs(86_400);
        let now = now_secs();
        let r = revocation_of(br#"{"jti":"j1","exp":99999999999}"#, day).unwrap();
        assert_eq!(
            (r.kind, r.value.as_str(), r.expires_at),
            (RevocationKind::Jti, "j1", 99999999999)
        );
        let r = revocation_of(br#"{"jti":"j1"}"#, day).unwrap();
        assert!(r.expires_at >= now + 86_400 && r.expires_at <= now + 86_401);
        let r = revocation_of(br#"{"sub":"u","not_before":5}"#, day).unwrap();
        assert_eq!(r.not_before, Some(5));
        assert!(r.expires_at >= now + 86_400);
        let r = revocation_of(br#"{"sub":"u"}"#, day).unwrap();
        assert!(r.not_before.unwrap() >= now);
        let r = revocation_of(br#"{"sid":"s"}"#, day).unwrap();
        assert_eq!((r.kind, r.not_before), (RevocationKind::Sid, None));
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
        ] {
            assert!(
                revocation_of(bad, day).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"sid":"{}"}}"#, "x".repeat(1025));
        assert!(revocation_of(long.as_bytes(), day).is_err());
    }
}
