//! JWKS behaviour against a real HTTP JWKS server run inside the test.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// A controllable identity provider.
struct Idp {
    body: Mutex<String>,
    status: AtomicU16,
    hits: AtomicUsize,
    delay_ms: AtomicU64,
    /// `Cache-Control` sent with the keys; empty for none.
    cache_control: Mutex<String>,
}

impl Idp {
    fn set_keys(&self, keys: Vec<Value>) {
        *self.body.lock().unwrap() = json!({ "keys": keys }).to_string();
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn idp(keys: Vec<Value>) -> (String, Arc<Idp>) {
    let idp = Arc::new(Idp {
        body: Mutex::new(String::new()),
        status: AtomicU16::new(200),
        hits: AtomicUsize::new(0),
        delay_ms: AtomicU64::new(0),
        cache_control: Mutex::new(String::new()),
    });
    idp.set_keys(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = idp.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let state = state.clone();
                    async move {
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        let delay = state.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(Duration::from_millis(delay)).await;
                        }
                        let body = state.body.lock().unwrap().clone();
                        let mut resp = http::Response::builder()
                            .status(state.status.load(Ordering::SeqCst))
                            .header("content-type", "application/json");
                        let cc = state.cache_control.lock().unwrap().clone();
                        if !cc.is_empty() {
                            resp = resp.header("cache-control", cc);
                        }
                        let resp = resp.body(Full::new(Bytes::from(body))).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/.well-known/jwks.json"), idp)
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
    wait_for(Duration::from_secs(5), "first JWKS fetch", || async {
        client()
            .get(s.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
}

/// Issue 8 D: an IdP's `Cache-Control: max-age` of a day must not postpone the next fetch
/// past `stale_for / 2`; otherwise the keys go stale (503 for every new token) while the IdP
/// is healthy.
#[tokio::test]
async fn long_max_age_is_capped_at_half_of_stale_for() {
    let k = keys();
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    *idp.cache_control.lock().unwrap() = "public, max-age=86400".into();
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
    let g = validate(
        &s,
        Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "late")),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
}

#[tokio::test]
async fn rotation_is_picked_up_without_restart() {
    let k = keys();
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    let s = start(&config(
        &url,
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"1s\"",
    ))
    .await;
    ready(&s).await;
    assert_eq!(
        validate(
            &s,
            Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "a"))
        )
        .await
        .status,
        200
    );
    // The IdP rotates to a new key; tokens signed with it are accepted once the unknown kid
    // triggers a refetch (allowed once per min_refresh_interval).
    idp.set_keys(vec![jwk(Algorithm::ES256, &k.ec256_priv, "k2")]);
    eventually_accepted(&s, "rotated key accepted", |n| {
        token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("b{n}"))
    })
    .await;
    // The old key is gone from the set: a new token signed with it is refused.
    let g = validate(
        &s,
        Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "c")),
    )
    .await;
    g.assert_denied(401, "invalid_token");
    assert!(idp.hits() >= 2);
}

#[tokio::test]
async fn background_refresh_replaces_keys() {
    let k = keys();
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    let s = start(&config(
        &url,
        "refresh_interval = \"1s\"\nmin_refresh_interval = \"1h\"",
    ))
    .await;
    ready(&s).await;
    idp.set_keys(vec![
        jwk(Algorithm::RS256, &k.rsa_priv, "k1"),
        jwk(Algorithm::ES256, &k.ec256_priv, "k2"),
    ]);
    // min_refresh_interval forbids a kid-triggered fetch: only the background refresh can bring k2.
    eventually_accepted(&s, "background refresh", |n| {
        token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("u{n}"))
    })
    .await;
}

#[tokio::test]
async fn unknown_kid_flood_is_bounded_by_min_refresh_interval() {
    let k = keys();
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    let s = start(&config(
        &url,
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"1m\"",
    ))
    .await;
    ready(&s).await;
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
        let url = s.url("/validate");
        tasks.push(tokio::spawn(async move {
            let mut req = client().get(url);
            for (k, v) in &fwd.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            req.send().await.unwrap().status().as_u16()
        }));
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
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    let s = start(&config(
        &url,
        "refresh_interval = \"1h\"\nmin_refresh_interval = \"0s\"",
    ))
    .await;
    ready(&s).await;
    idp.delay_ms.store(500, Ordering::SeqCst);
    idp.set_keys(vec![jwk(Algorithm::ES256, &k.ec256_priv, "new")]);
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

#[tokio::test]
async fn idp_down_after_a_good_fetch_keeps_validating_until_stale() {
    let k = keys();
    let (url, idp) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    let s = start(&config(
        &url,
        "refresh_interval = \"1s\"\nmin_refresh_interval = \"1s\"\nstale_for = \"3s\"",
    ))
    .await;
    ready(&s).await;
    idp.status.store(503, Ordering::SeqCst);
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
    let g = validate(
        &s,
        Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "during-outage")),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_eq!(
        client()
            .get(s.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(metric(&s, r#"gatepass_jwks_key_age_seconds{issuer="idp"}"#).await >= 0.0);
    // Past stale_for since the last success: 503 temporarily_unavailable, fast.
    let mut n = 0;
    wait_for(Duration::from_secs(8), "keys to go stale", || {
        n += 1;
        let f = Fwd::get("/x").bearer(&token(
            Algorithm::RS256,
            &k.rsa_priv,
            "k1",
            &format!("stale{n}"),
        ));
        let s = &s;
        async move { f.send(s).await.status() == 503 }
    })
    .await;
    let g = validate(
        &s,
        Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "late")),
    )
    .await;
    g.assert_denied(503, "temporarily_unavailable");
    let r = got(client().get(s.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["issuers_without_keys"], json!(["idp"]));
    // The IdP comes back: keys are fresh again.
    idp.status.store(200, Ordering::SeqCst);
    ready(&s).await;
}

#[tokio::test]
async fn never_fetched_issuer_is_not_ready_and_answers_503() {
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let k = keys();
    // And an IdP that hangs longer than fetch_timeout.
    let (hang_url, hang) = idp(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]).await;
    hang.delay_ms.store(10_000, Ordering::SeqCst);
    for url in [format!("http://{dead}/jwks.json"), hang_url] {
        let s = start(&config(
            &url,
            "fetch_timeout = \"300ms\"\nmin_refresh_interval = \"1h\"",
        ))
        .await;
        let r = got(client().get(s.url("/readyz")).send().await.unwrap()).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["issuers_without_keys"], json!(["idp"]));
        let g = validate(
            &s,
            Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "u")),
        )
        .await;
        g.assert_denied(503, "temporarily_unavailable");
        assert_eq!(
            metric(
                &s,
                r#"gatepass_requests_total{outcome="deny",reason="keys_unavailable"}"#
            )
            .await,
            1.0
        );
    }
}

#[tokio::test]
async fn jwks_file_is_reread_on_change() {
    let k = keys();
    let doc = |keys: Vec<Value>| json!({ "keys": keys }).to_string();
    let first = doc(vec![jwk(Algorithm::RS256, &k.rsa_priv, "k1")]);
    let cfg = "[[issuers]]\nname = \"file\"\nissuer = \"https://idp.test\"\nalgorithms = [\"RS256\", \"ES256\"]\njwks_file = \"jwks.json\"\n";
    let s = start_with(cfg, |dir| {
        std::fs::write(dir.join("jwks.json"), &first).unwrap()
    })
    .await;
    assert_eq!(
        validate(
            &s,
            Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "a"))
        )
        .await
        .status,
        200
    );
    let t2 = |n: usize| token(Algorithm::ES256, &k.ec256_priv, "k2", &format!("f{n}"));
    assert_eq!(
        validate(&s, Fwd::get("/x").bearer(&t2(0))).await.status,
        401
    );
    // A broken rewrite is ignored; the last good keys stay.
    s.write("jwks.json", "{not json");
    assert_eq!(
        validate(
            &s,
            Fwd::get("/x").bearer(&token(Algorithm::RS256, &k.rsa_priv, "k1", "b"))
        )
        .await
        .status,
        200
    );
    s.write(
        "jwks.json",
        &doc(vec![
            jwk(Algorithm::ES256, &k.ec256_priv, "k2"),
            jwk(Algorithm::RS256, &k.rsa_priv, "k1"),
        ]),
    );
    eventually_accepted(&s, "jwks_file reload", t2).await;
}
