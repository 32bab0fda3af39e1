//! JWKS behaviour against a real HTTP JWKS server run inside the test.

mod common;

use std::time::Duration;

use common::*;
use gatepass_testkit::{jwks, Stub};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// A controllable identity provider serving `keys`; its JWKS URL.
async fn idp(keys: Vec<Value>) -> (String, Stub) {
    let idp = Stub::json(jwks(keys)).await;
    (idp.url("/.well-known/jwks.json"), idp)
}

/// An IdP with the RSA key `k1`, and a gatepass with these `[jwks]` settings that fetched it.
async fn with_idp(jwks_settings: &str) -> (Server, Stub) {
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &keys().rsa_priv, "k1")]).await;
    let s = start(&config(&url, jwks_settings)).await;
    ready(&s).await;
    (s, idp)
}

fn config(url: &str, jwks: &str) -> String {
    format!(
        "[[issuers]]\nname = \"idp\"\nissuer = \"https://idp.test\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_url = \"{url}\"\n\n[jwks]\n{jwks}\n"
    )
}

fn token(alg: Algorithm, key: &str, kid: &str, sub: &str) -> String {
    let mut c = claims(sub, "admin");
    c["iss"] = "https://idp.test".into();
    sign_with(alg, key, Some(kid), &c)
}

async fn ready(s: &Server) {
    gatepass_testkit::wait_for_200(
        Duration::from_secs(5),
        "first JWKS fetch",
        &s.url("/readyz"),
    )
    .await;
}

/// `/validate` for a token of the RSA key `k1`.
async fn rsa_k1(s: &Server, sub: &str) -> Got {
    let t = token(Algorithm::RS256, &keys().rsa_priv, "k1", sub);
    validate(s, Fwd::get("/x").bearer(&t)).await
}

/// Issue 8 D: an IdP's `Cache-Control: max-age` of a day must not postpone the next fetch
/// past `stale_for / 2`; otherwise the keys go stale (503 for every new token) while the IdP
/// is healthy.
#[tokio::test]
async fn long_max_age_is_capped_at_half_of_stale_for() {
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &keys().rsa_priv, "k1")]).await;
    idp.set_header("cache-control", "public, max-age=86400");
    let s = start(&config(
        &url,
        "refresh_interval = \"1s\"\nstale_for = \"3s\"",
    ))
    .await;
    ready(&s).await;
    let started = std::time::Instant::now();
    wait_for(
        Duration::from_secs(5),
        "refreshes every stale_for / 2",
        || async { idp.hits() >= 3 },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "not sooner than stale_for / 2"
    );
    // More than stale_for after the first fetch, a new token still verifies.
    let g = rsa_k1(&s, "late").await;
    assert_eq!(g.status, 200, "{}", g.body);
}

#[tokio::test]
async fn rotation_is_picked_up_without_restart() {
    let k = keys();
    let (s, idp) = with_idp("refresh_interval = \"1h\"\nmin_refresh_interval = \"1s\"").await;
    assert_eq!(rsa_k1(&s, "a").await.status, 200);
    // The IdP rotates to a new key; tokens signed with it are accepted once the unknown kid
    // triggers a refetch (allowed once per min_refresh_interval).
    idp.set_body(jwks(vec![jwk(Algorithm::ES256, &k.ec256_priv, "k2")]));
    eventually_accepted(&s, "rotated key accepted", |n| {
        token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("b{n}"))
    })
    .await;
    // The old key is gone from the set: a new token signed with it is refused.
    rsa_k1(&s, "c").await.assert_denied(401, "invalid_token");
    assert!(idp.hits() >= 2);
}

#[tokio::test]
async fn background_refresh_replaces_keys() {
    let k = keys();
    let (s, idp) = with_idp("refresh_interval = \"1s\"\nmin_refresh_interval = \"1h\"").await;
    idp.set_body(jwks(vec![
        jwk(Algorithm::RS256, &k.rsa_priv, "k1"),
        jwk(Algorithm::ES256, &k.ec256_priv, "k2"),
    ]));
    // min_refresh_interval forbids a kid-triggered fetch: only the background refresh can bring k2.
    eventually_accepted(&s, "background refresh", |n| {
        token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("u{n}"))
    })
    .await;
}

#[tokio::test]
async fn unknown_kid_flood_is_bounded_by_min_refresh_interval() {
    let k = keys();
    let (s, idp) = with_idp("refresh_interval = \"1h\"\nmin_refresh_interval = \"1m\"").await;
    let before = idp.hits();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let t = token(
            Algorithm::RS256,
            &k.other_rsa_priv,
            &format!("flood-{i}"),
            "x",
        );
        let fwd = Fwd::get("/x")
            .bearer(&t)
            .ip(&format!("192.0.2.{}", i % 250));
        tasks.push(fwd.spawn_status(&s));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    // The initial fetch happened within min_refresh_interval: the flood causes none.
    assert_eq!(idp.hits() - before, 0);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let k = keys();
    let (s, idp) = with_idp("refresh_interval = \"1h\"\nmin_refresh_interval = \"0s\"").await;
    idp.set_delay(Duration::from_millis(500));
    idp.set_body(jwks(vec![jwk(Algorithm::ES256, &k.ec256_priv, "new")]));
    let before = idp.hits();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let t = token(Algorithm::ES256, &k.ec256_priv, "new", &format!("sf{i}"));
        tasks.push(Fwd::get("/x").bearer(&t).spawn_status(&s));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let fetches = idp.hits() - before;
    assert!(
        (1..=2).contains(&fetches),
        "{fetches} fetches for 30 concurrent unknown kids"
    );
    assert!(ok >= 25, "only {ok} of 30 waited for the shared fetch");
}

/// `/readyz` is 503 and names the issuer without keys.
async fn assert_not_ready(s: &Server) {
    let r = s.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["issuers_without_keys"], json!(["idp"]));
}

#[tokio::test]
async fn idp_down_after_a_good_fetch_keeps_validating_until_stale() {
    let (s, idp) =
        with_idp("refresh_interval = \"1s\"\nmin_refresh_interval = \"1s\"\nstale_for = \"3s\"")
            .await;
    idp.set_status(503);
    wait_for(Duration::from_secs(5), "a failed refresh", || async {
        metric(
            &s,
            r#"gatepass_jwks_fetches_total{issuer="idp",result="error"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    // The IdP is down, the last good keys still verify new tokens.
    let g = rsa_k1(&s, "during-outage").await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(gatepass_testkit::get_status(&s.url("/readyz")).await, 200);
    assert!(metric(&s, r#"gatepass_jwks_key_age_seconds{issuer="idp"}"#).await >= 0.0);
    // Past stale_for since the last success: 503 temporarily_unavailable, fast.
    let mut n = 0;
    wait_for(Duration::from_secs(8), "keys to go stale", || {
        n += 1;
        let sub = format!("stale{n}");
        let s = &s;
        async move { rsa_k1(s, &sub).await.status == 503 }
    })
    .await;
    rsa_k1(&s, "late")
        .await
        .assert_denied(503, "temporarily_unavailable");
    assert_not_ready(&s).await;
    // The IdP comes back: keys are fresh again.
    idp.set_status(200);
    ready(&s).await;
}

#[tokio::test]
async fn never_fetched_issuer_is_not_ready_and_answers_503() {
    // Nothing listens on this port.
    let dead = gatepass_testkit::free_port();
    // And an IdP that hangs longer than fetch_timeout.
    let (hang_url, hang) = idp(vec![jwk(Algorithm::RS256, &keys().rsa_priv, "k1")]).await;
    hang.set_delay(Duration::from_secs(10));
    for url in [format!("http://127.0.0.1:{dead}/jwks.json"), hang_url] {
        let s = start(&config(
            &url,
            "fetch_timeout = \"300ms\"\nmin_refresh_interval = \"1h\"",
        ))
        .await;
        assert_not_ready(&s).await;
        rsa_k1(&s, "u")
            .await
            .assert_denied(503, "temporarily_unavailable");
        let series = r#"gatepass_requests_total{outcome="deny",reason="keys_unavailable"}"#;
        assert_metric(&s, series, 1.0).await;
    }
}

#[tokio::test]
async fn jwks_file_is_reread_on_change() {
    let k = keys();
    let first = jwks(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]);
    let cfg = "[[issuers]]\nname = \"file\"\nissuer = \"https://idp.test\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_file = \"jwks.json\"\n";
    let s = start_with(cfg, |dir| {
        std::fs::write(dir.join("jwks.json"), &first).unwrap()
    })
    .await;
    assert_eq!(rsa_k1(&s, "a").await.status, 200);
    let t2 = |n: usize| token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("f{n}"));
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&t2(0))).await, 401);
    // A broken rewrite is ignored; the last good keys stay.
    s.write("jwks.json", "{not json");
    assert_eq!(rsa_k1(&s, "b").await.status, 200);
    s.write(
        "jwks.json",
        &jwks(vec![
            jwk(Algorithm::ES256, &k.ec256_priv, "k2"),
            jwk(Algorithm::RS256, &k.rsa_priv, "k1"),
        ]),
    );
    eventually_accepted(&s, "jwks_file reload", t2).await;
}
