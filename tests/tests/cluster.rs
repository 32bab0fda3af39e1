//! Two gatepass replicas behind one Traefik (forwardAuth load-balanced by an entry point of
//! Traefik's own) and two mcp-status replicas (load-balanced by Traefik), sharing state on a
//! real redis-server: what one replica knows, the other does.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatepass_e2e::*;
use gatepass_testkit::{metric, RedisServer};
use serde_json::Value;

fn redis_state(redis: &RedisServer) -> Option<String> {
    Some(format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\n",
        redis.url()
    ))
}

async fn cluster(state: Option<String>, failure_burst: u32) -> Stack {
    balanced(Options {
        gatepass_replicas: 2,
        gatepass_state: state,
        failure_burst,
        ..Default::default()
    })
    .await
}

/// A stack whose gatepass replicas take turns in Traefik's round robin for the test alone:
/// mcp-status follows the revocation feed through the same pool, and a reconnect while a
/// test counts would take one of the turns (`make test` once saw 5 failures before the 429
/// instead of 6). So: once the feed is up.
async fn balanced(opts: Options) -> Stack {
    let stack = Stack::start_with(opts).await;
    stack.wait_feed_up().await;
    stack
}

/// Two replicas of each service on one Redis; at most two sockets per user in the cluster.
async fn full_cluster(redis: &RedisServer) -> Stack {
    let state = redis_state(redis);
    let stack = Stack::start_with(Options {
        gatepass_replicas: 2,
        gatepass_state: state.clone(),
        mcp_status_replicas: 2,
        mcp_status_extra: Some(format!(
            "[limits]\nmax_connections_per_user = 2\n\n{}",
            state.unwrap()
        )),
        ..Default::default()
    })
    .await;
    for addr in &stack.mcp_addrs {
        let url = format!("http://{addr}/readyz");
        gatepass_testkit::wait_for_200(Duration::from_secs(10), "mcp-status ready", &url).await;
    }
    stack
}

/// mcp-status replica `i`'s `/readyz` body.
async fn mcp_readyz(stack: &Stack, i: usize) -> Value {
    let url = format!("http://{}/readyz", stack.mcp_addrs[i]);
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn mcp_metrics(stack: &Stack, i: usize) -> String {
    gatepass_testkit::get_text(&format!("http://{}/metrics", stack.mcp_addrs[i])).await
}

/// Which replica polls MCP health: 0 or 1, `None` unless exactly one does.
async fn polling(stack: &Stack) -> Option<usize> {
    let a = mcp_readyz(stack, 0).await["poller"] == "active";
    let b = mcp_readyz(stack, 1).await["poller"] == "active";
    (a != b).then_some(usize::from(b))
}

/// The one replica polling MCP health, once there is exactly one.
async fn poller(stack: &Stack) -> usize {
    wait_for(Duration::from_secs(5), "one mcp-status polling", || async {
        polling(stack).await.is_some()
    })
    .await;
    polling(stack).await.expect("one poller")
}

/// A socket through Traefik as `sub` (admin), past its initial status.
async fn admin_socket(stack: &Stack, sub: &str) -> Ws {
    let (ws, _) = stack.ws(&token(sub, "admin"), &[]).await;
    let mut ws = ws.expect("socket through Traefik");
    assert_eq!(first_type(&mut ws).await.as_deref(), Some("initial_status"));
    ws
}

/// The next message matching `pred`, within 10 s.
async fn next_matching(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = tokio::time::timeout(left, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("socket ended")
            .expect("socket error");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if pred(&v) {
                return v;
            }
        }
    }
}

/// Open sockets per replica (every role).
async fn sockets_per_replica(stack: &Stack) -> [f64; 2] {
    let mut n = [0.0; 2];
    for (i, count) in n.iter_mut().enumerate() {
        *count = metric(
            &mcp_metrics(stack, i).await,
            r#"mcp_status_connections{role="admin"}"#,
        );
    }
    n
}

/// A manual disable through Traefik (taken by one replica) reaches sockets on both; both
/// replicas serve the same state after it.
#[tokio::test]
async fn manual_disable_reaches_sockets_on_both_replicas() {
    let redis = RedisServer::start();
    let stack = full_cluster(&redis).await;
    wait_for(Duration::from_secs(5), "no socket left", || async {
        sockets_per_replica(&stack).await == [0.0, 0.0]
    })
    .await;
    // Round robin: one socket on each replica.
    let mut sockets = [
        admin_socket(&stack, "a1").await,
        admin_socket(&stack, "a2").await,
    ];
    wait_for(
        Duration::from_secs(5),
        "one socket on each replica",
        || async { sockets_per_replica(&stack).await == [1.0, 1.0] },
    )
    .await;
    let admin = token("boss", "admin");
    for (action, status) in [("disable", "inactive"), ("enable", "active")] {
        let r = client()
            .post(stack.url(&format!("/api/v1/mcps/demo_mcp/{action}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{action}");
        for ws in &mut sockets {
            let change = next_matching(ws, "the status change", |v| {
                v["type"] == "mcp_status_change" && v["new_status"] == status
            })
            .await;
            assert!(
                change["reason"].as_str().unwrap().starts_with("Manually "),
                "{change}"
            );
        }
        // Both replicas serve it (round robin: two reads, one each).
        for _ in 0..2 {
            let body: Value = client()
                .get(stack.url("/api/v1/mcps"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(body["mcps"][0]["status"], status);
        }
    }
}

/// `max_connections_per_user = 2` counts the user's sockets on both replicas: the third is
/// refused (4008) wherever it lands, and closing one frees a slot.
#[tokio::test]
async fn connections_per_user_are_counted_across_replicas() {
    let redis = RedisServer::start();
    let stack = full_cluster(&redis).await;
    let first = admin_socket(&stack, "carol").await;
    let _second = admin_socket(&stack, "carol").await;
    for _ in 0..2 {
        let (ws, _) = stack.ws(&token("carol", "admin"), &[]).await;
        let mut ws = ws.expect("accepted, then closed");
        assert_eq!(
            close_of(&mut ws).await,
            (4008, "Too many connections".into())
        );
    }
    let mut first = first;
    first.close(None).await.unwrap();
    wait_for(Duration::from_secs(10), "a slot freed", || async {
        let (ws, _) = stack.ws(&token("carol", "admin"), &[]).await;
        let mut ws = ws.expect("socket through Traefik");
        first_type(&mut ws).await.as_deref() == Some("initial_status")
    })
    .await;
}

/// The replica polling MCP health is killed (SIGKILL: no goodbye): the other takes over within
/// 2 × interval (interval = 100 ms here) and its sockets keep getting results.
#[tokio::test]
async fn health_poller_is_taken_over_when_its_holder_is_killed() {
    let redis = RedisServer::start();
    let mut stack = full_cluster(&redis).await;
    let holder = poller(&stack).await;
    let survivor = 1 - holder;
    // A socket on the survivor: round robin alternates, so one of two lands there.
    let mut on_survivor = None;
    for sub in ["k1", "k2"] {
        let ws = admin_socket(&stack, sub).await;
        if sockets_per_replica(&stack).await[survivor] == 1.0 && on_survivor.is_none() {
            on_survivor = Some(ws);
        } else {
            drop(ws);
        }
    }
    let mut ws = on_survivor.expect("a socket on the survivor");
    let name = MCP_STATUS_REPLICAS[holder];
    let killed = Instant::now();
    gatepass_testkit::kill(&mut stack.procs.get_mut(name).unwrap().child);
    wait_for(Duration::from_secs(2), "the survivor polling", || async {
        mcp_readyz(&stack, survivor).await["poller"] == "active"
    })
    .await;
    let took = killed.elapsed();
    eprintln!("poller takeover after SIGKILL: {took:?}");
    // 2 × interval (200 ms), plus 100 ms for this test's own polling on a busy machine.
    assert!(took < Duration::from_millis(300), "takeover took {took:?}");
    let check = next_matching(&mut ws, "a check after the takeover", |v| {
        v["type"] == "health_check"
    })
    .await;
    assert_eq!(check["mcp_name"], "demo_mcp");
    let checks = metric(
        &mcp_metrics(&stack, survivor).await,
        r#"mcp_status_health_checks_total{mcp="demo_mcp",result="healthy"}"#,
    );
    assert!(checks >= 1.0, "the survivor checks itself");
}

/// `per_user` is one GCRA for the cluster: burst 3 gives 3 requests across both replicas,
/// then 429; with the in-process backend (the control) each replica admits its own 3.
#[tokio::test]
async fn per_user_limit_is_one_for_the_cluster() {
    let redis = RedisServer::start();
    for (state, allowed) in [(redis_state(&redis), 3), (None, 6)] {
        let stack = balanced(Options {
            gatepass_replicas: 2,
            gatepass_state: state,
            per_user_burst: Some(3),
            ..Default::default()
        })
        .await;
        let dave = token("dave", "admin");
        let mut ok = 0;
        for _ in 0..10 {
            match api_status(&stack, &dave).await {
                200 => ok += 1,
                429 => break,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(ok, allowed);
    }
}

/// A ticket bought from one replica opens exactly one socket through Traefik, whichever
/// replica Traefik asks; tickets bought from replica 2 are redeemed by replica 1; and 20
/// concurrent upgrades with one ticket give exactly one socket.
#[tokio::test]
async fn tickets_bought_from_one_replica_work_on_the_other() {
    let redis = RedisServer::start();
    let stack = cluster(redis_state(&redis), 10_000).await;
    let second = &stack.gatepass_addrs[1];
    let admin = token("t", "admin");
    let buy = || async {
        let r = stack
            .gatepass_client()
            .post(format!("https://{second}/tickets"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        body["ticket"].as_str().unwrap().to_string()
    };
    for _ in 0..4 {
        let path = format!("/ws/mcp-status?ticket={}", buy().await);
        let (r, _) = stack.ws_raw(&path, Some("jwt-auth"), &[]).await;
        let mut ws = r.expect("ticket upgrade");
        assert_eq!(first_type(&mut ws).await.as_deref(), Some("initial_status"));
        let (r, _) = stack.ws_raw(&path, Some("jwt-auth"), &[]).await;
        assert_eq!(r.err(), Some(401), "second use");
        // A third auth call per ticket, so round robin sends the next first use elsewhere.
        assert_eq!(api_status(&stack, &admin).await, 200);
    }
    let redeemed = |text: &str| metric(text, r#"gatepass_tickets_total{event="redeemed"}"#);
    let on_first = redeemed(&stack.replica_metrics(0).await);
    let on_second = redeemed(&stack.replica_metrics(1).await);
    assert_eq!(on_first + on_second, 4.0);
    assert!(
        on_first >= 1.0,
        "replica 1 redeemed tickets replica 2 issued"
    );
    assert_eq!(
        metric(
            &stack.replica_metrics(0).await,
            r#"gatepass_tickets_total{event="issued"}"#
        ),
        0.0
    );

    let path = format!("/ws/mcp-status?ticket={}", buy().await);
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let url = stack.ws_url(&path);
            tokio::spawn(async move { ws_connect(&url, Some("jwt-auth"), &[]).await.0.is_ok() })
        })
        .collect();
    let mut opened = 0;
    for a in attempts {
        opened += usize::from(a.await.unwrap());
    }
    assert_eq!(opened, 1, "one ticket, one socket");
}

/// `GET /api/v1/mcps` through Traefik with `bearer`: its status.
async fn api_status(stack: &Stack, bearer: &str) -> u16 {
    let r = client().get(stack.url("/api/v1/mcps")).bearer_auth(bearer);
    r.send().await.unwrap().status().as_u16()
}

/// How many garbage tokens get 401 before the first 429, through Traefik.
async fn failures_before_429(stack: &Stack) -> usize {
    for n in 0..20 {
        match api_status(stack, "x.y.z").await {
            401 => continue,
            429 => return n,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("no 429 after 20 failures")
}

/// The per-IP failure budget is one for the cluster: with Redis, 3 failures then 429 across
/// both replicas; with the in-process backend (the control) each replica has its own, 2×.
#[tokio::test]
async fn failure_budget_is_one_for_the_cluster() {
    let redis = RedisServer::start();
    let shared = cluster(redis_state(&redis), 3).await;
    assert_eq!(failures_before_429(&shared).await, 3);
    drop(shared);
    let local = cluster(None, 3).await;
    assert_eq!(failures_before_429(&local).await, 6);
}

/// Redis stopped: bearer requests still pass (local fallback), tickets 503 and both replicas
/// say so in /readyz; Redis back on the same port: tickets work again, no replica restarted.
#[tokio::test]
async fn redis_restart_needs_no_replica_restart() {
    let mut redis = RedisServer::start();
    let stack = cluster(redis_state(&redis), 10_000).await;
    let admin = token("r", "admin");
    let buy = || async {
        client()
            .post(stack.url("/auth/tickets"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let buys = |status: u16, what: &'static str, secs: u64| {
        let buy = &buy;
        async move {
            wait_for(Duration::from_secs(secs), what, || async {
                buy().await == status
            })
            .await
        }
    };
    assert_eq!(buy().await, 200);
    redis.stop();
    // At once: each bearer request answered within command_timeout (100 ms) plus a margin,
    // whether the replica already knows Redis is gone or finds out on this call.
    for _ in 0..4 {
        let start = Instant::now();
        assert_eq!(
            api_status(&stack, &admin).await,
            200,
            "bearer requests fall back to local limits"
        );
        let took = start.elapsed();
        assert!(took < Duration::from_millis(400), "{took:?}");
    }
    buys(503, "tickets 503 while Redis is down", 10).await;
    // Each replica notices by itself (a failed call, or its next PING within a second).
    for i in 0..2 {
        let url = format!("https://{}/readyz", stack.gatepass_addrs[i]);
        let state = || async {
            let r = stack.gatepass_client().get(&url).send().await.unwrap();
            let body: Value = r.json().await.unwrap();
            body["state"].clone()
        };
        wait_for(
            Duration::from_secs(5),
            "readyz says unavailable",
            || async { state().await == "unavailable" },
        )
        .await;
    }
    redis.restart();
    buys(200, "tickets again once Redis is back", 15).await;
    for name in &GATEPASS_REPLICAS[..2] {
        let pid = stack.procs[name].child.id();
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{name} still runs"
        );
    }
}

/// Loops of `GET /api/v1/mcps` through Traefik until `stop`, each answer recorded with when
/// it was sent and answered.
fn api_load(
    stack: &Stack,
    token: &str,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(Instant, Instant, u16)>>> {
    (0..clients)
        .map(|_| {
            let (url, token, stop) = (stack.url("/api/v1/mcps"), token.to_owned(), stop.clone());
            tokio::spawn(async move {
                let c = client();
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let status = match c.get(&url).bearer_auth(&token).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    };
                    seen.push((sent, Instant::now(), status));
                }
                seen
            })
        })
        .collect()
}

/// A replica that dies costs nothing from 3 s after its death on (the health checks and the
/// retry of `traefik/dynamic.yml` and `traefik/pool.yml`): two replicas of each service under
/// load through Traefik; SIGKILL one gatepass, later one mcp-status. Every request sent from 3 s
/// after each death on is answered 200, and the dead one, restarted, rejoins without a failed
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_costs_no_request_after_3_s() {
    let redis = RedisServer::start();
    let mut stack = full_cluster(&redis).await;
    let admin = token("load", "admin");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops = api_load(&stack, &admin, 4, stop.clone());
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(1000).await;
    let mut deaths = Vec::new();
    for name in [GATEPASS_REPLICAS[1], MCP_STATUS_REPLICAS[1]] {
        deaths.push(Instant::now());
        gatepass_testkit::kill(&mut stack.procs.get_mut(name).unwrap().child);
        pause(4000).await;
        // Restarted on its address: Traefik's next good check brings it back.
        tokio::task::block_in_place(|| stack.restart(name));
        pause(2500).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = Vec::new();
    for l in loops {
        seen.extend(l.await.unwrap());
    }
    // A request in flight at a death (sent before, answered after) is part of that death's
    // 3 s, as is every request sent within them.
    let grace = |sent: Instant, done: Instant| {
        deaths
            .iter()
            .any(|d| done >= *d && sent < *d + Duration::from_secs(3))
    };
    let failed_in_grace = seen
        .iter()
        .filter(|(sent, done, s)| grace(*sent, *done) && *s != 200)
        .count();
    let failed: Vec<_> = seen
        .iter()
        .filter(|(sent, done, s)| !grace(*sent, *done) && *s != 200)
        .map(|(sent, _, s)| (sent.saturating_duration_since(deaths[0]).as_millis(), *s))
        .collect();
    eprintln!(
        "{} requests, {failed_in_grace} failed within 3 s of a death",
        seen.len()
    );
    assert!(seen.len() > 100, "the load ran: {} requests", seen.len());
    assert!(
        failed.is_empty(),
        "failed outside the grace (ms after the first death, status): {failed:?}"
    );
}
