//! Harness: mcp-status `serve` on 127.0.0.1:0, real tokio-tungstenite clients, demo MCPs.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatepass_testkit::Background;
pub use gatepass_testkit::{client, metric as metric_value, now, wait_for};

use futures_util::{SinkExt, StreamExt};
use gatepass_identity::{headers, AssertionSigner, Identity};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The issuer the test assertions name (`iss`).
pub const ISS: &str = "https://auth.example.test";

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub app: Arc<mcp_status::App>,
    pub dir: tempfile::TempDir,
    bg: Background,
}

impl Server {
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
    pub fn url(&self, path: &str) -> String {
        self.bg.url(path)
    }
    pub async fn shutdown(self) {
        self.bg.shutdown(Duration::from_secs(30)).await
    }
}

pub async fn start(config: &str) -> Server {
    start_with(config, |_| {}).await
}

pub async fn start_with(config: &str, prepare: impl FnOnce(&std::path::Path)) -> Server {
    let (dir, path) = gatepass_testkit::config_dir("mcp-status.toml", config, &[], prepare);
    let cfg = mcp_status::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let app = mcp_status::App::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let a = app.clone();
    let bg = Background::spawn(|listener, stop| mcp_status::serve(listener, a, stop)).await;
    Server {
        addr: bg.addr,
        app,
        dir,
        bg,
    }
}

/// An assertion signer with a fresh Ed25519 key.
pub fn signer() -> AssertionSigner {
    let pem = gatepass_identity::generate_ed25519_pkcs8_pem().unwrap();
    AssertionSigner::from_pkcs8_pem(pem.as_bytes()).unwrap()
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

    /// Adds `X-User-Assertion` signed by `signer` for `aud`, issued for a POST (good for
    /// reads too: a downstream checks `htm` on state-changing requests only).
    pub fn asserted(self, signer: &AssertionSigner, aud: &str) -> Who {
        self.asserted_for(signer, aud, "POST")
    }

    /// Adds `X-User-Assertion` signed by `signer` for `aud`, issued for `method` (`htm`).
    pub fn asserted_for(self, signer: &AssertionSigner, aud: &str, method: &str) -> Who {
        let a = signer
            .sign(&self.identity, aud, method, now(), Duration::from_secs(60))
            .unwrap();
        self.h(headers::USER_ASSERTION, &a)
    }

    /// Adds `X-User-Assertion` signed by `signer` for `aud`, carrying the token's session id
    /// (`sid`), `jti` (`tid`) and issuer [`ISS`], as gatepass signs it for a token that has
    /// them.
    pub fn asserted_ids(
        self,
        signer: &AssertionSigner,
        aud: &str,
        sid: Option<&str>,
        tid: Option<&str>,
    ) -> Who {
        self.asserted_by(signer, aud, ISS, sid, tid)
    }

    /// [`Who::asserted_ids`] for a token of issuer `iss`.
    pub fn asserted_by(
        self,
        signer: &AssertionSigner,
        aud: &str,
        iss: &str,
        sid: Option<&str>,
        tid: Option<&str>,
    ) -> Who {
        let ids = gatepass_identity::TokenIds {
            sid,
            tid,
            iss: Some(iss),
            jkt: None,
        };
        let a = signer
            .sign_with_ids(
                &self.identity,
                ids,
                aud,
                "GET",
                now(),
                Duration::from_secs(60),
            )
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
    try_connect(s, headers)
        .await
        .unwrap_or_else(|status| panic!("handshake refused with {status}"))
}

/// Connects with these headers; `Err(status)` when the upgrade is refused.
pub async fn try_connect(
    s: &Server,
    headers: &[(String, String)],
) -> Result<(Ws, Option<String>), u16> {
    let mut req = format!("ws://{}/ws/mcp-status", s.addr)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (ws, resp) = match tokio_tungstenite::connect_async(req).await {
        Ok(x) => x,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            return Err(resp.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    };
    assert_eq!(resp.status(), 101);
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, proto))
}

/// Connects as `w` and reads the first message (skipping `health_check`s).
pub async fn socket(s: &Server, w: &Who) -> (Ws, Value) {
    let (mut ws, _) = connect(s, &w.headers()).await;
    let first = next_json(&mut ws).await;
    (ws, first)
}

/// Connects as `w` and asserts the server closes with `code` and `reason`.
pub async fn assert_closed(s: &Server, headers: &[(String, String)], code: u16, reason: &str) {
    let (mut ws, _) = connect(s, headers).await;
    assert_eq!(closed(&mut ws).await, (code, reason.into()));
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

/// Reads messages until one of type `ty`.
pub async fn until_type(ws: &mut Ws, what: &str, ty: &str) -> Value {
    until(ws, what, |v| v["type"] == ty).await
}

pub async fn send_text(ws: &mut Ws, t: &str) {
    ws.send(Message::Text(t.into())).await.unwrap();
}

/// A demo MCP health endpoint; returns its health URL and its switch.
pub async fn demo_mcp(healthy: bool) -> (String, mcp_status::demo::Switch) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let switch = mcp_status::demo::Switch::new(healthy);
    tokio::spawn(mcp_status::demo::serve(listener, switch.clone(), None));
    (format!("http://{addr}/health"), switch)
}

pub async fn metrics(s: &Server) -> String {
    gatepass_testkit::get_text(&s.url("/metrics")).await
}

/// Waits (at most `timeout`) until `/readyz` is 200.
pub async fn wait_ready(s: &Server, timeout: Duration, what: &str) {
    gatepass_testkit::wait_for_200(timeout, what, &s.url("/readyz")).await;
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
