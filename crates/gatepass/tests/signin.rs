//! Browser sign-in (SPEC §9) against the real OpenID Provider of `tests/oidc`: the redirect,
//! the provider's login page, the callback, the session on `/validate`, refresh, sign-out,
//! back-channel logout, expiry and every refusal. The same suite runs with sessions in the
//! process and in Redis; the cluster tests run two replicas on one real `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::signin::*;
use common::*;
use gatepass_identity::AssertionVerifier;
use gatepass_testkit::browser::{Browser, Page};
use gatepass_testkit::oidc::OidcProvider;
use gatepass_testkit::RedisServer;
use reqwest::Method;

/// The `[state]` table of a replica on `redis`.
fn on_redis(redis: &RedisServer) -> String {
    format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"signin-test:\"\ncommand_timeout = \"2s\"\n",
        redis.url()
    )
}

/// The `Set-Cookie` line that starts with `start` (`name=`, or a prefix of a name).
fn set_cookie<'a>(p: &'a Page, start: &str) -> &'a str {
    p.set_cookies()
        .into_iter()
        .find(|c| c.starts_with(start))
        .unwrap_or_else(|| panic!("no Set-Cookie {start}: {:?}", p.set_cookies()))
}

async fn assertion_verifier(s: &Server) -> AssertionVerifier {
    AssertionVerifier::from_jwks_json(&s.get("/.well-known/jwks.json").await.body).unwrap()
}

/// A fetch with the session cookie: its status.
async fn fetch_status(
    s: &Server,
    b: &Browser,
    method: &str,
    uri: &str,
    extra: &[(&str, &str)],
) -> u16 {
    validate_as(s, b, Kind::Fetch, method, uri, extra)
        .await
        .status
}

/// The whole suite on one provider and one gatepass (sessions in the process, or in Redis).
async fn suite(redis: Option<&RedisServer>) {
    let op = provider(None, None);
    let tail = redis.map(on_redis).unwrap_or_default();
    let s = gatepass(&op, "", &tail).await;
    signs_in_and_the_session_is_used(&s, &op).await;
    two_tabs_sign_in_at_once(&s, &op).await;
    a_replayed_callback_is_400_and_makes_no_session(&s, &op).await;
    tampered_or_foreign_flow_cookies_are_400(&s, &op).await;
    the_providers_access_denied_is_a_403_page(&s, &op).await;
    an_id_token_with_another_audience_or_nonce_makes_no_session(&s, &op).await;
    open_redirects_land_on_the_root(&s, &op).await;
    cross_site_unsafe_requests_are_403(&s, &op).await;
    garbage_cookies_are_401_or_a_sign_in_never_5xx(&s).await;
    sign_out_ends_the_session_and_reaches_the_provider(&s, &op).await;
    idle_and_absolute_expiry(&op, &tail).await;
}

#[tokio::test]
async fn sessions_in_process() {
    suite(None).await;
}

#[tokio::test]
async fn sessions_in_redis() {
    let redis = RedisServer::start();
    suite(Some(&redis)).await;
}

async fn signs_in_and_the_session_is_used(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    // A navigation without a credential: 302 to the provider, with PKCE, state and nonce.
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/dashboard?x=1", &[]).await;
    assert_eq!(start.status, 302, "{}", start.body);
    assert_eq!(start.h("cache-control"), Some("no-store"));
    let to = start.location().unwrap();
    assert!(to.starts_with(&format!("{}/auth?", op.issuer())), "{to}");
    for (k, want) in [
        ("response_type", Some("code")),
        ("client_id", Some("gatepass")),
        (
            "redirect_uri",
            Some("http://app.test:8080/_gatepass/callback"),
        ),
        ("scope", Some("openid profile email offline_access")),
        ("code_challenge_method", Some("S256")),
    ] {
        assert_eq!(start.location_param(k).as_deref(), want, "{k}");
    }
    for k in ["state", "nonce", "code_challenge"] {
        assert_eq!(start.location_param(k).map(|v| v.len()), Some(43), "{k}");
    }
    let state = start.location_param("state").unwrap();
    let flow = set_cookie(&start, &format!("{COOKIE}_flow_"));
    assert!(
        flow.ends_with("; Path=/_gatepass/callback; HttpOnly; SameSite=Lax; Max-Age=600"),
        "{flow}"
    );
    assert!(!flow.contains(&state), "the flow cookie is sealed");
    assert!(set_cookie(&start, &format!("{COOKIE}_signins="))
        .starts_with(&format!("{COOKIE}_signins=1.")));
    // Not a navigation: the 401 of SPEC §3.4, never a login page.
    for kind_headers in [&[][..], &[("x-requested-with", "XMLHttpRequest")][..]] {
        let g = validate_as(s, &b, Kind::Fetch, "GET", "/dashboard", kind_headers).await;
        assert_eq!(g.status, 401, "{}", g.body);
        assert_eq!(g.h("content-type"), Some("application/json"));
    }
    let upgrade = [
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];
    let g = validate_as(s, &b, Kind::Navigation, "GET", "/ws/mcp-status", &upgrade).await;
    assert_eq!(g.status, 401, "an upgrade is no navigation");
    assert_eq!(
        validate_as(s, &b, Kind::Navigation, "POST", "/x", &[])
            .await
            .status,
        401
    );

    // The provider's login page, then back with a code.
    let callback = at_provider(&b, op, &start, "alice").await;
    assert!(
        callback.starts_with("http://app.test:8080/_gatepass/callback?"),
        "{callback}"
    );
    let done = callback_at(s, &b, &callback).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(
        done.location().as_deref(),
        Some("http://app.test:8080/dashboard?x=1")
    );
    let cookie = set_cookie(&done, &format!("{COOKIE}="));
    let id = cookie[COOKIE.len() + 1..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 43);
    assert_eq!(
        cookie,
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
    );
    assert!(set_cookie(&done, &format!("{COOKIE}_flow_")).ends_with("Max-Age=0"));

    // The session decides like a bearer token: identity headers, the assertion with a sid.
    let verifier = assertion_verifier(s).await;
    for kind in [Kind::Navigation, Kind::Fetch] {
        let g = validate_as(s, &b, kind, "GET", "/api/v1/mcps", &[]).await;
        assert_eq!(g.status, 200, "{}", g.body);
        assert_eq!(g.h("x-user-id"), Some("alice"));
        assert_eq!(g.h("x-user-username"), Some("alice"));
        assert_eq!(g.h("x-user-role"), Some("admin"));
        let claims = verifier
            .verify(g.h("x-user-assertion").unwrap(), APP)
            .unwrap();
        let sid = claims.sid.expect("the assertion carries the session's sid");
        assert!(!sid.is_empty() && sid != id);
        assert_eq!(claims.iss.as_deref(), Some(op.issuer().as_str()));
    }
    let g = validate_as(s, &b, Kind::Navigation, "GET", "/ws/mcp-status", &upgrade).await;
    assert_eq!(
        g.status, 200,
        "the WebSocket handshake carries the cookie: {}",
        g.body
    );
    // The page asks who is signed in.
    let who = app_endpoint(s, &b, Method::GET, "/_gatepass/session", &[]).await;
    assert_eq!(who.status, 200, "{}", who.body);
    let j = who.json();
    assert_eq!(
        (j["sub"].as_str(), j["role"].as_str()),
        (Some("alice"), Some("admin"))
    );
    assert!(j["expires_at"].as_u64().unwrap() > now());
    assert!(j["session_expires_at"].as_u64().unwrap() > now() + 3600);
    assert!(!who.body.contains(&id));
    // A role the rule doesn't allow is a 403 page for a navigation, never a redirect.
    let bob = Browser::new();
    assert_eq!(sign_in(s, &bob, op, "/", "bob").await.status, 303);
    let g = validate_as(s, &bob, Kind::Navigation, "GET", "/ws/mcp-status", &[]).await;
    assert_eq!(g.status, 403);
    assert_eq!(g.h("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(g.h("content-security-policy"), Some("default-src 'none'"));
    assert!(g.body.contains("may not open this page"), "{}", g.body);
    assert!(g.body.len() < 4096);
    let g = validate_as(s, &bob, Kind::Fetch, "GET", "/ws/mcp-status", &[]).await;
    assert_eq!(
        (g.status, g.h("content-type")),
        (403, Some("application/json"))
    );
    // Without the session: 401 again, the navigation a sign-in.
    let none = app_endpoint(s, &Browser::new(), Method::GET, "/_gatepass/session", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"], "unauthorized");
}

async fn two_tabs_sign_in_at_once(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    let first = validate_as(s, &b, Kind::Navigation, "GET", "/one", &[]).await;
    let second = validate_as(s, &b, Kind::Navigation, "GET", "/two", &[]).await;
    assert_ne!(
        first.location_param("state"),
        second.location_param("state")
    );
    // Both flows are started before either comes back; they finish in the other order.
    let to_first = at_provider(&b, op, &first, "carol").await;
    let to_second = at_provider(&b, op, &second, "carol").await;
    let done = callback_at(s, &b, &to_second).await;
    assert_eq!(
        (done.status, done.location().as_deref()),
        (303, Some("http://app.test:8080/two"))
    );
    let done = callback_at(s, &b, &to_first).await;
    assert_eq!(
        (done.status, done.location().as_deref()),
        (303, Some("http://app.test:8080/one"))
    );
    assert_eq!(fetch_status(s, &b, "GET", "/x", &[]).await, 200);
}

async fn a_replayed_callback_is_400_and_makes_no_session(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/replay", &[]).await;
    let flow = b
        .cookies()
        .into_iter()
        .find(|c| c.name.contains("_flow_"))
        .unwrap();
    let callback = at_provider(&b, op, &start, "alice").await;
    let codes = op.grants().await["authorization_code"].as_u64().unwrap();
    assert_eq!(callback_at(s, &b, &callback).await.status, 303);
    // The same callback again, flow cookie and all, in a browser without a session.
    let again = Browser::new();
    again.set_cookie(&s.url("/"), &flow.name, &flow.value, &flow.path);
    let g = callback_at(s, &again, &callback).await;
    assert_eq!(g.status, 400, "{}", g.body);
    assert!(g.body.contains("already"), "{}", g.body);
    assert_eq!(again.cookie(COOKIE), None, "no second session");
    assert_eq!(
        op.grants().await["authorization_code"].as_u64().unwrap(),
        codes + 1,
        "the code was exchanged once"
    );
}

async fn tampered_or_foreign_flow_cookies_are_400(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/t", &[]).await;
    let other = validate_as(s, &b, Kind::Navigation, "GET", "/u", &[]).await;
    let callback = at_provider(&b, op, &start, "alice").await;
    let mut flows: Vec<_> = b
        .cookies()
        .into_iter()
        .filter(|c| c.name.contains("_flow_"))
        .collect();
    assert_eq!(flows.len(), 2);
    let this = Flowname::of(&start);
    let mine = flows.iter().position(|c| c.name == this.0).unwrap();
    let flow = flows.remove(mine);
    let foreign = &flows[0];
    let garbled = format!("{}x", &flow.value[..flow.value.len() - 1]);
    for (what, value) in [
        ("garbled", garbled.as_str()),
        ("truncated", &flow.value[..20]),
        ("another flow's", foreign.value.as_str()),
        ("empty", ""),
    ] {
        let t = Browser::new();
        t.set_cookie(&s.url("/"), &flow.name, value, &flow.path);
        let g = callback_at(s, &t, &callback).await;
        assert_eq!(g.status, 400, "{what}: {}", g.body);
        assert!(g.body.contains("Sign-in expired"), "{what}: {}", g.body);
        assert_eq!(g.h("content-type"), Some("text/html; charset=utf-8"));
    }
    // None at all.
    let g = callback_at(s, &Browser::new(), &callback).await;
    assert_eq!(g.status, 400);
    drop(other);
    // The untouched cookie still completes it (the refusals did not use the flow up).
    assert_eq!(callback_at(s, &b, &callback).await.status, 303);
}

/// The flow cookie's name for a sign-in redirect (`<cookie>_flow_<8 hex of SHA-256(state)>`).
struct Flowname(String);

impl Flowname {
    fn of(start: &Page) -> Flowname {
        let state = start.location_param("state").unwrap();
        let d = gatepass_service::digest::sha256(state.as_bytes());
        Flowname(format!(
            "{COOKIE}_flow_{:02x}{:02x}{:02x}{:02x}",
            d[0], d[1], d[2], d[3]
        ))
    }
}

async fn the_providers_access_denied_is_a_403_page(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/denied", &[]).await;
    let pages = b.follow_while(start, |url| on_app(url).is_none()).await;
    let login = pages.last().unwrap();
    assert_eq!(login.status, 200);
    assert!(
        login.body.contains("Sign in"),
        "the provider's login page: {}",
        login.body
    );
    let uid = login.url.rsplit('/').next().unwrap();
    let answer = b
        .submit_once(&format!("{}/interaction/{uid}/abort", op.issuer()), &[])
        .await;
    let back = b.follow_while(answer, |url| on_app(url).is_none()).await;
    let callback = back.last().unwrap().location().unwrap();
    assert!(callback.contains("error=access_denied"), "{callback}");
    let g = callback_at(s, &b, &callback).await;
    assert_eq!(g.status, 403, "{}", g.body);
    assert!(g.body.contains("access_denied"), "{}", g.body);
    assert_eq!(b.cookie(COOKIE), None);
}

async fn an_id_token_with_another_audience_or_nonce_makes_no_session(
    s: &Server,
    op: &OidcProvider,
) {
    // The provider signs the next ID token for another client.
    let b = Browser::new();
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/aud", &[]).await;
    let callback = at_provider(&b, op, &start, "alice").await;
    op.next_id_token_audience("someone-else").await;
    let g = callback_at(s, &b, &callback).await;
    assert_eq!(g.status, 401, "{}", g.body);
    assert!(g.body.contains("for another client"), "{}", g.body);
    assert_eq!(b.cookie(COOKIE), None);
    // The browser is sent with a nonce of someone else's choosing.
    let b = Browser::new();
    let start = validate_as(s, &b, Kind::Navigation, "GET", "/nonce", &[]).await;
    let nonce = start.location_param("nonce").unwrap();
    let mut tampered = start.clone();
    let location = start
        .h("location")
        .unwrap()
        .replace(&nonce, "chosen-by-the-attacker");
    tampered
        .headers
        .insert("location", location.parse().unwrap());
    let callback = at_provider(&b, op, &tampered, "alice").await;
    let g = callback_at(s, &b, &callback).await;
    assert_eq!(g.status, 401, "{}", g.body);
    assert!(g.body.contains("nonce"), "{}", g.body);
    assert_eq!(b.cookie(COOKIE), None);
}

async fn open_redirects_land_on_the_root(s: &Server, op: &OidcProvider) {
    // The provider remembers this browser after its first sign-in: each flow is quick.
    let b = Browser::new();
    for rd in [
        "//evil.test/x",
        "/\\evil.test",
        "https://evil.test/",
        "%2F%2Fevil.test",
        "http:evil.test",
        "evil.test",
    ] {
        let q: String = form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        for query in [format!("rd={q}"), format!("rd={rd}")] {
            let start = app_endpoint(
                s,
                &b,
                Method::GET,
                &format!("/_gatepass/signin?{query}"),
                &[],
            )
            .await;
            assert_eq!(start.status, 302, "{query}: {}", start.body);
            let callback = at_provider(&b, op, &start, "alice").await;
            let done = callback_at(s, &b, &callback).await;
            assert_eq!(
                done.location().as_deref(),
                Some("http://app.test:8080/"),
                "{query}"
            );
        }
    }
    // The same for the page a navigation started on.
    for uri in ["//evil.test/x", "/\\evil.test"] {
        let b = Browser::new();
        let start = validate_as(s, &b, Kind::Navigation, "GET", uri, &[]).await;
        if start.status == 400 {
            continue; // `\` is an ambiguous path: refused before any sign-in
        }
        let callback = at_provider(&b, op, &start, "alice").await;
        let done = callback_at(s, &b, &callback).await;
        assert_eq!(
            done.location().as_deref(),
            Some("http://app.test:8080/"),
            "{uri}"
        );
    }
    // A good `rd` is honoured.
    let start = app_endpoint(
        s,
        &b,
        Method::GET,
        "/_gatepass/signin?rd=%2Fdeep%2Fpage%3Fq%3D1",
        &[],
    )
    .await;
    let callback = at_provider(&b, op, &start, "alice").await;
    let done = callback_at(s, &b, &callback).await;
    assert_eq!(
        done.location().as_deref(),
        Some("http://app.test:8080/deep/page?q=1")
    );
}

async fn cross_site_unsafe_requests_are_403(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    assert_eq!(sign_in(s, &b, op, "/", "alice").await.status, 303);
    for extra in [
        &[][..],
        &[("origin", "https://evil.test")][..],
        &[("sec-fetch-site", "cross-site")][..],
    ] {
        let g = validate_as(s, &b, Kind::Fetch, "POST", "/api/v1/mcps/x/disable", extra).await;
        assert_eq!(g.status, 403, "{extra:?}: {}", g.body);
        assert_eq!(g.json()["error"], "invalid_request");
        assert_eq!(g.json()["error_description"], "cross-site request");
    }
    for extra in [
        &[("origin", "http://app.test:8080")][..],
        &[("sec-fetch-site", "same-origin")][..],
    ] {
        assert_eq!(
            fetch_status(s, &b, "POST", "/api/v1/mcps/x/disable", extra).await,
            200,
            "{extra:?}"
        );
    }
    // Safe methods need neither.
    assert_eq!(fetch_status(s, &b, "GET", "/api/v1/mcps", &[]).await, 200);
}

async fn garbage_cookies_are_401_or_a_sign_in_never_5xx(s: &Server) {
    let big = "a".repeat(8 * 1024);
    let foreign = "A".repeat(43);
    for (what, value) in [
        ("garbled", "!!not-a-session!!"),
        ("truncated", "abcdefghij"),
        ("8 KB", big.as_str()),
        ("foreign", foreign.as_str()),
        ("empty", ""),
    ] {
        let b = Browser::new();
        b.set_cookie(&s.url("/"), COOKIE, value, "/");
        let fetch = validate_as(s, &b, Kind::Fetch, "GET", "/x", &[]).await;
        assert_eq!(fetch.status, 401, "{what}: {}", fetch.body);
        let nav = validate_as(s, &b, Kind::Navigation, "GET", "/x", &[]).await;
        assert_eq!(nav.status, 302, "{what}: {}", nav.body);
        let who = app_endpoint(s, &b, Method::GET, "/_gatepass/session", &[]).await;
        assert_eq!(who.status, 401, "{what}");
    }
    // Two session cookies are ambiguous, as two Authorization headers are.
    let b = Browser::new();
    let g = validate_as(
        s,
        &b,
        Kind::Fetch,
        "GET",
        "/x",
        &[("cookie", &format!("{COOKIE}={foreign}; {COOKIE}=x"))],
    )
    .await;
    assert_eq!(g.status, 400);
}

async fn sign_out_ends_the_session_and_reaches_the_provider(s: &Server, op: &OidcProvider) {
    let b = Browser::new();
    assert_eq!(sign_in(s, &b, op, "/", "alice").await.status, 303);
    let id = b.cookie(COOKIE).unwrap();
    assert_eq!(fetch_status(s, &b, "GET", "/x", &[]).await, 200);
    // A cross-site GET gets a page with a button; a cross-site POST a 403: neither signs out.
    let page = app_endpoint(
        s,
        &b,
        Method::GET,
        "/_gatepass/logout",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/_gatepass/logout\">"),
        "{}",
        page.body
    );
    let post = app_endpoint(
        s,
        &b,
        Method::POST,
        "/_gatepass/logout",
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.test"),
        ],
    )
    .await;
    assert_eq!(post.status, 403);
    assert_eq!(
        fetch_status(s, &b, "GET", "/x", &[]).await,
        200,
        "still signed in"
    );
    // The page's own Sign-out link.
    let ends_before = op.end_sessions().await["count"].as_u64().unwrap();
    let out = app_endpoint(
        s,
        &b,
        Method::GET,
        "/_gatepass/logout",
        &[("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(out.status, 302, "{}", out.body);
    assert_eq!(
        set_cookie(&out, &format!("{COOKIE}=")),
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0")
    );
    let to = out.location().unwrap();
    assert!(
        to.starts_with(&format!("{}/session/end?", op.issuer())),
        "{to}"
    );
    assert!(out
        .location_param("id_token_hint")
        .is_some_and(|t| t.split('.').count() == 3));
    assert_eq!(out.location_param("client_id").as_deref(), Some("gatepass"));
    assert_eq!(
        out.location_param("post_logout_redirect_uri").as_deref(),
        Some("http://app.test:8080/")
    );
    // The old cookie is refused now (the browser would not send it; a thief would).
    let thief = Browser::new();
    thief.set_cookie(&s.url("/"), COOKIE, &id, "/");
    assert_eq!(fetch_status(s, &thief, "GET", "/x", &[]).await, 401);
    assert_eq!(
        validate_as(s, &thief, Kind::Navigation, "GET", "/x", &[])
            .await
            .status,
        302
    );
    // The browser goes on to the provider's end-session endpoint.
    let page = b.open(&to).await;
    assert!(page.status < 500, "{}", page.body);
    assert_eq!(
        op.end_sessions().await["count"].as_u64().unwrap(),
        ends_before + 1
    );
    assert_eq!(
        op.end_sessions().await["last"]["id_token_hint_present"],
        true
    );
}

async fn idle_and_absolute_expiry(op: &OidcProvider, tail: &str) {
    for (what, signin) in [
        ("idle", "idle_timeout = \"2s\""),
        ("absolute", "session_ttl = \"3s\"\nidle_timeout = \"0s\""),
    ] {
        let s = gatepass(op, signin, tail).await;
        let b = Browser::new();
        assert_eq!(sign_in(&s, &b, op, "/", "carol").await.status, 303);
        assert_eq!(fetch_status(&s, &b, "GET", "/x", &[]).await, 200, "{what}");
        let start = Instant::now();
        if what == "absolute" {
            // Used all along: the absolute limit ends it anyway.
            wait_for(
                Duration::from_secs(6),
                "the session's absolute end",
                || async { fetch_status(&s, &b, "GET", "/x", &[]).await == 401 },
            )
            .await;
            assert!(
                start.elapsed() >= Duration::from_secs(2),
                "{what} ended early"
            );
        } else {
            // Idle means time passing without a request, so this waits without asking (any
            // poll would be a use). Used within the limit: still there; then 3.5 s unused
            // (past 2 s whatever the second boundaries): ended.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            assert_eq!(
                fetch_status(&s, &b, "GET", "/x", &[]).await,
                200,
                "used within the idle limit"
            );
            tokio::time::sleep(Duration::from_millis(3500)).await;
            assert_eq!(
                fetch_status(&s, &b, "GET", "/x", &[]).await,
                401,
                "idle past the limit"
            );
        }
        assert_eq!(
            validate_as(&s, &b, Kind::Navigation, "GET", "/x", &[])
                .await
                .status,
            302,
            "{what}"
        );
    }
}

/// The access token's `exp`, as `<prefix>/session` says it.
async fn token_exp(s: &Server, b: &Browser) -> u64 {
    let who = app_endpoint(s, b, Method::GET, "/_gatepass/session", &[]).await;
    assert_eq!(who.status, 200, "{}", who.body);
    who.json()["expires_at"].as_u64().unwrap()
}

async fn refreshes(op: &OidcProvider) -> u64 {
    op.grants().await["refresh_token"].as_u64().unwrap()
}

/// Refresh (SPEC §9): before expiry, in the background, the rotated refresh token stored and
/// used next time; the provider unreachable: 200 while the token lasts, then 503, and back
/// when it is; `invalid_grant`: signed out.
#[tokio::test]
async fn refresh_rotates_survives_an_outage_and_ends_on_invalid_grant() {
    let op = provider(None, Some(4));
    let s = gatepass(&op, "refresh_before = \"60s\"", "").await;
    let b = Browser::new();
    assert_eq!(sign_in(&s, &b, &op, "/", "alice").await.status, 303);
    // Several refreshes (4 s tokens, refreshed 2 s before expiry), every request 200.
    let first = token_exp(&s, &b).await;
    wait_for(Duration::from_secs(20), "three refreshes", || async {
        assert_eq!(fetch_status(&s, &b, "GET", "/x", &[]).await, 200);
        refreshes(&op).await >= 3
    })
    .await;
    assert!(token_exp(&s, &b).await > first, "a newer token");
    assert!(metric(&s, r#"gatepass_session_refresh_total{outcome="ok"}"#).await >= 3.0);
    // The provider's token endpoint is down: the current token serves until its exp...
    op.refresh_fail("unavailable").await;
    let exp = token_exp(&s, &b).await;
    while now() < exp {
        assert_eq!(
            fetch_status(&s, &b, "GET", "/x", &[]).await,
            200,
            "before exp"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...then 503 (a page for a navigation), never a sign-in.
    wait_for(Duration::from_secs(5), "503 once expired", || async {
        fetch_status(&s, &b, "GET", "/x", &[]).await == 503
    })
    .await;
    let g = validate_as(&s, &b, Kind::Fetch, "GET", "/x", &[]).await;
    g_json_is(&g, 503, "temporarily_unavailable");
    let nav = validate_as(&s, &b, Kind::Navigation, "GET", "/x", &[]).await;
    assert_eq!(
        (nav.status, nav.h("content-type")),
        (503, Some("text/html; charset=utf-8"))
    );
    assert!(
        metric(
            &s,
            r#"gatepass_session_refresh_total{outcome="unavailable"}"#
        )
        .await
            >= 1.0
    );
    // Back: the next request refreshes and passes.
    op.refresh_fail("off").await;
    wait_for(
        Duration::from_secs(5),
        "refreshed after the outage",
        || async { fetch_status(&s, &b, "GET", "/x", &[]).await == 200 },
    )
    .await;
    // invalid_grant: the session ends.
    op.refresh_fail("invalid_grant").await;
    wait_for(
        Duration::from_secs(10),
        "signed out by invalid_grant",
        || async { fetch_status(&s, &b, "GET", "/x", &[]).await == 401 },
    )
    .await;
    assert_eq!(
        validate_as(&s, &b, Kind::Navigation, "GET", "/x", &[])
            .await
            .status,
        302
    );
    assert!(
        metric(
            &s,
            r#"gatepass_session_refresh_total{outcome="invalid_grant"}"#
        )
        .await
            >= 1.0
    );
    op.refresh_fail("off").await;
}

fn g_json_is(g: &Page, status: u16, error: &str) {
    assert_eq!(g.status, status, "{}", g.body);
    assert_eq!(g.json()["error"], error, "{}", g.body);
}

/// Two replicas on one Redis: a session started on one works on the other; 20 concurrent
/// requests across both around the token's expiry make exactly one refresh grant and all
/// pass; a sign-out on one is refused by the other within a second.
#[tokio::test]
async fn two_replicas_share_sessions_refresh_once_and_sign_out_everywhere() {
    let redis = RedisServer::start();
    let op = provider(None, Some(8));
    let a = gatepass(&op, "", &on_redis(&redis)).await;
    let b_replica = gatepass(&op, "", &on_redis(&redis)).await;
    let browser = Browser::new();
    assert_eq!(sign_in(&a, &browser, &op, "/", "alice").await.status, 303);
    assert_eq!(
        fetch_status(&b_replica, &browser, "GET", "/x", &[]).await,
        200,
        "started on A, served by B"
    );
    // Into the refresh window (4 s before exp for 8 s tokens), then 20 at once.
    let exp = token_exp(&a, &browser).await;
    assert_eq!(refreshes(&op).await, 0);
    wait_for(Duration::from_secs(10), "the refresh window", || async {
        now() + 2 >= exp
    })
    .await;
    let browser = std::sync::Arc::new(browser);
    let mut all = Vec::new();
    for i in 0..20 {
        let (s_url, br) = (
            if i % 2 == 0 {
                a.url("/validate")
            } else {
                b_replica.url("/validate")
            },
            browser.clone(),
        );
        all.push(tokio::spawn(async move {
            let fwd = forwarded("GET", "/x");
            let mut h: Vec<(&str, &str)> = fwd.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.push(("sec-fetch-mode", "cors"));
            br.request(Method::GET, &s_url, &h, None).await.status
        }));
    }
    for t in all {
        assert_eq!(t.await.unwrap(), 200);
    }
    wait_for(Duration::from_secs(10), "the refresh", || async {
        refreshes(&op).await >= 1
    })
    .await;
    // Both replicas use the new token, and nobody refreshed it again.
    wait_for(Duration::from_secs(10), "both on the new token", || async {
        token_exp(&a, &browser).await > exp && token_exp(&b_replica, &browser).await > exp
    })
    .await;
    assert_eq!(refreshes(&op).await, 1, "one refresh grant for the cluster");
    // Sign-out on A: B refuses the cookie within a second.
    let id = browser.cookie(COOKIE).unwrap();
    let out = app_endpoint(
        &a,
        &browser,
        Method::POST,
        "/_gatepass/logout",
        &[("origin", "http://app.test:8080")],
    )
    .await;
    assert_eq!(out.status, 302);
    let signed_out = Instant::now();
    let thief = Browser::new();
    thief.set_cookie(&b_replica.url("/"), COOKIE, &id, "/");
    wait_for(Duration::from_secs(3), "B refuses the cookie", || async {
        fetch_status(&b_replica, &thief, "GET", "/x", &[]).await == 401
    })
    .await;
    let took = signed_out.elapsed();
    assert!(took < Duration::from_secs(1), "B took {took:?}");
    assert_eq!(fetch_status(&a, &thief, "GET", "/x", &[]).await, 401);
}

/// Back-channel logout from the provider itself (its logout token for the user's provider
/// session) ends the session.
#[tokio::test]
async fn the_providers_back_channel_logout_ends_the_session() {
    let op = provider(None, None);
    let s = gatepass(&op, "", "").await;
    op.set_client(serde_json::json!({"backchannel_logout_uri": s.url("/backchannel-logout")}))
        .await;
    let b = Browser::new();
    assert_eq!(sign_in(&s, &b, &op, "/", "alice").await.status, 303);
    assert_eq!(fetch_status(&s, &b, "GET", "/x", &[]).await, 200);
    let sent = op.backchannel_logout("alice").await;
    assert_eq!(sent["statuses"], serde_json::json!([200]), "{sent}");
    let at = Instant::now();
    wait_for(Duration::from_secs(3), "the session ended", || async {
        fetch_status(&s, &b, "GET", "/x", &[]).await == 401
    })
    .await;
    assert!(at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        metric(
            &s,
            r#"gatepass_revocations_total{kind="sid",source="backchannel"}"#
        )
        .await,
        1.0
    );
}
