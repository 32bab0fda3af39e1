//! Revocations (SPEC §6): the API and its authorisation, `/validate` on the cache-hit path,
//! tickets, the assertion's `sid`/`tid`, the SSE feed with `Last-Event-ID`, back-channel
//! logout (logout tokens minted here), the cap, and two replicas on one real redis-server.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatepass_testkit::{metric, now, RedisServer};
use serde_json::{json, Value};

const FEED_SECRET: &str = "feed-secret-0123456789abcdef";

fn config(extra: &str) -> String {
    format!(
        "{}\n[revocation]\nfeed_secret_file = \"feed.key\"\n{extra}",
        base_config().replace(
            "leeway = \"5s\"",
            "leeway = \"5s\"\nbackchannel_logout_audience = \"client-1\""
        )
    )
}

async fn server(extra: &str) -> Server {
    start_with(&config(extra), |d| {
        std::fs::write(d.join("feed.key"), format!("{FEED_SECRET}\n")).unwrap()
    })
    .await
}

/// A token for `sub` with these extra claims.
fn token_with(sub: &str, role: &str, extra: Value) -> String {
    let mut c = claims(sub, role);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    hs(&c)
}

async fn revoke(s: &Server, bearer: Option<&str>, body: &str) -> Got {
    let mut req = client()
        .post(s.url("/revocations"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    got(req.send().await.unwrap()).await
}

fn admin() -> String {
    user("root", "admin")
}

async fn metrics(s: &Server) -> String {
    s.get("/metrics").await.body
}

#[tokio::test]
async fn revoked_jti_is_refused_on_the_cache_hit_path() {
    let s = server("").await;
    let tok = token_with("alice", "admin", json!({"jti": "j-1"}));
    let other = token_with("alice", "admin", json!({"jti": "j-2"}));
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    assert_status(&s, Fwd::get("/x").bearer(&other), 200).await;
    let hits = |m: &str| metric(m, r#"gatepass_token_cache_total{result="hit"}"#);
    let before = hits(&metrics(&s).await);

    let r = revoke(&s, Some(&admin()), r#"{"jti": "j-1", "exp": 99999999999}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.h("cache-control"), Some("no-store"));
    assert_eq!(
        r.json(),
        json!({"kind": "jti", "value": "j-1", "iss": ISS, "expires_at": 99999999999u64})
    );
    let g = validate(&s, Fwd::get("/x").bearer(&tok)).await;
    g.assert_denied_with(401, "invalid_token", "token revoked");
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"Bearer realm="gatepass", error="invalid_token", error_description="token revoked""#
        )
    );
    assert_status(&s, Fwd::get("/x").bearer(&other), 200).await;
    let m = metrics(&s).await;
    assert!(hits(&m) >= before + 2.0, "decided on the cache-hit path");
    assert_eq!(
        metric(&m, r#"gatepass_revocations_total{kind="jti",source="api"}"#),
        1.0
    );
    assert_eq!(metric(&m, "gatepass_revocation_entries"), 1.0);
    assert_eq!(
        metric(
            &m,
            r#"gatepass_requests_total{outcome="deny",reason="token_revoked"}"#
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn sub_not_before_and_sid() {
    let s = server("").await;
    let t = now();
    let old = token_with("bob", "admin", json!({"iat": t - 100}));
    let at = token_with("bob", "admin", json!({"iat": t - 50, "jti": "at"}));
    let newer = token_with("bob", "admin", json!({"iat": t - 10}));
    let carol = token_with("carol", "admin", json!({"iat": t - 100}));
    let session = token_with("dave", "admin", json!({"sid": "s-9"}));
    for tok in [&old, &at, &newer, &carol, &session] {
        assert_status(&s, Fwd::get("/x").bearer(tok), 200).await;
    }
    let body = format!(r#"{{"sub": "bob", "not_before": {}}}"#, t - 50);
    let r = revoke(&s, Some(&admin()), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["kind"], "sub");
    assert!(r.json()["expires_at"].as_u64().unwrap() >= t + 86_400);
    // iat == not_before is covered too (SPEC §3.9: a token minted in that second).
    for tok in [&old, &at] {
        validate(&s, Fwd::get("/x").bearer(tok))
            .await
            .assert_denied_with(401, "invalid_token", "token revoked");
    }
    assert_status(&s, Fwd::get("/x").bearer(&newer), 200).await;
    assert_status(&s, Fwd::get("/x").bearer(&carol), 200).await;

    let r = revoke(&s, Some(&admin()), r#"{"sid": "s-9"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    validate(&s, Fwd::get("/x").bearer(&session))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
}

#[tokio::test]
async fn the_api_needs_an_admin_bearer_and_a_good_body() {
    let s = server("").await;
    let body = r#"{"sid": "x"}"#;
    let r = revoke(&s, None, body).await;
    r.assert_denied(401, "unauthorized");
    revoke(&s, Some("not.a.jwt"), body)
        .await
        .assert_denied(401, "invalid_token");
    revoke(&s, Some(&user("v", "viewer")), body)
        .await
        .assert_denied_with(403, "insufficient_scope", "role not allowed for this route");
    let revoked_admin = token_with("boss", "admin", json!({"jti": "boss-1"}));
    let r = revoke(&s, Some(&admin()), r#"{"jti": "boss-1"}"#).await;
    assert_eq!(r.status, 200);
    revoke(&s, Some(&revoked_admin), body)
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    for bad in [
        "",
        "{}",
        "nope",
        r#"{"jti": "a", "sid": "b"}"#,
        r#"{"sub": "a", "exp": 5}"#,
        r#"{"jti": "a", "exp": 1}"#,
        r#"{"sid": ""}"#,
        r#"{"sid": "a", "why": "x"}"#,
    ] {
        let r = revoke(&s, Some(&admin()), bad).await;
        r.assert_denied(400, "invalid_request");
        assert!(r.json()["error_description"].is_string(), "{bad}");
    }
    let r = got(client().put(s.url("/revocations")).send().await.unwrap()).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.h("allow"), Some("GET, POST"));
    let r = got(client()
        .get(s.url("/backchannel-logout"))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!((r.status, r.h("allow")), (405, Some("POST")));
    // The same endpoints under /auth/, as Traefik routes them.
    let r = got(client()
        .post(s.url("/auth/revocations"))
        .bearer_auth(admin())
        .body(r#"{"sid": "via-auth"}"#)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn tickets_of_a_revoked_token_are_refused() {
    let s = server("").await;
    let tok = token_with("erin", "admin", json!({"jti": "e-1"}));
    let r = s.tickets(reqwest::Method::POST, Some(&tok)).await;
    assert_eq!(r.status, 200);
    let bought = r.json()["ticket"].as_str().unwrap().to_string();
    assert_eq!(
        revoke(&s, Some(&admin()), r#"{"jti": "e-1"}"#).await.status,
        200
    );
    let upgrade = Fwd::upgrade(&format!("/ws/mcp-status?ticket={bought}"));
    validate(&s, upgrade)
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    s.tickets(reqwest::Method::POST, Some(&tok))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
}

#[tokio::test]
async fn the_assertion_carries_sid_and_tid() {
    let s = server("").await;
    let jwks = s.get("/.well-known/jwks.json").await.body;
    let verifier = gatepass_identity::AssertionVerifier::from_jwks_json(&jwks).unwrap();
    let tok = token_with("fay", "admin", json!({"jti": "tok-7", "sid": "sess-3"}));
    let g = validate(&s, Fwd::get("/x").bearer(&tok)).await;
    assert_eq!(g.status, 200);
    let claims = verifier
        .verify(g.h("x-user-assertion").unwrap(), "app.test:8080")
        .unwrap();
    assert_eq!(claims.sid.as_deref(), Some("sess-3"));
    assert_eq!(claims.tid.as_deref(), Some("tok-7"));
    let plain = validate(&s, Fwd::get("/x").bearer(&user("gus", "admin"))).await;
    let claims = verifier
        .verify(plain.h("x-user-assertion").unwrap(), "app.test:8080")
        .unwrap();
    assert_eq!((claims.sid, claims.tid), (None, None));
}

/// Reads SSE events (id, data) from `r` until `n` have arrived.
async fn events(r: &mut reqwest::Response, n: usize) -> Vec<(String, Value)> {
    let mut parser = gatepass_identity::sse::SseParser::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, r.chunk())
            .await
            .expect("timed out waiting for feed events")
            .unwrap()
            .expect("feed ended");
        parser.feed(&chunk, &mut out).unwrap();
        for e in out.drain(..) {
            got.push((
                e.id.unwrap_or_default(),
                serde_json::from_str(&e.data).unwrap(),
            ));
        }
    }
    got
}

async fn feed(s: &Server, secret: Option<&str>, last: Option<&str>) -> reqwest::Response {
    let mut req = client().get(s.url("/revocations"));
    if let Some(sec) = secret {
        req = req.bearer_auth(sec);
    }
    if let Some(id) = last {
        req = req.header("last-event-id", id);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_feed_sends_the_list_then_each_new_entry_and_resumes() {
    let s = server("").await;
    for secret in [None, Some("wrong-secret-0123456789")] {
        got(feed(&s, secret, None).await).await.assert_denied_with(
            401,
            "invalid_token",
            "the revocation feed secret is missing or wrong",
        );
    }
    assert_eq!(
        revoke(&s, Some(&admin()), r#"{"sid": "a"}"#).await.status,
        200
    );
    assert_eq!(
        revoke(&s, Some(&admin()), r#"{"sid": "b"}"#).await.status,
        200
    );
    let mut r = feed(&s, Some(FEED_SECRET), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = events(&mut r, 2).await;
    assert_eq!(first[0].1["value"], "a");
    assert_eq!(first[1].1["value"], "b");
    assert_eq!(first[1].1["kind"], "sid");
    assert!(first[1].1.get("not_before").is_none());
    assert_eq!(
        metric(&metrics(&s).await, "gatepass_revocation_feed_subscribers"),
        1.0
    );
    // A new entry reaches the open stream at once.
    let sent = Instant::now();
    let body = format!(r#"{{"sub": "zed", "not_before": {}}}"#, now());
    assert_eq!(revoke(&s, Some(&admin()), &body).await.status, 200);
    let next = events(&mut r, 1).await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert_eq!(next[0].1["value"], "zed");
    assert!(next[0].1["not_before"].is_u64());
    // Resuming from the first id: only what came after it.
    let mut resumed = feed(&s, Some(FEED_SECRET), Some(&first[0].0)).await;
    let again = events(&mut resumed, 2).await;
    assert_eq!(
        again
            .iter()
            .map(|e| e.1["value"].clone())
            .collect::<Vec<_>>(),
        [json!("b"), json!("zed")]
    );
    // An unknown id: the whole list again.
    let mut full = feed(&s, Some(FEED_SECRET), Some("999-9")).await;
    assert_eq!(events(&mut full, 3).await.len(), 3);
}

#[tokio::test]
async fn no_feed_without_a_secret_file() {
    let s = start(&base_config()).await;
    let r = s.get("/revocations").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn the_list_has_a_cap() {
    let s = server("max_entries = 2\n").await;
    for sid in ["one", "two"] {
        let body = format!(r#"{{"sid": "{sid}"}}"#);
        assert_eq!(revoke(&s, Some(&admin()), &body).await.status, 200);
    }
    revoke(&s, Some(&admin()), r#"{"sid": "three"}"#)
        .await
        .assert_denied_with(
            503,
            "temporarily_unavailable",
            "the revocation list is full",
        );
    // Revoking what is listed again is not a new entry.
    assert_eq!(
        revoke(&s, Some(&admin()), r#"{"sid": "one"}"#).await.status,
        200
    );
    assert_eq!(
        metric(&metrics(&s).await, "gatepass_revocation_list_full_total"),
        1.0
    );
}

// ---- back-channel logout ---------------------------------------------------------------------

fn logout_claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISS,
        "aud": "client-1",
        "iat": now(),
        "jti": format!("lt-{}", rand_suffix()),
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        "sid": "sess-1",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn logout_token(claims: &Value, typ: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn logout(s: &Server, form: &str) -> Got {
    got(client()
        .post(s.url("/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap())
    .await
}

async fn logout_with(s: &Server, token: &str) -> Got {
    logout(s, &format!("logout_token={token}")).await
}

fn assert_logout_refused(g: &Got, what: &str) {
    assert_eq!(g.status, 400, "{what}: {}", g.body);
    assert_eq!(g.body, r#"{"error":"invalid_request"}"#, "{what}");
    assert_eq!(g.h("cache-control"), Some("no-store"), "{what}");
}

#[tokio::test]
async fn backchannel_logout_revokes_the_session_once() {
    let s = server("").await;
    let in_session = token_with("hal", "admin", json!({"sid": "sess-1"}));
    let other_session = token_with("hal", "admin", json!({"sid": "sess-2"}));
    assert_status(&s, Fwd::get("/x").bearer(&in_session), 200).await;
    let lt = logout_token(&logout_claims(json!({})), Some("logout+jwt"));
    let g = logout_with(&s, &lt).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body, "");
    assert_eq!(g.h("cache-control"), Some("no-store"));
    validate(&s, Fwd::get("/x").bearer(&in_session))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    assert_status(&s, Fwd::get("/x").bearer(&other_session), 200).await;
    assert_logout_refused(&logout_with(&s, &lt).await, "replay");
    assert_eq!(
        metric(
            &metrics(&s).await,
            r#"gatepass_revocations_total{kind="sid",source="backchannel"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn backchannel_logout_without_sid_revokes_the_user_before_its_iat() {
    let s = server("").await;
    let t = now();
    let before = token_with("ivy", "admin", json!({"iat": t - 30}));
    let claims = logout_claims(json!({"sid": null, "sub": "ivy", "iat": t}));
    assert_eq!(
        logout_with(&s, &logout_token(&claims, Some("JWT")))
            .await
            .status,
        200
    );
    validate(&s, Fwd::get("/x").bearer(&before))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    let after = token_with("ivy", "admin", json!({"iat": t + 1}));
    assert_status(&s, Fwd::get("/x").bearer(&after), 200).await;
}

#[tokio::test]
async fn backchannel_logout_checks_every_rule() {
    let s = server("").await;
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "nonce",
            logout_token(&logout_claims(json!({"nonce": "n"})), None),
        ),
        (
            "no events",
            logout_token(&logout_claims(json!({"events": null})), None),
        ),
        (
            "wrong event",
            logout_token(
                &logout_claims(json!({"events": {"http://example.test/other": {}}})),
                None,
            ),
        ),
        (
            "wrong aud",
            logout_token(&logout_claims(json!({"aud": "someone-else"})), None),
        ),
        (
            "no aud",
            logout_token(&logout_claims(json!({"aud": null})), None),
        ),
        (
            "wrong iss",
            logout_token(&logout_claims(json!({"iss": "https://evil.test"})), None),
        ),
        (
            "no sub nor sid",
            logout_token(&logout_claims(json!({"sid": null})), None),
        ),
        (
            "no jti",
            logout_token(&logout_claims(json!({"jti": null})), None),
        ),
        (
            "old iat",
            logout_token(&logout_claims(json!({"iat": t - 600})), None),
        ),
        (
            "no iat",
            logout_token(&logout_claims(json!({"iat": null})), None),
        ),
        (
            "expired",
            logout_token(&logout_claims(json!({"exp": t - 60})), None),
        ),
        (
            "typ",
            logout_token(&logout_claims(json!({})), Some("at+jwt")),
        ),
        ("garbage", "not-a-token".into()),
    ];
    for (what, token) in &cases {
        assert_logout_refused(&logout_with(&s, token).await, what);
    }
    let forged = {
        let c = logout_claims(json!({}));
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &c,
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-enough-length!!").unwrap(),
        )
        .unwrap()
    };
    assert_logout_refused(&logout_with(&s, &forged).await, "bad signature");
    assert_logout_refused(&logout(&s, "").await, "no logout_token");
    let good = logout_token(&logout_claims(json!({"exp": t + 60})), None);
    assert_logout_refused(
        &logout(&s, &format!("logout_token={good}&logout_token={good}")).await,
        "two logout_token fields",
    );
    assert_eq!(
        logout_with(&s, &good).await.status,
        200,
        "exp in the future is fine"
    );
    // An issuer without backchannel_logout_audience accepts none.
    let plain = start(&base_config()).await;
    let lt = logout_token(&logout_claims(json!({})), None);
    assert_logout_refused(&logout_with(&plain, &lt).await, "not configured");
}

// ---- two replicas on Redis -------------------------------------------------------------------

fn redis_config(redis: &RedisServer) -> String {
    config(&format!(
        "\n[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"rev-test:\"\n",
        redis.url()
    ))
}

async fn replica(redis: &RedisServer) -> Server {
    let s = start_with(&redis_config(redis), |d| {
        std::fs::write(d.join("feed.key"), FEED_SECRET).unwrap()
    })
    .await;
    wait_for(Duration::from_secs(10), "redis up", || async {
        s.get("/readyz").await.json()["state"] == "ok"
    })
    .await;
    s
}

#[tokio::test]
async fn a_revocation_on_one_replica_is_enforced_by_the_other_within_a_second() {
    let mut redis = RedisServer::start();
    let (a, b) = (replica(&redis).await, replica(&redis).await);
    let tok = token_with("jo", "admin", json!({"jti": "jo-1"}));
    assert_status(&a, Fwd::get("/x").bearer(&tok), 200).await;
    assert_status(&b, Fwd::get("/x").bearer(&tok), 200).await;
    let mut on_b = feed(&b, Some(FEED_SECRET), None).await;
    assert_eq!(on_b.status(), 200);
    let sent = Instant::now();
    assert_eq!(
        revoke(&a, Some(&admin()), r#"{"jti": "jo-1"}"#)
            .await
            .status,
        200
    );
    // The replica that took it enforces it at once.
    validate(&a, Fwd::get("/x").bearer(&tok))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    wait_for(Duration::from_secs(1), "replica b refusing", || async {
        status_of(&b, Fwd::get("/x").bearer(&tok)).await == 401
    })
    .await;
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let e = events(&mut on_b, 1).await;
    assert_eq!(e[0].1["value"], "jo-1");

    // Redis restarted empty: the replicas write back what they hold; a new replica knows it.
    redis.restart();
    wait_for(Duration::from_secs(10), "the list written back", || async {
        let c = replica_probe(&redis).await;
        c.contains(&format!("jti@{ISS}\u{1f}jo-1"))
    })
    .await;
    let c = replica(&redis).await;
    wait_for(Duration::from_secs(5), "a new replica refusing", || async {
        status_of(&c, Fwd::get("/x").bearer(&tok)).await == 401
    })
    .await;
}

/// The shared list's fields, straight from Redis.
async fn replica_probe(redis: &RedisServer) -> String {
    let Ok(client) = redis::Client::open(redis.url()) else {
        return String::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg("rev-test:revocations")
        .query_async(&mut c)
        .await
        .unwrap_or_default();
    fields.join(",")
}

// ---- issue 20: hardening from the review of round 2 (SPEC §3.9) ------------------------------
// Each test was run against the binary before the fix and failed.

/// Finding 3 (`/backchannel-logout`): the logout token is read by the same strict reader as
/// access tokens; two `sid` values revoked the second one.
#[tokio::test]
async fn backchannel_logout_refuses_repeated_names() {
    let s = server("").await;
    let in_session = token_with("hal", "admin", json!({"sid": "sess-2"}));
    assert_status(&s, Fwd::get("/x").bearer(&in_session), 200).await;
    let c = logout_claims(json!({"sid": null}));
    let text = c.to_string();
    let twice = format!(
        r#"{},"sid":"sess-1","sid":"sess-2"}}"#,
        &text[..text.len() - 1]
    );
    let t = hs_text(r#"{"alg":"HS256","typ":"logout+jwt"}"#, &twice);
    assert_logout_refused(&logout_with(&s, &t).await, "two sid");
    let nested = logout_claims(json!({
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}, "x": {"a": 1}}
    }))
    .to_string()
    .replace(r#""a":1"#, r#""a":1,"a":2"#);
    let t = hs_text(r#"{"alg":"HS256"}"#, &nested);
    assert_logout_refused(&logout_with(&s, &t).await, "nested repeat");
    assert_status(&s, Fwd::get("/x").bearer(&in_session), 200).await;
    assert!(!metrics(&s)
        .await
        .contains(r#"gatepass_revocations_total{kind="sid",source="backchannel"} 1"#));
}

/// Finding 5: `{"sub": "v", "not_before": 18446744073709551615}` answered 200 with a wrapped
/// `expires_at` (86399): a revocation that does nothing. Out-of-range times are a 400.
#[tokio::test]
async fn revocation_times_out_of_range_are_400() {
    let s = server("").await;
    for body in [
        r#"{"sub": "v", "not_before": 18446744073709551615}"#,
        r#"{"sub": "v", "not_before": 253402300800}"#,
        r#"{"jti": "j", "exp": 18446744073709551615}"#,
        r#"{"sub": "v", "not_before": -1}"#,
    ] {
        let r = revoke(&s, Some(&admin()), body).await;
        r.assert_denied(400, "invalid_request");
    }
    assert_eq!(
        metric(&metrics(&s).await, "gatepass_revocation_entries"),
        0.0
    );
    // The last second of year 9999 is a time.
    let r = revoke(&s, Some(&admin()), r#"{"jti": "j", "exp": 253402300799}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Finding 10: a `sub` revocation with the default `not_before` (now) left a token minted in
/// the same second valid.
#[tokio::test]
async fn sub_revocation_covers_a_token_minted_in_the_same_second() {
    let s = server("").await;
    for attempt in 0.. {
        assert!(attempt < 20, "never managed to stay within one second");
        let sub = format!("same-second-{attempt}");
        let t0 = now();
        let tok = token_with(&sub, "admin", json!({"iat": t0}));
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
        let r = revoke(&s, Some(&admin()), &format!(r#"{{"sub": "{sub}"}}"#)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        if now() != t0 {
            continue; // the second ended in between: not_before may be later; try again
        }
        validate(&s, Fwd::get("/x").bearer(&tok))
            .await
            .assert_denied_with(401, "invalid_token", "token revoked");
        // A token minted in a later second (a fresh login) is not covered.
        wait_for(Duration::from_secs(3), "the next second", || async {
            now() > t0
        })
        .await;
        let fresh = token_with(&sub, "admin", json!({"iat": now()}));
        assert_status(&s, Fwd::get("/x").bearer(&fresh), 200).await;
        break;
    }
}

const OTHER_ISS: &str = "https://other-issuer.test";
const OTHER_SECRET: &str = "other-issuer-secret-0123456789abcdef0123";

/// Two issuers that both send logout tokens: `local` (ISS) and `other`.
async fn two_issuers(extra: &str) -> Server {
    let other = format!(
        "[[issuers]]\nname = \"other\"\nissuer = \"{OTHER_ISS}\"\nalgorithms = [\"HS256\"]\nsecret_file = \"other.key\"\nleeway = \"5s\"\nbackchannel_logout_audience = \"client-1\"\n\n"
    );
    start_with(&format!("{other}{}", config(extra)), |d| {
        std::fs::write(d.join("feed.key"), FEED_SECRET).unwrap();
        std::fs::write(d.join("other.key"), OTHER_SECRET).unwrap();
    })
    .await
}

/// A token of the other issuer.
fn other_token(sub: &str, role: &str) -> String {
    let mut c = claims(sub, role);
    c["iss"] = OTHER_ISS.into();
    gatepass_testkit::hs256(OTHER_SECRET, &c)
}

/// Finding 6: revocations crossed issuers: one issuer's logout token revoked another issuer's
/// user with the same `sub`, and any issuer's admin could revoke any issuer's users. With
/// `[revocation] cross_issuer` off (the default), both ways are closed.
#[tokio::test]
async fn revocations_stay_within_their_issuer() {
    let s = two_issuers("").await;
    let (ours, theirs) = (user("dana", "admin"), other_token("dana", "admin"));
    assert_status(&s, Fwd::get("/x").bearer(&ours), 200).await;
    assert_status(&s, Fwd::get("/x").bearer(&theirs), 200).await;
    // The other issuer's logout token for its `dana` (no sid): only its own dana.
    let mut c = logout_claims(json!({"sid": null, "sub": "dana"}));
    c["iss"] = OTHER_ISS.into();
    c["iat"] = json!(now() + 1);
    let t = gatepass_testkit::hs256(OTHER_SECRET, &c);
    assert_eq!(logout_with(&s, &t).await.status, 200);
    validate(&s, Fwd::get("/x").bearer(&theirs))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    assert_status(&s, Fwd::get("/x").bearer(&ours), 200).await;
    // The other issuer's admin revokes within its issuer by default...
    let their_admin = other_token("root", "admin");
    let r = revoke(&s, Some(&their_admin), r#"{"sub": "erin"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["iss"], OTHER_ISS);
    assert_status(&s, Fwd::get("/x").bearer(&user("erin", "admin")), 200).await;
    // ...and may not name this one.
    let r = revoke(
        &s,
        Some(&their_admin),
        &format!(r#"{{"sub": "dana", "iss": "{ISS}"}}"#),
    )
    .await;
    r.assert_denied_with(
        403,
        "insufficient_scope",
        "a caller may revoke only its own issuer's tokens",
    );
    assert_status(&s, Fwd::get("/x").bearer(&ours), 200).await;
    // An issuer is named by its exact `issuer` URL; anything else is a 400.
    for iss in [
        "local",
        "https://unknown.test",
        "https://auth.example.test/",
    ] {
        let body = format!(r#"{{"sub": "dana", "iss": "{iss}"}}"#);
        revoke(&s, Some(&admin()), &body)
            .await
            .assert_denied(400, "invalid_request");
    }
    // Naming its own issuer is fine.
    let body = format!(r#"{{"sid": "s-9", "iss": "{ISS}"}}"#);
    assert_eq!(revoke(&s, Some(&admin()), &body).await.status, 200);
    // The feed says whose each entry is.
    let mut r = feed(&s, Some(FEED_SECRET), None).await;
    let got = events(&mut r, 3).await;
    let isses: Vec<&str> = got
        .iter()
        .map(|(_, e)| e["iss"].as_str().unwrap())
        .collect();
    assert_eq!(isses, [OTHER_ISS, OTHER_ISS, ISS]);
}

/// Finding 6 with `[revocation] cross_issuer = true`: an admin may revoke another issuer's
/// users by naming it, and only those.
#[tokio::test]
async fn cross_issuer_revocations_when_allowed() {
    let s = two_issuers("cross_issuer = true").await;
    let (ours, theirs) = (user("dana", "admin"), other_token("dana", "admin"));
    let their_admin = other_token("root", "admin");
    let r = revoke(
        &s,
        Some(&their_admin),
        &format!(r#"{{"sub": "dana", "iss": "{ISS}"}}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["iss"].as_str()),
        (200, Some(ISS)),
        "{}",
        r.body
    );
    validate(&s, Fwd::get("/x").bearer(&ours))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    assert_status(&s, Fwd::get("/x").bearer(&theirs), 200).await;
}

/// Finding 9: `/backchannel-logout` read its unauthenticated body without a deadline (one
/// byte every 25 s held a connection past 150 s): now 408 and closed 5 s after the head.
#[tokio::test]
async fn backchannel_logout_body_has_a_deadline() {
    let s = server("").await;
    let head = "POST /backchannel-logout HTTP/1.1\r\nHost: gatepass\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nlogout_token=";
    let start = Instant::now();
    let answer = gatepass_testkit::raw_http(s.addr, head.as_bytes()).await;
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(8),
        "{took:?}"
    );
}

/// Finding 9: a refused logout token and a refused feed secret count toward the client
/// address's failure budget (the one `/validate` uses), so neither endpoint is a free oracle.
#[tokio::test]
async fn refused_logouts_and_feed_secrets_spend_the_failure_budget() {
    let s = server("[rate_limit]\nper_ip_failures = { rate = 1, per = \"1m\", burst = 2 }\n").await;
    let post = |ip: &'static str| {
        let url = s.url("/backchannel-logout");
        async move {
            got(client()
                .post(url)
                .header("x-forwarded-for", ip)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("logout_token=not.a.token")
                .send()
                .await
                .unwrap())
            .await
        }
    };
    assert_logout_refused(&post("198.51.100.20").await, "first");
    assert_logout_refused(&post("198.51.100.20").await, "second");
    let g = post("198.51.100.20").await;
    g.assert_denied(429, "rate_limited");
    assert!(g.h("retry-after").is_some());
    // The same address is now blocked at /validate too.
    validate(
        &s,
        Fwd::get("/x").ip("198.51.100.20").bearer("bad.token.here"),
    )
    .await
    .assert_denied(429, "rate_limited");
    // Feed secrets: the same budget, per address.
    let feed_from = |ip: &'static str| {
        let url = s.url("/revocations");
        async move {
            got(client()
                .get(url)
                .header("x-forwarded-for", ip)
                .bearer_auth("wrong-secret")
                .send()
                .await
                .unwrap())
            .await
        }
    };
    feed_from("198.51.100.21")
        .await
        .assert_denied(401, "invalid_token");
    feed_from("198.51.100.21")
        .await
        .assert_denied(401, "invalid_token");
    feed_from("198.51.100.21")
        .await
        .assert_denied(429, "rate_limited");
    assert_logout_refused(&post("198.51.100.22").await, "another address");
}
