//! Test harness: real gatepass `run` on 127.0.0.1:0, real keys, real HTTP clients, and the
//! exact headers Traefik sends to a forwardAuth address (SPEC §2).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

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

fn pair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let k = rcgen::KeyPair::generate_for(alg).expect("keygen");
    (k.serialize_pem(), k.public_key_pem())
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

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Standard claims for `sub` with `role`.
pub fn claims(sub: &str, role: &str) -> Value {
    json!({
        "iss": ISS,
        "sub": sub,
        "exp": now() + 3600,
        "iat": now(),
        "preferred_username": format!("{sub}-name"),
        "role": role,
        "permissions": ["mcp:read"],
    })
}

pub fn encoding_key(alg: Algorithm, pem_or_secret: &str) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(pem_or_secret.as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(pem_or_secret.as_bytes()).unwrap()
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem_or_secret.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem_or_secret.as_bytes()).unwrap(),
    }
}

pub fn sign_with(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &encoding_key(alg, key)).unwrap()
}

/// HS256 token for the default `local` issuer.
pub fn hs(claims: &Value) -> String {
    sign_with(Algorithm::HS256, HS_SECRET, None, claims)
}

/// A JWK (JSON) for a private key, with `kid`.
pub fn jwk(alg: Algorithm, priv_pem: &str, kid: &str) -> Value {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg, priv_pem), alg).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = kid.into();
    v["use"] = "sig".into();
    v
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
[[rules]]
path = "/ws/mcp-status"
roles = ["admin", "developer", "dba", "super_admin"]
[[rules]]
path = "/api/v1/mcps"
methods = ["POST", "PUT", "DELETE"]
roles = ["admin", "super_admin"]
[[rules]]
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
    .to_string()
}

/// A running gatepass.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub app: std::sync::Arc<gatepass::App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(35), t)
                .await
                .expect("drained")
                .unwrap();
        }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Writes the key files and `config`, loads it, and serves on 127.0.0.1:0.
pub async fn start(config: &str) -> Server {
    start_with(config, |_| {}).await
}

pub async fn start_with(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    std::fs::write(dir.path().join("hs256.key"), format!("{HS_SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("assertion.pem"), &k.assertion_key).unwrap();
    std::fs::write(dir.path().join("rsa.pub.pem"), &k.rsa_pub).unwrap();
    std::fs::write(dir.path().join("ec256.pub.pem"), &k.ec256_pub).unwrap();
    std::fs::write(dir.path().join("ec384.pub.pem"), &k.ec384_pub).unwrap();
    std::fs::write(dir.path().join("ed.pub.pem"), &k.ed_pub).unwrap();
    prepare(dir.path());
    let path = dir.path().join("gatepass.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = gatepass::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let app = gatepass::App::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve_app = app.clone();
    let task = tokio::spawn(async move {
        gatepass::serve(listener, serve_app, async {
            let _ = rx.await;
        })
        .await
    });
    Server {
        addr,
        dir,
        app,
        stop: Some(tx),
        task: Some(task),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
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
        let mut req = client().get(url);
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

/// Polls `cond` until it holds, failing after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
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

/// The value of a metric line (exact name and labels), 0 when absent.
pub async fn metric(s: &Server, series: &str) -> f64 {
    let text = client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
