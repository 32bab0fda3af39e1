//! Test harness: real gatepass `run` on 127.0.0.1:0, real keys, real HTTP clients, and the
//! exact headers Traefik sends to a forwardAuth address (SPEC §2).
#![allow(dead_code, unused_imports)]

pub mod signin;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use gatepass_testkit::{client, encoding_key, jwk, now, sign as sign_with, wait_for};
use gatepass_testkit::{keypair as pair, Background};
use serde_json::Value;

pub const ISS: &str = "https://auth.example.test";
pub const HS_SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// Key material generated once per test binary.
pub struct Keys {
    pub rsa_priv: String,
    pub rsa_pub: String,
    pub ec256_priv: String,
    pub ec256_pub: String,
    pub ec384_priv: String,
    pub ec384_pub: String,
    pub ed_priv: String,
    pub ed_pub: String,
    pub other_rsa_priv: String,
    pub assertion_key: String,
}

pub fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let (rsa_priv, rsa_pub) = pair(&rcgen::PKCS_RSA_SHA256);
        let (ec256_priv, ec256_pub) = pair(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (ec384_priv, ec384_pub) = pair(&rcgen::PKCS_ECDSA_P384_SHA384);
        let (ed_priv, ed_pub) = pair(&rcgen::PKCS_ED25519);
        let (other_rsa_priv, _) = pair(&rcgen::PKCS_RSA_SHA256);
        Keys {
            rsa_priv,
            rsa_pub,
            ec256_priv,
            ec256_pub,
            ec384_priv,
            ec384_pub,
            ed_priv,
            ed_pub,
            other_rsa_priv,
            assertion_key: gatepass_identity::generate_ed25519_pkcs8_pem().unwrap(),
        }
    })
}

/// Standard claims for `sub` with `role`.
pub fn claims(sub: &str, role: &str) -> Value {
    gatepass_testkit::claims(ISS, sub, role)
}

/// HS256 token for the default `local` issuer.
pub fn hs(claims: &Value) -> String {
    gatepass_testkit::hs256(HS_SECRET, claims)
}

/// A header and payload given as JSON text (so names can repeat), signed with `secret`
/// (HS256, whatever the header says).
pub fn hs_text_with(secret: &str, header: &str, payload: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let sig = aws_lc_rs::hmac::sign(&key, msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

/// [`hs_text_with`] the default issuer's secret.
pub fn hs_text(header: &str, payload: &str) -> String {
    hs_text_with(HS_SECRET, header, payload)
}

/// An HS256 token for `sub` with `role` from the default issuer.
pub fn user(sub: &str, role: &str) -> String {
    hs(&claims(sub, role))
}

/// The key files every harness directory holds (what `base_config` and the issuers name).
pub fn key_files() -> Vec<(&'static str, String)> {
    let k = keys();
    vec![
        ("hs256.key", format!("{HS_SECRET}\n")),
        ("assertion.pem", k.assertion_key.clone()),
        ("rsa.pub.pem", k.rsa_pub.clone()),
        ("ec256.pub.pem", k.ec256_pub.clone()),
        ("ec384.pub.pem", k.ec384_pub.clone()),
        ("ed.pub.pem", k.ed_pub.clone()),
    ]
}

/// The base config: HS256 issuer `local` from a secret file, the SPEC's rules, assertion on.
pub fn base_config() -> String {
    r#"
[[issuers]]
name = "local"
issuer = "https://auth.example.test"
algorithms = ["HS256"]
secret_file = "hs256.key"
leeway = "5s"

[[rules]]
path = "/healthz"
anonymous = true
{rules}[[rules]]
path = "/api/v1/write"
permissions = ["mcp:read", "mcp:write"]

[websocket]
allowed_origins = ["http://127.0.0.1:8080"]
allow_missing_origin = true

[cors]
allowed_origins = ["http://127.0.0.1:8080"]

[assertion]
key_file = "assertion.pem"
ttl = "60s"
"#
    .replace("{rules}", gatepass_testkit::SPEC_RULES)
}

/// A running gatepass.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    app: Option<Arc<gatepass::App>>,
    bg: Background,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        self.bg.url(path)
    }

    /// The `App` handle; only servers from [`start_app`] have one.
    pub fn app(&self) -> &Arc<gatepass::App> {
        self.app.as_ref().expect("started with start_app")
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn shutdown(self) {
        self.bg.shutdown(Duration::from_secs(35)).await
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

/// Writes the key files and `config`, loads it, and runs `gatepass::run` on 127.0.0.1:0,
/// as `main` does.
pub async fn start(config: &str) -> Server {
    start_with(config, |_| {}).await
}

pub async fn start_with(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    let (dir, cfg) = load(config, prepare);
    let bg = Background::spawn(|listener, stop| async move {
        gatepass::run(listener, cfg, stop)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    })
    .await;
    Server {
        addr: bg.addr,
        dir,
        app: None,
        bg,
    }
}

/// Like [`start`], keeping the `App` handle (for `reload`): `App::new` + `gatepass::serve`.
pub async fn start_app(config: &str) -> Server {
    let (dir, cfg) = load(config, |_| {});
    let app = gatepass::App::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let serve_app = app.clone();
    let bg = Background::spawn(|listener, stop| gatepass::serve(listener, serve_app, stop)).await;
    Server {
        addr: bg.addr,
        dir,
        app: Some(app),
        bg,
    }
}

fn load(
    config: &str,
    prepare: impl FnOnce(&std::path::Path),
) -> (tempfile::TempDir, gatepass::Config) {
    let files = key_files();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    let (dir, path) = gatepass_testkit::config_dir("gatepass.toml", config, &files, prepare);
    let cfg = gatepass::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    (dir, cfg)
}

/// A forwardAuth request as Traefik sends it: GET, no body, `X-Forwarded-*` only.
pub struct Fwd {
    pub headers: Vec<(String, String)>,
}

impl Fwd {
    pub fn new(method: &str, uri: &str) -> Fwd {
        Fwd {
            headers: vec![
                ("X-Forwarded-Method".into(), method.into()),
                ("X-Forwarded-Proto".into(), "http".into()),
                ("X-Forwarded-Host".into(), "app.test:8080".into()),
                ("X-Forwarded-Port".into(), "8080".into()),
                ("X-Forwarded-Uri".into(), uri.into()),
                ("X-Forwarded-For".into(), "203.0.113.7".into()),
            ],
        }
    }

    pub fn get(uri: &str) -> Fwd {
        Fwd::new("GET", uri)
    }

    /// A WebSocket upgrade as it reaches forwardAuth: no `Upgrade`/`Connection`, Go-canonical case.
    pub fn upgrade(uri: &str) -> Fwd {
        Fwd::get(uri)
            .h("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .h("Sec-Websocket-Version", "13")
    }

    pub fn h(mut self, k: &str, v: &str) -> Fwd {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Fwd {
        self.h("Authorization", &format!("Bearer {token}"))
    }

    pub fn ip(mut self, ip: &str) -> Fwd {
        self.headers.retain(|(k, _)| k != "X-Forwarded-For");
        self.h("X-Forwarded-For", &format!("198.51.100.1, {ip}"))
    }

    pub fn without(mut self, name: &str) -> Fwd {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub async fn send(self, s: &Server) -> reqwest::Response {
        self.send_to(&s.url("/validate")).await
    }

    /// Sends to any `/validate` URL (owned arguments, so it can be spawned).
    pub async fn send_to(self, url: &str) -> reqwest::Response {
        self.send_with(&client(), url).await
    }

    /// [`Fwd::send_to`] on a client of the caller's (a load loop keeps its connections).
    pub async fn send_with(&self, c: &reqwest::Client, url: &str) -> reqwest::Response {
        let mut req = c.get(url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.send().await.unwrap()
    }

    /// Spawns the request; the handle yields the status.
    pub fn spawn_status(self, s: &Server) -> tokio::task::JoinHandle<u16> {
        let url = s.url("/validate");
        tokio::spawn(async move { self.send_to(&url).await.status().as_u16() })
    }
}

/// Status, headers and body of a response.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn h(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// [`Got::assert_denied`], and the `error_description`.
    pub fn assert_denied_with(&self, status: u16, error: &str, description: &str) {
        self.assert_denied(status, error);
        assert_eq!(
            self.json()["error_description"],
            description,
            "body: {}",
            self.body
        );
    }

    /// Asserts the exact denial shape of SPEC §3.4.
    pub fn assert_denied(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.h("content-type"), Some("application/json"));
        assert_eq!(self.h("cache-control"), Some("no-store"));
        assert!(self.body.len() < 512);
        assert_eq!(self.json()["error"], error, "body: {}", self.body);
        for name in gatepass_identity::headers::ALL {
            assert!(self.headers.get(name).is_none(), "{name} on a denial");
        }
    }
}

pub async fn got(r: reqwest::Response) -> Got {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

pub async fn validate(s: &Server, f: Fwd) -> Got {
    got(f.send(s).await).await
}

/// The status `/validate` answers `f` with.
pub async fn status_of(s: &Server, f: Fwd) -> u16 {
    validate(s, f).await.status
}

/// Asserts that `/validate` answers `f` with `want`.
pub async fn assert_status(s: &Server, f: Fwd, want: u16) {
    let what = format!("{:?}", f.headers);
    assert_eq!(status_of(s, f).await, want, "{what}");
}

impl Server {
    /// A plain GET to `path`.
    pub async fn get(&self, path: &str) -> Got {
        got(client().get(self.url(path)).send().await.unwrap()).await
    }

    /// `method /tickets`, with `bearer` as the token when given.
    pub async fn tickets(&self, method: reqwest::Method, bearer: Option<&str>) -> Got {
        let mut req = client().request(method, self.url("/tickets"));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        got(req.send().await.unwrap()).await
    }
}

/// Waits until a fresh token from `mint(n)` is accepted (fresh, so the token cache can't answer).
pub async fn eventually_accepted(s: &Server, what: &str, mut mint: impl FnMut(usize) -> String) {
    let mut n = 0;
    wait_for(Duration::from_secs(8), what, || {
        n += 1;
        let f = Fwd::get("/x").bearer(&mint(n));
        async move { f.send(s).await.status() == 200 }
    })
    .await;
}

/// Asserts the value of a metric line.
pub async fn assert_metric(s: &Server, series: &str, value: f64) {
    assert_eq!(metric(s, series).await, value, "{series}");
}

/// The value of a metric line (exact name and labels), 0 when absent.
pub async fn metric(s: &Server, series: &str) -> f64 {
    gatepass_testkit::metric(
        &gatepass_testkit::get_text(&s.url("/metrics")).await,
        series,
    )
}
