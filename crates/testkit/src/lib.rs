//! Helpers shared by the workspace's tests and benches: one polling helper, token minting, a
//! dev CA, a configurable stub HTTP server, metric reading, free ports, a background server
//! handle and process helpers, a real OpenID Provider ([`oidc`]) and an OTLP/HTTP trace
//! receiver ([`otlp`]). No dependency on gatepass or
//! mcp-status themselves.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub mod browser;
pub mod dpop;
pub mod ha;
pub mod oidc;
pub use oidc::OidcProvider;
pub mod otlp;
pub use otlp::OtlpReceiver;

// ---- polling -------------------------------------------------------------------------------

/// Polls `cond` every 20 ms until it holds; fails the test after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
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

// ---- tokens --------------------------------------------------------------------------------

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The standard claims of the tests: `sub` with `role`, `mcp:read`, valid for an hour.
pub fn claims(iss: &str, sub: &str, role: &str) -> Value {
    json!({
        "iss": iss,
        "sub": sub,
        "exp": now() + 3600,
        "iat": now(),
        "preferred_username": format!("{sub}-name"),
        "role": role,
        "permissions": ["mcp:read"],
    })
}

/// The signing key for `alg` from a private PEM (or the secret, for HMAC).
pub fn encoding_key(alg: Algorithm, pem_or_secret: &str) -> EncodingKey {
    let bytes = pem_or_secret.as_bytes();
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(bytes).expect("a non-empty HMAC secret")
        }
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(bytes).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes).unwrap(),
        _ => EncodingKey::from_rsa_pem(bytes).unwrap(),
    }
}

/// A JWT of `claims` signed with `alg`, `kid` in the header when given.
pub fn sign(alg: Algorithm, key: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, &encoding_key(alg, key)).unwrap()
}

/// An HS256 JWT of `claims`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign(Algorithm::HS256, secret, None, claims)
}

/// The public JWK (JSON) of a private key, with `kid` and `use = sig`.
pub fn jwk(alg: Algorithm, priv_pem: &str, kid: &str) -> Value {
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding_key(alg, priv_pem), alg).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = kid.into();
    v["use"] = "sig".into();
    v
}

/// A `{"keys": [...]}` document.
pub fn jwks(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

/// A fresh key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn keypair(alg: &'static rcgen::SignatureAlgorithm) -> (String, String) {
    let k = rcgen::KeyPair::generate_for(alg).expect("keygen");
    (k.serialize_pem(), k.public_key_pem())
}

// ---- dev CA --------------------------------------------------------------------------------

/// A private CA and a leaf certificate it signed for 127.0.0.1 and localhost.
pub struct DevCa {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl DevCa {
    /// `name` is the CA's common name: a subject of its own, so the leaf never looks
    /// self-signed (rcgen's default subject is the same for both).
    pub fn new(name: &str) -> DevCa {
        DevCa::with_clients(name, &[]).0
    }

    /// A CA as [`DevCa::new`], and a client certificate (and its key, PEM) it signed for each
    /// common name in `clients` (for mTLS).
    pub fn with_clients(name: &str, clients: &[&str]) -> (DevCa, Vec<(String, String)>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let issued = clients
            .iter()
            .map(|cn| {
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                params
                    .distinguished_name
                    .push(rcgen::DnType::CommonName, *cn);
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                let cert = params.signed_by(&key, &ca).unwrap();
                (cert.pem(), key.serialize_pem())
            })
            .collect();
        let ca_pem = DevCa {
            ca_pem: ca.pem(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        };
        (ca_pem, issued)
    }

    /// Writes the CA, the certificate and its key into `dir` under these names.
    pub fn write(&self, dir: &Path, ca: &str, cert: &str, key: &str) {
        std::fs::write(dir.join(ca), &self.ca_pem).unwrap();
        std::fs::write(dir.join(cert), &self.cert_pem).unwrap();
        std::fs::write(dir.join(key), &self.key_pem).unwrap();
    }
}

// ---- stub HTTP server ----------------------------------------------------------------------

#[derive(Default)]
struct StubState {
    status: AtomicU16,
    body: Mutex<String>,
    headers: Mutex<Vec<(String, String)>>,
    delay_ms: AtomicU64,
    echo: AtomicBool,
    hits: AtomicUsize,
    connections: AtomicUsize,
}

/// A controllable HTTP/1.1 server on 127.0.0.1: every request gets the current status, body
/// and headers after the current delay (or, in echo mode, its own path and headers as JSON).
/// Counts requests and accepted connections.
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    state: Arc<StubState>,
}

impl Stub {
    /// 200, empty body, no extra headers.
    pub async fn start() -> Stub {
        let state = Arc::new(StubState::default());
        state.status.store(200, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| respond(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        Stub { addr, state }
    }

    /// Answers every request with `{"path": ..., "headers": [[name, value], ...]}`.
    pub async fn echo() -> Stub {
        let s = Stub::start().await;
        s.state.echo.store(true, Ordering::SeqCst);
        s
    }

    /// Serves `body` as `application/json`.
    pub async fn json(body: impl Into<String>) -> Stub {
        let s = Stub::start().await;
        s.set_body(body)
            .set_header("content-type", "application/json");
        s
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn set_status(&self, status: u16) -> &Self {
        self.state.status.store(status, Ordering::SeqCst);
        self
    }

    pub fn set_body(&self, body: impl Into<String>) -> &Self {
        *self.state.body.lock().unwrap() = body.into();
        self
    }

    /// Sets (replaces) a response header; an empty value removes it.
    pub fn set_header(&self, name: &str, value: &str) -> &Self {
        let mut h = self.state.headers.lock().unwrap();
        h.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if !value.is_empty() {
            h.push((name.into(), value.into()));
        }
        self
    }

    pub fn set_delay(&self, delay: Duration) -> &Self {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self
    }

    /// Requests received.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

async fn respond(
    state: Arc<StubState>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.echo.load(Ordering::SeqCst) {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect();
        let body = json!({"path": req.uri().path(), "headers": headers}).to_string();
        return Ok(http::Response::new(Full::new(Bytes::from(body))));
    }
    let mut resp = http::Response::builder().status(state.status.load(Ordering::SeqCst));
    for (k, v) in state.headers.lock().unwrap().iter() {
        resp = resp.header(k.as_str(), v.as_str());
    }
    let body = state.body.lock().unwrap().clone();
    Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
}

// ---- Server-Sent Events stub ----------------------------------------------------------------

/// A response body fed through a channel; dropping the sender ends it.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// One request an [`SseStub`] received: its `Authorization` and `Last-Event-ID` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseRequest {
    pub authorization: Option<String>,
    pub last_event_id: Option<String>,
}

struct SseState {
    secret: String,
    /// 0: serve; else answer every request with this status (empty body).
    refuse: AtomicU16,
    streams: Mutex<Vec<tokio::sync::mpsc::Sender<Bytes>>>,
    requests: Mutex<Vec<SseRequest>>,
}

/// A Server-Sent Events feed on 127.0.0.1, shaped like gatepass's `GET /revocations`: a
/// request with `Authorization: Bearer <secret>` gets 200 `text/event-stream`, a comment line
/// at once, then every event [`SseStub::send`] pushes while it is open; any other bearer gets
/// 401. [`SseStub::refuse`] answers every request with a status instead, [`SseStub::stop`]
/// closes the port (and every open stream) and [`SseStub::restart`] reopens the same port.
pub struct SseStub {
    pub addr: SocketAddr,
    state: Arc<SseState>,
    /// The accept loop and every connection task, aborted by `stop` and on drop.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl SseStub {
    /// Serves on a fresh port, expecting `Bearer <secret>`.
    pub async fn start(secret: &str) -> SseStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = SseStub {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(SseState {
                secret: secret.to_owned(),
                refuse: AtomicU16::new(0),
                streams: Mutex::new(Vec::new()),
                requests: Mutex::new(Vec::new()),
            }),
            tasks: Mutex::new(Vec::new()),
        };
        stub.serve(listener);
        stub
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        /// Aborts the connection tasks when the accept loop ends or is aborted.
        struct Conns(Vec<tokio::task::AbortHandle>);
        impl Drop for Conns {
            fn drop(&mut self) {
                for c in &self.0 {
                    c.abort();
                }
            }
        }
        let state = self.state.clone();
        let accept = tokio::spawn(async move {
            let mut conns = Conns(Vec::new());
            while let Ok((sock, _)) = listener.accept().await {
                let state = state.clone();
                let conn = tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| sse_respond(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
                conns.0.retain(|c| !c.is_finished());
                conns.0.push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Writes `event` (SSE text, e.g. `Revocation::to_sse`) to every open stream; returns
    /// how many streams it reached.
    pub async fn send(&self, event: impl Into<String>) -> usize {
        let bytes = Bytes::from(event.into());
        let streams: Vec<_> = self.state.streams.lock().unwrap().clone();
        let mut reached = 0;
        for s in streams {
            if s.send(bytes.clone()).await.is_ok() {
                reached += 1;
            }
        }
        reached
    }

    /// Streams currently open (their client still connected).
    pub fn open_streams(&self) -> usize {
        let mut streams = self.state.streams.lock().unwrap();
        streams.retain(|s| !s.is_closed());
        streams.len()
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<SseRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// `Some(status)`: answer every new request with it; `None`: serve again. Open streams
    /// are left alone (see [`SseStub::end_streams`]).
    pub fn refuse(&self, status: Option<u16>) {
        self.state
            .refuse
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Ends every open stream (cleanly, as a server that closes the response).
    pub fn end_streams(&self) {
        self.state.streams.lock().unwrap().clear();
    }

    /// Closes the port and every connection: clients get connection refused until
    /// [`SseStub::restart`].
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.end_streams();
    }

    /// Listens on the same port again (after [`SseStub::stop`]).
    pub async fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot rebind {}: {e}",
                        self.addr
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for SseStub {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn sse_respond(
    state: Arc<SseState>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<ChanBody>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let seen = SseRequest {
        authorization: header("authorization"),
        last_event_id: header("last-event-id"),
    };
    let authorized = seen.authorization.as_deref() == Some(&format!("Bearer {}", state.secret));
    state.requests.lock().unwrap().push(seen);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let refuse = state.refuse.load(Ordering::SeqCst);
    let status = match (refuse, authorized) {
        (0, true) => 200,
        (0, false) => 401,
        (s, _) => s,
    };
    let mut resp = http::Response::builder().status(status);
    if status == 200 {
        resp = resp
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-store");
        // As gatepass does: a comment first (it is no event).
        let _ = tx.try_send(Bytes::from_static(b": stub feed\n\n"));
        state.streams.lock().unwrap().push(tx);
    } else {
        drop(tx);
    }
    Ok(resp.body(ChanBody(rx)).unwrap())
}

// ---- HTTP client and metrics ---------------------------------------------------------------

/// A client that never uses a proxy from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The status of a GET to `url`.
pub async fn get_status(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Sends `req` and returns the response body.
pub async fn body_text(req: reqwest::RequestBuilder) -> String {
    req.send().await.unwrap().text().await.unwrap()
}

/// The body of a GET to `url`.
pub async fn get_text(url: &str) -> String {
    body_text(client().get(url)).await
}

/// Writes `request` (raw bytes: what no HTTP client library would send, such as a request
/// without `Host`) to `addr` and reads the answer until the server closes (at most 10 s).
pub async fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "{addr} did not close within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

/// The rules of SPEC §3 that every test configuration shares.
pub const SPEC_RULES: &str = r#"[[rules]]
path = "/ws/mcp-status"
roles = ["admin", "developer", "dba", "super_admin"]
[[rules]]
path = "/api/v1/mcps"
methods = ["POST", "PUT", "DELETE"]
roles = ["admin", "super_admin"]
"#;

/// Waits until a GET to `url` answers 200.
pub async fn wait_for_200(timeout: Duration, what: &str, url: &str) {
    wait_for(timeout, what, || async { get_status(url).await == 200 }).await;
}

/// The value of one series (exact name and labels) in a Prometheus page; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

// ---- ports and background servers ----------------------------------------------------------

/// A port that was free a moment ago (for programs that cannot take port 0). Taken below the
/// kernel's ephemeral range, so no outgoing connection (of this test or another running beside
/// it) can be given it before the program binds it, and never the same one twice in a process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // `ip_local_port_range` is "low high"; outgoing connections take ports from it.
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST).max(1);
    // A different start per test process, so two binaries run back to back rarely meet.
    let start = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id()
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
        let port = FIRST + start.wrapping_add(n) % span;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap().port();
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resolves when the owning [`Background`] stops or is dropped.
pub struct Shutdown(tokio::sync::oneshot::Receiver<()>);

impl Future for Shutdown {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A server task on 127.0.0.1:0, stopped by its shutdown future (on `shutdown` or drop).
pub struct Background {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    /// Binds 127.0.0.1:0 and spawns `serve(listener, shutdown)`.
    pub async fn spawn<F, Fut>(serve: F) -> Background
    where
        F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, Shutdown(rx)));
        Background {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and waits (at most `drain`) for the task to finish.
    pub async fn shutdown(mut self, drain: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(drain, t)
                .await
                .expect("drained")
                .unwrap();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A temporary directory with `files` written, then `prepare` run on it, then `config`
/// written as `name`; returns the directory and the config's path.
pub fn config_dir(
    name: &str,
    config: &str,
    files: &[(&str, &str)],
    prepare: impl FnOnce(&Path),
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (file, contents) in files {
        std::fs::write(dir.path().join(file), contents).unwrap();
    }
    prepare(dir.path());
    let path = dir.path().join(name);
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

// ---- processes -----------------------------------------------------------------------------

/// The `127.0.0.1:PORT` named in a log line (text `addr=127.0.0.1:PORT` or JSON).
pub fn loopback_addr(line: &str) -> Option<String> {
    let at = line.find("127.0.0.1:")?;
    let port: String = line[at + 10..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
}

/// Sends `sig` (such as `-TERM`) to the process `pid`; true when `kill` succeeded.
pub fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits up to `timeout` for `child` to exit, polling every 10 ms.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then SIGKILL after `grace`; the exit status when it exited by itself.
pub fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    signal(child.id(), "-TERM");
    let status = wait_exit(child, grace);
    if status.is_none() {
        kill(child);
    }
    status
}

/// SIGKILL and reap, if still running.
pub fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A real `redis-server` (Debian's package) on 127.0.0.1 and a free port, with no
/// persistence; stopped by its PID on `stop` and on drop. `restart` keeps the port, so
/// clients can prove they reconnect by themselves.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one without a password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// Starts one that requires `password` (`requirepass`).
    pub fn start_with(password: Option<&str>) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            password: password.map(str::to_owned),
            child: None,
        };
        r.spawn();
        r
    }

    /// `redis://127.0.0.1:PORT/0` (no credentials in it).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make test installs Debian's redis-server)");
        self.child = Some(child);
        wait_redis(&format!("127.0.0.1:{}", self.port));
    }

    /// Freezes it (SIGSTOP): the port stays open and nothing is answered, as a stalled
    /// server; [`RedisServer::resume`] thaws it.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            assert!(signal(child.id(), "-STOP"), "cannot pause redis-server");
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.child {
            assert!(signal(child.id(), "-CONT"), "cannot resume redis-server");
        }
    }

    /// Stops it (SIGTERM, then SIGKILL) and waits until the port is closed.
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
    }

    /// Stops it and starts a fresh one (empty) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// Waits (blocking, up to 10 s) until the redis-server just started at `addr` serves: it
/// answers PING (a bare TCP accept can come before it serves).
pub(crate) fn wait_redis(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !redis_ping(addr) {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True when a Redis server at `addr` answers `PING` (`+PONG`, or `-NOAUTH` when it wants a
/// password: it is serving either way).
fn redis_ping(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper really starts, stops and restarts a server on one port.
    #[test]
    fn redis_server_starts_stops_and_restarts_on_its_port() {
        let mut r = RedisServer::start();
        let addr = format!("127.0.0.1:{}", r.port());
        assert!(redis_ping(&addr));
        assert_eq!(r.url(), format!("redis://{addr}/0"));
        r.stop();
        assert!(!redis_ping(&addr), "stopped");
        r.restart();
        assert!(redis_ping(&addr), "restarted on the same port");
    }
}
