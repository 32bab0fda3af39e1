//! Distributed tracing through the real Traefik: Traefik (its own OTLP tracing), gatepass and
//! mcp-status all export to one OTLP/HTTP receiver, and a request is one trace. gatepass's
//! decision span is the child of Traefik's `AuthRequest` span (the client span of the
//! forwardAuth call, whose id Traefik sends in `traceparent`); mcp-status's spans are children
//! of Traefik's `ReverseProxy` span. No attribute anywhere carries a token.

use std::time::Duration;

use gatepass_e2e::*;
use gatepass_testkit::otlp::ExportedSpan;
use gatepass_testkit::OtlpReceiver;

/// OTLP `SpanKind`s.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// Every exporter here (Traefik's Go SDK, the services' Rust SDK) reads it: batches go out
/// every 200 ms instead of every 5 s. Set before any process starts; children inherit it.
fn quick_export() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200"));
}

/// The trace whose Traefik entry-point span served `path`, once every `(service, span name)`
/// of `want` has arrived in it (each exporter sends its own batches).
async fn trace_of(receiver: &OtlpReceiver, path: &str, want: &[(&str, &str)]) -> Vec<ExportedSpan> {
    receiver
        .wait(
            Duration::from_secs(20),
            &format!("trace of {path} with {want:?}"),
            |spans| {
                // Any entry span for the path whose trace is complete (an earlier request to
                // the same path, e.g. the harness's readiness probe, may have stopped short).
                spans
                    .iter()
                    .filter(|e| {
                        e.service() == "traefik"
                            && e.kind == SERVER
                            && e.attr("url.path") == Some(path)
                    })
                    .find_map(|entry| {
                        let trace: Vec<ExportedSpan> = spans
                            .iter()
                            .filter(|s| s.trace_id == entry.trace_id)
                            .cloned()
                            .collect();
                        want.iter()
                            .all(|(service, name)| {
                                trace
                                    .iter()
                                    .any(|s| s.service() == *service && s.name == *name)
                            })
                            .then_some(trace)
                    })
            },
        )
        .await
}

/// What a trace through the gatepass middleware holds at least.
const DECIDED: [(&str, &str); 2] = [
    ("traefik", "AuthRequest"),
    ("gatepass", "gatepass.decision"),
];

fn one<'a>(trace: &'a [ExportedSpan], service: &str, name: &str) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = trace
        .iter()
        .filter(|s| s.service() == service && s.name == name)
        .collect();
    assert_eq!(found.len(), 1, "{service}'s {name} in {trace:#?}");
    found[0]
}

/// gatepass's decision span, checked against Traefik's spans of the same trace: the same
/// trace id, and its parent is exactly Traefik's `AuthRequest` client span (the span whose id
/// Traefik put in the forwardAuth request's `traceparent`).
fn decision_of(trace: &[ExportedSpan]) -> &ExportedSpan {
    let entry = trace
        .iter()
        .find(|s| s.service() == "traefik" && s.kind == SERVER)
        .unwrap();
    let auth = one(trace, "traefik", "AuthRequest");
    assert_eq!(auth.kind, CLIENT);
    assert!(
        auth.attr("url.full")
            .is_some_and(|u| u.ends_with("/validate")),
        "{auth:?}"
    );
    let decision = one(trace, "gatepass", "gatepass.decision");
    assert_eq!(decision.trace_id, entry.trace_id);
    assert_eq!(decision.trace_id, auth.trace_id);
    assert_eq!(
        decision.parent_span_id, auth.span_id,
        "the decision's parent is Traefik's AuthRequest span"
    );
    assert_eq!(decision.kind, SERVER);
    decision
}

/// An allow (a cache miss, then a hit for the same token) and a deny through Traefik, a
/// mcp-status API call and a WebSocket handshake: each is one trace across Traefik, gatepass
/// and mcp-status, with the decision's outcome, reason and cache attributes; no span or
/// resource attribute carries a token or `Bearer`; gatepass's denial log line names the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_traefik_through_gatepass_and_mcp_status() {
    quick_export();
    let receiver = OtlpReceiver::start().await;
    let stack = Stack::start_with(Options {
        otlp_endpoint: Some(receiver.url()),
        ..Options::default()
    })
    .await;
    let c = client();
    let t = token("tracer", "admin");

    // Allow: the first use of the token verifies it, the second is a cache hit.
    for (path, hit) in [
        ("/echo/trace-allow-1", "false"),
        ("/echo/trace-allow-2", "true"),
    ] {
        let r = c.get(stack.url(path)).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let trace = trace_of(&receiver, path, &DECIDED).await;
        let d = decision_of(&trace);
        assert_eq!(d.attr("gatepass.outcome"), Some("allow"), "{d:?}");
        assert_eq!(d.attr("gatepass.deny_reason"), None, "{d:?}");
        assert_eq!(d.attr("gatepass.cache_hit"), Some(hit), "{path}: {d:?}");
        assert_eq!(d.attr("http.response.status_code"), Some("200"));
        assert_eq!(d.attr("gatepass.rule"), Some("(default)"));
        if hit == "false" {
            assert_eq!(d.attr("gatepass.issuer"), Some("local"), "{d:?}");
        }
    }

    // Deny: no token.
    let r = c.get(stack.url("/echo/trace-deny")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let trace = trace_of(&receiver, "/echo/trace-deny", &DECIDED).await;
    let d = decision_of(&trace);
    assert_eq!(d.attr("gatepass.outcome"), Some("deny"), "{d:?}");
    assert_eq!(
        d.attr("gatepass.deny_reason"),
        Some("missing_token"),
        "{d:?}"
    );
    assert_eq!(d.attr("gatepass.cache_hit"), Some("false"));
    assert_eq!(d.attr("http.response.status_code"), Some("401"));
    let deny_trace = d.trace_id.clone();
    // A bad token is denied with its reason too.
    let r = c
        .get(stack.url("/echo/trace-deny-bad"))
        .bearer_auth("not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let trace = trace_of(&receiver, "/echo/trace-deny-bad", &DECIDED).await;
    let d = decision_of(&trace);
    assert_eq!(
        d.attr("gatepass.deny_reason"),
        Some("malformed_token"),
        "{d:?}"
    );

    // mcp-status: an API call, continuing Traefik's ReverseProxy span.
    let r = c
        .get(stack.url("/api/v1/me"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let trace = trace_of(
        &receiver,
        "/api/v1/me",
        &[
            DECIDED[0],
            DECIDED[1],
            ("traefik", "ReverseProxy"),
            ("mcp-status", "mcp_status.api"),
        ],
    )
    .await;
    decision_of(&trace);
    let proxy = one(&trace, "traefik", "ReverseProxy");
    let api = one(&trace, "mcp-status", "mcp_status.api");
    assert_eq!(api.parent_span_id, proxy.span_id);
    assert_eq!(api.attr("http.response.status_code"), Some("200"));
    assert_eq!(api.attr("url.path"), Some("/api/v1/me"));

    // mcp-status: a WebSocket handshake.
    let (ws, _) = stack.ws(&t, &[]).await;
    let mut ws = ws.expect("upgrade");
    assert_eq!(first_type(&mut ws).await.as_deref(), Some("initial_status"));
    let handshake = receiver
        .wait(Duration::from_secs(20), "a handshake span", |spans| {
            spans
                .iter()
                .rev()
                .find(|s| s.name == "mcp_status.upgrade")
                .cloned()
        })
        .await;
    assert_eq!(handshake.service(), "mcp-status");
    assert_eq!(handshake.attr("mcp_status.verdict"), Some("accept"));
    assert_eq!(handshake.attr("http.response.status_code"), Some("101"));
    let trace = trace_of(
        &receiver,
        "/ws/mcp-status",
        &[
            ("traefik", "ReverseProxy"),
            ("mcp-status", "mcp_status.upgrade"),
        ],
    )
    .await;
    let proxy = one(&trace, "traefik", "ReverseProxy");
    assert!(trace
        .iter()
        .any(|s| s.name == "mcp_status.upgrade" && s.parent_span_id == proxy.span_id));
    drop(ws);

    // No token anywhere: every span of every service, every attribute, event and resource
    // attribute (JWTs start with `eyJ`, the base64 of `{"`).
    let spans = receiver.spans();
    assert!(spans.iter().any(|s| s.service() == "gatepass"));
    for s in &spans {
        for text in s.all_text() {
            assert!(
                !text.contains(&t) && !text.contains("eyJ") && !text.contains("Bearer"),
                "{}'s {} carries {text:?}",
                s.service(),
                s.name
            );
            assert!(!text.contains("not.a.jwt"), "{}'s {}", s.service(), s.name);
        }
    }
    for r in receiver.requests() {
        assert_eq!(r.content_type, "application/x-protobuf", "{r:?}");
    }

    // gatepass's denial line carries the trace's id.
    let log = stack.procs["gatepass"].log_text();
    let line = log
        .lines()
        .find(|l| l.contains("request denied") && l.contains("path=\"/echo/trace-deny\""))
        .unwrap_or_else(|| panic!("no denial line:\n{log}"));
    assert!(line.ends_with(&format!("trace_id={deny_trace}")), "{line}");
}
