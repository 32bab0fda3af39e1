//! The limit for this framework: a minimal hyper server that answers every request with 200,
//! an empty body and the same six headers gatepass sends on an allow, doing nothing else.
//! Also the backend behind Traefik in the Traefik rows.
//!   limit_server 127.0.0.1:PORT

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        eprintln!(
            "limit server listening on {}",
            listener.local_addr().unwrap()
        );
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let mut r = Response::new(Full::new(Bytes::new()));
                    let h = r.headers_mut();
                    h.insert("cache-control", HeaderValue::from_static("no-store"));
                    h.insert("x-user-id", HeaderValue::from_static("u-42"));
                    h.insert("x-user-username", HeaderValue::from_static("alice"));
                    h.insert("x-user-role", HeaderValue::from_static("admin"));
                    h.insert(
                        "x-user-permissions",
                        HeaderValue::from_static("mcp:read,mcp:write"),
                    );
                    h.insert("x-user-expires", HeaderValue::from_static("1900000000"));
                    Ok::<_, Infallible>(r)
                });
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
}
