//! Sign-in (SPEC §9) test support: gatepass with `[signin]` at the real OpenID Provider of
//! `tests/oidc`, and a [`Browser`] that signs in as a person would. Requests reach gatepass as
//! Traefik sends them: `/validate` with `X-Forwarded-*`, and `<prefix>/*` straight, with
//! `X-Forwarded-Host` naming the app host [`APP`] (whose URLs the provider redirects to).

use gatepass_testkit::browser::{Browser, Page, NAVIGATION};
use gatepass_testkit::oidc::{OidcProvider, SignInSetup, GATEPASS_CLIENT_SECRET};
use reqwest::Method;

use super::*;

/// A running gatepass (in process, or the binary) to send requests to.
pub trait Gatepass {
    fn url(&self, path: &str) -> String;
}

impl Gatepass for Server {
    fn url(&self, path: &str) -> String {
        Server::url(self, path)
    }
}

/// The app host sign-in runs on (as in `X-Forwarded-Host`).
pub const APP: &str = "app.test:8080";
/// The `aud` of the provider's sign-in access tokens.
pub const RESOURCE: &str = "https://app.example.test";
/// The session key file (one base64 32-byte key).
pub const SESSION_KEYS: &str = "c2Vzc2lvbi1rZXktMDEyMzQ1Njc4OWFiY2RlZjAxMjM=\n";
pub const COOKIE: &str = "gatepass_session";

/// A provider whose `gatepass` client may sign in on [`APP`] (and whose back-channel logouts
/// go to `backchannel`), with access tokens of `ttl` seconds.
pub fn provider(backchannel: Option<String>, ttl: Option<u64>) -> OidcProvider {
    OidcProvider::start_with(
        &[],
        SignInSetup {
            redirect_uris: vec![format!("http://{APP}/_gatepass/callback")],
            post_logout_redirect_uris: vec![format!("http://{APP}/")],
            backchannel_logout_uri: backchannel,
            resource: Some(RESOURCE.into()),
            access_token_ttl: ttl,
        },
    )
}

/// gatepass's config with sign-in at `op`: the base config, the provider as issuer `op`
/// (discovery; its back-channel logouts accepted), the session source first, `[signin]` with
/// the `signin` lines in it, then `tail` (other tables).
pub fn config(op: &OidcProvider, signin: &str, tail: &str) -> String {
    format!(
        r#"{base}
[[issuers]]
name = "op"
issuer = "{iss}"
discovery = true
algorithms = ["RS256", "ES256", "EdDSA"]
audiences = ["{RESOURCE}"]
backchannel_logout_audience = "gatepass"
leeway = "5s"

[jwks]
min_refresh_interval = "1s"

[revocation]
retain = "1h"

[tokens]
sources = ["session", "bearer", "websocket_protocol", "ticket"]

[signin]
issuer = "op"
client_id = "gatepass"
client_secret_file = "oidc-client.key"
hosts = ["{APP}"]
key_file = "session.keys"
{signin}

{tail}
"#,
        base = base_config(),
        iss = op.issuer(),
    )
}

/// Writes the session keys and the client secret next to the config.
pub fn files(dir: &std::path::Path) {
    std::fs::write(dir.join("session.keys"), SESSION_KEYS).unwrap();
    std::fs::write(
        dir.join("oidc-client.key"),
        format!("{GATEPASS_CLIENT_SECRET}\n"),
    )
    .unwrap();
}

/// gatepass (in process) with sign-in at `op` (see [`config`]), its keys loaded.
pub async fn gatepass(op: &OidcProvider, signin: &str, tail: &str) -> Server {
    let s = start_with(&config(op, signin, tail), files).await;
    ready(&s).await;
    s
}

/// Waits for `/readyz` (the provider's discovery document and keys).
pub async fn ready(s: &Server) {
    wait_for(
        std::time::Duration::from_secs(15),
        "gatepass ready",
        || async { s.get("/readyz").await.status == 200 },
    )
    .await;
}

/// The forwarded headers of a request for `method uri` on [`APP`].
pub fn forwarded(method: &str, uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("x-forwarded-method", method.into()),
        ("x-forwarded-proto", "http".into()),
        ("x-forwarded-host", APP.into()),
        ("x-forwarded-port", "8080".into()),
        ("x-forwarded-uri", uri.into()),
        ("x-forwarded-for", "203.0.113.9".into()),
    ]
}

/// What kind of request the browser makes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A person opening a page: the navigation headers.
    Navigation,
    /// A script's `fetch`: `Sec-Fetch-Mode: cors`, JSON accepted.
    Fetch,
}

/// `/validate` (at `s`) for `method uri` from `b`, with its cookies and `extra` headers.
pub async fn validate_as(
    s: &impl Gatepass,
    b: &Browser,
    kind: Kind,
    method: &str,
    uri: &str,
    extra: &[(&str, &str)],
) -> Page {
    let fwd = forwarded(method, uri);
    let mut h: Vec<(&str, &str)> = fwd.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match kind {
        Kind::Navigation => {
            h.extend(NAVIGATION);
            h.push(("sec-fetch-site", "none"));
        }
        Kind::Fetch => {
            h.push(("sec-fetch-mode", "cors"));
            h.push(("accept", "application/json"));
        }
    }
    h.extend(extra);
    b.request(Method::GET, &s.url("/validate"), &h, None).await
}

/// A request to gatepass's own `<prefix><path_and_query>` as Traefik routes it for [`APP`].
pub async fn app_endpoint(
    s: &impl Gatepass,
    b: &Browser,
    method: Method,
    path_and_query: &str,
    extra: &[(&str, &str)],
) -> Page {
    let mut h: Vec<(&str, &str)> = vec![
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", APP),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    h.extend(NAVIGATION);
    h.extend(extra);
    b.request(method, &s.url(path_and_query), &h, None).await
}

/// The path and query of a URL on [`APP`]; `None` for another host.
pub fn on_app(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    (u.host_str() == Some("app.test") && u.port() == Some(8080)).then(|| match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    })
}

/// Follows gatepass's redirect to the provider (`to_provider`) until the browser is sent back
/// to [`APP`], signing in as `user` on the login page: the URL on [`APP`] (the callback).
pub async fn at_provider(b: &Browser, op: &OidcProvider, to_provider: &Page, user: &str) -> String {
    assert_eq!(to_provider.status, 302, "{}", to_provider.body);
    op.authorize(b, to_provider.clone(), user, &format!("http://{APP}/"))
        .await
}

/// Signs `user` in on `s` with `b` from a navigation to `uri`: the callback's answer (a 303 with
/// the session cookie when it worked).
pub async fn sign_in(
    s: &impl Gatepass,
    b: &Browser,
    op: &OidcProvider,
    uri: &str,
    user: &str,
) -> Page {
    let start = validate_as(s, b, Kind::Navigation, "GET", uri, &[]).await;
    let callback = at_provider(b, op, &start, user).await;
    callback_at(s, b, &callback).await
}

/// Delivers the provider's redirect to `callback` (a URL on [`APP`]) to gatepass `s`.
pub async fn callback_at(s: &impl Gatepass, b: &Browser, callback: &str) -> Page {
    let path = on_app(callback).unwrap_or_else(|| panic!("not an app URL: {callback}"));
    app_endpoint(
        s,
        b,
        Method::GET,
        &path,
        &[("sec-fetch-site", "cross-site")],
    )
    .await
}
