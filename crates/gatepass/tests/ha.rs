//! SPEC §11: gatepass on Redis Sentinel and on Redis Cluster, two in-process replicas on one
//! real topology (Debian's redis-server) per test. The shared-state promises (tickets exactly
//! once, one limit for both replicas, revocations seen by both) are checked before the master
//! (a primary) is SIGKILLed, during the gap, and after; and again once the old master is back.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gatepass_testkit::dpop::DpopKey;
use gatepass_testkit::ha::{Cluster, Sentinel};
use serde_json::json;

/// The whole time the sentinels may take to agree on a new master.
const FAILOVER: Duration = Duration::from_secs(30);
/// How soon after the topology settled every feature must be back (SPEC §11).
const BACK_WITHIN: Duration = Duration::from_secs(2);
const COMMAND_TIMEOUT_MS: u64 = 500;

/// The base config (its issuer also takes DPoP-bound tokens) on `url`.
fn config(url: &str, state: &str) -> String {
    let base = base_config().replace("leeway = \"5s\"\n", "leeway = \"5s\"\ndpop = \"allowed\"\n");
    format!(
        "{}\n[state]\nbackend = \"redis\"\nurl = \"{url}\"\ncommand_timeout = \"{COMMAND_TIMEOUT_MS}ms\"\n{state}\n\
         [rate_limit]\nper_user = {{ rate = 1, per = \"1m\", burst = 4 }}\n\
         upgrades_per_user = {{ rate = 10, per = \"1m\", burst = 10 }}\n",
        base
    )
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn admin() -> String {
    user("root", "admin")
}

async fn buy(s: &Server, tok: &str) -> Got {
    s.tickets(reqwest::Method::POST, Some(tok)).await
}

fn upgrade_with(ticket: &str) -> Fwd {
    Fwd::upgrade(&format!("/ws/mcp-status?ticket={ticket}"))
}

fn ticket_of(g: &Got) -> String {
    assert_eq!(g.status, 200, "{}", g.body);
    g.json()["ticket"].as_str().unwrap().to_owned()
}

async fn revoke(s: &Server, jti: &str) -> Got {
    let r = client()
        .post(s.url("/revocations"))
        .bearer_auth(admin())
        .header("content-type", "application/json")
        .body(json!({"jti": jti, "exp": 99999999999u64}).to_string())
        .send()
        .await
        .unwrap();
    got(r).await
}

fn token_with_jti(sub: &str, jti: &str) -> String {
    let mut c = claims(sub, "admin");
    c["jti"] = jti.into();
    hs(&c)
}

/// Both replicas report the shared state up (and, under Sentinel, `master` in use).
async fn ready_on(servers: [&Server; 2], master: Option<&str>) -> bool {
    for s in servers {
        let r = s.get("/readyz").await.json();
        if r["state"] != "ok" || r["state_master"].as_str() != master {
            return false;
        }
    }
    true
}

/// Every shared-state promise once, with names unique to `phase`. Each is first tried until
/// it works (or `within` passes), then asserted exactly.
async fn features(a: &Server, b: &Server, phase: &str) {
    // A ticket bought on A is redeemed once, on B.
    let tok = user(&format!("t-{phase}"), "admin");
    let ticket = ticket_of(&buy(a, &tok).await);
    let g = validate(b, upgrade_with(&ticket)).await;
    assert_eq!(g.status, 200, "{phase}: {}", g.body);
    for s in [a, b] {
        validate(s, upgrade_with(&ticket)).await.assert_denied_with(
            401,
            "invalid_token",
            "ticket is unknown, used or expired",
        );
    }
    // One burst of 4 for both replicas together.
    let tok = user(&format!("l-{phase}"), "admin");
    let mut ok = 0;
    for i in 0..10 {
        let s = if i % 2 == 0 { a } else { b };
        let g = validate(s, Fwd::get("/x").bearer(&tok)).await;
        match g.status {
            200 => ok += 1,
            429 => g.assert_denied(429, "rate_limited"),
            other => panic!("{phase}: {other}: {}", g.body),
        }
    }
    assert_eq!(ok, 4, "{phase}: A and B together admit one burst");
    // A revocation written through A is enforced by B.
    let jti = format!("j-{phase}");
    let tok = token_with_jti(&format!("r-{phase}"), &jti);
    assert_status(b, Fwd::get("/x").bearer(&tok), 200).await;
    let r = revoke(a, &jti).await;
    assert_eq!(r.status, 200, "{phase}: {}", r.body);
    wait_for(
        Duration::from_secs(5),
        "B enforces A's revocation",
        || async { validate(b, Fwd::get("/x").bearer(&tok)).await.status == 401 },
    )
    .await;
    validate(b, Fwd::get("/x").bearer(&tok))
        .await
        .assert_denied_with(401, "invalid_token", "token revoked");
    // A DPoP proof is used once for the cluster: accepted on A, a replay refused on B.
    let key = DpopKey::es256();
    let mut c = claims(&format!("d-{phase}"), "admin");
    c["cnf"] = json!({"jkt": key.thumbprint()});
    let tok = hs(&c);
    let proof = key.proof("GET", "http://app.test:8080/x", Some(&tok));
    let req = || {
        Fwd::get("/x")
            .h("Authorization", &format!("DPoP {tok}"))
            .h("DPoP", &proof)
    };
    let g = validate(a, req()).await;
    assert_eq!(g.status, 200, "{phase}: {}", g.body);
    validate(b, req()).await.assert_denied_with(
        401,
        "invalid_dpop_proof",
        "the DPoP proof was already used",
    );
}

/// Until `settled` says the topology changed: bearer requests keep being answered, each
/// within `command_timeout` plus its own work (in-process limits decide meanwhile).
async fn answered_during_the_gap(a: &Server, mut settled: impl FnMut() -> bool) -> Instant {
    let tok = user("gap", "developer");
    let mut n = 0;
    loop {
        if blocking(&mut settled) {
            return Instant::now();
        }
        let started = Instant::now();
        let g = validate(a, Fwd::get("/x").bearer(&tok)).await;
        let took = started.elapsed();
        assert!(
            g.status == 200 || g.status == 429,
            "request {n} in the gap: {} {}",
            g.status,
            g.body
        );
        assert!(
            took < Duration::from_millis(COMMAND_TIMEOUT_MS + 500),
            "request {n} in the gap took {took:?}"
        );
        n += 1;
    }
}

/// Waits until `back` holds, failing if that takes longer than [`BACK_WITHIN`] after `since`.
async fn back_within<F, Fut>(since: Instant, what: &str, mut back: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if back().await {
            let late = since.elapsed();
            assert!(late <= BACK_WITHIN, "{what}: back only after {late:?}");
            return;
        }
        assert!(
            since.elapsed() <= BACK_WITHIN,
            "{what}: not back within {BACK_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_keeps_every_promise() {
    let mut t = blocking(Sentinel::start);
    let cfg = config(&t.url(), "replicas_ack = 1");
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    let first = blocking(|| t.master_addr()).expect("sentinels agree");
    wait_for(
        Duration::from_secs(10),
        "both replicas on the master",
        || ready_on([&a, &b], Some(&first)),
    )
    .await;
    let m = metrics_text(&a).await;
    assert_eq!(
        gatepass_testkit::metric(&m, &format!(r#"gatepass_state_master{{addr="{first}"}}"#)),
        1.0,
        "{m}"
    );
    assert_eq!(
        gatepass_testkit::metric(&m, "gatepass_state_failovers_total"),
        0.0
    );
    features(&a, &b, "before").await;

    // replicas_ack = 1: a ticket bought just before the master dies survives the failover.
    let kept = ticket_of(&buy(&a, &user("kept", "admin")).await);
    let killed = blocking(|| t.kill_master());
    let named = answered_during_the_gap(&a, || t.master_addr().is_some_and(|m| m != first)).await;
    let second = blocking(|| t.master_addr()).unwrap();
    back_within(named, "both replicas on the new master", || {
        ready_on([&a, &b], Some(&second))
    })
    .await;
    let g = validate(&b, upgrade_with(&kept)).await;
    assert_eq!(
        g.status, 200,
        "the acknowledged ticket survived: {}",
        g.body
    );
    features(&a, &b, "after").await;
    let m = metrics_text(&a).await;
    assert_eq!(
        gatepass_testkit::metric(&m, "gatepass_state_failovers_total"),
        1.0,
        "{m}"
    );
    assert_eq!(
        gatepass_testkit::metric(&m, &format!(r#"gatepass_state_master{{addr="{second}"}}"#)),
        1.0
    );
    assert_eq!(
        gatepass_testkit::metric(&m, &format!(r#"gatepass_state_master{{addr="{first}"}}"#)),
        0.0
    );
    assert!(!m.contains("password"), "{m}");

    // The old master comes back empty and claims to be master until the sentinels demote it:
    // nothing is written to it meanwhile, though tickets keep being bought.
    blocking(|| t.nodes[killed].restart());
    let old = &t.nodes[killed];
    let deadline = Instant::now() + FAILOVER;
    let mut bought_meanwhile = 0;
    while blocking(|| old.role()) == "master" {
        assert!(
            Instant::now() < deadline,
            "the old master was never demoted"
        );
        ticket_of(&buy(&a, &user(&format!("meanwhile-{bought_meanwhile}"), "admin")).await);
        bought_meanwhile += 1;
        let keys = blocking(|| old.dbsize());
        if blocking(|| old.role()) == "master" {
            assert_eq!(keys, 0, "a write reached the demoted master");
        }
    }
    assert!(bought_meanwhile > 0, "the window was never tested");
    assert_eq!(
        blocking(|| t.master_addr()).as_deref(),
        Some(second.as_str())
    );
    features(&a, &b, "restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_primary_loss_keeps_every_promise() {
    let c = blocking(Cluster::start);
    let cfg = config(&c.url(), "");
    let (a, b) = (start(&cfg).await, start(&cfg).await);
    wait_for(
        Duration::from_secs(10),
        "both replicas on the cluster",
        || ready_on([&a, &b], None),
    )
    .await;
    features(&a, &b, "before").await;
    for s in [&a, &b] {
        let m = metrics_text(s).await;
        assert_eq!(
            gatepass_testkit::metric(&m, "gatepass_state_fallbacks_total"),
            0.0,
            "{m}"
        );
    }
    let primary = blocking(|| c.primaries())[0];
    // Requests while the cluster misses a primary are answered in time.
    let tok = user("gap", "developer");
    let kill = tokio::task::spawn_blocking(move || {
        let mut c = c;
        let at = c.kill_primary(primary, FAILOVER);
        (c, at)
    });
    while !kill.is_finished() {
        let started = Instant::now();
        let g = validate(&a, Fwd::get("/x").bearer(&tok)).await;
        assert!(
            g.status == 200 || g.status == 429,
            "{} {}",
            g.status,
            g.body
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(COMMAND_TIMEOUT_MS + 500),
            "a request during the promotion took {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_cluster, promoted) = kill.await.unwrap();
    back_within(promoted, "both replicas on the promoted replica", || {
        ready_on([&a, &b], None)
    })
    .await;
    // Every limit (a user's per-request and upgrade limits, checked in one script) is decided
    // on the cluster, never by the in-process fallback (as during the gap).
    let fallbacks = || async {
        let mut n = 0.0;
        for s in [&a, &b] {
            n += gatepass_testkit::metric(&metrics_text(s).await, "gatepass_state_fallbacks_total");
        }
        n
    };
    let gap = fallbacks().await;
    features(&a, &b, "after").await;
    assert_eq!(
        fallbacks().await,
        gap,
        "limits fell back after the promotion"
    );
}

async fn metrics_text(s: &Server) -> String {
    s.get("/metrics").await.body
}
