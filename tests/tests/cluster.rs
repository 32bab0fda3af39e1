//! Two gatepass replicas behind one Traefik (forwardAuth load-balanced by an entry point of
//! Traefik's own) sharing state on a real redis-server: what one replica knows, the other does.

use std::time::Duration;

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
    Stack::start_with(Options {
        gatepass_replicas: 2,
        gatepass_state: state,
        failure_burst,
        ..Default::default()
    })
    .await
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
    buys(503, "tickets 503 while Redis is down", 10).await;
    assert_eq!(
        api_status(&stack, &admin).await,
        200,
        "bearer requests fall back to local limits"
    );
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
