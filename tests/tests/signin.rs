//! Signing in through the real Traefik (SPEC §9): a browser's navigation goes to the real
//! OpenID Provider and back through Traefik's prefix router, and then every request of that
//! browser — pages, fetches, the API and WebSocket upgrades — is decided on its session, while
//! requests without one get the 401 of SPEC §3.4 (scripts never receive a login page).

use gatepass_e2e::*;
use gatepass_identity::AssertionVerifier;
use gatepass_testkit::browser::{urls, Browser, Page, NAVIGATION};
use gatepass_testkit::oidc::{OidcProvider, USERS};
use reqwest::Method;
use serde_json::Value;

/// Signs `user` in, starting with a navigation to `url` through Traefik: every page after the
/// provider's login (the last one is where the browser landed).
async fn sign_in(b: &Browser, op: &OidcProvider, url: &str, user: &str) -> Vec<Page> {
    let pages = b.navigate(url).await;
    let login = pages.last().unwrap();
    assert_eq!(login.status, 200, "{:?}", urls(&pages));
    assert!(
        login.url.starts_with(&op.url("/interaction/")),
        "the provider's login page: {:?}",
        urls(&pages)
    );
    let uid = login.url.rsplit('/').next().unwrap();
    let password = USERS.iter().find(|u| u.0 == user).unwrap().1;
    b.submit(
        &op.url(&format!("/interaction/{uid}/login")),
        &[("username", user), ("password", password)],
    )
    .await
}

/// A script's fetch through Traefik with the browser's cookies: status and JSON body.
async fn fetch(stack: &Stack, b: &Browser, method: Method, path: &str) -> (u16, Value) {
    let origin = format!("http://{}", stack.web);
    let p = b
        .request(
            method,
            &stack.url(path),
            &[
                ("sec-fetch-mode", "cors"),
                ("origin", &origin),
                ("accept", "application/json"),
            ],
            None,
        )
        .await;
    let body = serde_json::from_str(&p.body).unwrap_or(Value::String(p.body.clone()));
    (p.status, body)
}

fn header<'a>(echoed: &'a Value, name: &str) -> Option<&'a str> {
    echoed["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .and_then(|h| h[1].as_str())
}

#[tokio::test]
async fn a_person_signs_in_through_traefik_and_every_request_uses_the_session() {
    let stack = Stack::start_with(Options {
        signin: true,
        ..Options::default()
    })
    .await;
    let op = stack.op();
    let b = Browser::new();
    // The first hop: gatepass's 302 reaches the browser through Traefik, Location absolute
    // and the flow cookie intact.
    let first = b.open(&stack.url("/echo/page?x=1")).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(first.location().unwrap().starts_with(&op.url("/auth?")));
    assert!(
        first
            .set_cookies()
            .iter()
            .any(|c| c.starts_with("gatepass_session_flow_")
                && c.contains("Path=/_gatepass/callback"))
    );
    b.forget("gatepass_session_");
    let pages = sign_in(&b, op, &stack.url("/echo/page?x=1"), "alice").await;
    let landed = pages.last().unwrap();
    assert_eq!(landed.status, 200, "{:?}\n{}", urls(&pages), landed.body);
    assert_eq!(
        landed.url,
        stack.url("/echo/page?x=1"),
        "back where it started: {:?}",
        urls(&pages)
    );
    let callback = pages
        .iter()
        .find(|p| p.url.starts_with(&stack.url("/_gatepass/callback?")))
        .unwrap();
    assert_eq!(callback.status, 303);
    assert!(callback
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("gatepass_session=")
            && c.ends_with("; Path=/; HttpOnly; SameSite=Lax")));
    // The backend saw gatepass's identity, and the assertion names the session.
    let echoed: Value = serde_json::from_str(&landed.body).unwrap();
    assert_eq!(header(&echoed, "x-user-id"), Some("alice"));
    assert_eq!(header(&echoed, "x-user-role"), Some("admin"));
    let verifier = AssertionVerifier::from_jwks_json(
        &client()
            .get(stack.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let claims = verifier
        .verify(header(&echoed, "x-user-assertion").unwrap(), &stack.web)
        .unwrap();
    assert!(claims.sid.is_some_and(|s| !s.is_empty()));
    assert_eq!(
        header(&echoed, "cookie").map(|c| c.contains("gatepass_session=")),
        Some(true)
    );

    // The same browser's fetch, the API and a WebSocket upgrade use the session.
    let (status, echoed) = fetch(&stack, &b, Method::GET, "/echo/data").await;
    assert_eq!((status, header(&echoed, "x-user-id")), (200, Some("alice")));
    let (status, body) = fetch(&stack, &b, Method::GET, "/api/v1/mcps").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["mcps"].is_array());
    let (status, body) = fetch(&stack, &b, Method::POST, "/api/v1/mcps/demo_mcp/enable").await;
    assert_eq!(status, 200, "same-origin POST: {body}");
    let cookie = b.cookie_header(&stack.url("/"));
    let origin = format!("http://{}", stack.web);
    let (ws, _) = ws_connect(
        &stack.ws_url("/ws/mcp-status"),
        None,
        &[("cookie", &cookie), ("origin", &origin)],
    )
    .await;
    let mut ws = ws.expect("the upgrade is allowed on the session");
    assert_eq!(first_type(&mut ws).await.as_deref(), Some("initial_status"));
    // Who is signed in, for the page.
    let (status, who) = fetch(&stack, &b, Method::GET, "/_gatepass/session").await;
    assert_eq!((status, who["sub"].as_str()), (200, Some("alice")));

    // Without a session: fetches, the API and upgrades get 401 JSON, only navigations a 302.
    let stranger = Browser::new();
    let (status, body) = fetch(&stack, &stranger, Method::GET, "/echo/data").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = fetch(&stack, &stranger, Method::GET, "/api/v1/mcps").await;
    assert_eq!(status, 401);
    let (ws, _) = ws_connect(
        &stack.ws_url("/ws/mcp-status"),
        None,
        &[("origin", &origin)],
    )
    .await;
    assert_eq!(ws.err(), Some(401));
    let page = stranger.open(&stack.url("/echo/data")).await;
    assert_eq!(page.status, 302);
    // A cross-site POST riding on the cookie: 403.
    let evil = b
        .request(
            Method::POST,
            &stack.url("/api/v1/mcps/demo_mcp/disable"),
            &[
                ("origin", "https://evil.test"),
                ("sec-fetch-site", "cross-site"),
            ],
            None,
        )
        .await;
    assert_eq!(evil.status, 403, "{}", evil.body);
    assert_eq!(evil.h("content-type"), Some("application/json"));
    let nav = b
        .request(Method::GET, &stack.url("/echo/again"), &NAVIGATION, None)
        .await;
    assert_eq!(nav.status, 200);
}
