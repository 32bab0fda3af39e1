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
    state_on(&redis.url(), on_unavailable)
}

fn state_on(url: &str, on_unavailable: &str) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"{PREFIX}\"\non_unavailable = \"{on_unavailable}\"\n"
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

// ---- MCP state for the cluster --------------------------------------------------------------

const MCP: &str = "oracle_mcp";

/// One MCP polled every `interval`, two failures open the breaker, two cycles disable it.
fn mcp_config(health_url: &str, interval: &str, state: &str) -> String {
    format!(
        "[[mcps]]\nname = \"{MCP}\"\nhealth_url = \"{health_url}\"\ninterval = \"{interval}\"\ntimeout = \"200ms\"\nfailure_threshold = 2\nrecovery_timeout = \"150ms\"\ndisable_after_cycles = 2\n\n{state}"
    )
}

async fn change(s: &Server, action: &str, by: &Who) -> (u16, serde_json::Value) {
    let mut req = client().post(s.url(&format!("/api/v1/mcps/{MCP}/{action}")));
    for (k, v) in by.headers() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The MCP as `s` serves it (full view).
async fn served(s: &Server) -> serde_json::Value {
    let mut req = client().get(s.url("/api/v1/mcps"));
    for (k, v) in who("reader", "admin").headers() {
        req = req.header(k, v);
    }
    let body: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    body["mcps"][0].clone()
}

async fn readyz(s: &Server) -> (u16, serde_json::Value) {
    let r = client().get(s.url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn polls(s: &Server) -> bool {
    readyz(s).await.1["poller"] == "active"
}

/// Reads what a socket is told about MCPs until `last` matches: every message but the
/// `system_metrics` each replica times itself.
async fn story(ws: &mut Ws, last: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let mut told = Vec::new();
    loop {
        let v = until(ws, "the story to end", |v| v["type"] != "system_metrics").await;
        let end = last(&v);
        told.push(v);
        if end {
            return told;
        }
    }
}

fn is_status(v: &serde_json::Value, status: &str) -> bool {
    v["type"] == "mcp_status_change" && v["new_status"] == status
}

fn is_health(v: &serde_json::Value, event: &str) -> bool {
    v["type"] == "health_event" && v["event"] == event
}

/// The same behaviour on both backends: a manual change made on `a` reaches a socket on `b`;
/// the breaker opens, auto-disables and recovers; sockets on `a` and `b` are told the same
/// things in the same order, and both serve the same snapshot. (With the in-process backend
/// `a` and `b` are one server.)
async fn mcp_state_conformance(a: &Server, b: &Server, health: &gatepass_testkit::Stub) {
    let admin = who("alice", "admin");
    let (mut wa, first_a) = socket(a, &admin).await;
    let (mut wb, first_b) = socket(b, &admin).await;
    for first in [&first_a, &first_b] {
        assert_eq!(first["type"], "initial_status");
        assert_eq!(first["mcps"][0]["status"], "active");
    }
    // The poller's results reach both.
    for ws in [&mut wa, &mut wb] {
        let check = until_type(ws, "a health check", "health_check").await;
        assert_eq!(check["health_status"], "healthy");
    }

    let (status, body) = change(a, "disable", &admin).await;
    assert_eq!((status, &body["status"]), (200, &"inactive".into()));
    assert_eq!(served(a).await["status"], "inactive", "read your writes");
    wait_for(
        Duration::from_secs(5),
        "the disable served by b",
        || async { served(b).await["status"] == "inactive" },
    )
    .await;
    let disabled = |v: &serde_json::Value| is_status(v, "inactive");
    let marker_a = until(&mut wa, "the disable on a", disabled).await;
    let marker_b = until(&mut wb, "the disable on b", disabled).await;
    assert_eq!(marker_a["reason"], "Manually disabled by alice-name");
    assert_eq!(marker_a, marker_b);

    // Enabled on b while the MCP is down: two failures open the breaker, the half-open probe
    // fails, the second cycle disables it; healthy again, it recovers.
    health.set_status(503);
    let (status, body) = change(b, "enable", &admin).await;
    assert_eq!((status, &body["status"]), (200, &"active".into()));
    let mut told_a = story(&mut wa, |v| {
        v["type"] == "mcp_status_change" && v["reason"] == "Auto-disabled after 2 failure cycles"
    })
    .await;
    health.set_status(200);
    told_a.extend(story(&mut wa, |v| is_health(v, "recovery")).await);
    let told_b = story(&mut wb, |v| is_health(v, "recovery")).await;
    assert_eq!(told_a, told_b, "the same events in the same order");
    let kinds: Vec<String> = told_a
        .iter()
        .filter(|v| v["type"] != "health_check")
        .map(|v| {
            format!(
                "{}:{}",
                v["type"].as_str().unwrap(),
                v["event"].as_str().or(v["new_status"].as_str()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "mcp_status_change:active",
            "health_event:circuit_open",
            "health_event:half_open",
            "health_event:circuit_open",
            "mcp_status_change:inactive",
            "health_event:half_open",
            "health_event:recovery",
        ]
    );
    let end = until(&mut wb, "back to active", |v| is_status(v, "active")).await;
    assert_eq!(end["reason"], "Recovered after health check");
    wait_for(Duration::from_secs(5), "one snapshot", || async {
        let (sa, sb) = (served(a).await, served(b).await);
        sa == sb && sa["status"] == "active" && sa["circuit_state"] == "CLOSED"
    })
    .await;
}

#[tokio::test]
async fn mcp_state_conformance_in_process() {
    let health = gatepass_testkit::Stub::start().await;
    let s = start(&mcp_config(&health.url("/health"), "200ms", "")).await;
    assert!(polls(&s).await);
    mcp_state_conformance(&s, &s, &health).await;
}

/// Two replicas on one Redis, each with one MCP on `health`.
async fn mcp_pair(redis: &RedisServer, health: &str, interval: &str) -> (Server, Server) {
    mcp_pair_on(&redis.url(), health, interval).await
}

/// Two replicas on the Redis at `url` (any topology), each with one MCP on `health`.
async fn mcp_pair_on(url: &str, health: &str, interval: &str) -> (Server, Server) {
    let c = mcp_config(health, interval, &state_on(url, "local"));
    let (a, b) = (start(&c).await, start(&c).await);
    wait_up(&a, true).await;
    wait_up(&b, true).await;
    wait_for(Duration::from_secs(5), "one replica polling", || async {
        polls(&a).await != polls(&b).await
    })
    .await;
    (a, b)
}

#[tokio::test]
async fn mcp_state_conformance_on_redis_across_replicas() {
    let redis = RedisServer::start();
    let health = gatepass_testkit::Stub::start().await;
    let (a, b) = mcp_pair(&redis, &health.url("/health"), "200ms").await;
    mcp_state_conformance(&a, &b, &health).await;
    // One poller for the cluster: the other replica never checked.
    let (holder, standby) = if polls(&a).await { (&a, &b) } else { (&b, &a) };
    let series = format!("mcp_status_health_checks_total{{mcp=\"{MCP}\",result=\"healthy\"}}");
    assert!(metric_value(&metrics(holder).await, &series) >= 2.0);
    assert_eq!(metric_value(&metrics(standby).await, &series), 0.0);
    assert_eq!(
        metric_value(&metrics(standby).await, "mcp_status_health_poller"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics(holder).await, "mcp_status_health_poller"),
        1.0
    );
}

/// The holder stops: the other replica polls within 2 × interval, and its sockets keep
/// getting results.
#[tokio::test]
async fn health_poller_is_taken_over_when_its_holder_stops() {
    let redis = RedisServer::start();
    let health = gatepass_testkit::Stub::start().await;
    let (a, b) = mcp_pair(&redis, &health.url("/health"), "500ms").await;
    let (holder, standby) = if polls(&a).await { (a, b) } else { (b, a) };
    let (mut ws, _) = socket(&standby, &who("alice", "admin")).await;
    let stopped = std::time::Instant::now();
    holder.shutdown().await;
    wait_for(
        Duration::from_secs(1),
        "the standby taking over",
        || async { polls(&standby).await },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "{:?}",
        stopped.elapsed()
    );
    let hits = health.hits();
    until_type(&mut ws, "a check after the takeover", "health_check").await;
    wait_for(Duration::from_secs(2), "the survivor checking", || async {
        health.hits() > hits
    })
    .await;
}

/// Redis away: open sockets stay open with the last state, a manual change is 503, `/readyz`
/// says so (200 with `local`). Back (empty): one replica polls again, changes flow again.
#[tokio::test]
async fn mcp_state_survives_redis_stopping_and_restarting() {
    let mut redis = RedisServer::start();
    let health = gatepass_testkit::Stub::start().await;
    let (a, b) = mcp_pair(&redis, &health.url("/health"), "200ms").await;
    let admin = who("alice", "admin");
    let (mut wb, _) = socket(&b, &admin).await;
    redis.stop();
    wait_up(&a, false).await;
    wait_up(&b, false).await;
    still_open(&mut wb).await;
    let (status, body) = change(&a, "disable", &admin).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "temporarily_unavailable");
    wait_for(Duration::from_secs(5), "nobody polling", || async {
        !polls(&a).await && !polls(&b).await
    })
    .await;
    let (status, body) = readyz(&a).await;
    assert_eq!(status, 200);
    assert_eq!(body["state"], "unavailable");
    assert_eq!(served(&b).await["status"], "active", "the last known state");

    redis.restart();
    wait_up(&a, true).await;
    wait_up(&b, true).await;
    wait_for(
        Duration::from_secs(5),
        "one replica polling again",
        || async { polls(&a).await != polls(&b).await },
    )
    .await;
    until_type(&mut wb, "a check after the restart", "health_check").await;
    let (status, _) = change(&a, "disable", &admin).await;
    assert_eq!(status, 200);
    let told = until(&mut wb, "the disable after the restart", |v| {
        is_status(v, "inactive")
    })
    .await;
    assert_eq!(told["reason"], "Manually disabled by alice-name");
    assert_eq!(readyz(&b).await.1["state"], "ok");
}

/// Garbage where the state and the log are: ignored (logged), the next write replaces it,
/// nothing crashes.
#[tokio::test]
async fn garbled_mcp_state_in_redis_is_ignored() {
    let redis = RedisServer::start();
    let health = gatepass_testkit::Stub::start().await;
    let (a, b) = mcp_pair(&redis, &health.url("/health"), "1h").await;
    let admin = who("alice", "admin");
    let (mut wb, _) = socket(&b, &admin).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let hash = format!("{PREFIX}mcp:state");
    let _: () = redis::cmd("HSET")
        .arg(&hash)
        .arg(format!("s:{MCP}"))
        .arg("{not json")
        .arg(format!("v:{MCP}"))
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("{PREFIX}mcp:events"))
        .arg("*")
        .arg("mcp")
        .arg(MCP)
        .arg("v")
        .arg("seven")
        .query_async(&mut c)
        .await
        .unwrap();
    still_open(&mut wb).await;
    let (status, body) = change(&a, "disable", &admin).await;
    assert_eq!((status, &body["status"]), (200, &"inactive".into()));
    let told = until(&mut wb, "the disable", |v| is_status(v, "inactive")).await;
    assert_eq!(told["reason"], "Manually disabled by alice-name");
    wait_for(Duration::from_secs(5), "one snapshot", || async {
        served(&a).await == served(&b).await
    })
    .await;
}

/// `/readyz` is 200 with the shared state up on `master` (`None`: no `state_master`).
async fn on_master(s: &Server, master: Option<&str>) -> bool {
    let (status, body) = readyz(s).await;
    status == 200 && body["state"] == "ok" && body["state_master"].as_str() == master
}

/// SPEC §11: one MCP state, one poller and per-user connection leases, before and after the
/// topology loses its master (a primary): the same conformance suite both times, every
/// feature back within 2 s of the new master being named (promoted), no restart.
async fn ha_conformance(
    url: &str,
    master: impl Fn() -> Option<String>,
    fail_over: impl FnOnce() -> std::time::Instant,
) {
    let health = gatepass_testkit::Stub::start().await;
    let (a, b) = mcp_pair_on(url, &health.url("/health"), "200ms").await;
    let first = master();
    wait_for(
        Duration::from_secs(10),
        "readyz names the master",
        || async { on_master(&a, first.as_deref()).await && on_master(&b, first.as_deref()).await },
    )
    .await;
    mcp_state_conformance(&a, &b, &health).await;
    // The default limit (5 per user) counts leases on both replicas.
    let u = who("ha", "admin");
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(socket(&a, &u).await.0);
    }
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;

    let settled = tokio::task::block_in_place(fail_over);
    let second = master();
    if first.is_some() {
        assert_ne!(second, first, "the sentinels named another master");
    }
    wait_for(
        Duration::from_secs(2),
        "both replicas back on the new master",
        || async {
            on_master(&a, second.as_deref()).await && on_master(&b, second.as_deref()).await
        },
    )
    .await;
    assert!(
        settled.elapsed() <= Duration::from_secs(2),
        "{:?}",
        settled.elapsed()
    );
    // The leases taken before the failover still count (replicated), and the conformance
    // suite passes again.
    assert_closed(&b, &u.headers(), 4008, "Too many connections").await;
    wait_for(Duration::from_secs(5), "one replica polling", || async {
        polls(&a).await != polls(&b).await
    })
    .await;
    mcp_state_conformance(&a, &b, &health).await;
    if let Some(addr) = &second {
        let m = metrics(&a).await;
        assert_eq!(
            metric_value(&m, "mcp_status_state_failovers_total"),
            1.0,
            "{m}"
        );
        let series = format!("mcp_status_state_master{{addr=\"{addr}\"}}");
        assert_eq!(metric_value(&m, &series), 1.0, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_state_survives_a_sentinel_failover() {
    let t = std::sync::Mutex::new(tokio::task::block_in_place(
        gatepass_testkit::ha::Sentinel::start,
    ));
    let url = t.lock().unwrap().url();
    ha_conformance(
        &url,
        || t.lock().unwrap().master_addr(),
        || {
            let mut t = t.lock().unwrap();
            let old = t.master_addr().unwrap();
            t.kill_master();
            t.wait_new_master(&old, Duration::from_secs(30))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_state_survives_a_cluster_primary_loss() {
    let c = std::sync::Mutex::new(tokio::task::block_in_place(
        gatepass_testkit::ha::Cluster::start,
    ));
    let url = c.lock().unwrap().url();
    ha_conformance(
        &url,
        || None,
        || {
            let mut c = c.lock().unwrap();
            let p = c.primaries()[0];
            c.kill_primary(p, Duration::from_secs(30))
        },
    )
    .await;
}
