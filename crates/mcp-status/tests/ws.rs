//! The WebSocket contract (SPEC §4.3) with a real client: every close-code row, subprotocol
//! selection, views, ping/pong, the slow client, limits, expiry and the assertion.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use mcp_status::broadcast::Event;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const ORIGIN: &str = "http://127.0.0.1:8080";

fn normal() -> tokio_tungstenite::tungstenite::protocol::CloseFrame {
    tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }
}

async fn config(limits: &str) -> (String, mcp_status::demo::Switch) {
    let (url, switch) = demo_mcp(true).await;
    let c = format!(
        "[auth]\nallowed_origins = [\"{ORIGIN}\"]\n\n[limits]\n{limits}\n\n[[mcps]]\nname = \"oracle_mcp\"\nhealth_url = \"{url}\"\ninterval = \"1h\"\n"
    );
    (c, switch)
}

async fn server(limits: &str) -> Server {
    start(&config(limits).await.0).await
}

#[tokio::test]
async fn selects_jwt_auth_never_the_token_and_sends_initial_status_first() {
    let s = server("").await;
    let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
    // An admin's headers offering `protocols`.
    let offering = |id: &str, protocols: &str| {
        who(id, "admin")
            .h("Sec-WebSocket-Protocol", protocols)
            .headers()
    };
    let (mut ws, proto) = connect(&s, &offering("u1", &format!("jwt-auth, {token}"))).await;
    assert_eq!(proto.as_deref(), Some("jwt-auth"));
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "initial_status");
    assert_eq!(first["mcps"][0]["name"], "oracle_mcp");
    assert_eq!(first["mcps"][0]["id"], 1);
    // Token first, marker second: still only the marker.
    let (_ws, proto) = connect(&s, &offering("u2", &format!("{token}, jwt-auth"))).await;
    assert_eq!(proto.as_deref(), Some("jwt-auth"));
    // Nothing offered: nothing selected.
    let (_ws, proto) = connect(&s, &who("u3", "admin").headers()).await;
    assert_eq!(proto, None);
}

#[tokio::test]
async fn full_and_redacted_views() {
    let s = server("").await;
    let (mut admin, _) = connect(&s, &who("a", "admin").headers()).await;
    let (mut dev, _) = connect(&s, &who("d", "developer").headers()).await;
    let full = next_json(&mut admin).await;
    let red = next_json(&mut dev).await;
    assert!(full["mcps"][0].get("circuit_state").is_some());
    assert!(red["mcps"][0].get("circuit_state").is_none());
    assert_eq!(red["mcps"][0]["status"], "active");
    s.app.hub.publish(&Event::Health {
        mcp_id: 1,
        mcp_name: "oracle_mcp".into(),
        event: mcp_status::broadcast::HealthKind::Recovery,
        message: "MCP recovered after circuit breaker timeout".into(),
        timestamp: "2026-01-26T10:30:00Z".into(),
    });
    let f = next_json(&mut admin).await;
    let r = next_json(&mut dev).await;
    assert_eq!(f["message"], "MCP recovered after circuit breaker timeout");
    assert!(r.get("message").is_none());
    assert_eq!(r["event"], "recovery");
}

#[tokio::test]
async fn missing_identity_closes_1008_authentication_required() {
    let s = server("").await;
    assert_closed(&s, &nobody(), 1008, "Authentication required").await;
    // Malformed identity is the same.
    let bad = who("u", "admin").h("x-user-id", "second");
    assert_closed(&s, &bad.headers(), 1008, "Authentication required").await;
    assert!(metrics(&s)
        .await
        .contains("mcp_status_closes_total{code=\"1008\"} 2"));
}

#[tokio::test]
async fn role_outside_allowed_roles_closes_1008_insufficient_permissions() {
    let s = server("").await;
    let h = who("v", "viewer").headers();
    assert_closed(&s, &h, 1008, "Insufficient permissions").await;
}

#[tokio::test]
async fn foreign_origin_closes_4003() {
    let s = server("").await;
    let (mut ws, _) = connect(
        &s,
        &who("u", "admin")
            .h("Origin", "https://evil.example")
            .headers(),
    )
    .await;
    assert_eq!(closed(&mut ws).await, (4003, "Origin not allowed".into()));
    let (mut ok, _) = connect(&s, &who("u", "admin").h("Origin", ORIGIN).headers()).await;
    assert_eq!(next_json(&mut ok).await["type"], "initial_status");
}

#[tokio::test]
async fn per_user_limit_closes_4008_and_global_limit_1013() {
    let s = server("max_connections = 3\nmax_connections_per_user = 2").await;
    let (mut a1, _) = connect(&s, &who("a", "admin").headers()).await;
    let (mut a2, _) = connect(&s, &who("a", "admin").headers()).await;
    next_json(&mut a1).await;
    next_json(&mut a2).await;
    let h = who("a", "admin").headers();
    assert_closed(&s, &h, 4008, "Too many connections").await;
    let (_b1, _) = socket(&s, &who("b", "dba")).await;
    assert_closed(&s, &who("c", "dba").headers(), 1013, "Server at capacity").await;
    // A slot frees when a connection ends.
    a1.close(Some(normal())).await.unwrap();
    assert_eq!(closed(&mut a1).await.0, 1000);
    wait_for(Duration::from_secs(5), "slot freed", || async {
        s.app.hub.len() == 2
    })
    .await;
    let (mut c2, _) = connect(&s, &who("c", "dba").headers()).await;
    assert_eq!(next_json(&mut c2).await["type"], "initial_status");
}

#[tokio::test]
async fn token_expiry_closes_4001_within_a_second() {
    let s = server("").await;
    let exp = now() + 2;
    let (mut ws, _) = connect(&s, &who("u", "admin").expires(exp).headers()).await;
    next_json(&mut ws).await;
    assert_eq!(closed(&mut ws).await, (4001, "Token expired".into()));
    let late = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH + Duration::from_secs(exp))
        .expect("closed before X-User-Expires");
    assert!(
        late < Duration::from_secs(1),
        "closed {late:?} after expiry"
    );
    // Already expired at the handshake.
    let h = who("u", "admin").expires(now() - 1).headers();
    assert_closed(&s, &h, 4001, "Token expired").await;
}

#[tokio::test]
async fn message_rate_closes_4029_and_pings_count() {
    let s = server("messages_per_second = 3\nmessages_per_minute = 100").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    ws.send(Message::Ping(Default::default())).await.unwrap();
    send_text(&mut ws, "ping").await;
    send_text(&mut ws, "{\"type\":\"ping\"}").await;
    send_text(&mut ws, "ping").await;
    assert_eq!(closed(&mut ws).await, (4029, "Rate limit exceeded".into()));
    // Per-minute limit too.
    let s = server("messages_per_second = 100\nmessages_per_minute = 2").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    for _ in 0..3 {
        send_text(&mut ws, "junk").await;
    }
    assert_eq!(closed(&mut ws).await, (4029, "Rate limit exceeded".into()));
}

#[tokio::test]
async fn ping_pong_and_errors() {
    let s = server("").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    send_text(&mut ws, "ping").await;
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Text("pong".into()));
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong"}));
    send_text(&mut ws, "hello").await;
    let e = next_json(&mut ws).await;
    assert_eq!(e["type"], "error");
    send_text(&mut ws, r#"{"type":"subscribe"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "error");
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "error");
    // Normal closure by the client: 1000.
    ws.close(Some(normal())).await.unwrap();
    assert_eq!(closed(&mut ws).await.0, 1000);
    wait_for(Duration::from_secs(5), "1000 counted", || async {
        metrics(&s)
            .await
            .contains("mcp_status_closes_total{code=\"1000\"} 1")
    })
    .await;
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let s = server("max_message_bytes = 1024").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    send_text(&mut ws, &"x".repeat(2000)).await;
    assert_eq!(closed(&mut ws).await, (1009, "Message too big".into()));
}

/// A message just over `max_message_bytes` gets the 1009 close frame, then the drop. Before,
/// the server dropped TCP with the rest of the message unread: the kernel reset the
/// connection and the client never saw a close frame (1006).
#[tokio::test]
async fn message_just_over_the_limit_gets_close_1009_message_too_big() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    // The default limit (1 MiB): one byte over.
    let s = server("").await;
    let limit = s.app.config.limits.max_message_bytes;
    assert_eq!(limit, 1024 * 1024);
    for _ in 0..3 {
        let (mut ws, _) = socket(&s, &who("u", "admin")).await;
        send_text(&mut ws, &"x".repeat(limit + 1)).await;
        assert_eq!(closed(&mut ws).await, (1009, "Message too big".into()));
    }
    // A small limit: one byte over in one frame, and in two fragments that each fit.
    let s = server("max_message_bytes = 1024").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    send_text(&mut ws, &"x".repeat(1025)).await;
    assert_eq!(closed(&mut ws).await, (1009, "Message too big".into()));
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    let first = Frame::message(vec![b'x'; 600], OpCode::Data(Data::Text), false);
    let last = Frame::message(vec![b'x'; 425], OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first)).await.unwrap();
    ws.send(Message::Frame(last)).await.unwrap();
    assert_eq!(closed(&mut ws).await, (1009, "Message too big".into()));
}

#[tokio::test]
async fn idle_timeout_closes_1001() {
    let s = server("idle_timeout = \"300ms\"\nheartbeat_interval = \"1h\"").await;
    let (mut ws, _) = connect(&s, &who("u", "admin").headers()).await;
    let start = Instant::now();
    next_json(&mut ws).await;
    assert_eq!(closed(&mut ws).await, (1001, "Idle timeout".into()));
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn client_frames_keep_an_idle_connection_open() {
    let s =
        server("idle_timeout = \"400ms\"\nheartbeat_interval = \"1h\"\nmessages_per_second = 100")
            .await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        send_text(&mut ws, r#"{"type":"ping"}"#).await;
        assert_eq!(next_json(&mut ws).await["type"], "pong");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(closed(&mut ws).await, (1001, "Idle timeout".into()));
    assert!(start.elapsed() >= Duration::from_millis(1200));
}

#[tokio::test]
async fn two_unanswered_pings_close_1001_heartbeat_timeout() {
    let s = server("idle_timeout = \"1h\"\nheartbeat_interval = \"100ms\"").await;
    // A raw client that never answers pings: tokio-tungstenite answers them when it reads, so
    // this one does not read until the server has given up.
    let (mut ws, _) = connect(&s, &who("u", "admin").headers()).await;
    wait_for(Duration::from_secs(5), "heartbeat close", || async {
        metrics(&s)
            .await
            .contains("mcp_status_closes_total{code=\"1001\"} 1")
    })
    .await;
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(pings, 2);
    assert_eq!(code, (1001, "Heartbeat timeout".into()));
}

#[tokio::test]
async fn answered_pings_keep_the_connection() {
    let s = server("idle_timeout = \"1h\"\nheartbeat_interval = \"100ms\"").await;
    let (mut ws, _) = socket(&s, &who("u", "admin")).await;
    // Reading answers pings automatically; after 10 intervals the socket is still open.
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1000) {
        match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(f)))) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
    assert!(pings >= 5, "{pings}");
    send_text(&mut ws, "ping").await;
    loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            assert_eq!(t.as_str(), "pong");
            break;
        }
    }
}

#[tokio::test]
async fn slow_client_is_closed_and_never_delays_others() {
    let s = server("send_queue = 8").await;
    let (mut slow, _) = connect(&s, &who("slow", "admin").headers()).await;
    let (mut fast, _) = socket(&s, &who("fast", "admin")).await;
    next_json(&mut slow).await;
    // `slow` stops reading. Each event is 16 KiB; the fast client reads every one before the
    // next is published, so it can never fall behind.
    let big = "x".repeat(16 * 1024);
    let mut delivered = 0;
    for i in 0..4000 {
        s.app.hub.publish(&Event::Health {
            mcp_id: 1,
            mcp_name: "oracle_mcp".into(),
            event: mcp_status::broadcast::HealthKind::HalfOpen,
            message: format!("{i} {big}"),
            timestamp: "t".into(),
        });
        let m = next_json(&mut fast).await;
        assert!(m["message"].as_str().unwrap().starts_with(&format!("{i} ")));
        delivered += 1;
        if s.app.hub.len() == 1 {
            break;
        }
    }
    assert_eq!(s.app.hub.len(), 1, "the slow client was never cut off");
    assert!(metrics(&s)
        .await
        .contains("mcp_status_messages_dropped_total 1"));
    // The fast client is still served.
    s.app.hub.publish(&s.app.registry.system_metrics());
    assert_eq!(next_json(&mut fast).await["type"], "system_metrics");
    assert!(delivered > 100);
    // The slow client, reading at last, finds the 1008 close after what was buffered.
    assert_eq!(closed(&mut slow).await, (1008, "Client too slow".into()));
}

/// A server with one admin socket open (its initial status read), shutting down in the
/// background.
async fn shutdown_with_a_socket() -> (Ws, tokio::task::JoinHandle<()>) {
    let s = server("").await;
    let (ws, _) = socket(&s, &who("u", "admin")).await;
    (ws, tokio::spawn(s.shutdown()))
}

#[tokio::test]
async fn shutdown_closes_1001_server_shutting_down() {
    let (mut ws, stop) = shutdown_with_a_socket().await;
    assert_eq!(closed(&mut ws).await, (1001, "Server shutting down".into()));
    stop.await.unwrap();
}

/// No socket open: shutdown completes at once (it used to wait the full 10 s drain, since the
/// app itself held a sender of the WebSocket task channel).
#[tokio::test]
async fn shutdown_with_no_socket_finishes_within_a_second() {
    let s = server("").await;
    // Served and idle: one API round trip, no socket.
    assert_eq!(
        client()
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let start = Instant::now();
    s.shutdown().await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
}

/// One socket open: it gets 1001 `Server shutting down`, and the server is done right after
/// the client answers the close, not after the 10 s drain.
#[tokio::test]
async fn shutdown_with_a_socket_finishes_right_after_1001() {
    let (mut ws, stop) = shutdown_with_a_socket().await;
    assert_eq!(closed(&mut ws).await, (1001, "Server shutting down".into()));
    let closed_at = Instant::now();
    // A well-behaved client: keeps reading, which sends its close reply, until TCP ends.
    tokio::spawn(async move { while ws.next().await.is_some() {} });
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("server stopped")
        .unwrap();
    let took = closed_at.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "server finished {took:?} after the 1001"
    );
}

#[tokio::test]
async fn assertion_missing_forged_or_mismatched_is_refused() {
    let (base, _) = config("").await;
    let signer = signer();
    // The verifier takes the public key as PEM: derive it via a JWKS round trip is not
    // possible for PEM, so serve gatepass's JWKS from a tiny HTTP server instead.
    let jwks = gatepass_testkit::Stub::json(signer.jwks_json()).await;
    let jwks_addr = jwks.addr;
    let cfg = base.replace(
        "[auth]\n",
        &format!("[auth]\nassertion_jwks_url = \"http://{jwks_addr}/.well-known/jwks.json\"\n"),
    );
    let s = start(&cfg).await;
    let host = s.host();
    let good = who("u", "admin");
    // Wait until the JWKS is loaded (`/readyz`); then a valid assertion gets in.
    wait_ready(&s, Duration::from_secs(10), "assertion keys").await;
    let (mut ws, _) = connect(&s, &good.clone().asserted(&signer, &host).headers()).await;
    assert_eq!(next_json(&mut ws).await["type"], "initial_status");
    let other = common::signer();
    let mut mismatched = good.clone().asserted(&signer, &host);
    mismatched.identity.role = "super_admin".into();
    for (what, headers) in [
        ("missing", good.headers()),
        ("forged", good.clone().asserted(&other, &host).headers()),
        (
            "other host",
            good.clone().asserted(&signer, "evil.example:443").headers(),
        ),
        ("mismatched headers", mismatched.headers()),
    ] {
        let (mut ws, _) = connect(&s, &headers).await;
        assert_eq!(
            closed(&mut ws).await,
            (1008, "Authentication required".into()),
            "{what}"
        );
        // The API refuses the same requests.
        let mut req = client().get(s.url("/api/v1/mcps"));
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        assert_eq!(req.send().await.unwrap().status(), 401, "{what}");
    }
}

#[tokio::test]
async fn assertion_from_public_key_file() {
    let (base, _) = config("").await;
    let cfg = base.replace(
        "[auth]\n",
        "[auth]\nassertion_public_key_file = \"assertion.pub.pem\"\n",
    );
    // A missing key file is a config error naming the key.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &cfg).unwrap();
    let err = mcp_status::App::new(mcp_status::Config::load(&path).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("config error: auth.assertion_public_key_file: cannot read"),
        "{err}"
    );

    let signer = signer();
    let pem = public_pem(&signer);
    let s = start_with(&cfg, |d| {
        std::fs::write(d.join("assertion.pub.pem"), &pem).unwrap()
    })
    .await;
    let (mut ws, _) = connect(
        &s,
        &who("u", "developer").asserted(&signer, &s.host()).headers(),
    )
    .await;
    assert_eq!(next_json(&mut ws).await["type"], "initial_status");
    let h = who("u", "developer").headers();
    assert_closed(&s, &h, 1008, "Authentication required").await;
}
