//! A real OpenID Provider for the tests: panva's `oidc-provider` (npm, pinned in
//! `tests/oidc/package.json`, installed by `make test`), run as `node tests/oidc/provider.mjs`
//! on 127.0.0.1 and a free port, stopped by its PID.
//!
//! It has three clients: `gatepass` (client_secret_basic, may introspect), `mcp-client`
//! (client_secret_basic, client_credentials grant, [`SCOPES`]) and `mcp-viewer` (the same, but
//! [`VIEWER_SCOPES`] only). Access tokens are per RFC 8707 resource: [`RS256_RESOURCE`],
//! [`ES256_RESOURCE`], [`EDDSA_RESOURCE`], [`MCP_RESOURCE`] and the extra resources given to
//! [`OidcProvider::start_with_resources`] get RFC 9068 JWTs (`typ: at+jwt`, `aud` = the
//! resource; RS256 unless named otherwise), [`OPAQUE_RESOURCE`] gets opaque tokens (which
//! introspect; oidc-provider refuses to introspect its JWTs). Its signing keys (RS256, ES256,
//! EdDSA) live in a file of its temporary directory, so [`OidcProvider::restart`] serves the
//! same keys on the same port.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::browser::{Browser, Page};
use crate::{client, free_port, kill, stop};

pub const GATEPASS_CLIENT_ID: &str = "gatepass";
pub const GATEPASS_CLIENT_SECRET: &str = "gatepass-oidc-test-secret-0123456789";
pub const MCP_CLIENT_ID: &str = "mcp-client";
pub const MCP_CLIENT_SECRET: &str = "mcp-client-oidc-test-secret-0123456789";
/// A client_credentials client that may only get [`VIEWER_SCOPES`].
pub const MCP_VIEWER_ID: &str = "mcp-viewer";
pub const MCP_VIEWER_SECRET: &str = "mcp-viewer-oidc-test-secret-0123456789";
/// The only scope `mcp-viewer` may ask for.
pub const VIEWER_SCOPES: &str = "mcp:read";
/// The scopes every resource knows; [`OidcProvider::token`] asks for all of them.
pub const SCOPES: &str = "mcp:read mcp:write";
pub const RS256_RESOURCE: &str = "https://api.test/rs256";
pub const ES256_RESOURCE: &str = "https://api.test/es256";
pub const EDDSA_RESOURCE: &str = "https://api.test/eddsa";
pub const OPAQUE_RESOURCE: &str = "https://api.test/opaque";
/// The MCP server's resource: RS256 JWTs with `aud` = this URI.
pub const MCP_RESOURCE: &str = "https://mcp.example.test/mcp";

/// The demo users `provider.mjs` signs in by default: (username = `sub`, password, role).
pub const USERS: [(&str, &str, &str); 3] = [
    ("alice", "alice-password", "admin"),
    ("bob", "bob-password", "viewer"),
    ("carol", "carol-password", "developer"),
];

/// How the provider's `gatepass` client signs people in (its env; see `provider.mjs`).
#[derive(Debug, Clone, Default)]
pub struct SignInSetup {
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    /// The `aud` of sign-in access tokens (`SIGNIN_RESOURCE`).
    pub resource: Option<String>,
    /// Their lifetime in seconds (`ACCESS_TOKEN_TTL`).
    pub access_token_ttl: Option<u64>,
}

/// What `provider.mjs` prints once it serves.
const READY: &str = "oidc-provider listening on http://127.0.0.1:";
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `oidc-provider`; stopped (SIGTERM, then SIGKILL) by [`OidcProvider::stop`] and on
/// drop.
pub struct OidcProvider {
    port: u16,
    /// Resource indicators besides the fixed ones (`EXTRA_RESOURCES`).
    extra_resources: Vec<String>,
    signin: SignInSetup,
    /// The keys file and the process's log.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

impl OidcProvider {
    /// Starts one on a free port with fresh keys; waits until it serves.
    pub fn start() -> OidcProvider {
        OidcProvider::start_with_resources(&[])
    }

    /// [`OidcProvider::start`], also accepting each of `resources` (absolute URIs, e.g. an e2e
    /// stack's `http://127.0.0.1:PORT/mcp`) as a resource indicator with RS256 `at+jwt` tokens
    /// and [`SCOPES`], like [`MCP_RESOURCE`].
    pub fn start_with_resources(resources: &[&str]) -> OidcProvider {
        OidcProvider::start_with(resources, SignInSetup::default())
    }

    /// [`OidcProvider::start_with_resources`], and its `gatepass` client signs people in as
    /// `signin` says.
    pub fn start_with(resources: &[&str], signin: SignInSetup) -> OidcProvider {
        let script = root().join("tests/oidc/provider.mjs");
        assert!(
            root()
                .join("tests/oidc/node_modules/oidc-provider")
                .is_dir(),
            "tests/oidc/node_modules is missing: run `make test` (it runs npm ci in tests/oidc)"
        );
        assert!(script.is_file(), "{} is missing", script.display());
        let mut p = OidcProvider {
            port: free_port(),
            extra_resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            signin,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        p.spawn();
        p
    }

    /// A handle on a provider someone else runs at `issuer` (e.g. the benchmark's), for
    /// [`OidcProvider::authorize`] and the test routes; dropping it stops nothing.
    pub fn attach(issuer: &str) -> OidcProvider {
        let port = issuer
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("an issuer http://127.0.0.1:PORT");
        OidcProvider {
            port,
            extra_resources: Vec::new(),
            signin: SignInSetup::default(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("provider.log")
    }

    /// Everything the process (and earlier ones of this provider) printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let from = log.metadata().unwrap().len() as usize;
        let mut cmd = Command::new("node");
        let si = &self.signin;
        cmd.env("REDIRECT_URIS", si.redirect_uris.join(" ")).env(
            "POST_LOGOUT_REDIRECT_URIS",
            si.post_logout_redirect_uris.join(" "),
        );
        if let Some(uri) = &si.backchannel_logout_uri {
            cmd.env("BACKCHANNEL_LOGOUT_URI", uri);
        }
        if let Some(r) = &si.resource {
            cmd.env("SIGNIN_RESOURCE", r);
        }
        if let Some(ttl) = si.access_token_ttl {
            cmd.env("ACCESS_TOKEN_TTL", ttl.to_string());
        }
        let child = cmd
            .arg(root().join("tests/oidc/provider.mjs"))
            .current_dir(root())
            .env("PORT", self.port.to_string())
            .env("OIDC_KEYS", self.dir.path().join("keys.json"))
            .env("GATEPASS_SECRET", GATEPASS_CLIENT_SECRET)
            .env("MCP_CLIENT_SECRET", MCP_CLIENT_SECRET)
            .env("MCP_VIEWER_SECRET", MCP_VIEWER_SECRET)
            .env("EXTRA_RESOURCES", self.extra_resources.join(" "))
            .stdin(Stdio::null())
            .stdout(File::try_clone(&log).unwrap())
            .stderr(log)
            .spawn()
            .expect("node is installed (make test uses it for tests/browser and tests/oidc)");
        self.child = Some(child);
        let ready = format!("{READY}{}", self.port);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = self.log();
            let out = out.get(from..).unwrap_or_default();
            if out.lines().any(|l| l.trim() == ready) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() >= deadline {
                let what = exited.map_or("did not get ready".into(), |s| format!("exited ({s})"));
                if let Some(mut c) = self.child.take() {
                    kill(&mut c);
                }
                panic!(
                    "oidc-provider on port {} {what} within {START_TIMEOUT:?}; its output:\n{out}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, exactly as the provider's `iss` and discovery `issuer`.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The issuer followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer())
    }

    /// The JWKS (oidc-provider's default route, as discovery names it).
    pub fn jwks_uri(&self) -> String {
        self.url("/jwks")
    }

    pub fn token_endpoint(&self) -> String {
        self.url("/token")
    }

    pub fn introspection_endpoint(&self) -> String {
        self.url("/token/introspection")
    }

    pub fn revocation_endpoint(&self) -> String {
        self.url("/token/revocation")
    }

    /// `/.well-known/openid-configuration`.
    pub async fn discovery(&self) -> Value {
        self.get_json("/.well-known/openid-configuration").await
    }

    /// The public JWKS document.
    pub async fn jwks(&self) -> Value {
        self.get_json("/jwks").await
    }

    /// A client_credentials access token of `mcp-client` for `resource`, with [`SCOPES`].
    pub async fn token(&self, resource: &str) -> String {
        self.token_response(resource, Some(SCOPES)).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The whole token response of a client_credentials grant for `resource` (and `scope`).
    pub async fn token_response(&self, resource: &str, scope: Option<&str>) -> Value {
        let (status, body) = self
            .client_token_request(MCP_CLIENT_ID, MCP_CLIENT_SECRET, resource, scope)
            .await;
        assert_eq!(status, 200, "token for {resource}: {body}");
        body
    }

    /// A client_credentials access token of `mcp-viewer` for `resource`, with [`VIEWER_SCOPES`].
    pub async fn viewer_token(&self, resource: &str) -> String {
        let (status, body) = self
            .client_token_request(
                MCP_VIEWER_ID,
                MCP_VIEWER_SECRET,
                resource,
                Some(VIEWER_SCOPES),
            )
            .await;
        assert_eq!(status, 200, "viewer token for {resource}: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A DPoP-bound client_credentials access token of `mcp-client` for `resource`, with
    /// [`SCOPES`], bound to `key` (RFC 9449 §5: a proof at the token endpoint).
    pub async fn dpop_token(&self, resource: &str, key: &crate::dpop::DpopKey) -> String {
        let (status, body) = self
            .client_token_request_with(
                MCP_CLIENT_ID,
                MCP_CLIENT_SECRET,
                resource,
                Some(SCOPES),
                Some(key),
            )
            .await;
        assert_eq!(status, 200, "DPoP token for {resource}: {body}");
        assert_eq!(body["token_type"], "DPoP", "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A client_credentials grant of any client (client_secret_basic), successful or not: the
    /// status and the JSON body.
    pub async fn client_token_request(
        &self,
        client_id: &str,
        secret: &str,
        resource: &str,
        scope: Option<&str>,
    ) -> (u16, Value) {
        self.client_token_request_with(client_id, secret, resource, scope, None)
            .await
    }

    /// [`OidcProvider::client_token_request`], with a DPoP proof of `dpop` when given.
    pub async fn client_token_request_with(
        &self,
        client_id: &str,
        secret: &str,
        resource: &str,
        scope: Option<&str>,
        dpop: Option<&crate::dpop::DpopKey>,
    ) -> (u16, Value) {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        form.extend(scope.map(|s| ("scope", s)));
        let mut req = client()
            .post(self.token_endpoint())
            .basic_auth(client_id, Some(secret));
        if let Some(key) = dpop {
            req = req.header("DPoP", key.proof("POST", &self.token_endpoint(), None));
        }
        let resp = req.form(&form).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("token response for {resource} is not JSON ({e}): {body}"));
        (status, json)
    }

    /// The (client id, secret) allowed to introspect (client_secret_basic).
    pub fn introspection_client(&self) -> (String, String) {
        (GATEPASS_CLIENT_ID.into(), GATEPASS_CLIENT_SECRET.into())
    }

    /// The introspection response (RFC 7662) for `token`, asked as `gatepass`.
    pub async fn introspect(&self, token: &str) -> Value {
        let resp = client()
            .post(self.introspection_endpoint())
            .basic_auth(GATEPASS_CLIENT_ID, Some(GATEPASS_CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "introspection: {status} {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Revokes an access token of `mcp-client` at the provider (RFC 7009, as its owner).
    pub async fn revoke(&self, token: &str) {
        let resp = client()
            .post(self.revocation_endpoint())
            .basic_auth(MCP_CLIENT_ID, Some(MCP_CLIENT_SECRET))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert!(
            status.is_success(),
            "revocation: {status} {}",
            resp.text().await.unwrap()
        );
    }

    /// Adds a new RS256 key as the first key (new RS256 tokens use it; old keys stay).
    pub async fn rotate(&self) -> Vec<(String, String)> {
        kid_list(self.call(reqwest::Method::POST, "/test/rotate", None).await)
    }

    /// Drops every key but the newest of each alg.
    pub async fn retire(&self) -> Vec<(String, String)> {
        kid_list(self.call(reqwest::Method::POST, "/test/retire", None).await)
    }

    /// The (kid, alg) of every signing key, newest of each alg first.
    pub async fn kids(&self) -> Vec<(String, String)> {
        kid_list(self.call(reqwest::Method::GET, "/test/kids", None).await)
    }

    /// An OIDC Back-Channel Logout token (`typ: logout+jwt`, RS256, current key) for `aud`.
    pub async fn logout_token(&self, sub: Option<&str>, sid: Option<&str>, aud: &str) -> String {
        let body = json!({ "sub": sub, "sid": sid, "aud": aud });
        let v = self
            .call(reqwest::Method::POST, "/test/logout-token", Some(body))
            .await;
        v["logout_token"].as_str().unwrap().to_owned()
    }

    /// Replaces the sign-in registration of client `gatepass` (redirect URIs, post-logout
    /// URIs, back-channel logout URI), rebuilding the provider on the same storage.
    pub async fn set_client(&self, registration: Value) -> Value {
        self.call(reqwest::Method::POST, "/test/client", Some(registration))
            .await
    }

    /// Sets the lifetime of sign-in access tokens from now on (seconds).
    pub async fn set_access_token_ttl(&self, secs: u64) {
        self.call(
            reqwest::Method::POST,
            "/test/ttl",
            Some(json!({"access_token": secs})),
        )
        .await;
    }

    /// Successful token-endpoint grants so far, by grant type (`authorization_code`,
    /// `refresh_token`, `client_credentials`).
    pub async fn grants(&self) -> Value {
        self.get_json("/test/grants").await
    }

    /// Requests that reached the end-session endpoint: `{count, last}`.
    pub async fn end_sessions(&self) -> Value {
        self.get_json("/test/end-sessions").await
    }

    /// Makes refresh grants fail (`invalid_grant`, `unavailable`) until `off`.
    pub async fn refresh_fail(&self, mode: &str) {
        self.call(
            reqwest::Method::POST,
            "/test/refresh-fail",
            Some(json!({ "mode": mode })),
        )
        .await;
    }

    /// The next ID token issued carries `aud` instead of the client id.
    pub async fn next_id_token_audience(&self, aud: &str) {
        self.call(
            reqwest::Method::POST,
            "/test/next-id-token",
            Some(json!({ "aud": aud })),
        )
        .await;
    }

    /// The provider itself sends a back-channel logout for every session of `sub` to
    /// `gatepass`'s `backchannel_logout_uri`, and ends them: `{sent, statuses}`.
    pub async fn backchannel_logout(&self, sub: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/test/backchannel",
            Some(json!({ "sub": sub, "end_session": true })),
        )
        .await
    }

    /// Plays the person at this provider: follows `to_provider` (a relying party's redirect
    /// here) until the browser is sent to a URL starting with `back_to`, signing in as `user`
    /// when the login page shows (a browser that signed in before goes straight through):
    /// that URL (the relying party's callback, with `code` and `state`, or `error`).
    pub async fn authorize(
        &self,
        b: &Browser,
        to_provider: Page,
        user: &str,
        back_to: &str,
    ) -> String {
        let away = |url: &str| !url.starts_with(back_to);
        let mut pages = b.follow_while(to_provider, away).await;
        let last = pages.last().unwrap().clone();
        if last.status == 200 && last.url.starts_with(&self.url("/interaction/")) {
            let uid = last.url.rsplit('/').next().unwrap_or_default();
            let password = USERS.iter().find(|u| u.0 == user).map_or("wrong", |u| u.1);
            let login = self.url(&format!("/interaction/{uid}/login"));
            let answer = b
                .submit_once(&login, &[("username", user), ("password", password)])
                .await;
            pages = b.follow_while(answer, away).await;
        }
        let last = pages.last().unwrap();
        match last.location().filter(|_| last.is_redirect()) {
            Some(url) if url.starts_with(back_to) => url,
            _ => panic!(
                "not sent back to {back_to}: {:?}\n{}",
                crate::browser::urls(&pages),
                last.body
            ),
        }
    }

    /// SIGTERM by PID, SIGKILL after 5 s; the exit status when it exited by itself. The port
    /// is closed when it returns.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        stop(&mut child, Duration::from_secs(5))
    }

    /// Stops it and starts it again on the same port with the same keys (in-memory state, such
    /// as opaque tokens, is lost).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    async fn get_json(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = client().request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }
}

fn kid_list(v: Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_owned(),
                k["alg"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(2));
        }
    }
}
