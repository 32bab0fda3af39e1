//! DPoP-bound tokens at `/validate` (SPEC §10) against a real OpenID Provider (npm
//! `oidc-provider`, whose `features.dPoP` binds a client_credentials token to the key of the
//! proof sent to its token endpoint) and a DPoP client from the testkit. Every check of a
//! proof has its 401 (or 400) and challenge; the binding is read from the token's own `cnf`;
//! `jti`s are used once for the whole cluster (two replicas on one redis-server); nonces are
//! stateless; a ticket bought with a proof opens one upgrade and its assertion carries `cnf`.

mod common;

use std::time::Duration;

use common::*;
use gatepass_testkit::dpop::{self, DpopKey};
use gatepass_testkit::oidc::{self, OidcProvider};
use gatepass_testkit::{now, RedisServer};
use serde_json::{json, Value};

/// The URL the forwarded request names (`Fwd`: http, app.test:8080).
const ORIGIN: &str = "http://app.test:8080";
const ALGS: &str = "ES256 EdDSA PS256 RS256";

/// Issuer `oidc` (the provider, dpop = "allowed") and `local` (HS256, dpop off), assertion on,
/// plus `extra`.
fn config(op: &OidcProvider, extra: &str) -> String {
    format!(
        r#"[[issuers]]
name = "oidc"
issuer = "{iss}"
discovery = true
algorithms = ["RS256", "ES256", "EdDSA"]
audiences = ["{rs}", "{es}"]
dpop = "allowed"

[[issuers]]
name = "local"
issuer = "{local}"
algorithms = ["HS256"]
secret_file = "hs256.key"

[claims]
user_id = ["sub", "client_id"]

[assertion]
key_file = "assertion.pem"
ttl = "60s"

{extra}
"#,
        iss = op.issuer(),
        rs = oidc::RS256_RESOURCE,
        es = oidc::ES256_RESOURCE,
        local = ISS,
    )
}

async fn ready(s: &Server) {
    wait_for(Duration::from_secs(10), "gatepass ready", || async {
        s.get("/readyz").await.status == 200
    })
    .await;
}

/// `method uri` with `Authorization: DPoP <token>` and one `DPoP: <proof>`.
fn dpop_req(method: &str, uri: &str, token: &str, proof: &str) -> Fwd {
    Fwd::new(method, uri)
        .h("Authorization", &format!("DPoP {token}"))
        .h("DPoP", proof)
}

/// A fresh proof of `key` for `method ORIGIN+path` and `token`.
fn proof(key: &DpopKey, method: &str, path: &str, token: &str) -> String {
    key.proof(method, &format!("{ORIGIN}{path}"), Some(token))
}

/// Asserts a DPoP denial: status, error, description, and the DPoP challenge with `algs`.
fn assert_dpop_denied(g: &Got, status: u16, error: &str, description: &str) {
    g.assert_denied_with(status, error, description);
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            format!(
                r#"DPoP realm="gatepass", error="{error}", error_description="{description}", algs="{ALGS}""#
            )
            .as_str()
        ),
        "{description}"
    );
}

struct Setup {
    op: OidcProvider,
    s: Server,
    key: DpopKey,
    token: String,
}

async fn setup(extra: &str) -> Setup {
    let op = OidcProvider::start();
    let s = start(&config(&op, extra)).await;
    ready(&s).await;
    let key = DpopKey::es256();
    let token = op.dpop_token(oidc::RS256_RESOURCE, &key).await;
    Setup { op, s, key, token }
}

/// The payload of a compact JWS.
fn payload(jws: &str) -> Value {
    use base64::Engine;
    let p = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_bound_token_with_its_proof_is_allowed_and_the_assertion_names_the_key() {
    let Setup { op, s, key, token } = setup("").await;
    // The provider bound it: cnf.jkt is the thumbprint of our key (RFC 7638).
    assert_eq!(payload(&token)["cnf"], json!({"jkt": key.thumbprint()}));
    for (method, path) in [("GET", "/api/v1/mcps"), ("POST", "/api/v1/write?x=1")] {
        let g = validate(
            &s,
            dpop_req(
                method,
                path,
                &token,
                &proof(&key, method, path.split('?').next().unwrap(), &token),
            ),
        )
        .await;
        assert_eq!(g.status, 200, "{method} {path}: {}", g.body);
        assert_eq!(g.h("x-user-id"), Some(oidc::MCP_CLIENT_ID));
        let a = payload(g.h("x-user-assertion").unwrap());
        assert_eq!(a["cnf"], json!({"jkt": key.thumbprint()}), "{a}");
    }
    // Ed25519 and RSA keys too (RSA signing RS256 and PS256).
    for key in [
        DpopKey::eddsa(),
        DpopKey::rs256(),
        DpopKey::rs256().with_alg(jsonwebtoken::Algorithm::PS256, "PS256"),
    ] {
        let token = op.dpop_token(oidc::ES256_RESOURCE, &key).await;
        assert_eq!(payload(&token)["cnf"]["jkt"], key.thumbprint());
        let g = validate(
            &s,
            dpop_req("GET", "/x", &token, &proof(&key, "GET", "/x", &token)),
        )
        .await;
        assert_eq!(g.status, 200, "{}: {}", key.alg_name, g.body);
    }
    // No credential at all: both challenges, DPoP's with its algorithms.
    let g = validate(&s, Fwd::get("/x")).await;
    g.assert_denied(401, "unauthorized");
    let challenges: Vec<_> = g
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        challenges,
        [
            r#"Bearer realm="gatepass""#.to_string(),
            format!(r#"DPoP realm="gatepass", algs="{ALGS}""#)
        ]
    );
    // An unbound token of the same issuer still passes as a bearer token ("allowed").
    let plain = op.token(oidc::RS256_RESOURCE).await;
    assert_eq!(status_of(&s, Fwd::get("/x").bearer(&plain)).await, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn every_proof_check_has_its_refusal() {
    let Setup { op, s, key, token } = setup("").await;
    let url = |p: &str| format!("{ORIGIN}{p}");
    let header = key.header();
    let claims = || dpop::claims("GET", &url("/x"), Some(&token));
    let with = |h: Value, c: Value| key.sign(&h, &c);
    let edit = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let drop_member = |mut v: Value, k: &str| {
        v.as_object_mut().unwrap().remove(k);
        v
    };
    let mut jwk_private = header.clone();
    jwk_private["jwk"]["d"] = "AAAA".into();
    let mut jwk_wrong_crv = header.clone();
    jwk_wrong_crv["jwk"]["crv"] = "P-384".into();
    let other = DpopKey::es256();
    let mut bad_sig = with(header.clone(), claims());
    bad_sig.replace_range(bad_sig.len() - 4.., "AAAA");
    let signed_by_other = {
        // The header names our key; another key signed it.
        other.sign(&header, &claims())
    };
    let other_token = op.dpop_token(oidc::RS256_RESOURCE, &other).await;
    let long_jti = edit(claims(), "jti", "j".repeat(300).into());
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "wrong typ",
            with(edit(header.clone(), "typ", "jwt".into()), claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's typ must be dpop+jwt",
        ),
        (
            "alg none",
            with(edit(header.clone(), "alg", "none".into()), claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's algorithm is not allowed",
        ),
        (
            "alg HS256",
            with(edit(header.clone(), "alg", "HS256".into()), claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's algorithm is not allowed",
        ),
        (
            "alg outside the list",
            with(edit(header.clone(), "alg", "ES384".into()), claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's algorithm is not allowed",
        ),
        (
            "private member in jwk",
            with(jwk_private, claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's jwk must be a public key of its algorithm",
        ),
        (
            "kty/crv mismatch",
            with(jwk_wrong_crv, claims()),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's jwk must be a public key of its algorithm",
        ),
        (
            "bad signature",
            bad_sig,
            401,
            "invalid_dpop_proof",
            "the DPoP proof's signature is invalid",
        ),
        (
            "signed by another key",
            signed_by_other,
            401,
            "invalid_dpop_proof",
            "the DPoP proof's signature is invalid",
        ),
        (
            "htm of another method",
            with(header.clone(), edit(claims(), "htm", "POST".into())),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's htm is not the request's method",
        ),
        (
            "iat too old",
            with(header.clone(), edit(claims(), "iat", (now() - 320).into())),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's iat is outside the accepted window",
        ),
        (
            "iat too far ahead",
            with(header.clone(), edit(claims(), "iat", (now() + 320).into())),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's iat is outside the accepted window",
        ),
        (
            "missing ath",
            with(header.clone(), drop_member(claims(), "ath")),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's ath is not the hash of the access token",
        ),
        (
            "ath of another token",
            with(
                header.clone(),
                edit(claims(), "ath", dpop::ath(&other_token).into()),
            ),
            401,
            "invalid_dpop_proof",
            "the DPoP proof's ath is not the hash of the access token",
        ),
        (
            "missing jti",
            with(header.clone(), drop_member(claims(), "jti")),
            401,
            "invalid_dpop_proof",
            "the DPoP proof needs jti (at most 256 characters), htm, htu and iat",
        ),
        (
            "300-character jti",
            with(header.clone(), long_jti),
            401,
            "invalid_dpop_proof",
            "the DPoP proof needs jti (at most 256 characters), htm, htu and iat",
        ),
        (
            "not a JWS",
            "not-a-proof".into(),
            401,
            "invalid_dpop_proof",
            "the DPoP proof is not a well-formed JWS",
        ),
    ];
    let mut cases = cases;
    for (what, htu) in [
        ("htu of another path", url("/y")),
        ("htu of another host", "http://other.test:8080/x".into()),
        ("htu of another scheme", "https://app.test:8080/x".into()),
        ("htu of another port", "http://app.test:8081/x".into()),
    ] {
        let p = with(header.clone(), edit(claims(), "htu", htu.into()));
        let description = "the DPoP proof's htu is not the request's URL";
        cases.push((what, p, 401, "invalid_dpop_proof", description));
    }
    for (what, p, status, error, description) in cases {
        let g = validate(&s, dpop_req("GET", "/x", &token, &p)).await;
        assert_eq!(
            (g.status, g.json()["error_description"].as_str()),
            (status, Some(description)),
            "{what}"
        );
        assert_dpop_denied(&g, status, error, description);
    }
    // The thumbprint of another key: a good proof of `other` with our token.
    let g = validate(
        &s,
        dpop_req("GET", "/x", &token, &proof(&other, "GET", "/x", &token)),
    )
    .await;
    assert_dpop_denied(
        &g,
        401,
        "invalid_token",
        "the token is bound to another key",
    );
    // Query (ignored) and fragment in htu, ws/wss for http/https, case and default port.
    for htu in [
        "http://app.test:8080/x?y=2",
        "http://app.test:8080/x#frag",
        "ws://app.test:8080/x",
        "HTTP://APP.test:8080/x",
    ] {
        let p = with(header.clone(), edit(claims(), "htu", htu.into()));
        let g = validate(&s, dpop_req("GET", "/x?z=1", &token, &p)).await;
        assert_eq!(g.status, 200, "{htu}: {}", g.body);
    }
    let wss = {
        let c = dpop::claims("GET", "wss://app.test/ws", Some(&token));
        with(header.clone(), c)
    };
    let f = dpop_req("GET", "/ws", &token, &wss)
        .without("X-Forwarded-Proto")
        .without("X-Forwarded-Host")
        .h("X-Forwarded-Proto", "https")
        .h("X-Forwarded-Host", "app.test:443");
    assert_eq!(status_of(&s, f).await, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn the_scheme_and_the_binding_come_from_the_token() {
    let Setup { op, s, key, token } = setup("").await;
    let good = || proof(&key, "GET", "/x", &token);
    // No proof with the DPoP scheme.
    let g = validate(
        &s,
        Fwd::get("/x").h("Authorization", &format!("DPoP {token}")),
    )
    .await;
    assert_dpop_denied(
        &g,
        401,
        "invalid_dpop_proof",
        "Authorization: DPoP needs one DPoP proof header",
    );
    // Two DPoP headers.
    let g = validate(
        &s,
        dpop_req("GET", "/x", &token, &good()).h("DPoP", &good()),
    )
    .await;
    g.assert_denied_with(400, "invalid_request", "more than one DPoP header");
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"Bearer realm="gatepass", error="invalid_request", error_description="more than one DPoP header""#
        )
    );
    // Bearer with a proof.
    let g = validate(&s, Fwd::get("/x").bearer(&token).h("DPoP", &good())).await;
    g.assert_denied_with(
        400,
        "invalid_request",
        "a DPoP proof goes with Authorization: DPoP, not Bearer",
    );
    // Bearer and DPoP Authorization headers together.
    let g = validate(
        &s,
        Fwd::get("/x")
            .bearer(&token)
            .h("Authorization", &format!("DPoP {token}"))
            .h("DPoP", &good()),
    )
    .await;
    g.assert_denied_with(400, "invalid_request", "more than one Authorization header");
    // The bound token as a bearer token: refused, never downgraded.
    let g = validate(&s, Fwd::get("/x").bearer(&token)).await;
    assert_dpop_denied(
        &g,
        401,
        "invalid_token",
        "a DPoP-bound token goes with Authorization: DPoP and a proof",
    );
    // An unbound token with the DPoP scheme and a proof.
    let plain = op.token(oidc::RS256_RESOURCE).await;
    let g = validate(
        &s,
        dpop_req("GET", "/x", &plain, &proof(&key, "GET", "/x", &plain)),
    )
    .await;
    assert_dpop_denied(&g, 401, "invalid_token", "the token is not DPoP-bound");
    // A `cnf` the issuer's settings are off for (the HS256 issuer): refused, Bearer or DPoP.
    let mut c = claims("u1", "admin");
    c["cnf"] = json!({"jkt": key.thumbprint()});
    let local_bound = hs(&c);
    for f in [
        Fwd::get("/x").bearer(&local_bound),
        dpop_req(
            "GET",
            "/x",
            &local_bound,
            &proof(&key, "GET", "/x", &local_bound),
        ),
    ] {
        validate(&s, f).await.assert_denied_with(
            401,
            "invalid_token",
            "the token is bound (cnf) in a way its issuer is not configured to accept",
        );
    }
    // A cnf of a kind gatepass can't check is refused too.
    let mut c = claims("u1", "admin");
    c["cnf"] = json!({"jwk": {"kty": "EC"}});
    validate(&s, Fwd::get("/x").bearer(&hs(&c)))
        .await
        .assert_denied_with(
            401,
            "invalid_token",
            "the token is bound (cnf) in a way its issuer is not configured to accept",
        );
    for reason in [
        "dpop_proof_missing",
        "multiple_dpop_proofs",
        "dpop_with_bearer",
        "dpop_bound_as_bearer",
        "dpop_unbound",
        "binding_not_accepted",
    ] {
        assert!(
            metric(
                &s,
                &format!(r#"gatepass_requests_total{{outcome="deny",reason="{reason}"}}"#)
            )
            .await
                >= 1.0,
            "{reason}"
        );
    }
    s.shutdown().await;
}

#[tokio::test]
async fn dpop_required_refuses_unbound_tokens() {
    let op = OidcProvider::start();
    let s = start(&config(&op, "").replace(
        "dpop = \"allowed\"",
        "dpop = \"required\"\ndpop_algorithms = [\"EdDSA\"]",
    ))
    .await;
    ready(&s).await;
    let plain = op.token(oidc::RS256_RESOURCE).await;
    let g = validate(&s, Fwd::get("/x").bearer(&plain)).await;
    g.assert_denied_with(401, "invalid_token", "the token is not DPoP-bound");
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"DPoP realm="gatepass", error="invalid_token", error_description="the token is not DPoP-bound", algs="EdDSA""#
        )
    );
    // The issuer's own list: an ES256 proof is refused even with its bound token.
    let es = DpopKey::es256();
    let token = op.dpop_token(oidc::RS256_RESOURCE, &es).await;
    let g = validate(
        &s,
        dpop_req("GET", "/x", &token, &proof(&es, "GET", "/x", &token)),
    )
    .await;
    g.assert_denied_with(
        401,
        "invalid_dpop_proof",
        "the DPoP proof's algorithm is not allowed",
    );
    let ed = DpopKey::eddsa();
    let token = op.dpop_token(oidc::RS256_RESOURCE, &ed).await;
    let g = validate(
        &s,
        dpop_req("GET", "/x", &token, &proof(&ed, "GET", "/x", &token)),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    s.shutdown().await;
}

/// A proof is accepted once: replayed on the same replica, and on the other (Redis), it is
/// refused; with Redis down, `deny` answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_used_once_in_the_cluster() {
    let mut redis = RedisServer::start();
    let op = OidcProvider::start();
    let state = format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\ncommand_timeout = \"2s\"\non_unavailable = \"deny\"\n",
        redis.url()
    );
    let (a, b) = (
        start(&config(&op, &state)).await,
        start(&config(&op, &state)).await,
    );
    ready(&a).await;
    ready(&b).await;
    let key = DpopKey::es256();
    let token = op.dpop_token(oidc::RS256_RESOURCE, &key).await;
    let p = proof(&key, "GET", "/x", &token);
    assert_eq!(status_of(&a, dpop_req("GET", "/x", &token, &p)).await, 200);
    for s in [&a, &b] {
        let g = validate(s, dpop_req("GET", "/x", &token, &p)).await;
        assert_dpop_denied(
            &g,
            401,
            "invalid_dpop_proof",
            "the DPoP proof was already used",
        );
    }
    // A fresh proof works on either.
    for s in [&a, &b] {
        let f = dpop_req("GET", "/x", &token, &proof(&key, "GET", "/x", &token));
        assert_eq!(status_of(s, f).await, 200);
    }
    redis.stop();
    wait_for(Duration::from_secs(10), "state down", || async {
        a.get("/readyz").await.json()["state"] == "unavailable"
    })
    .await;
    let g = validate(
        &a,
        dpop_req("GET", "/x", &token, &proof(&key, "GET", "/x", &token)),
    )
    .await;
    g.assert_denied_with(
        503,
        "temporarily_unavailable",
        "shared state is unavailable",
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// `nonce = true`: the first request gets `use_dpop_nonce` and one `DPoP-Nonce`; a retry
/// with it passes on either replica (the nonce is an HMAC of the time step, not state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_are_demanded_and_accepted_by_every_replica() {
    let op = OidcProvider::start();
    let cfg = config(
        &op,
        "[dpop]\nnonce = true\nnonce_secret_file = \"nonce.key\"\n",
    );
    let prepare = |d: &std::path::Path| {
        std::fs::write(
            d.join("nonce.key"),
            "nonce-secret-0123456789-0123456789-abcdef\n",
        )
        .unwrap()
    };
    let a = start_with(&cfg, prepare).await;
    let b = start_with(&cfg, prepare).await;
    ready(&a).await;
    ready(&b).await;
    let key = DpopKey::es256();
    let token = op.dpop_token(oidc::RS256_RESOURCE, &key).await;
    let g = validate(
        &a,
        dpop_req("GET", "/x", &token, &proof(&key, "GET", "/x", &token)),
    )
    .await;
    assert_dpop_denied(
        &g,
        401,
        "use_dpop_nonce",
        "the DPoP proof needs the current nonce",
    );
    let nonces: Vec<_> = g.headers.get_all("dpop-nonce").iter().collect();
    assert_eq!(nonces.len(), 1, "{nonces:?}");
    let nonce = nonces[0].to_str().unwrap().to_string();
    for s in [&a, &b] {
        let mut c = dpop::claims("GET", &format!("{ORIGIN}/x"), Some(&token));
        c["nonce"] = nonce.clone().into();
        let g = validate(
            s,
            dpop_req("GET", "/x", &token, &key.sign(&key.header(), &c)),
        )
        .await;
        assert_eq!(g.status, 200, "{}", g.body);
    }
    let mut c = dpop::claims("GET", &format!("{ORIGIN}/x"), Some(&token));
    c["nonce"] = "made-up".into();
    let g = validate(
        &b,
        dpop_req("GET", "/x", &token, &key.sign(&key.header(), &c)),
    )
    .await;
    assert_dpop_denied(
        &g,
        401,
        "use_dpop_nonce",
        "the DPoP proof needs the current nonce",
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A browser can't send `DPoP` on a handshake: a bound token buys a ticket with a proof of
/// the POST it makes, and the ticket opens one upgrade with no proof; its assertion carries
/// `cnf`. The bound token as Bearer, or without a proof, buys none.
#[tokio::test]
async fn a_ticket_bought_with_a_proof_opens_one_upgrade() {
    let Setup { s, key, token, .. } = setup("").await;
    let buy = |auth: String, proof: Option<String>| {
        let mut req = client()
            .post(s.url("/tickets"))
            .header("Authorization", auth);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        req
    };
    // Directly: htu is http://<Host>/tickets.
    let htu = s.url("/tickets");
    let g = got(buy(format!("Bearer {token}"), None).send().await.unwrap()).await;
    g.assert_denied_with(
        401,
        "invalid_token",
        "a DPoP-bound token goes with Authorization: DPoP and a proof",
    );
    let g = got(buy(format!("DPoP {token}"), None).send().await.unwrap()).await;
    assert_dpop_denied(
        &g,
        401,
        "invalid_dpop_proof",
        "Authorization: DPoP needs one DPoP proof header",
    );
    let wrong = key.proof("POST", "http://elsewhere.test/tickets", Some(&token));
    let g = got(buy(format!("DPoP {token}"), Some(wrong))
        .send()
        .await
        .unwrap())
    .await;
    g.assert_denied_with(
        401,
        "invalid_dpop_proof",
        "the DPoP proof's htu is not the request's URL",
    );
    let g = got(buy(
        format!("DPoP {token}"),
        Some(key.proof("POST", &htu, Some(&token))),
    )
    .send()
    .await
    .unwrap())
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    let ticket = g.json()["ticket"].as_str().unwrap().to_string();
    // Through Traefik the client called <proto>://<host><prefix>/tickets.
    let through = key.proof("POST", "https://app.test/auth/tickets", Some(&token));
    let g = got(buy(format!("DPoP {token}"), Some(through))
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "app.test")
        .header("X-Forwarded-Prefix", "/auth")
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    let upgrade = || Fwd::upgrade(&format!("/ws/mcp-status?ticket={ticket}"));
    let g = validate(&s, upgrade()).await;
    assert_eq!(g.status, 200, "{}", g.body);
    let a = payload(g.h("x-user-assertion").unwrap());
    assert_eq!(a["cnf"], json!({"jkt": key.thumbprint()}));
    assert_eq!(validate(&s, upgrade()).await.status, 401, "used once");
    s.shutdown().await;
}

#[test]
fn dpop_config_errors_name_the_key() {
    let base = "[[issuers]]\nname = \"a\"\nissuer = \"https://a.test\"\nalgorithms = [\"RS256\"]\njwks_url = \"https://a.test/jwks\"\n";
    let err = |extra: &str| {
        gatepass::Config::parse(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    for (extra, want) in [
        ("dpop = \"allowed\"\ndpop_algorithms = [\"HS256\"]\n", "config error: issuers[0].dpop_algorithms: `HS256` is not allowed: a proof is signed with the client's private key (asymmetric algorithms only)"),
        ("dpop = \"allowed\"\ndpop_algorithms = [\"none\"]\n", "config error: issuers[0].dpop_algorithms: `none` is not allowed: a proof is signed with the client's private key (asymmetric algorithms only)"),
        ("dpop = \"allowed\"\ndpop_algorithms = []\n", "config error: issuers[0].dpop_algorithms: must list at least one"),
        ("dpop_algorithms = [\"ES256\"]\n", "config error: issuers[0].dpop_algorithms: only applies with dpop = \"allowed\" or \"required\""),
        ("dpop = \"allowed\"\n[dpop]\nnonce = true\n", "config error: dpop.nonce_secret_file: is required with nonce = true (the same secret on every replica)"),
        ("dpop = \"allowed\"\n[dpop]\niat_window = \"0s\"\n", "config error: dpop.iat_window: must be between 1s and 1h"),
    ] {
        assert_eq!(err(extra), want, "{extra}");
    }
    assert!(err("dpop = \"sometimes\"\n").contains("unknown variant `sometimes`"));
    assert!(gatepass::Config::parse(&format!(
        "{base}dpop = \"required\"\nmtls_bound = \"allowed\"\n"
    ))
    .is_ok());
}

/// A nonce secret shorter than 32 bytes is a config error at start, naming the key.
#[tokio::test]
async fn a_short_nonce_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nonce.key"), "short\n").unwrap();
    let text = format!(
        "[[issuers]]\nname = \"a\"\nissuer = \"https://a.test\"\nalgorithms = [\"HS256\"]\nsecret_env = \"X\"\ndpop = \"allowed\"\n[dpop]\nnonce = true\nnonce_secret_file = \"{}\"\n",
        dir.path().join("nonce.key").display()
    );
    std::env::set_var("X", "x-secret-0123456789-0123456789-0123456789");
    let cfg = gatepass::Config::parse(&text).unwrap();
    let e = gatepass::App::new(cfg).err().expect("refused").to_string();
    assert_eq!(
        e,
        "config error: dpop.nonce_secret_file: must hold a secret of at least 32 bytes"
    );
}

/// mTLS-bound tokens (RFC 8705): `cnf.x5t#S256` against the leaf of the chain Traefik passes
/// in `X-Forwarded-Tls-Client-Cert` (base64 DER, comma-separated).
#[tokio::test]
async fn certificate_bound_tokens_need_their_certificate() {
    let text = base_config().replace(
        "leeway = \"5s\"",
        "leeway = \"5s\"\nmtls_bound = \"allowed\"",
    );
    let s = start(&text).await;
    let mine = gatepass_testkit::DevCa::new("client-a");
    let theirs = gatepass_testkit::DevCa::new("client-b");
    let (x5t, der) = dpop::certificate_thumbprint(&mine.cert_pem);
    let (_, other_der) = dpop::certificate_thumbprint(&theirs.cert_pem);
    let (_, ca_der) = dpop::certificate_thumbprint(&mine.ca_pem);
    let mut c = claims("cert-user", "admin");
    c["cnf"] = json!({"x5t#S256": x5t});
    let bound = hs(&c);
    let cert = |v: &str| {
        Fwd::get("/x")
            .bearer(&bound)
            .h("X-Forwarded-Tls-Client-Cert", v)
    };
    assert_status(&s, cert(&der), 200).await;
    assert_status(&s, cert(&format!("{der},{ca_der}")), 200).await;
    validate(&s, cert(&other_der)).await.assert_denied_with(
        401,
        "invalid_token",
        "the token is bound to another client certificate",
    );
    // The chain's second entry is never the leaf.
    validate(&s, cert(&format!("{other_der},{der}")))
        .await
        .assert_denied_with(
            401,
            "invalid_token",
            "the token is bound to another client certificate",
        );
    let g = validate(&s, Fwd::get("/x").bearer(&bound)).await;
    g.assert_denied_with(
        401,
        "invalid_token",
        "the token is bound to a client certificate and none was presented",
    );
    assert_eq!(
        g.h("www-authenticate"),
        Some(
            r#"Bearer realm="gatepass", error="invalid_token", error_description="the token is bound to a client certificate and none was presented""#
        )
    );
    // An unbound token passes with "allowed"; "required" refuses it.
    assert_status(&s, Fwd::get("/x").bearer(&user("plain", "admin")), 200).await;
    s.shutdown().await;
    let s = start(&text.replace("mtls_bound = \"allowed\"", "mtls_bound = \"required\"")).await;
    validate(&s, Fwd::get("/x").bearer(&user("plain", "admin")))
        .await
        .assert_denied_with(
            401,
            "invalid_token",
            "the token is not bound to a client certificate",
        );
    assert_status(&s, cert(&der), 200).await;
    s.shutdown().await;
    // Off (the default): a certificate-bound token is refused, never taken as a bearer token.
    let s = start(&base_config()).await;
    validate(&s, cert(&der)).await.assert_denied_with(
        401,
        "invalid_token",
        "the token is bound (cnf) in a way its issuer is not configured to accept",
    );
    s.shutdown().await;
}
