//! Harness: mcp-status `serve` on 127.0.0.1:0, real tokio-tungstenite clients, demo MCPs.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gatepass_identity::{headers, AssertionSigner, Identity};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub app: Arc<mcp_status::App>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("drained")
                .unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub async fn start(config: &str) -> Server {
    start_with(config, |_| {}).await
}

pub async fn start_with(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    prepare(dir.path());
    let path = dir.path().join("mcp-status.toml");
    std::fs::write(&path, config).unwrap();
    let cfg = mcp_status::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let app = mcp_status::App::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = app.clone();
    let task = tokio::spawn(async move {
        mcp_status::serve(listener, a, async {
            let _ = rx.await;
        })
        .await
    });
    Server {
        addr,
        app,
        dir,
        stop: Some(tx),
        task: Some(task),
    }
}

/// Identity headers as gatepass sets them.
#[derive(Clone)]
pub struct Who {
    pub identity: Identity,
    pub extra: Vec<(String, String)>,
}

pub fn who(id: &str, role: &str) -> Who {
    Who {
        identity: Identity {
            id: id.into(),
            username: format!("{id}-name"),
            role: role.into(),
            permissions: vec!["mcp:read".into()],
            expires: Some(now() + 3600),
        },
        extra: Vec::new(),
    }
}

impl Who {
    pub fn h(mut self, k: &str, v: &str) -> Who {
        self.extra.push((k.into(), v.into()));
        self
    }

    pub fn expires(mut self, exp: u64) -> Who {
        self.identity.expires = Some(exp);
        self
    }

    /// Adds `X-User-Assertion` signed by `signer` for `aud`.
    pub fn asserted(self, signer: &AssertionSigner, aud: &str) -> Who {
        let a = signer
            .sign(&self.identity, aud, now(), Duration::from_secs(60))
            .unwrap();
        self.h(headers::USER_ASSERTION, &a)
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = headers::IDENTITY
            .iter()
            .zip(self.identity.header_values())
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        out.extend(self.extra.iter().cloned());
        out
    }
}

/// No identity headers at all.
pub fn nobody() -> Vec<(String, String)> {
    Vec::new()
}

/// Connects with these headers; returns the socket and the selected subprotocol.
pub async fn connect(s: &Server, headers: &[(String, String)]) -> (Ws, Option<String>) {
    let mut req = format!("ws://{}/ws/mcp-status", s.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), 101);
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, proto)
}

/// Next text message as JSON: pings, pongs and the per-poll `health_check` skipped, so a
/// test about other messages never races the poller.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let v = next_any_json(ws).await;
        if v["type"] != "health_check" {
            return v;
        }
    }
}

/// Next text message as JSON, `health_check` included (pings and pongs skipped).
pub async fn next_any_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended")
            .expect("read error");
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the close frame; returns (code, reason).
pub async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("timed out waiting for close");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// Reads JSON messages until one satisfies `pred`.
pub async fn until(ws: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let v = next_any_json(ws).await;
        if pred(&v) {
            return v;
        }
    }
}

pub async fn send_text(ws: &mut Ws, t: &str) {
    ws.send(Message::Text(t.into())).await.unwrap();
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A demo MCP health endpoint; returns its health URL and its switch.
pub async fn demo_mcp(healthy: bool) -> (String, mcp_status::demo::Switch) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let switch = mcp_status::demo::Switch::new(healthy);
    tokio::spawn(mcp_status::demo::serve(listener, switch.clone(), None));
    (format!("http://{addr}/health"), switch)
}

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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn metrics(s: &Server) -> String {
    client()
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series (exact name and labels) in a metrics page; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// The Ed25519 public key of `signer` as an SPKI PEM (what operators point
/// `assertion_public_key_file` at).
pub fn public_pem(signer: &AssertionSigner) -> String {
    use base64::Engine;
    let jwks: serde_json::Value = serde_json::from_str(signer.jwks_json()).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(&x);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}
