//! The HTTP API, the health state machine against a controllable MCP, and the plain endpoints.

mod common;

use std::time::Duration;

use common::*;
use gatepass_testkit::Stub;
use reqwest::Method;
use serde_json::Value;

fn mcp(name: &str, url: &str, interval: &str) -> String {
    format!(
        "[[mcps]]\nname = \"{name}\"\nhealth_url = \"{url}\"\ninterval = \"{interval}\"\ntimeout = \"200ms\"\nfailure_threshold = 2\nrecovery_timeout = \"150ms\"\ndisable_after_cycles = 2\n"
    )
}

async fn api(s: &Server, method: reqwest::Method, path: &str, w: Option<&Who>) -> (u16, Value) {
    let mut req = client().request(method, s.url(path));
    if let Some(w) = w {
        for (k, v) in w.headers() {
            req = req.header(k, v);
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(s: &Server, path: &str, w: Option<&Who>) -> (u16, Value) {
    api(s, Method::GET, path, w).await
}

async fn post(s: &Server, path: &str, w: Option<&Who>) -> (u16, Value) {
    api(s, Method::POST, path, w).await
}

/// The MCP list as `w` sees it.
async fn mcps(s: &Server, w: &Who) -> (u16, Value) {
    get(s, "/api/v1/mcps", Some(w)).await
}

/// A server with one demo MCP `oracle_mcp` polled every `interval`, and its switch.
async fn oracle(interval: &str) -> (Server, mcp_status::demo::Switch) {
    let (url, switch) = demo_mcp(true).await;
    (start(&mcp("oracle_mcp", &url, interval)).await, switch)
}

const DISABLE: &str = "/api/v1/mcps/oracle_mcp/disable";
const ENABLE: &str = "/api/v1/mcps/oracle_mcp/enable";

#[tokio::test]
async fn api_requires_identity_and_role() {
    let (s, _) = oracle("1h").await;
    assert_eq!(get(&s, "/api/v1/mcps", None).await.0, 401);
    assert_eq!(mcps(&s, &who("v", "viewer")).await.0, 403);
    let (status, body) = mcps(&s, &who("d", "developer")).await;
    assert_eq!(status, 200);
    assert_eq!(body["mcps"][0]["name"], "oracle_mcp");
    assert!(
        body["mcps"][0].get("circuit_state").is_none(),
        "developers get the redacted view"
    );
    let (_, body) = mcps(&s, &who("a", "dba")).await;
    assert_eq!(body["mcps"][0]["circuit_state"], "CLOSED");
}

#[tokio::test]
async fn admin_enable_disable_broadcasts_and_sticks() {
    let (s, switch) = oracle("50ms").await;
    let (mut ws, _) = socket(&s, &who("d", "developer")).await;
    let alice = who("alice", "admin");
    assert_eq!(post(&s, DISABLE, Some(&who("d", "developer"))).await.0, 403);
    assert_eq!(post(&s, DISABLE, None).await.0, 401);
    let nope = "/api/v1/mcps/nope/disable";
    assert_eq!(post(&s, nope, Some(&who("a", "admin"))).await.0, 404);
    let (status, body) = post(&s, DISABLE, Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "inactive");
    let change = until_type(&mut ws, "manual disable", "mcp_status_change").await;
    assert_eq!(change["new_status"], "inactive");
    assert_eq!(change["old_status"], "active");
    assert!(change.get("reason").is_none(), "redacted view");
    // A manual disable sticks: the MCP is healthy and polled every 50 ms, yet stays inactive.
    switch.set(true);
    let series = r#"mcp_status_health_checks_total{mcp="oracle_mcp",result="healthy"}"#;
    let polls_before = metric_value(&metrics(&s).await, series);
    // Six poll intervals pass with no check: proving an absence takes time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, body) = mcps(&s, &alice).await;
    assert_eq!(body["mcps"][0]["status"], "inactive");
    assert_eq!(metric_value(&metrics(&s).await, series), polls_before);
    let (_, body) = post(&s, ENABLE, Some(&alice)).await;
    assert_eq!(body["status"], "active");
    let change = until_type(&mut ws, "manual enable", "mcp_status_change").await;
    assert_eq!(change["new_status"], "active");
}

#[tokio::test]
async fn circuit_breaker_auto_disable_and_recovery() {
    let (s, switch) = oracle("50ms").await;
    let (mut ws, first) = socket(&s, &who("a", "admin")).await;
    assert_eq!(first["type"], "initial_status");
    wait_for(Duration::from_secs(5), "first healthy check", || async {
        let (_, b) = mcps(&s, &who("a", "admin")).await;
        b["mcps"][0]["health_status"] == "healthy" && b["mcps"][0]["last_health_check"].is_string()
    })
    .await;

    switch.set(false);
    let ev = until_type(&mut ws, "circuit_open", "health_event").await;
    assert_eq!(ev["event"], "circuit_open");
    assert_eq!(ev["mcp_name"], "oracle_mcp");
    assert_eq!(ev["mcp_id"], 1);
    assert_eq!(
        ev["message"],
        "Circuit breaker opened after 2 consecutive failures"
    );
    let m = until_type(&mut ws, "system_metrics", "system_metrics").await;
    assert_eq!(m["circuit_breakers_open"], 1);
    let ev = until_type(&mut ws, "half_open", "health_event").await;
    assert_eq!(ev["event"], "half_open");
    let ev = until_type(&mut ws, "second circuit_open", "health_event").await;
    assert_eq!(ev["event"], "circuit_open");
    let change = until_type(&mut ws, "auto-disable", "mcp_status_change").await;
    assert_eq!(change["old_status"], "active");
    assert_eq!(change["new_status"], "inactive");
    assert_eq!(change["reason"], "Auto-disabled after 2 failure cycles");
    let m = until_type(&mut ws, "system_metrics", "system_metrics").await;
    assert_eq!(m["active_mcps"], 0);
    assert_eq!(m["total_mcps"], 1);

    // Still probed every recovery_timeout; back to active on success.
    switch.set(true);
    let ev = until(&mut ws, "recovery", |v| {
        v["type"] == "health_event" && v["event"] == "recovery"
    })
    .await;
    assert_eq!(ev["message"], "MCP recovered after circuit breaker timeout");
    let change = until_type(&mut ws, "re-enable", "mcp_status_change").await;
    assert_eq!(change["new_status"], "active");
    assert_eq!(change["reason"], "Recovered after health check");
    let text = metrics(&s).await;
    assert!(
        text.contains("mcp_status_circuit_state{mcp=\"oracle_mcp\",state=\"CLOSED\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mcp_status_health_checks_total{mcp=\"oracle_mcp\",result=\"unhealthy\"}")
    );
}

#[tokio::test]
async fn hanging_health_endpoint_times_out_without_overlapping_checks() {
    // Accepts connections and never answers: every check must end by its timeout.
    let hang = Stub::start().await;
    hang.set_delay(Duration::from_secs(3600));
    let s = start(&mcp("slow_mcp", &hang.url("/health"), "10ms")).await;
    let (mut ws, _) = socket(&s, &who("a", "admin")).await;
    let ev = until_type(&mut ws, "circuit_open", "health_event").await;
    assert_eq!(ev["event"], "circuit_open");
    // Two checks of 200 ms each, one after the other: far fewer connections than 10 ms polls.
    let n = hang.connections();
    assert!((2..=4).contains(&n), "{n} checks started");
}

#[tokio::test]
async fn system_metrics_every_interval() {
    let (url, _) = demo_mcp(true).await;
    let cfg = format!(
        "[limits]\nmetrics_interval = \"100ms\"\n\n{}",
        mcp("m", &url, "1h")
    );
    let s = start(&cfg).await;
    let (mut ws, _) = socket(&s, &who("a", "admin")).await;
    for _ in 0..2 {
        let m = until_type(&mut ws, "periodic system_metrics", "system_metrics").await;
        assert_eq!(m["total_mcps"], 1);
    }
}

#[tokio::test]
async fn dashboard_health_and_metrics_endpoints() {
    let s = start("").await;
    let r = client().get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    assert!(
        html.contains("new WebSocket("),
        "the dashboard connects by itself"
    );
    for external in [
        "<script src",
        "@import",
        "url(http",
        "href=\"http",
        "href=\"//",
    ] {
        assert!(!html.contains(external), "external asset: {external}");
    }
    // Every <link> (the favicon) is inline.
    for link in html.split("<link ").skip(1) {
        assert!(link.contains("href=\"data:"), "external <link {link:.60}");
    }
    // Served without an identity, the page never asks a sign-in endpoint; with one (the
    // request came through gatepass's sign-in), it is marked to ask who is signed in.
    let marker = "<meta name=\"gatepass-session\" content=\"1\">";
    assert!(!html.contains(marker));
    let signed_in = client()
        .get(s.url("/"))
        .header("X-User-Id", "alice")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(signed_in.contains(marker));
    assert_eq!(signed_in.replacen(&format!("\n{marker}"), "", 1), html);
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_ws, _) = socket(&s, &who("a", "admin")).await;
    let text = metrics(&s).await;
    assert!(
        text.contains("mcp_status_connections{role=\"admin\"} 1"),
        "{text}"
    );
    assert!(text.contains("mcp_status_messages_sent_total"));
    assert_eq!(
        client().get(s.url("/nope")).send().await.unwrap().status(),
        404
    );
    let r = client().get(s.url("/ws/mcp-status")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A server that requires assertions (public key file), with one MCP; and its signer.
async fn asserted_server() -> (Server, gatepass_identity::AssertionSigner) {
    let (url, _) = demo_mcp(true).await;
    let signer = signer();
    let pem = public_pem(&signer);
    let cfg = format!(
        "[auth]\nassertion_public_key_file = \"assertion.pub.pem\"\n\n{}",
        mcp("oracle_mcp", &url, "1h")
    );
    let s = start_with(&cfg, |d| {
        std::fs::write(d.join("assertion.pub.pem"), &pem).unwrap()
    })
    .await;
    (s, signer)
}

fn unauthorized() -> Value {
    serde_json::json!({"error": "unauthorized", "error_description": "authentication required"})
}

/// G(a): a valid assertion with a forged (later) `X-User-Expires` is refused: the assertion's
/// `token_exp` must equal the header. Socket: 1008 `Authentication required`; API: 401.
#[tokio::test]
async fn forged_later_expiry_header_with_a_valid_assertion_is_refused() {
    let (s, signer) = asserted_server().await;
    let exp = now() + 600;
    let honest = who("alice", "admin")
        .expires(exp)
        .asserted(&signer, &s.host());
    // The honest headers get in, on both paths.
    assert_eq!(socket(&s, &honest).await.1["type"], "initial_status");
    assert_eq!(mcps(&s, &honest).await.0, 200);
    for forged_exp in [exp + 86_400, exp + 1, exp - 1] {
        let forged = honest.clone().expires(forged_exp);
        let (mut ws, _) = connect(&s, &forged.headers()).await;
        assert_eq!(
            closed(&mut ws).await,
            (1008, "Authentication required".into()),
            "X-User-Expires {forged_exp} vs token_exp {exp}"
        );
        assert_eq!(mcps(&s, &forged).await, (401, unauthorized()));
        assert_eq!(
            post(&s, DISABLE, Some(&forged)).await,
            (401, unauthorized())
        );
    }
    // No X-User-Expires at all, while the assertion names one: refused as well.
    let mut no_exp = honest.clone();
    no_exp.identity.expires = None;
    assert_closed(&s, &no_exp.headers(), 1008, "Authentication required").await;
}

/// G(b): an assertion `jti` is accepted once for a state-changing call; GETs and WebSocket
/// upgrades may reuse it (gatepass reuses assertions for safe methods).
#[tokio::test]
async fn replayed_assertion_on_a_post_is_401() {
    let (s, signer) = asserted_server().await;
    let once = who("alice", "admin").asserted(&signer, &s.host());
    // Safe uses first, several times: none consumes the jti.
    for _ in 0..2 {
        assert_eq!(mcps(&s, &once).await.0, 200);
        assert_eq!(socket(&s, &once).await.1["type"], "initial_status");
    }
    let (status, body) = post(&s, DISABLE, Some(&once)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "inactive");
    // The same assertion again, on the same or another state-changing route: 401.
    for path in [DISABLE, ENABLE] {
        assert_eq!(
            post(&s, path, Some(&once)).await,
            (401, unauthorized()),
            "{path}"
        );
    }
    // The refused replay changed nothing.
    let (_, body) = mcps(&s, &once).await;
    assert_eq!(body["mcps"][0]["status"], "inactive");
    // Safe methods still accept the used assertion.
    assert_eq!(socket(&s, &once).await.1["type"], "initial_status");
    // A fresh assertion (new jti) for the same user is fine.
    let fresh = who("alice", "admin").asserted(&signer, &s.host());
    let (status, body) = post(&s, ENABLE, Some(&fresh)).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "active");
}

/// Issue 20 finding 7: an assertion gatepass issued for a GET (and may reuse for reads) is
/// refused on a POST, even on its first use, and so is a request without Host (an empty
/// audience); the same user with a POST assertion changes state.
#[tokio::test]
async fn get_assertion_on_a_post_and_empty_audience_are_401() {
    let (s, signer) = asserted_server().await;
    let get = who("alice", "admin").asserted_for(&signer, &s.host(), "GET");
    assert_eq!(mcps(&s, &get).await.0, 200);
    assert_eq!(post(&s, DISABLE, Some(&get)).await, (401, unauthorized()));
    let (_, body) = mcps(&s, &get).await;
    assert_eq!(body["mcps"][0]["status"], "active", "nothing changed");
    // No Host at all (HTTP/1.0 straight to mcp-status): the audience would be empty.
    let empty = who("alice", "admin").asserted_for(&signer, "", "POST");
    let mut req = format!("POST {DISABLE} HTTP/1.0\r\n");
    for (k, v) in empty.headers() {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    let answer = gatepass_testkit::raw_http(s.addr, req.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.0 401") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );
    let post_assertion = who("alice", "admin").asserted_for(&signer, &s.host(), "POST");
    let (status, body) = post(&s, DISABLE, Some(&post_assertion)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("inactive")));
}

/// Issue 9: every poll is reported (`health_check`), so "last check" and health move with
/// each check, and an unhealthy check shows before the circuit opens.
#[tokio::test]
async fn every_health_check_is_broadcast() {
    let (url, switch) = demo_mcp(true).await;
    let s = start(
        &mcp("oracle_mcp", &url, "50ms").replace("failure_threshold = 2", "failure_threshold = 5"),
    )
    .await;
    let (mut ws, first) = socket(&s, &who("a", "admin")).await;
    assert_eq!(first["type"], "initial_status");
    for _ in 0..2 {
        let v = until_type(&mut ws, "health_check", "health_check").await;
        assert_eq!(v["mcp_name"], "oracle_mcp");
        assert_eq!(v["mcp_id"], 1);
        assert_eq!(v["health_status"], "healthy");
        assert!(
            v["last_health_check"].as_str().unwrap().ends_with('Z'),
            "{v}"
        );
    }
    switch.set(false);
    let v = until(&mut ws, "an unhealthy check", |v| {
        v["type"] == "health_check" && v["health_status"] == "unhealthy"
    })
    .await;
    assert_eq!(v["mcp_name"], "oracle_mcp");
    // The circuit is still closed (threshold 5): the check alone carried the news.
    let (_, body) = mcps(&s, &who("a", "admin")).await;
    assert_eq!(body["mcps"][0]["health_status"], "unhealthy");
}

/// Issue 9: `GET /api/v1/me` tells the page who it is; 403s use gatepass's vocabulary.
#[tokio::test]
async fn me_and_one_error_vocabulary() {
    let (s, _) = oracle("1h").await;
    let (status, body) = get(&s, "/api/v1/me", Some(&who("alice", "admin"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"id": "alice", "username": "alice-name", "role": "admin", "admin": true, "full_view": true})
    );
    let (status, body) = get(&s, "/api/v1/me", Some(&who("dev", "developer"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["admin"].clone(), body["full_view"].clone()),
        (false.into(), false.into())
    );
    let forbidden = serde_json::json!({"error": "insufficient_scope", "error_description": "role not allowed for this route"});
    let viewer = who("v", "viewer");
    assert_eq!(
        get(&s, "/api/v1/me", Some(&viewer)).await,
        (403, forbidden.clone())
    );
    assert_eq!(mcps(&s, &viewer).await, (403, forbidden));
    assert_eq!(get(&s, "/api/v1/me", None).await, (401, unauthorized()));
    assert_eq!(
        post(&s, DISABLE, Some(&who("dev", "developer"))).await,
        (
            403,
            serde_json::json!({"error": "insufficient_scope", "error_description": "admin role required"})
        )
    );
}

/// Issue 9: a wrong method on a known path is 405 with `Allow`; an unknown path is 404.
#[tokio::test]
async fn wrong_method_on_a_known_path_is_405_with_allow() {
    let (s, _) = oracle("1h").await;
    for (method, path, allow) in [
        (reqwest::Method::DELETE, "/api/v1/mcps", "GET"),
        (reqwest::Method::POST, "/api/v1/me", "GET"),
        (
            reqwest::Method::GET,
            "/api/v1/mcps/oracle_mcp/enable",
            "POST",
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/mcps/oracle_mcp/disable",
            "POST",
        ),
        (reqwest::Method::POST, "/healthz", "GET"),
        (reqwest::Method::POST, "/readyz", "GET"),
        (reqwest::Method::POST, "/", "GET, HEAD"),
    ] {
        let r = client()
            .request(method.clone(), s.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed");
    }
    let r = client().get(s.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// Issue 9: until the assertion keys are loaded mcp-status is not ready: `/readyz` 503, the
/// API and the handshake 503 `temporarily_unavailable` (not 401). It retries fast, so it is
/// ready within about a second of the keys appearing.
#[tokio::test]
async fn not_ready_and_503_until_the_assertion_keys_load() {
    let (url, _) = demo_mcp(true).await;
    let signer = signer();
    // A JWKS endpoint that answers 503 (empty) until switched on.
    let jwks = Stub::start().await;
    jwks.set_status(503);
    let jwks_url = jwks.url("/.well-known/jwks.json");
    let s = start(&format!(
        "[auth]\nassertion_jwks_url = \"{jwks_url}\"\n\n{}",
        mcp("oracle_mcp", &url, "1h")
    ))
    .await;
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "unavailable", "assertion_keys": "not loaded", "state": "ok", "poller": "active"})
    );
    let admin = who("a", "admin").asserted(&signer, &s.host());
    let unavailable = serde_json::json!({"error": "temporarily_unavailable", "error_description": "assertion keys are not loaded yet"});
    assert_eq!(mcps(&s, &admin).await, (503, unavailable));
    match try_connect(&s, &admin.headers()).await {
        Err(status) => assert_eq!(status, 503),
        Ok(_) => panic!("expected a 503 handshake, got 101"),
    }
    jwks.set_body(signer.jwks_json()).set_status(200);
    let since = std::time::Instant::now();
    wait_ready(&s, Duration::from_secs(3), "ready once the keys load").await;
    assert!(
        since.elapsed() < Duration::from_millis(1500),
        "retries at most 1 s apart"
    );
    assert_eq!(mcps(&s, &admin).await.0, 200);
}
