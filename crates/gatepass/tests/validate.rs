//! `/validate` behaviour with the exact headers Traefik sends (SPEC §2, §3.4).

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatepass_identity::{headers as h, AssertionVerifier, Identity};
use serde_json::json;

#[tokio::test]
async fn allow_has_every_identity_header_empty_body_and_no_store() {
    let s = start(&base_config()).await;
    let mut c = claims("u-42", "developer");
    c["preferred_username"] = "Zoë, the dev".into();
    c["permissions"] = json!(["mcp:read", "a,b"]);
    let exp = c["exp"].as_u64().unwrap();
    let g = validate(&s, Fwd::get("/api/v1/mcps").bearer(&hs(&c))).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.body, "");
    assert_eq!(g.h("cache-control"), Some("no-store"));
    assert_eq!(g.h(h::USER_ID), Some("u-42"));
    assert_eq!(g.h(h::USER_USERNAME), Some("Zo%C3%AB%2C%20the%20dev"));
    assert_eq!(g.h(h::USER_ROLE), Some("developer"));
    assert_eq!(g.h(h::USER_PERMISSIONS), Some("mcp:read,a%2Cb"));
    assert_eq!(g.h(h::USER_EXPIRES), Some(exp.to_string().as_str()));
    // A Rust downstream decodes them with gatepass-identity.
    let mut map = http::HeaderMap::new();
    for name in h::ALL {
        map.insert(name, g.h(name).unwrap().parse().unwrap());
    }
    let id = Identity::from_headers(&map).unwrap();
    assert_eq!(id.username, "Zoë, the dev");
    assert_eq!(id.permissions, vec!["mcp:read", "a,b"]);
}

#[tokio::test]
async fn assertion_verifies_against_published_jwks_with_host_as_audience() {
    let s = start(&base_config()).await;
    let g = validate(&s, Fwd::get("/x").bearer(&user("u1", "admin"))).await;
    assert_eq!(g.status, 200);
    let jwks = s.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.status, 200);
    let verifier = AssertionVerifier::from_jwks_json(&jwks.body).unwrap();
    let mut map = http::HeaderMap::new();
    for name in h::IDENTITY {
        map.insert(name, g.h(name).unwrap().parse().unwrap());
    }
    let id = Identity::from_headers(&map).unwrap();
    let claims = verifier
        .verify_identity(g.h(h::USER_ASSERTION), "app.test:8080", "GET", &id)
        .unwrap();
    assert_eq!(claims.sub, "u1");
    assert!(claims.exp <= now() + 60);
    assert!(verifier
        .verify(g.h(h::USER_ASSERTION).unwrap(), "app.test")
        .is_err());
    // Also fetchable the way downstreams do it.
    let v =
        AssertionVerifier::from_jwks_url(&s.url("/.well-known/jwks.json"), Duration::from_secs(2))
            .await
            .unwrap();
    assert!(v
        .verify(g.h(h::USER_ASSERTION).unwrap(), "app.test:8080")
        .is_ok());
}

#[tokio::test]
async fn missing_forwarded_headers_fail_closed() {
    let s = start(&base_config()).await;
    let tok = user("u1", "admin");
    for missing in ["X-Forwarded-Uri", "X-Forwarded-Method"] {
        let g = validate(&s, Fwd::get("/x").bearer(&tok).without(missing)).await;
        g.assert_denied(401, "invalid_request");
    }
}

/// Issue 20 finding 7: a missing, empty or non-ASCII `X-Forwarded-Host` gave the assertion
/// `aud: ""`; now the request fails closed like a missing `-Uri` (anonymous routes too),
/// and every assertion names its method (`htm`) and the token's issuer (`iss`).
#[tokio::test]
async fn assertion_is_bound_to_a_host_and_a_method() {
    let s = start(&base_config()).await;
    let tok = user("u1", "admin");
    for f in [
        Fwd::get("/x").bearer(&tok).without("X-Forwarded-Host"),
        Fwd::get("/x")
            .bearer(&tok)
            .without("X-Forwarded-Host")
            .h("X-Forwarded-Host", ""),
        Fwd::get("/healthz").without("X-Forwarded-Host"),
    ] {
        let g = validate(&s, f).await;
        g.assert_denied_with(
            401,
            "invalid_request",
            "X-Forwarded-Method, X-Forwarded-Uri and X-Forwarded-Host are required",
        );
    }
    // Bytes past ASCII, as a raw header (no HTTP client library sends one).
    let req = format!(
        "GET /validate HTTP/1.1\r\nHost: g\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /x\r\nX-Forwarded-Host: caf\u{e9}.test\r\nAuthorization: Bearer {tok}\r\nConnection: close\r\n\r\n"
    );
    let answer = gatepass_testkit::raw_http(s.addr, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("x-user-assertion"));

    let jwks = s.get("/.well-known/jwks.json").await.body;
    let verifier = AssertionVerifier::from_jwks_json(&jwks).unwrap();
    let assertion = |g: &Got| {
        verifier
            .verify(g.h(h::USER_ASSERTION).unwrap(), "app.test:8080")
            .unwrap()
    };
    let get = validate(&s, Fwd::get("/x").bearer(&tok)).await;
    let a = assertion(&get);
    assert_eq!(
        (a.htm.as_deref(), a.iss.as_deref()),
        (Some("GET"), Some(ISS))
    );
    // Reused for a HEAD: it still says the GET it was issued for.
    let head = validate(&s, Fwd::new("HEAD", "/x").bearer(&tok)).await;
    assert_eq!(head.h(h::USER_ASSERTION), get.h(h::USER_ASSERTION));
    let post = validate(&s, Fwd::new("POST", "/x").bearer(&tok)).await;
    let p = assertion(&post);
    assert_eq!(p.htm.as_deref(), Some("POST"));
    assert_ne!(p.jti, a.jti);
}

#[tokio::test]
async fn decision_uses_forwarded_headers_not_the_validate_request() {
    let s = start(&base_config()).await;
    // /validate is called with GET; the original POST to /api/v1/mcps needs admin.
    let tok = user("u1", "developer");
    let g = validate(&s, Fwd::new("POST", "/api/v1/mcps").bearer(&tok)).await;
    g.assert_denied(403, "insufficient_scope");
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"Bearer realm="gatepass", error="insufficient_scope", error_description="role not allowed for this route""#
        )
    );
    let g = validate(&s, Fwd::new("GET", "/api/v1/mcps").bearer(&tok)).await;
    assert_eq!(g.status, 200);
    let admin = user("u2", "admin");
    assert_status(&s, Fwd::new("DELETE", "/api/v1/mcps/x").bearer(&admin), 200).await;
    // Dot-segments and prefix boundaries.
    let g = validate(&s, Fwd::new("POST", "/api/v1/other/../mcps").bearer(&tok)).await;
    assert_eq!(g.status, 403);
    let g = validate(&s, Fwd::new("POST", "/api/v1/mcpsX").bearer(&tok)).await;
    assert_eq!(g.status, 200);
}

#[tokio::test]
async fn permissions_all_of() {
    let s = start(&base_config()).await;
    let g = validate(&s, Fwd::get("/api/v1/write").bearer(&user("u1", "admin"))).await;
    g.assert_denied_with(
        403,
        "insufficient_scope",
        "missing permissions for this route",
    );
    let mut c = claims("u1", "viewer");
    c["permissions"] = json!("mcp:write mcp:read");
    assert_status(&s, Fwd::get("/api/v1/write").bearer(&hs(&c)), 200).await;
}

#[tokio::test]
async fn missing_token_401_without_error_code() {
    let s = start(&base_config()).await;
    let g = validate(&s, Fwd::get("/x")).await;
    g.assert_denied(401, "unauthorized");
    assert_eq!(g.h("www-authenticate"), Some(r#"Bearer realm="gatepass""#));
    let g = validate(&s, Fwd::get("/x").bearer("a.b.c")).await;
    g.assert_denied(401, "invalid_token");
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"Bearer realm="gatepass", error="invalid_token", error_description="token is malformed""#
        )
    );
}

#[tokio::test]
async fn anonymous_route_has_empty_identity_and_ignores_tokens() {
    let s = start(&base_config()).await;
    for f in [Fwd::get("/healthz"), Fwd::get("/healthz").bearer("garbage")] {
        let g = validate(&s, f).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.body, "");
        for name in h::IDENTITY {
            assert_eq!(g.h(name), Some(""), "{name}");
        }
        assert!(g.headers.get(h::USER_ASSERTION).is_none());
    }
}

#[tokio::test]
async fn default_rule_deny() {
    let cfg = base_config() + "\n[default_rule]\npolicy = \"deny\"\n";
    let s = start(&cfg).await;
    let g = validate(&s, Fwd::get("/unlisted").bearer(&user("u1", "admin"))).await;
    g.assert_denied(403, "access_denied");
    assert_status(
        &s,
        Fwd::get("/ws/mcp-status").bearer(&user("u1", "admin")),
        200,
    )
    .await;
}

#[tokio::test]
async fn websocket_upgrade_origin_and_subprotocol_token() {
    let s = start(&base_config()).await;
    let tok = user("u1", "developer");
    let proto = format!("jwt-auth, {tok}");
    let upgrade_from = |origin: &str| {
        Fwd::upgrade("/ws/mcp-status")
            .h("Origin", origin)
            .h("Sec-Websocket-Protocol", &proto)
    };
    let ok = validate(&s, upgrade_from("http://127.0.0.1:8080")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.h(h::USER_ID), Some("u1"));
    // Split over several header lines, token first, extra protocol.
    let split = Fwd::upgrade("/ws/mcp-status")
        .h("Sec-Websocket-Protocol", &tok)
        .h("Sec-Websocket-Protocol", "jwt-auth, chat.v2");
    assert_status(&s, split, 200).await;
    // Foreign origin: 403 whatever the token.
    let g = validate(&s, upgrade_from("https://evil.example")).await;
    g.assert_denied_with(403, "access_denied", "origin not allowed");
    // Origin is checked first, even on an anonymous route.
    let g = validate(
        &s,
        Fwd::upgrade("/healthz").h("Origin", "https://evil.example"),
    )
    .await;
    assert_eq!(g.status, 403);
    // The subprotocol source is for upgrades only.
    let g = validate(
        &s,
        Fwd::get("/ws/mcp-status").h("Sec-Websocket-Protocol", &proto),
    )
    .await;
    g.assert_denied(401, "unauthorized");
    // Role rule on the socket path.
    let viewer = format!("jwt-auth, {}", user("u2", "viewer"));
    let g = validate(
        &s,
        Fwd::upgrade("/ws/mcp-status").h("Sec-Websocket-Protocol", &viewer),
    )
    .await;
    g.assert_denied(403, "insufficient_scope");
}

#[tokio::test]
async fn missing_origin_can_be_refused() {
    let cfg = base_config().replace(
        "allow_missing_origin = true",
        "allow_missing_origin = false",
    );
    let s = start(&cfg).await;
    let tok = user("u1", "admin");
    let g = validate(&s, Fwd::upgrade("/ws/mcp-status").bearer(&tok)).await;
    g.assert_denied(403, "access_denied");
    let g = validate(
        &s,
        Fwd::upgrade("/ws/mcp-status")
            .bearer(&tok)
            .h("Origin", "http://127.0.0.1:8080"),
    )
    .await;
    assert_eq!(g.status, 200);
}

#[tokio::test]
async fn cookie_and_query_sources() {
    let cfg = base_config() + "\n[tokens]\nsources = [\"bearer\", \"websocket_protocol\", \"cookie:access_token\", \"query:access_token\", \"ticket\"]\n";
    let s = start(&cfg).await;
    let tok = user("u1", "admin");
    let g = validate(
        &s,
        Fwd::get("/x").h("Cookie", &format!("theme=dark; access_token={tok}")),
    )
    .await;
    assert_eq!(g.status, 200);
    let uri = format!("/ws/mcp-status?access_token={tok}");
    assert_status(&s, Fwd::upgrade(&uri), 200).await;
    // Query tokens are honoured on upgrades only.
    validate(&s, Fwd::get(&uri))
        .await
        .assert_denied(401, "unauthorized");
    // The first present source decides: a bad bearer never falls through to a good cookie.
    let g = validate(
        &s,
        Fwd::get("/x")
            .bearer("x.y.z")
            .h("Cookie", &format!("access_token={tok}")),
    )
    .await;
    g.assert_denied(401, "invalid_token");
}

#[tokio::test]
async fn cors_preflight() {
    let s = start(&base_config()).await;
    let pre = |origin: &str| {
        Fwd::new("OPTIONS", "/api/v1/mcps")
            .h("Origin", origin)
            .h("Access-Control-Request-Method", "POST")
    };
    let g = validate(&s, pre("http://127.0.0.1:8080")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.h(h::USER_ID), Some(""));
    validate(&s, pre("https://evil.example"))
        .await
        .assert_denied(403, "access_denied");
}

#[tokio::test]
async fn spoofed_identity_headers_are_ignored_and_counted() {
    let s = start(&base_config()).await;
    let tok = user("low", "viewer");
    for (name, value) in [
        ("X-User-Role", "super_admin"),
        ("x-user-id", "root"),
        ("X_User_Role", "admin"),
        ("X-USER-PERMISSIONS", "*"),
    ] {
        let g = validate(&s, Fwd::get("/x").bearer(&tok).h(name, value)).await;
        assert_eq!(g.status, 200);
        assert_eq!(g.h(h::USER_ID), Some("low"));
        assert_eq!(g.h(h::USER_ROLE), Some("viewer"));
        assert_eq!(g.h(h::USER_PERMISSIONS), Some("mcp:read"));
        // And never lets a low role through a role rule.
        let g = validate(
            &s,
            Fwd::new("POST", "/api/v1/mcps").bearer(&tok).h(name, value),
        )
        .await;
        assert_eq!(g.status, 403);
    }
    let g = validate(&s, Fwd::get("/x").h("X-User-Id", "root")).await;
    assert_eq!(g.status, 401);
    assert_metric(&s, "gatepass_spoofed_headers_total", 9.0).await;
}

#[tokio::test]
async fn repeated_token_is_a_cache_hit() {
    let s = start(&base_config()).await;
    let tok = user("u1", "admin");
    for _ in 0..5 {
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    }
    assert_metric(&s, r#"gatepass_token_cache_total{result="miss"}"#, 1.0).await;
    assert_metric(&s, r#"gatepass_token_cache_total{result="hit"}"#, 4.0).await;
    let series = r#"gatepass_requests_total{outcome="allow",reason="ok"}"#;
    assert_metric(&s, series, 5.0).await;
}

#[tokio::test]
async fn cached_token_still_expires() {
    let s = start(&base_config().replace("leeway = \"5s\"", "leeway = \"0s\"")).await;
    let mut c = claims("u1", "admin");
    c["exp"] = (now() + 2).into();
    let tok = hs(&c);
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    wait_for(Duration::from_secs(5), "token expiry", || async {
        status_of(&s, Fwd::get("/x").bearer(&tok)).await == 401
    })
    .await;
    let g = validate(&s, Fwd::get("/x").bearer(&tok)).await;
    g.assert_denied_with(401, "invalid_token", "token expired");
}

/// `[cache] ttl` bounds how long a verified token is reused; `0ms` caches nothing.
#[tokio::test]
async fn cache_ttl_lapses_and_zero_caches_nothing() {
    let hits = r#"gatepass_token_cache_total{result="hit"}"#;
    let misses = r#"gatepass_token_cache_total{result="miss"}"#;
    let s = start(&(base_config() + "\n[cache]\nttl = \"300ms\"\n")).await;
    let tok = user("u1", "admin");
    let cached_at = Instant::now();
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    assert_metric(&s, misses, 1.0).await;
    assert_metric(&s, hits, 1.0).await;
    assert_metric(&s, "gatepass_token_cache_entries", 1.0).await;
    // Verified again once the entry lapsed, never before.
    wait_for(Duration::from_secs(5), "the entry to lapse", || async {
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
        metric(&s, misses).await == 2.0
    })
    .await;
    assert!(cached_at.elapsed() >= Duration::from_millis(300));

    let s = start(&(base_config() + "\n[cache]\nttl = \"0ms\"\n")).await;
    for _ in 0..3 {
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    }
    assert_metric(&s, misses, 3.0).await;
    assert_metric(&s, hits, 0.0).await;
    assert_metric(&s, "gatepass_token_cache_entries", 0.0).await;
}

#[tokio::test]
async fn failed_attempts_per_ip_get_429_after_burst() {
    let cfg =
        base_config() + "\n[rate_limit]\nper_ip_failures = { rate = 1, per = \"1m\", burst = 3 }\n";
    let s = start(&cfg).await;
    for _ in 0..3 {
        assert_status(&s, Fwd::get("/x").bearer("bad.to.ken").ip("192.0.2.9"), 401).await;
    }
    let g = validate(&s, Fwd::get("/x").bearer("bad.to.ken").ip("192.0.2.9")).await;
    g.assert_denied(429, "rate_limited");
    let retry: u64 = g.h("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Blocked: even a valid token from that IP gets 429 until the budget refills.
    let good = user("u1", "admin");
    assert_status(&s, Fwd::get("/x").bearer(&good).ip("192.0.2.9"), 429).await;
    // Other IPs are unaffected.
    assert_status(&s, Fwd::get("/x").bearer(&good).ip("192.0.2.10"), 200).await;
    assert!(
        metric(
            &s,
            r#"gatepass_rate_limited_total{limit="per_ip_failures"}"#
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn per_user_and_upgrade_limits() {
    let cfg = base_config()
        + "\n[rate_limit]\nper_user = { rate = 1, per = \"1m\", burst = 3 }\nupgrades_per_user = { rate = 1, per = \"1m\", burst = 1 }\n";
    let s = start(&cfg).await;
    let tok = user("u1", "admin");
    let proto = format!("jwt-auth, {tok}");
    assert_status(
        &s,
        Fwd::upgrade("/ws/mcp-status").h("Sec-Websocket-Protocol", &proto),
        200,
    )
    .await;
    let g = validate(
        &s,
        Fwd::upgrade("/ws/mcp-status").h("Sec-Websocket-Protocol", &proto),
    )
    .await;
    g.assert_denied(429, "rate_limited");
    assert!(g.h("retry-after").is_some());
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    let g = validate(&s, Fwd::get("/x").bearer(&tok)).await;
    g.assert_denied_with(429, "rate_limited", "too many requests for this user");
    // Another user has their own budget.
    assert_status(&s, Fwd::get("/x").bearer(&user("u2", "admin")), 200).await;
}

#[tokio::test]
async fn tickets_are_single_use_upgrade_only() {
    let s = start(&base_config()).await;
    let tok = user("u7", "dba");
    let r = s.tickets(reqwest::Method::POST, Some(&tok)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.h("cache-control"), Some("no-store"));
    let ticket = r.json()["ticket"].as_str().unwrap().to_string();
    assert_eq!(ticket.len(), 43);
    assert_eq!(r.json()["expires_in"], 30);
    let uri = format!("/ws/mcp-status?ticket={ticket}");
    // Shown on a non-upgrade request: 401 and not consumed.
    validate(&s, Fwd::get(&uri))
        .await
        .assert_denied(401, "invalid_token");
    let g = validate(&s, Fwd::upgrade(&uri)).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.h(h::USER_ID), Some("u7"));
    assert_eq!(g.h(h::USER_ROLE), Some("dba"));
    let g = validate(&s, Fwd::upgrade(&uri)).await;
    g.assert_denied_with(401, "invalid_token", "ticket is unknown, used or expired");
    // Two concurrent upgrades with one ticket: exactly one wins.
    for _ in 0..5 {
        let r = s.tickets(reqwest::Method::POST, Some(&tok)).await;
        let uri = format!(
            "/ws/mcp-status?ticket={}",
            r.json()["ticket"].as_str().unwrap()
        );
        let (a, b) = tokio::join!(
            validate(&s, Fwd::upgrade(&uri)),
            validate(&s, Fwd::upgrade(&uri))
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [200, 401]);
    }
    // Buying a ticket needs a valid bearer, over POST.
    let r = s.tickets(reqwest::Method::POST, None).await;
    r.assert_denied(401, "unauthorized");
    let r = s.tickets(reqwest::Method::POST, Some("x.y.z")).await;
    r.assert_denied(401, "invalid_token");
    let r = s.tickets(reqwest::Method::GET, Some(&tok)).await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn health_ready_metrics_endpoints() {
    let s = start(&base_config()).await;
    let g = s.get("/healthz").await;
    assert_eq!((g.status, g.body.as_str()), (200, r#"{"status":"ok"}"#));
    let g = s.get("/readyz").await;
    assert_eq!(
        (g.status, g.body.as_str()),
        (200, r#"{"status":"ready","state":"ok"}"#)
    );
    validate(&s, Fwd::get("/x").bearer(&user("u1", "admin"))).await;
    validate(&s, Fwd::get("/x")).await;
    let m = s.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.h("content-type").unwrap().starts_with("text/plain"));
    for series in [
        r#"gatepass_requests_total{outcome="allow",reason="ok"} 1"#,
        r#"gatepass_requests_total{outcome="deny",reason="missing_token"} 1"#,
        "gatepass_decision_duration_seconds_bucket{le=\"0.001\"}",
        "gatepass_decision_duration_seconds_count 2",
        r#"gatepass_token_cache_total{result="miss"} 1"#,
        "gatepass_spoofed_headers_total 0",
    ] {
        assert!(m.body.contains(series), "missing {series} in\n{}", m.body);
    }
    let g = s.get("/nope").await;
    assert_eq!(g.status, 404);
}

#[tokio::test]
async fn h2c_prior_knowledge_is_served() {
    let s = start(&base_config()).await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = c
        .get(s.url("/validate"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/x")
        .header("X-Forwarded-Host", "app.test")
        .header("Authorization", format!("Bearer {}", user("u1", "admin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[h::USER_ID], "u1");
}

#[tokio::test]
async fn tls_negotiates_h2_and_http11_by_alpn() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let key_pem = cert.signing_key.serialize_pem();
    let cfg = base_config() + "\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n";
    let s = start_with(&cfg, |dir| {
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &key_pem).unwrap();
    })
    .await;
    let url = format!("https://127.0.0.1:{}/validate", s.addr.port());
    let tok = user("u1", "admin");
    for (h2, version) in [
        (true, reqwest::Version::HTTP_2),
        (false, reqwest::Version::HTTP_11),
    ] {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap());
        if !h2 {
            b = b.http1_only();
        }
        let r = b
            .build()
            .unwrap()
            .get(&url)
            .header("X-Forwarded-Method", "GET")
            .header("X-Forwarded-Uri", "/x")
            .header("X-Forwarded-Host", "app.test")
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
    }
    let m = got(b_metrics(&url).await).await.body;
    assert!(
        m.contains("gatepass_connections_total{transport=\"h2\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gatepass_connections_total{transport=\"http/1.1\"} 2"),
        "{m}"
    ); // one test request + this scrape
       // Plain HTTP on the TLS port is refused, not served.
    assert!(client().get(s.url("/healthz")).send().await.is_err());
}

/// GET /metrics over the TLS port with a fresh HTTP/1.1 connection.
async fn b_metrics(validate_url: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap()
        .get(validate_url.replace("/validate", "/metrics"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops_accepting() {
    let s = start(&base_config()).await;
    let url = s.url("/healthz");
    assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    s.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

#[tokio::test]
async fn reload_swaps_rules_and_keeps_last_good_on_error() {
    let s = start_app(&base_config()).await;
    let tok = user("u1", "admin");
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    let path = s.write(
        "gatepass.toml",
        &(base_config() + "\n[default_rule]\npolicy = \"deny\"\n"),
    );
    s.app()
        .reload(gatepass::Config::load(&path).unwrap())
        .unwrap();
    assert_status(&s, Fwd::get("/x").bearer(&tok), 403).await;
    // A config whose key file is missing is refused; the last good one stays.
    let bad = base_config().replace("hs256.key", "missing.key");
    let path = s.write("gatepass.toml", &bad);
    let err = s
        .app()
        .reload(gatepass::Config::load(&path).unwrap())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("config error: issuers[0].secret_file: cannot read"),
        "{err}"
    );
    assert_status(&s, Fwd::get("/x").bearer(&tok), 403).await;
}

/// [`base_config`] with `rules` (TOML `[[rules]]` tables) ahead of its own, so they match first.
fn rules_first(rules: &str) -> String {
    base_config().replacen("[[rules]]", &format!("{rules}[[rules]]"), 1)
}

/// `X-Forwarded-Host` as Traefik sends it for `host`.
fn at_host(f: Fwd, host: &str) -> Fwd {
    f.without("X-Forwarded-Host").h("X-Forwarded-Host", host)
}

/// Issue 8 A: Traefik's `Host(`admin.example`)` also routes `admin.example.`; the host rule
/// must apply to it, not the default rule (which let any valid token in).
#[tokio::test]
async fn trailing_dot_host_matches_the_host_rule() {
    let cfg =
        rules_first("[[rules]]\nhost = \"admin.example\"\npath = \"/\"\nroles = [\"admin\"]\n");
    let s = start(&cfg).await;
    let viewer = user("v1", "viewer");
    let admin = user("a1", "admin");
    for host in ["admin.example", "admin.example.", "ADMIN.Example.:8080"] {
        let g = validate(&s, at_host(Fwd::get("/x").bearer(&viewer), host)).await;
        g.assert_denied(403, "insufficient_scope");
        let g = validate(&s, at_host(Fwd::get("/x").bearer(&admin), host)).await;
        assert_eq!(g.status, 200, "{host}");
    }
    // Elsewhere the default rule still lets a viewer in.
    assert_status(&s, Fwd::get("/x").bearer(&viewer), 200).await;
}

/// Issue 8 B: a path a backend may read differently is 400 before any rule, anonymous rules
/// included; `[paths] allow_encoded` re-allows a class, and the decoded character then stays
/// inside its segment.
#[tokio::test]
async fn ambiguous_paths_are_400_before_any_rule() {
    let cfg = rules_first(
        "[[rules]]\npath = \"/public\"\nanonymous = true\n[[rules]]\npath = \"/admin\"\nroles = [\"admin\"]\n",
    );
    let s = start(&cfg).await;
    let viewer = user("v1", "viewer");
    for uri in [
        "/public/..%2Fadmin/secret.txt",
        "/public/..%2fadmin/secret.txt",
        "/%2Fadmin/x",
        "/public/..%5Cadmin",
        "/public;/../admin",
        "/healthz;x",
        "/public/%00",
        "/public/%C0%AE%C0%AE/admin",
        "/public/%25%32%46",
    ] {
        let g = validate(&s, Fwd::get(uri)).await;
        g.assert_denied(400, "invalid_request");
        let g = validate(&s, Fwd::get(uri).bearer(&viewer)).await;
        g.assert_denied(400, "invalid_request");
    }
    assert_status(&s, Fwd::get("/public/a%20b.txt"), 200).await;
    let series = r#"gatepass_requests_total{outcome="deny",reason="ambiguous_path"}"#;
    assert_metric(&s, series, 18.0).await;
    drop(s);
    let s = start(&(cfg + "\n[paths]\nallow_encoded = [\"slash\"]\n")).await;
    let g = validate(&s, Fwd::get("/public/..%2Fadmin/secret.txt")).await;
    assert_eq!(
        g.status, 200,
        "one segment `..%2Fadmin` under /public: {}",
        g.body
    );
    // `%2Fadmin` is the one segment `/admin`, not `admin`: the default rule applies (which is
    // why `slash` is only for backends that do not decode it).
    let g = validate(&s, Fwd::get("/%2Fadmin/x").bearer(&viewer)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    validate(&s, Fwd::get("/public/..%5Cadmin"))
        .await
        .assert_denied(400, "invalid_request");
}

/// Issue 8 item 4: a preflight carries no credentials. An OPTIONS with `Authorization` or the
/// token cookie is judged by its token like any request.
#[tokio::test]
async fn preflight_with_credentials_is_judged_by_its_token() {
    let s = start(&base_config()).await;
    let pre = || {
        Fwd::new("OPTIONS", "/x")
            .h("Origin", "http://127.0.0.1:8080")
            .h("Access-Control-Request-Method", "POST")
    };
    let good = user("u7", "admin");
    validate(&s, pre().bearer("garbage"))
        .await
        .assert_denied(401, "invalid_token");
    validate(&s, pre().h("Authorization", "Basic dTpw"))
        .await
        .assert_denied(401, "invalid_token");
    validate(&s, pre().h("Cookie", "access_token=garbage"))
        .await
        .assert_denied(401, "invalid_token");
    for f in [
        pre().bearer(&good),
        pre().h("Cookie", &format!("access_token={good}")),
    ] {
        let g = validate(&s, f).await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.h(h::USER_ID), Some("u7"));
    }
    // A real preflight still passes without a token, with empty identity.
    let g = validate(&s, pre().h("Cookie", "theme=dark")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.h(h::USER_ID), Some(""));
}

fn failure_budget(burst: u32) -> String {
    base_config()
        + &format!(
            "\n[rate_limit]\nper_ip_failures = {{ rate = 1, per = \"1m\", burst = {burst} }}\n"
        )
}

/// Issue 8 item 5: once `burst` failures spent the budget, the very next request (a fresh,
/// valid token included) is 429 with `Retry-After`.
#[tokio::test]
async fn the_request_after_the_burst_th_failure_is_429() {
    let s = start(&failure_budget(3)).await;
    for _ in 0..3 {
        validate(&s, Fwd::get("/x").bearer("bad.to.ken").ip("192.0.2.20"))
            .await
            .assert_denied(401, "invalid_token");
    }
    let g = validate(
        &s,
        Fwd::get("/x").bearer(&user("u1", "admin")).ip("192.0.2.20"),
    )
    .await;
    g.assert_denied(429, "rate_limited");
    let retry: u64 = g.h("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&retry), "{retry}");
}

/// Issue 8 C: behind a CDN every client shares the CDN's address unless it is a trusted
/// proxy. A blocked address keeps its already-verified tokens and anonymous routes, and
/// everything else is 429 without a signature check.
#[tokio::test]
async fn trusted_proxies_and_a_blocked_ip_keeps_verified_tokens() {
    let via_cdn = |f: Fwd, client: &str| {
        f.without("X-Forwarded-For").h(
            "X-Forwarded-For",
            &format!("10.9.9.9, {client}, 198.51.100.7"),
        )
    };
    let known = user("known", "admin");
    // Control: without trusted_proxies the CDN's address is everyone's.
    let s = start(&failure_budget(2)).await;
    for _ in 0..2 {
        validate(
            &s,
            via_cdn(Fwd::get("/x").bearer("bad.to.ken"), "203.0.113.1"),
        )
        .await;
    }
    let g = validate(&s, via_cdn(Fwd::get("/x").bearer(&known), "203.0.113.2")).await;
    g.assert_denied(429, "rate_limited");
    drop(s);

    let s = start(
        &(failure_budget(2).replace(
            "per_ip_failures",
            "trusted_proxies = [\"198.51.100.0/24\", \"2001:db8::/32\"]\nper_ip_failures",
        )),
    )
    .await;
    // `known` is verified from the attacker's address before the budget is spent.
    assert_status(
        &s,
        via_cdn(Fwd::get("/x").bearer(&known), "203.0.113.1"),
        200,
    )
    .await;
    for _ in 0..2 {
        validate(
            &s,
            via_cdn(Fwd::get("/x").bearer("bad.to.ken"), "203.0.113.1"),
        )
        .await
        .assert_denied(401, "invalid_token");
    }
    // Another client behind the same CDN is not affected.
    let other = user("other", "admin");
    assert_status(
        &s,
        via_cdn(Fwd::get("/x").bearer(&other), "203.0.113.2"),
        200,
    )
    .await;
    // The blocked client: cached token and anonymous route as usual...
    let misses = metric(&s, r#"gatepass_token_cache_total{result="miss"}"#).await;
    let g = validate(&s, via_cdn(Fwd::get("/x").bearer(&known), "203.0.113.1")).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.h(h::USER_ID), Some("known"));
    let g = validate(
        &s,
        via_cdn(
            Fwd::new("POST", "/api/v1/mcps").bearer(&known),
            "203.0.113.1",
        ),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_status(&s, via_cdn(Fwd::get("/healthz"), "203.0.113.1"), 200).await;
    // ...and everything else 429, with no verification at all.
    let fresh = user("fresh", "admin");
    for f in [
        Fwd::get("/x").bearer(&fresh),
        Fwd::get("/x").bearer("bad.to.ken"),
        Fwd::get("/x"),
        Fwd::upgrade("/ws/mcp-status?ticket=abc"),
    ] {
        validate(&s, via_cdn(f, "203.0.113.1"))
            .await
            .assert_denied(429, "rate_limited");
    }
    assert_metric(&s, r#"gatepass_token_cache_total{result="miss"}"#, misses).await;
}

/// SPEC 3.6: safe methods reuse a recent assertion for the same token and host (the cache-hit
/// path signs nothing); a POST always gets a fresh one, and another host its own.
#[tokio::test]
async fn safe_methods_reuse_the_assertion_others_get_a_fresh_one() {
    let s = start(&base_config()).await;
    let t = user("reuse", "admin");
    let assertion = |f: Fwd| {
        let s = &s;
        async move {
            let g = validate(s, f).await;
            assert_eq!(g.status, 200, "{}", g.body);
            g.h("x-user-assertion").unwrap().to_string()
        }
    };
    let first = assertion(Fwd::get("/x").bearer(&t)).await;
    assert_eq!(assertion(Fwd::get("/x").bearer(&t)).await, first);
    assert_eq!(assertion(Fwd::new("HEAD", "/x").bearer(&t)).await, first);
    assert_eq!(
        assertion(Fwd::upgrade("/ws/mcp-status").bearer(&t)).await,
        first
    );
    let post = assertion(Fwd::new("POST", "/x").bearer(&t)).await;
    assert_ne!(post, first);
    assert_ne!(assertion(Fwd::new("POST", "/x").bearer(&t)).await, post);
    let other_host = assertion(
        Fwd::get("/x")
            .bearer(&t)
            .without("X-Forwarded-Host")
            .h("X-Forwarded-Host", "other.test"),
    )
    .await;
    assert_ne!(other_host, first);
}
