//! Sender-constrained tokens through the real Traefik 3.7 (SPEC §10): a DPoP client calls an
//! API route and opens a WebSocket with `Authorization: DPoP` and a proof; a `stripPrefix`
//! placed before forwardAuth changes the path gatepass sees, so the proof's `htu` no longer
//! matches (documented as wrong); mTLS-bound tokens over a TLS entry point with the shipped
//! chain (`traefik/mtls.yml`: passTLSClientCert, then gatepass), where a client's own
//! `X-Forwarded-Tls-Client-Cert` gets nowhere.

use gatepass_e2e::*;
use gatepass_testkit::dpop::DpopKey;
use gatepass_testkit::oidc::RS256_RESOURCE;
use serde_json::json;

/// `GET url` with `Authorization: DPoP` and a fresh proof for `htu`.
async fn dpop_get(url: &str, htu: &str, key: &DpopKey, token: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("Authorization", format!("DPoP {token}"))
        .header("DPoP", key.proof("GET", htu, Some(token)))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dpop_client_through_traefik() {
    let stack = Stack::start_with(Options {
        dpop: true,
        ..Options::default()
    })
    .await;
    let key = DpopKey::es256();
    let token = stack.op().dpop_token(RS256_RESOURCE, &key).await;
    // An API route: the proof names the URL the client called.
    let url = stack.url("/api/v1/mcps");
    let r = dpop_get(&url, &url, &key, &token).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The bound token as a bearer token, and a proof for another URL: refused at Traefik.
    let r = client().get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"DPoP realm="gatepass", error="invalid_token", error_description="a DPoP-bound token goes with Authorization: DPoP and a proof", algs="ES256 EdDSA PS256 RS256""#
    );
    let r = dpop_get(&url, &stack.url("/api/v1/other"), &key, &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"error": "invalid_dpop_proof", "error_description": "the DPoP proof's htu is not the request's URL"})
    );
    // A WebSocket: both headers on the handshake (htm GET, htu the ws:// URL).
    let ws_url = stack.ws_url("/ws/mcp-status");
    let auth = format!("DPoP {token}");
    let proof = key.proof("GET", &ws_url, Some(&token));
    let (ws, _) = ws_connect(&ws_url, None, &[("Authorization", &auth), ("DPoP", &proof)]).await;
    let mut ws = ws.unwrap_or_else(|s| panic!("upgrade refused: {s}\n{}", stack.logs()));
    assert!(first_type(&mut ws).await.is_some());
    // The same proof again: used once, so the handshake is refused before any 101.
    let (again, _) = ws_connect(&ws_url, None, &[("Authorization", &auth), ("DPoP", &proof)]).await;
    assert_eq!(again.err(), Some(401));
}

/// `stripPrefix` before forwardAuth: gatepass sees the stripped path, so a proof for the URL
/// the client called fails (`htu`); forwardAuth first, then stripPrefix, works.
#[tokio::test]
async fn strip_prefix_before_forward_auth_breaks_the_htu() {
    let strip = (
        "strip.yml".to_string(),
        r#"http:
  middlewares:
    strip-api:
      stripPrefix:
        prefixes: ["/wrong", "/right"]
  routers:
    wrong-order:
      entryPoints: [web]
      rule: "PathPrefix(`/wrong`)"
      middlewares: [strip-api, gatepass]
      service: echo
    right-order:
      entryPoints: [web]
      rule: "PathPrefix(`/right`)"
      middlewares: [gatepass, strip-api]
      service: echo
"#
        .to_string(),
    );
    let stack = Stack::start_with(Options {
        dpop: true,
        extra_dynamic: vec![strip],
        ..Options::default()
    })
    .await;
    let key = DpopKey::es256();
    let token = stack.op().dpop_token(RS256_RESOURCE, &key).await;
    let wrong = stack.url("/wrong/echo/x");
    let r = dpop_get(&wrong, &wrong, &key, &token).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error_description"],
        "the DPoP proof's htu is not the request's URL"
    );
    let right = stack.url("/right/echo/x");
    let r = dpop_get(&right, &right, &key, &token).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// mTLS-bound tokens: the certificate the token is bound to → 200; another certificate, or
/// none → 401; a client that sends its own `X-Forwarded-Tls-Client-Cert` (the right
/// certificate's, without presenting it) gets nowhere.
#[tokio::test]
async fn certificate_bound_tokens_through_the_shipped_chain() {
    let stack = Stack::start_with(Options {
        mtls: true,
        ..Options::default()
    })
    .await;
    let (x5t, der) = gatepass_testkit::dpop::certificate_thumbprint(&stack.client_certs[0].0);
    let mut claims = gatepass_testkit::claims(ISS, "machine", "developer");
    claims["cnf"] = json!({"x5t#S256": x5t});
    let bound = gatepass_testkit::hs256(SECRET, &claims);
    let url = stack.mtls_url("/api/v1/mcps");
    let get = |cert: Option<usize>, forged: Option<&str>| {
        let mut req = stack.mtls_client(cert).get(&url).bearer_auth(&bound);
        if let Some(f) = forged {
            req = req.header("X-Forwarded-Tls-Client-Cert", f);
        }
        req.send()
    };
    let r = get(Some(0), None).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}\n{}",
        r.text().await.unwrap(),
        stack.logs()
    );
    let refused = |desc: &'static str| json!({"error": "invalid_token", "error_description": desc});
    let r = get(Some(1), None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        refused("the token is bound to another client certificate")
    );
    let r = get(None, None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        refused("the token is bound to a client certificate and none was presented")
    );
    // Forged: the right certificate's header, no certificate presented; and with another.
    let escaped = der
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for (cert, want) in [
        (
            None,
            "the token is bound to a client certificate and none was presented",
        ),
        (Some(1), "the token is bound to another client certificate"),
    ] {
        for forged in [der.as_str(), escaped.as_str()] {
            let r = get(cert, Some(forged)).await.unwrap();
            assert_eq!(r.status(), 401, "forged header with {cert:?}");
            assert_eq!(r.json::<serde_json::Value>().await.unwrap(), refused(want));
        }
    }
    // The plain-HTTP entry point (trustForwardHeader: false) never passes the header: the
    // bound token has no certificate there, forged or not.
    let r = client()
        .get(stack.url("/api/v1/mcps"))
        .bearer_auth(&bound)
        .header("X-Forwarded-Tls-Client-Cert", &der)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        refused("the token is bound to a client certificate and none was presented")
    );
}
