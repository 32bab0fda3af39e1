//! `[state] backend = "redis"`: `max_connections_per_user` counts a user's sockets on every
//! replica (two servers on one real redis-server), and what happens while Redis is away.

mod common;

use std::time::Duration;

use common::*;
use gatepass_testkit::RedisServer;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const PREFIX: &str = "mcps-test:";

fn config(state: &str) -> String {
    format!("[limits]\nmax_connections_per_user = 2\n\n{state}")
}

fn redis_state(redis: &RedisServer, on_unavailable: &str) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"{PREFIX}\"\non_unavailable = \"{on_unavailable}\"\n",
        redis.url()
    )
}

fn up(s: &Server) -> bool {
    s.app.shared.as_ref().expect("redis backend").is_up()
}

async fn wait_up(s: &Server, want: bool) {
    wait_for(Duration::from_secs(10), "shared state status", || async {
        up(s) == want
    })
    .await;
}

/// Two replicas on one Redis, both connected.
async fn pair(redis: &RedisServer, on_unavailable: &str) -> (Server, Server) {
    let c = config(&redis_state(redis, on_unavailable));
    let (a, b) = (start(&c).await, start(&c).await);
    wait_up(&a, true).await;
    wait_up(&b, true).await;
    (a, b)
}

/// The user's leases in Redis, lapsed ones included.
async fn leases(redis: &RedisServer, user: &str) -> i64 {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZCARD")
        .arg(format!("{PREFIX}conn:{hex}"))
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn still_open(ws: &mut Ws) {
    send_text(ws, r#"{"type":"ping"}"#).await;
    assert_eq!(until_type(ws, "pong", "pong").await["type"], "pong");
}

async fn close_normally(ws: &mut Ws) {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    assert_eq!(closed(ws).await.0, 1000);
}

#[tokio::test]
async fn per_user_limit_counts_sockets_on_every_replica() {
    let redis = RedisServer::start();
    let (a, b) = pair(&redis, "local").await;
    let u = who("u", "admin");
    let (mut a1, _) = socket(&a, &u).await;
    let (_a2, _) = socket(&a, &u).await;
    assert_eq!(leases(&redis, "u").await, 2);
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    // Another user is unaffected.
    let (_v1, first) = socket(&b, &who("v", "admin")).await;
    assert_eq!(first["type"], "initial_status");
    // Closing one on A frees a slot on B.
    close_normally(&mut a1).await;
    wait_for(Duration::from_secs(5), "lease released", || async {
        leases(&redis, "u").await == 1
    })
    .await;
    let (mut b1, first) = socket(&b, &u).await;
    assert_eq!(first["type"], "initial_status");
    assert_closed(&a, &u.headers(), 4008, "Too many connections").await;
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    still_open(&mut b1).await;
    assert_eq!(metric_value(&metrics(&a).await, "mcp_status_state_up"), 1.0);
}

/// Control: with the in-process backend each replica counts only its own sockets.
#[tokio::test]
async fn memory_backend_counts_per_replica() {
    let c = config("[state]\nbackend = \"memory\"\n");
    let (a, b) = (start(&c).await, start(&c).await);
    assert!(a.app.shared.is_none());
    let u = who("u", "admin");
    let (_a1, _) = socket(&a, &u).await;
    let (_a2, _) = socket(&a, &u).await;
    let (_b1, first) = socket(&b, &u).await;
    assert_eq!(first["type"], "initial_status");
    let (_b2, _) = socket(&b, &u).await;
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    assert_eq!(metric_value(&metrics(&a).await, "mcp_status_state_up"), 1.0);
}

/// `local`: without Redis each replica's own count decides; open sockets stay open.
#[tokio::test]
async fn redis_down_with_local_falls_back_to_per_replica_limits() {
    let mut redis = RedisServer::start();
    let (a, b) = pair(&redis, "local").await;
    let u = who("u", "admin");
    let (mut a1, _) = socket(&a, &u).await;
    let (mut a2, _) = socket(&a, &u).await;
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    redis.stop();
    wait_up(&a, false).await;
    wait_up(&b, false).await;
    let (_b1, first) = socket(&b, &u).await;
    assert_eq!(first["type"], "initial_status");
    let (_b2, _) = socket(&b, &u).await;
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    assert_closed(&a, &u.headers(), 4008, "Too many connections").await;
    still_open(&mut a1).await;
    still_open(&mut a2).await;
    let m = metrics(&b).await;
    assert_eq!(metric_value(&m, "mcp_status_state_up"), 0.0);
    assert!(
        metric_value(&m, "mcp_status_state_errors_total{op=\"ping\"}") >= 1.0,
        "{m}"
    );
}

/// `deny`: without Redis new sockets get 1013; open ones stay open.
#[tokio::test]
async fn redis_down_with_deny_refuses_new_sockets_1013() {
    let mut redis = RedisServer::start();
    let (a, b) = pair(&redis, "deny").await;
    let (mut a1, _) = socket(&a, &who("u", "admin")).await;
    redis.stop();
    wait_up(&a, false).await;
    wait_up(&b, false).await;
    assert_closed(&b, &who("u", "admin").headers(), 1013, "Server at capacity").await;
    assert_closed(&a, &who("v", "admin").headers(), 1013, "Server at capacity").await;
    still_open(&mut a1).await;
}
