//! The HTTP server: endpoints (SPEC §3.3), TLS with h2 + http/1.1 ALPN, plain HTTP/1.1 and h2c,
//! reload and graceful shutdown. `/validate` and `/tickets` are answered here from `decision`;
//! the revocation endpoints are in `revocations`.
//!
//! Imports: anything (this is the top); nothing imports it but `lib.rs`.

pub mod revocations;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gatepass_service::{telemetry, Server, Transport};
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use metrics::Label;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::{Config, ConfigError};
use crate::decision::Ctx;
use crate::decision::{Decision, Denial};
use crate::metrics::Metrics;
use crate::policy::deny::{json_response, Body, DenyReason};
use crate::policy::rules::Matched;
use crate::session::Sessions;
use crate::state::State;
use http_body_util::Either;
use revocations::ServerBody;

/// Longer than Traefik's 90 s idle pool timeout, so gatepass never closes a connection that
/// Traefik is about to reuse. For HTTP/1 this is also the header read timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed for in-flight requests on shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted.
const MAX_HEADER_BYTES: usize = 256 * 1024;

/// A running gatepass: the current state (swapped on reload) and the metrics.
pub struct App {
    state: Arc<ArcSwap<State>>,
    pub metrics: Metrics,
}

impl App {
    /// Builds the state from `config` and starts its background tasks.
    pub fn new(config: Config) -> Result<Arc<App>, ConfigError> {
        let metrics = Metrics::new();
        let state = State::build(config, &metrics)?;
        let app = Arc::new(App {
            state: Arc::new(ArcSwap::from_pointee(state)),
            metrics,
        });
        app.state.load().start(Arc::downgrade(&app.state));
        let weak = Arc::downgrade(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                app.metrics.upkeep();
            }
        });
        Ok(app)
    }

    fn install(&self, state: State) {
        let state = Arc::new(state);
        state.start(Arc::downgrade(&self.state));
        self.state.store(state);
    }

    /// Replaces config, keys and limits; on error the current state stays.
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        if config.telemetry != self.state().config.telemetry {
            tracing::warn!("[telemetry] changes take effect at the next start");
        }
        let state = State::build_after(config, &self.metrics, Some(&self.state()))?;
        self.install(state);
        Ok(())
    }

    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ServerBody> {
        let path = match req.uri().path() {
            // Also under /auth/, as Traefik's public routes name them.
            "/auth/revocations" => "/revocations",
            "/auth/backchannel-logout" => "/backchannel-logout",
            p => p,
        };
        match (path, req.method()) {
            ("/revocations", &Method::GET) => {
                let state = self.state();
                return revocations::feed(&state, req.headers(), peer.ip(), &self.metrics).await;
            }
            ("/revocations", &Method::POST) => {
                let (parts, body) = req.into_parts();
                let state = self.state();
                let r = revocations::post(&state, &parts.headers, body, peer.ip(), &self.metrics);
                return r.await.map(Either::Left);
            }
            ("/backchannel-logout", &Method::POST) => {
                let state = self.state();
                let (parts, body) = req.into_parts();
                let r = revocations::backchannel(
                    &state,
                    &parts.headers,
                    body,
                    peer.ip(),
                    &self.metrics,
                );
                return r.await.map(Either::Left);
            }
            ("/revocations", _) => return method_not_allowed("GET, POST").map(Either::Left),
            ("/backchannel-logout", _) => return method_not_allowed("POST").map(Either::Left),
            _ => {}
        }
        self.handle_whole(req, peer).await.map(Either::Left)
    }

    async fn handle_whole(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let state = self.state();
        if let Some(sessions) = &state.sessions {
            if let Some(page) = req.uri().path().strip_prefix(sessions.cfg.prefix.as_str()) {
                return signin(sessions, &req, page).await;
            }
        }
        match req.uri().path() {
            "/validate" => {
                let start = Instant::now();
                // No per-request timer: the only wait inside is a JWKS refetch, itself bounded
                // by `fetch_timeout`.
                let resp = self.validate(&req).await;
                self.metrics.latency.record(start.elapsed().as_secs_f64());
                resp
            }
            "/tickets" | "/auth/tickets" => {
                if req.method() != Method::POST {
                    return method_not_allowed("POST");
                }
                self.ticket(&req, peer).await
            }
            "/.well-known/jwks.json" => match &self.state().assertion {
                Some((signer, _)) => {
                    let mut r = json_response(StatusCode::OK, signer.jwks_json().to_owned());
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/jwk-set+json"),
                    );
                    r.headers_mut().insert(
                        CACHE_CONTROL,
                        HeaderValue::from_static("public, max-age=300"),
                    );
                    r
                }
                None => json_response(
                    StatusCode::NOT_FOUND,
                    r#"{"error":"not_found","error_description":"no [assertion] configured"}"#,
                ),
            },
            "/healthz" => json_response(StatusCode::OK, r#"{"status":"ok"}"#),
            p if p.starts_with("/.well-known/oauth-protected-resource") => {
                match self.state().rules.resource_metadata(p) {
                    Some(r) => {
                        let mut resp = json_response(StatusCode::OK, r.metadata.clone());
                        resp.headers_mut().insert(
                            CACHE_CONTROL,
                            HeaderValue::from_static("public, max-age=300"),
                        );
                        resp
                    }
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        r#"{"error":"not_found","error_description":"no [[resources]] with this path"}"#,
                    ),
                }
            }
            "/readyz" => {
                let state = self.state();
                let missing = state.unready_issuers();
                let shared = state.state_status();
                let saved = state.saved_state_issuers();
                let ready = missing.is_empty() && !state.state_blocks_readiness();
                // Members in a fixed order: status first.
                let mut extra = String::new();
                if let Some(master) = state.state_master() {
                    extra = format!(r#","state_master":{}"#, serde_json::json!(master));
                }
                if !saved.is_empty() {
                    extra += &format!(r#","keys_from_saved_state":{}"#, serde_json::json!(saved));
                }
                if ready {
                    let body = format!(r#"{{"status":"ready","state":"{shared}"{extra}}}"#);
                    json_response(StatusCode::OK, body)
                } else {
                    let body = format!(
                        r#"{{"status":"unavailable","issuers_without_keys":{},"state":"{shared}"{extra}}}"#,
                        serde_json::json!(missing)
                    );
                    json_response(StatusCode::SERVICE_UNAVAILABLE, body)
                }
            }
            "/metrics" => {
                let state = self.state();
                for issuer in &state.verifier.issuers {
                    if let Some(age) = issuer.keys.age() {
                        self.metrics
                            .gauge(
                                "gatepass_jwks_key_age_seconds",
                                vec![Label::new("issuer", issuer.name.clone())],
                            )
                            .set(age.as_secs_f64());
                    }
                }
                self.metrics
                    .gauge("gatepass_token_cache_entries", vec![])
                    .set(state.verifier.cached() as f64);
                let mut r = Response::new(Full::new(Bytes::from(self.metrics.render())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            _ => json_response(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
        }
    }

    async fn validate(&self, req: &Request<Incoming>) -> Response<Body> {
        if !telemetry::enabled() {
            return self.answer(req, &tracing::Span::none()).await;
        }
        // One span per decision, continuing the trace Traefik's AuthRequest span started.
        // Its attributes never carry a token or a header value.
        let span = tracing::info_span!(
            "gatepass.decision",
            otel.kind = "server",
            gatepass.outcome = tracing::field::Empty,
            gatepass.deny_reason = tracing::field::Empty,
            gatepass.cache_hit = false,
            gatepass.rule = tracing::field::Empty,
            gatepass.issuer = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        telemetry::continue_trace(&span, req.headers());
        let resp = self.answer(req, &span).instrument(span.clone()).await;
        span.record("http.response.status_code", resp.status().as_u16());
        resp
    }

    /// The decision and its response; its outcome (and, when tracing, the matched rule) is
    /// recorded on `span`.
    async fn answer(&self, req: &Request<Incoming>, span: &tracing::Span) -> Response<Body> {
        // A guard, not a clone: no write to the shared reference count on every request.
        let state = self.state.load();
        if !span.is_disabled() {
            let h = req.headers();
            if let Some(ctx) = Ctx::parse(h, &state.config.rate_limit.trusted_proxies) {
                // The configured path, `(default)` for the authenticated default rule.
                let rule = match state.rules.find(ctx.host, ctx.uri, ctx.method) {
                    Matched::Rule(r) => r.path.as_str(),
                    Matched::DefaultDeny => "(default deny)",
                };
                span.record("gatepass.rule", rule);
            }
        }
        match state.decide(req.headers(), &self.metrics).await {
            Decision::Allow(v) => {
                span.record("gatepass.outcome", "allow");
                self.metrics.allowed.increment(1);
                state.allow(req.headers(), v.as_deref())
            }
            Decision::Deny(d) => {
                span.record("gatepass.outcome", "deny");
                span.record("gatepass.deny_reason", d.reason.code());
                if let Some(page) = state.page(req.headers(), &d) {
                    self.metrics.denied(d.reason);
                    return page;
                }
                self.denied(&state, req.headers(), &d)
            }
            Decision::SignIn(r) => {
                span.record("gatepass.outcome", "signin");
                self.metrics.signin_redirects.increment(1);
                r
            }
        }
    }

    /// `POST /tickets`: a valid bearer token buys a one-time WebSocket ticket.
    async fn ticket(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let state = self.state();
        let verified = match state
            .decide_bearer(req.headers(), peer.ip(), "/tickets")
            .await
        {
            Decision::Allow(Some(v)) => v,
            Decision::Allow(None) | Decision::SignIn(_) => {
                return self.deny(DenyReason::MissingToken, None)
            }
            // A DPoP failure's challenge names the algorithms (SPEC §10).
            Decision::Deny(d) => return self.denied(&state, req.headers(), &d),
        };
        let Ok(ticket) = state.tickets.issue(verified).await else {
            return self.deny(DenyReason::StateUnavailable, None);
        };
        self.metrics.tickets_issued.increment(1);
        let body = serde_json::json!({"ticket": ticket, "expires_in": state.tickets.ttl_secs});
        json_response(StatusCode::OK, body.to_string())
    }

    /// A denial of a decision: counted, with the challenge the request calls for (a protected
    /// resource's metadata and scope, DPoP's algorithms and nonce).
    fn denied(&self, state: &State, h: &http::HeaderMap, d: &Denial) -> Response<Body> {
        self.metrics.denied(d.reason);
        let challenge = state.challenge(h, d.reason);
        d.reason.response_for(d.retry_after, &challenge)
    }

    fn deny(&self, reason: DenyReason, retry: Option<u64>) -> Response<Body> {
        self.metrics.denied(reason);
        reason.response(retry)
    }
}

/// The sign-in endpoints under `[signin] prefix` (SPEC §9), which Traefik routes straight to
/// gatepass: `/callback`, `/signin`, `/logout`, `/session`.
async fn signin(sessions: &Arc<Sessions>, req: &Request<Incoming>, page: &str) -> Response<Body> {
    let (h, query) = (req.headers(), req.uri().query().unwrap_or(""));
    match (page, req.method()) {
        ("/callback", &Method::GET) => sessions.callback(h, query).await,
        ("/signin", &Method::GET) => sessions.signin(h, query),
        ("/logout", &Method::GET | &Method::POST) => sessions.logout(h, req.method()).await,
        ("/session", &Method::GET) => sessions.info(h).await,
        ("/callback" | "/signin" | "/session", _) => method_not_allowed("GET"),
        ("/logout", _) => method_not_allowed("GET, POST"),
        _ => json_response(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
    }
}

/// 405 naming the methods `allow`ed.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let body = format!(r#"{{"error":"invalid_request","error_description":"use {allow}"}}"#);
    let mut r = json_response(StatusCode::METHOD_NOT_ALLOWED, body);
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = gatepass_service::server::builder(IDLE_TIMEOUT);
    b.http1().keep_alive(true).max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(1024);
    b
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let (tls_app, conn_app, feed_app) = (app.clone(), app.clone(), app.clone());
    let drained = Server::new(move |req, peer, _| {
        let app = app.clone();
        async move { app.handle(req, peer).await }
    })
    .builder(builder())
    // Read per connection: a reload's new certificate applies to new connections.
    .tls(move || tls_app.state().tls.clone())
    .on_connection(move |transport| {
        let m = &conn_app.metrics;
        match transport {
            Transport::Plain => &m.conn_plain,
            Transport::H2 => &m.conn_h2,
            Transport::Http11 => &m.conn_http11,
            Transport::TlsOther => &m.conn_tls_other,
        }
        .increment(1)
    })
    .serve(listener, shutdown)
    .await;
    // Feed streams never end by themselves: end them, so draining need not wait them out.
    feed_app.state().revocations.close_feeds();
    let drained = drained.drain(DRAIN_TIMEOUT).await;
    if !drained {
        tracing::warn!("connections still open after drain timeout");
    }
}

/// Runs gatepass: the entry point `main` and the tests share. Reloads on SIGHUP when the
/// config came from a file.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let source = config.source.clone();
    let app = App::new(config)?;
    if let Some(path) = source {
        let weak = Arc::downgrade(&app);
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                let Some(app) = weak.upgrade() else { return };
                match Config::load(&path).and_then(|c| app.reload(c)) {
                    Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; keeping the last good configuration")
                    }
                }
            }
        });
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tls = app.state().tls.is_some(), "gatepass listening");
    }
    serve(listener, app, shutdown).await;
    Ok(())
}
