//! The accept loop both services run: hyper-util's auto (HTTP/1.1 + HTTP/2) connections,
//! optional TLS, accept-error backoff, and a bounded graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Time a client has to send a request head (HTTP/1). Longer than Traefik's 90 s idle pool
/// timeout, so a service never closes a connection Traefik is about to reuse.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (EMFILE and friends), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a connection reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Cleartext: HTTP/1.1 or h2c.
    Plain,
    /// TLS with ALPN `h2`.
    H2,
    /// TLS with ALPN `http/1.1`.
    Http11,
    /// TLS without (or with another) ALPN protocol.
    TlsOther,
}

impl Transport {
    /// The metrics label: `plain`, `h2`, `http/1.1` or `tls`.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::H2 => "h2",
            Transport::Http11 => "http/1.1",
            Transport::TlsOther => "tls",
        }
    }

    fn from_alpn(alpn: Option<&[u8]>) -> Transport {
        match alpn {
            Some(b"h2") => Transport::H2,
            Some(b"http/1.1") => Transport::Http11,
            _ => Transport::TlsOther,
        }
    }
}

/// An auto (HTTP/1.1 + HTTP/2) connection builder with the HTTP/1 header read timeout set;
/// tune it further with `.http1()` / `.http2()` before handing it to [`Server::builder`].
pub fn builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    b
}

/// A response body a [`Server`] can send (what hyper needs of it, named once).
pub trait ResponseBody:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

impl<B> ResponseBody for B where
    B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + 'static
{
}

type TlsSource = Box<dyn Fn() -> Option<TlsAcceptor> + Send + Sync>;
type ConnectionHook = Arc<dyn Fn(Transport) + Send + Sync>;

/// An accept loop around `service`, called as `service(request, peer, transport)`.
pub struct Server<S> {
    service: Arc<S>,
    builder: auto::Builder<TokioExecutor>,
    upgrades: bool,
    tls: Option<TlsSource>,
    on_connection: Option<ConnectionHook>,
}

/// Returned by [`Server::serve`] once the listener is closed: the connections still open.
#[must_use = "drain the connections"]
pub struct Draining(GracefulShutdown);

impl Draining {
    /// Signals every connection to finish (HTTP/1 after the current response, HTTP/2 with
    /// GOAWAY) and waits at most `timeout`; true when all of them finished in time.
    pub async fn drain(self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.0.shutdown())
            .await
            .is_ok()
    }
}

impl<S, F, B> Server<S>
where
    S: Fn(Request<Incoming>, SocketAddr, Transport) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    /// A server with [`builder`]`(`[`HEADER_READ_TIMEOUT`]`)`, no TLS and no upgrades.
    pub fn new(service: S) -> Server<S> {
        Server {
            service: Arc::new(service),
            builder: builder(HEADER_READ_TIMEOUT),
            upgrades: false,
            tls: None,
            on_connection: None,
        }
    }

    /// Serves connections with this builder.
    pub fn builder(mut self, builder: auto::Builder<TokioExecutor>) -> Self {
        self.builder = builder;
        self
    }

    /// Lets HTTP/1 connections be upgraded (WebSocket).
    pub fn with_upgrades(mut self) -> Self {
        self.upgrades = true;
        self
    }

    /// Asks `tls` for an acceptor on every accepted connection (so a reload applies to new
    /// connections); `None` serves that connection in cleartext.
    pub fn tls(mut self, tls: impl Fn() -> Option<TlsAcceptor> + Send + Sync + 'static) -> Self {
        self.tls = Some(Box::new(tls));
        self
    }

    /// Called once per connection that reaches HTTP (after a successful TLS handshake).
    pub fn on_connection(mut self, hook: impl Fn(Transport) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(hook));
        self
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then closes the listener
    /// and returns the connections still open, to be drained.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Draining {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                res = listener.accept() => match res {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let tls = self.tls.as_ref().and_then(|tls| tls());
            let conn = Conn {
                service: self.service.clone(),
                builder: self.builder.clone(),
                upgrades: self.upgrades,
                on_connection: self.on_connection.clone(),
                watcher: graceful.watcher(),
                peer,
            };
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                        else {
                            return;
                        };
                        let transport = Transport::from_alpn(stream.get_ref().1.alpn_protocol());
                        conn.run(stream, transport).await;
                    }
                    None => conn.run(stream, Transport::Plain).await,
                }
            });
        }
        drop(listener);
        Draining(graceful)
    }
}

/// One accepted connection, ready to be served.
struct Conn<S> {
    service: Arc<S>,
    builder: auto::Builder<TokioExecutor>,
    upgrades: bool,
    on_connection: Option<ConnectionHook>,
    watcher: Watcher,
    peer: SocketAddr,
}

impl<S, F, B> Conn<S>
where
    S: Fn(Request<Incoming>, SocketAddr, Transport) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: ResponseBody,
{
    async fn run<I>(self, io: I, transport: Transport)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(hook) = &self.on_connection {
            hook(transport);
        }
        let (service, peer) = (self.service, self.peer);
        // The service's future owns what it needs: no reference count touched per request here.
        let svc = service_fn(move |req| {
            let response = service(req, peer, transport);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let io = TokioIo::new(io);
        if self.upgrades {
            let conn = self
                .builder
                .serve_connection_with_upgrades(io, svc)
                .into_owned();
            let _ = self.watcher.watch(conn).await;
        } else {
            let conn = self.builder.serve_connection(io, svc).into_owned();
            let _ = self.watcher.watch(conn).await;
        }
    }
}
