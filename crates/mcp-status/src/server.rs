//! HTTP routes (SPEC §4.2), the WebSocket upgrade, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatepass_identity::headers;
use gatepass_service::{telemetry, Server};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_tungstenite::tungstenite::protocol::WebSocketConfig;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::Instrument;

pub use crate::app::App;
use crate::auth::{Denied, User};
use crate::broadcast::{close, CloseReason, View};
use crate::config::{Config, ConfigError, OnUnavailable};
use crate::health::ChangeError;
use crate::ws::{self, Audit};

pub type Body = Full<Bytes>;

/// The subprotocol marker gatepass uses; selected when offered, the token entry never is.
pub const MARKER: &str = gatepass_identity::WEBSOCKET_PROTOCOL_MARKER;

/// Upper bound of each shutdown phase (HTTP connections, then WebSocket tasks).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const DASHBOARD: &str = include_str!("../assets/dashboard.html");

/// The page as served behind gatepass's sign-in (SPEC §9): the request came through the
/// forwardAuth middleware with an identity, so the page asks `/_gatepass/session` who it is. A
/// hint only (the socket and the API check the identity for real); without it the page never
/// probes a sign-in endpoint that is not there.
static SIGNED_IN_DASHBOARD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    DASHBOARD.replacen(
        "<meta charset=\"utf-8\">",
        "<meta charset=\"utf-8\">\n<meta name=\"gatepass-session\" content=\"1\">",
        1,
    )
});

impl App {
    /// Routes a request; with telemetry on, the WebSocket handshake and every `/api/v1/` call
    /// get a span continuing the `traceparent` Traefik sent (its ReverseProxy span).
    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if !telemetry::enabled() {
            return self.route(req, peer).await;
        }
        let path = req.uri().path();
        let method = req.method().as_str();
        let span = if path == "/ws/mcp-status" {
            tracing::info_span!(
                "mcp_status.upgrade",
                otel.kind = "server",
                http.request.method = method,
                url.path = path,
                mcp_status.verdict = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            )
        } else if path.starts_with("/api/v1/") {
            tracing::info_span!(
                "mcp_status.api",
                otel.kind = "server",
                http.request.method = method,
                url.path = path,
                http.response.status_code = tracing::field::Empty,
            )
        } else {
            return self.route(req, peer).await;
        };
        telemetry::continue_trace(&span, req.headers());
        let resp = self.route(req, peer).instrument(span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        resp
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        match (req.method(), path) {
            (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
                let signed_in = req
                    .headers()
                    .get(gatepass_identity::headers::USER_ID)
                    .is_some_and(|v| !v.is_empty());
                let page = if signed_in {
                    SIGNED_IN_DASHBOARD.as_str()
                } else {
                    DASHBOARD
                };
                let mut r = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
                let h = r.headers_mut();
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(
                    "content-security-policy",
                    HeaderValue::from_static("default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:"),
                );
                r
            }
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/metrics") => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            (_, "/ws/mcp-status") => self.upgrade(req, peer),
            (&Method::GET, "/api/v1/mcps") => match self.api_user(req.headers()) {
                Ok(u) => json_response(
                    StatusCode::OK,
                    json!({"mcps": self.registry.snapshot(u.view)}),
                ),
                Err(d) => Self::denied(d),
            },
            (&Method::GET, "/api/v1/me") => match self.api_user(req.headers()) {
                Ok(u) => json_response(
                    StatusCode::OK,
                    json!({"id": u.identity.id, "username": u.identity.username,
                        "role": u.identity.role, "admin": u.admin, "full_view": u.view == View::Full}),
                ),
                Err(d) => Self::denied(d),
            },
            (&Method::POST, p) if p.starts_with("/api/v1/mcps/") => {
                self.api_change(req.headers(), p).await
            }
            (_, p) => match allowed_methods(p) {
                Some(allow) => {
                    let mut r = json_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        json!({"error": "method_not_allowed", "error_description": format!("use {allow}")}),
                    );
                    r.headers_mut()
                        .insert(ALLOW, HeaderValue::from_static(allow));
                    r
                }
                None => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
            },
        }
    }

    /// 200 once the assertion keys (when required) are loaded and, with `on_unavailable =
    /// "deny"`, Redis answers; else 503 naming what is missing. Says whether the shared state
    /// is reachable and whether this replica polls MCP health.
    fn readyz(&self) -> Response<Body> {
        let state_up = self.shared.as_ref().is_none_or(|r| r.is_up());
        let deny = self.config.state.on_unavailable == OnUnavailable::Deny;
        let mut body = json!({
            "status": "ok",
            "state": if state_up { "ok" } else { "unavailable" },
            "poller": if self.registry.is_polling() { "active" } else { "standby" },
        });
        if let Some(master) = self.shared.as_ref().and_then(|r| r.master()) {
            body["state_master"] = master.into();
        }
        if !self.auth.ready() {
            body["assertion_keys"] = "not loaded".into();
        }
        if self.auth.ready() && (state_up || !deny) {
            json_response(StatusCode::OK, body)
        } else {
            body["status"] = "unavailable".into();
            json_response(StatusCode::SERVICE_UNAVAILABLE, body)
        }
    }

    fn host(h: &HeaderMap) -> &str {
        h.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn api_user(&self, h: &HeaderMap) -> Result<User, Denied> {
        let identity = self.auth.identify(h, Self::host(h))?;
        self.auth.authorize(identity)
    }

    /// `api_user` for a state-changing call with `method`: an assertion issued for another
    /// method, or replayed, is refused.
    fn api_user_once(&self, h: &HeaderMap, method: &str) -> Result<User, Denied> {
        let identity = self.auth.identify_once(h, Self::host(h), method)?;
        self.auth.authorize(identity)
    }

    /// The API's answer to a refused caller, in gatepass's vocabulary (RFC 6750 codes).
    fn denied(d: Denied) -> Response<Body> {
        match d {
            Denied::Forbidden => json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "insufficient_scope", "error_description": "role not allowed for this route"}),
            ),
            Denied::Unauthenticated | Denied::Expired => json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "error_description": "authentication required"}),
            ),
            Denied::Unavailable => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "temporarily_unavailable", "error_description": "assertion keys are not loaded yet"}),
            ),
        }
    }

    async fn api_change(&self, h: &HeaderMap, path: &str) -> Response<Body> {
        let rest = &path["/api/v1/mcps/".len()..];
        let (name, enable) = match rest.rsplit_once('/') {
            Some((n, "enable")) => (n, true),
            Some((n, "disable")) => (n, false),
            _ => return json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        };
        let user = match self.api_user_once(h, "POST") {
            Ok(u) => u,
            Err(d) => return Self::denied(d),
        };
        if !user.admin {
            return json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "insufficient_scope", "error_description": "admin role required"}),
            );
        }
        match self
            .registry
            .set_manual(name, enable, &user.identity.username)
            .await
        {
            Ok(m) => {
                tracing::info!(mcp = name, enable, by = %user.identity.id, "manual state change");
                json_response(StatusCode::OK, m.to_json(user.view))
            }
            Err(ChangeError::NotFound) => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "error_description": "no such MCP"}),
            ),
            Err(ChangeError::Unavailable) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "temporarily_unavailable", "error_description": "shared state is unavailable; retry"}),
            ),
        }
    }

    /// Runs the handshake checks, in order: identity (and assertion), origin, role.
    fn verdict(&self, h: &HeaderMap) -> Result<User, CloseReason> {
        let user = self.auth.user(h, Self::host(h));
        if let Err(d @ (Denied::Unauthenticated | Denied::Expired | Denied::Unavailable)) = user {
            return Err(match d {
                Denied::Expired => close::EXPIRED,
                _ => close::AUTH,
            });
        }
        let origin = h.get("origin").and_then(|v| v.to_str().ok());
        if !self.auth.origin_allowed(origin) {
            return Err(close::ORIGIN);
        }
        user.map_err(|_| close::FORBIDDEN)
    }

    fn upgrade(self: Arc<Self>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        // Without the assertion keys nobody can be checked: refuse the handshake with 503
        // (retry later) rather than accept and close it as unauthenticated.
        if !self.auth.ready() {
            return Self::denied(Denied::Unavailable);
        }
        let offered_marker = gatepass_identity::offers_subprotocol(req.headers(), MARKER);
        let h = req.headers();
        let verdict = self.verdict(h);
        if telemetry::enabled() {
            // `accept`, or the close code the socket gets right after the handshake.
            let span = tracing::Span::current();
            match &verdict {
                Ok(_) => span.record("mcp_status.verdict", "accept"),
                Err(c) => span.record("mcp_status.verdict", c.code.to_string().as_str()),
            };
        }
        let header = |n: &str| {
            h.get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let audit = Audit {
            user: header(headers::USER_ID),
            role: header(headers::USER_ROLE),
            origin: header("origin"),
            client_ip: header("x-forwarded-for")
                .rsplit(',')
                .next()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| peer.ip().to_string()),
        };
        let max = self.config.limits.max_message_bytes;
        // Small buffers: tungstenite's 128 KiB defaults would cost ~256 KiB per idle socket.
        let cfg = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max))
            .read_buffer_size(4 * 1024)
            .write_buffer_size(0);
        let (mut resp, fut) = match hyper_tungstenite::upgrade(&mut req, Some(cfg)) {
            Ok(x) => x,
            Err(_) => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_request", "error_description": "WebSocket upgrade required"}),
                )
            }
        };
        if offered_marker {
            resp.headers_mut()
                .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(MARKER));
        }
        let app = self.clone();
        let guard = self.ws_tasks.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            if let Ok(ws) = fut.await {
                ws::serve(app, ws, verdict, audit).await;
            }
        });
        resp
    }
}

/// The methods a known path accepts, for a 405's `Allow`.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/" | "/index.html" => Some("GET, HEAD"),
        "/healthz" | "/readyz" | "/metrics" | "/api/v1/mcps" | "/api/v1/me" => Some("GET"),
        p if p.starts_with("/api/v1/mcps/")
            && (p.ends_with("/enable") || p.ends_with("/disable")) =>
        {
            Some("POST")
        }
        _ => None,
    }
}

pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Serves until `shutdown`, then closes every socket with 1001 and drains.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let svc_app = app.clone();
    let draining = Server::new(move |req, peer, _| svc_app.clone().handle(req, peer))
        .with_upgrades()
        .serve(listener, shutdown)
        .await;
    // First, so another replica takes the health poller over while this one drains.
    app.registry.stop_polling().await;
    app.hub.close_all(close::SHUTDOWN);
    draining.drain(DRAIN_TIMEOUT).await;
    // Wait for WebSocket tasks (each has sent its 1001 and seen the client's reply, or given
    // up): `closed` completes once every task's receiver is dropped, at once with none.
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, app.ws_tasks.closed()).await;
}

/// Entry point shared by `main` and the tests.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let app = App::new(config)?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, mcps = app.config.mcps.len(), "mcp-status listening");
    }
    serve(listener, app, shutdown).await;
    Ok(())
}
