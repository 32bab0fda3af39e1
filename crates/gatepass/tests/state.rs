//! `[state] backend = "redis"`: two in-process gatepass servers on one real redis-server
//! stand for two replicas; Redis is stopped, restarted and misconfigured under them.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatepass_testkit::RedisServer;

/// The base config with `[state]` on `url` and `extra` appended.
fn config(url: &str, state: &str, extra: &str) -> String {
    format!(
        "{}\n[state]\nbackend = \"redis\"\nurl = \"{url}\"\n{state}\n{extra}",
        base_config()
    )
}

/// For tests of what is shared, not of how fast: a starved test machine must not turn a
/// late reply into a 503.
const PATIENT: &str = "command_timeout = \"2s\"";

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Waits until `/readyz` reports `"state": want`.
async fn wait_state(s: &Server, want: &str) {
    wait_for(
        Duration::from_secs(10),
        &format!("state {want}"),
        || async { s.get("/readyz").await.json()["state"] == want },
    )
    .await;
}

async fn buy(s: &Server, tok: &str) -> String {
    let r = s.tickets(reqwest::Method::POST, Some(tok)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["ticket"].as_str().unwrap().to_string()
}

fn upgrade_with(ticket: &str) -> Fwd {
    Fwd::upgrade(&format!("/ws/mcp-status?ticket={ticket}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticket_bought_on_a_is_redeemed_once_on_b() {
    let redis = RedisServer::start();
    let cfg = config(&redis.url(), PATIENT, "");
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    wait_state(&a, "ok").await;
    wait_state(&b, "ok").await;
    let tok = user("u1", "admin");
    let ticket = buy(&a, &tok).await;
    let g = validate(&b, upgrade_with(&ticket)).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(g.h(gatepass_identity::headers::USER_ID), Some("u1"));
    assert_eq!(g.h(gatepass_identity::headers::USER_ROLE), Some("admin"));
    for s in [&a, &b] {
        validate(s, upgrade_with(&ticket)).await.assert_denied_with(
            401,
            "invalid_token",
            "ticket is unknown, used or expired",
        );
    }
    // 20 concurrent redemptions of one ticket, split across A and B: exactly one 200.
    let ticket = buy(&b, &tok).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| upgrade_with(&ticket).spawn_status(if i % 2 == 0 { &a } else { &b }))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        19,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis.url(),
        PATIENT,
        "[rate_limit]\nper_user = { rate = 1, per = \"1m\", burst = 4 }\n",
    );
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    wait_state(&a, "ok").await;
    wait_state(&b, "ok").await;
    let tok = user("u2", "admin");
    let mut ok = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { &a } else { &b };
        let g = validate(s, Fwd::get("/x").bearer(&tok)).await;
        match g.status {
            200 => ok += 1,
            429 => {
                g.assert_denied(429, "rate_limited");
                let retry: u64 = g.h("retry-after").unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
            }
            other => panic!("{other}: {}", g.body),
        }
    }
    assert_eq!(ok, 4, "A and B together admit one burst");
    assert_metric(&a, "gatepass_state_fallbacks_total", 0.0).await;
}

/// Redis stopped: bearer requests still pass (in-process limits) within the command
/// timeout, tickets are 503, `/readyz` says so; restarted on its port: tickets work again
/// without restarting gatepass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_local_fallback_then_back() {
    let mut redis = RedisServer::start();
    let cfg = config(
        &redis.url(),
        "command_timeout = \"500ms\"\non_unavailable = \"local\"",
        "[rate_limit]\nper_user = { rate = 100, per = \"1s\", burst = 100 }\n",
    );
    let s = start(&cfg).await;
    wait_state(&s, "ok").await;
    let tok = user("u3", "admin");
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    assert_metric(&s, "gatepass_state_up", 1.0).await;
    blocking(|| redis.stop());
    for _ in 0..5 {
        let start = Instant::now();
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
        assert!(
            start.elapsed() < Duration::from_millis(500 + 400),
            "{:?}",
            start.elapsed()
        );
    }
    let r = s.tickets(reqwest::Method::POST, Some(&tok)).await;
    r.assert_denied_with(
        503,
        "temporarily_unavailable",
        "shared state is unavailable",
    );
    wait_state(&s, "unavailable").await;
    let r = s.get("/readyz").await;
    assert_eq!(
        r.status, 200,
        "local limits keep gatepass ready: {}",
        r.body
    );
    assert_eq!(r.body, r#"{"status":"ready","state":"unavailable"}"#);
    validate(&s, upgrade_with(&"A".repeat(43)))
        .await
        .assert_denied_with(
            503,
            "temporarily_unavailable",
            "shared state is unavailable",
        );
    assert_metric(&s, "gatepass_state_up", 0.0).await;
    assert!(metric(&s, "gatepass_state_fallbacks_total").await >= 1.0);
    let mut errors = 0.0;
    for op in gatepass::metrics::STATE_OPS {
        errors += metric(&s, &format!("gatepass_state_errors_total{{op=\"{op}\"}}")).await;
    }
    assert!(errors >= 1.0, "errors counted");
    blocking(|| redis.restart());
    wait_state(&s, "ok").await;
    let ticket = buy(&s, &tok).await;
    assert_status(&s, upgrade_with(&ticket), 200).await;
    assert_metric(&s, "gatepass_state_up", 1.0).await;
}

/// `on_unavailable = "deny"`: while Redis is down a limited request is 503, and `/readyz` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_refuses_limited_requests_while_down() {
    let mut redis = RedisServer::start();
    let cfg = config(
        &redis.url(),
        "on_unavailable = \"deny\"",
        // Too small a burst to slice: no slice in hand (which this replica may spend while
        // Redis is away) when Redis stops, so the next request asks Redis.
        "[rate_limit]\nper_user = { rate = 100, per = \"1s\", burst = 4 }\n",
    );
    let s = start(&cfg).await;
    wait_state(&s, "ok").await;
    let tok = user("u4", "admin");
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
    blocking(|| redis.stop());
    wait_state(&s, "unavailable").await;
    validate(&s, Fwd::get("/x").bearer(&tok))
        .await
        .assert_denied_with(
            503,
            "temporarily_unavailable",
            "shared state is unavailable",
        );
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["state"], "unavailable");
    // Anonymous routes have no limit: still decided.
    assert_status(&s, Fwd::get("/healthz"), 200).await;
    blocking(|| redis.restart());
    wait_state(&s, "ok").await;
    assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
}

/// An unreachable Redis or a wrong password at start: gatepass starts, stays up, says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_wrong_password_at_start() {
    let redis = RedisServer::start_with(Some("right-horse-battery"));
    let nobody = format!("redis://127.0.0.1:{}/0", gatepass_testkit::free_port());
    let wrong = format!("redis://:wrong-horse@127.0.0.1:{}/0", redis.port());
    for url in [nobody, wrong] {
        let s = start(&config(&url, "", "")).await;
        assert_eq!(s.get("/healthz").await.status, 200);
        wait_for(Duration::from_secs(10), "a failed probe", || async {
            metric(&s, "gatepass_state_errors_total{op=\"ping\"}").await >= 1.0
        })
        .await;
        let r = s.get("/readyz").await;
        assert_eq!(r.body, r#"{"status":"ready","state":"unavailable"}"#);
        let tok = user("u5", "admin");
        assert_status(&s, Fwd::get("/x").bearer(&tok), 200).await;
        let r = s.tickets(reqwest::Method::POST, Some(&tok)).await;
        r.assert_denied(503, "temporarily_unavailable");
        let m = gatepass_testkit::get_text(&s.url("/metrics")).await;
        assert!(!m.contains("wrong-horse"));
    }
    // The right password from `password_env`: connected.
    std::env::set_var("GATEPASS_STATE_IT_PASSWORD", "right-horse-battery");
    let s = start(&config(
        &redis.url(),
        "password_env = \"GATEPASS_STATE_IT_PASSWORD\"",
        "",
    ))
    .await;
    wait_state(&s, "ok").await;
    let tok = user("u6", "admin");
    let ticket = buy(&s, &tok).await;
    assert_status(&s, upgrade_with(&ticket), 200).await;
}

/// `replicas_ack = 1` on a Redis without replicas: a ticket is refused with 503 once WAIT
/// gives up (within twice `command_timeout`), and the wait holds up nothing else: limited
/// bearer requests on the same Redis are answered meanwhile, and the state stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreplicated_ticket_is_503_and_holds_up_nothing_else() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis.url(),
        "command_timeout = \"800ms\"\nreplicas_ack = 1",
        "[rate_limit]\nper_user = { rate = 1, per = \"1m\", burst = 4 }\n",
    );
    let a = start(&cfg).await;
    wait_state(&a, "ok").await;
    let tok = user("acked", "admin");
    let started = Instant::now();
    let ticket = {
        let tok = tok.clone();
        let url = a.url("/auth/tickets");
        tokio::spawn(async move {
            let r = client().post(url).bearer_auth(tok).send().await.unwrap();
            (got(r).await, started.elapsed())
        })
    };
    // While the ticket's WAIT runs (800 ms), a limited request is decided on Redis at once.
    let admin = redis::Client::open(redis.url()).unwrap();
    let admin = admin.get_multiplexed_async_connection().await.unwrap();
    wait_for(Duration::from_secs(5), "the ticket's WAIT blocking", || {
        let mut c = admin.clone();
        async move {
            // (The revocation follower's XREAD BLOCK is always there; WAIT is the ticket's.)
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut c)
                .await
                .unwrap();
            clients.contains(" cmd=wait ")
        }
    })
    .await;
    let t = Instant::now();
    let g = validate(&a, Fwd::get("/x").bearer(&user("other", "admin"))).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let (g, took) = ticket.await.unwrap();
    g.assert_denied(503, "temporarily_unavailable");
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(1700)).contains(&took),
        "{took:?}"
    );
    assert_eq!(a.get("/readyz").await.json()["state"], "ok");
    assert_metric(&a, "gatepass_state_fallbacks_total", 0.0).await;
}
