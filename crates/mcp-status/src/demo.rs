//! A demo MCP health endpoint whose health can be flipped: used by `make run` and the tests.
//!
//! `GET /health` answers 200 `{"status":"ok"}` or 503 `{"status":"down"}`;
//! `POST /up`, `POST /down` and `POST /toggle` change it. With `flap`, it toggles by itself.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Shared health switch.
#[derive(Clone, Default)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn new(healthy: bool) -> Switch {
        Switch(Arc::new(AtomicBool::new(healthy)))
    }
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::SeqCst);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves the demo endpoint until the task is dropped.
pub async fn serve(listener: TcpListener, switch: Switch, flap: Option<Duration>) {
    if let Some(every) = flap {
        let s = switch.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                s.set(!s.get());
            }
        });
    }
    while let Ok((sock, _)) = listener.accept().await {
        let switch = switch.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let switch = switch.clone();
            async move {
                let r = match (req.method(), req.uri().path()) {
                    (&Method::GET, "/health") if switch.get() => {
                        reply(StatusCode::OK, r#"{"status":"ok"}"#)
                    }
                    (&Method::GET, "/health") => {
                        reply(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"down"}"#)
                    }
                    (&Method::POST, "/up") => {
                        switch.set(true);
                        reply(StatusCode::OK, r#"{"status":"ok"}"#)
                    }
                    (&Method::POST, "/down") => {
                        switch.set(false);
                        reply(StatusCode::OK, r#"{"status":"down"}"#)
                    }
                    (&Method::POST, "/toggle") => {
                        switch.set(!switch.get());
                        reply(
                            StatusCode::OK,
                            if switch.get() {
                                r#"{"status":"ok"}"#
                            } else {
                                r#"{"status":"down"}"#
                            },
                        )
                    }
                    _ => reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#),
                };
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

/// `mcp-status demo-mcp`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[arg(long)]
    pub listen: String,
    /// Toggle health by itself at this interval (e.g. 20s).
    #[arg(long, value_parser = crate::config::Dur::parse)]
    pub flap: Option<crate::config::Dur>,
    /// Start unhealthy.
    #[arg(long)]
    pub down: bool,
}

/// `mcp-status demo-mcp`: serves a demo health endpoint until SIGTERM or Ctrl-C.
pub fn run_command(args: DemoArgs) -> anyhow::Result<()> {
    gatepass_service::runtime()?.block_on(async move {
        let listener = gatepass_service::bind(&args.listen).await?;
        eprintln!("demo MCP on http://{}/health", listener.local_addr()?);
        let demo = serve(listener, Switch::new(!args.down), args.flap.map(|d| d.0));
        tokio::select! {
            _ = demo => {}
            _ = gatepass_service::shutdown_signal() => {}
        }
        Ok(())
    })
}
