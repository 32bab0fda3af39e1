//! `RevocationFeed` against a real HTTP server on 127.0.0.1 whose SSE stream each test scripts:
//! every request the client makes is handed to the test, which checks its headers and answers
//! it (a status, or a stream it then writes to, ends, or breaks).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gatepass_identity::{DownReason, FeedStatus, Revocation, RevocationFeed, RevocationKind};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const SECRET: &str = "s3cret-feed-token";
/// How long any expected thing may take to happen.
const DEADLINE: Duration = Duration::from_secs(10);

type Chunk = Result<Bytes, std::io::Error>;

/// A response body fed through a channel: dropping the sender ends it, sending an error
/// breaks the connection.
struct ChanBody(mpsc::Receiver<Chunk>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data)))
    }
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: mpsc::Receiver<Chunk>,
}

/// One request the client made, waiting for the test's answer.
struct Req {
    authorization: Option<String>,
    accept: Option<String>,
    last_event_id: Option<String>,
    reply: oneshot::Sender<Reply>,
}

impl Req {
    /// Answers with `status` and an empty body.
    fn status(self, status: u16, content_type: &'static str) {
        let (tx, body) = mpsc::channel(1);
        drop(tx);
        let _ = self.reply.send(Reply {
            status,
            content_type,
            body,
        });
    }

    /// Answers 200 `text/event-stream`; the stream lasts as long as the returned sender.
    fn stream(self) -> Stream {
        let (tx, body) = mpsc::channel(16);
        let _ = self.reply.send(Reply {
            status: 200,
            content_type: "text/event-stream; charset=utf-8",
            body,
        });
        Stream(tx)
    }
}

/// The test's end of an open event stream.
struct Stream(mpsc::Sender<Chunk>);

impl Stream {
    async fn send(&self, text: impl Into<Bytes>) {
        self.0.send(Ok(text.into())).await.expect("stream closed");
    }

    /// Breaks the connection mid-stream.
    async fn abort(self) {
        let err = std::io::Error::other("test abort");
        self.0.send(Err(err)).await.expect("stream closed");
    }
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

/// Serves on 127.0.0.1:0, handing every request to the returned receiver.
async fn serve() -> (SocketAddr, mpsc::UnboundedReceiver<Req>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let (reply, answer) = oneshot::channel();
                        let _ = tx.send(Req {
                            authorization: header(&req, "authorization"),
                            accept: header(&req, "accept"),
                            last_event_id: header(&req, "last-event-id"),
                            reply,
                        });
                        let reply = answer.await.unwrap_or_else(|_| {
                            let (_, body) = mpsc::channel(1);
                            Reply {
                                status: 500,
                                content_type: "text/plain",
                                body,
                            }
                        });
                        let resp = Response::builder()
                            .status(reply.status)
                            .header("content-type", reply.content_type)
                            .body(ChanBody(reply.body))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// A running feed and what it reported.
struct Harness {
    reqs: mpsc::UnboundedReceiver<Req>,
    events: mpsc::UnboundedReceiver<Revocation>,
    statuses: mpsc::UnboundedReceiver<FeedStatus>,
    task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(idle: Option<Duration>) -> Harness {
    let (addr, reqs) = serve().await;
    let mut feed = RevocationFeed::new(&format!("http://{addr}/revocations"), SECRET.into())
        .expect("valid feed");
    if let Some(idle) = idle {
        feed = feed.idle_timeout(idle);
    }
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (st_tx, statuses) = mpsc::unbounded_channel();
    let task = tokio::spawn(feed.run(
        move |r| {
            let _ = ev_tx.send(r);
        },
        move |s| {
            let _ = st_tx.send(s);
        },
    ));
    Harness {
        reqs,
        events,
        statuses,
        task,
    }
}

/// The next item, waiting at most [`DEADLINE`].
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

impl Harness {
    async fn request(&mut self) -> Req {
        let req = next(&mut self.reqs, "a request").await;
        assert_eq!(
            req.authorization.as_deref(),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(req.accept.as_deref(), Some("text/event-stream"));
        req
    }

    async fn status(&mut self) -> FeedStatus {
        next(&mut self.statuses, "a status").await
    }

    async fn event(&mut self) -> Revocation {
        next(&mut self.events, "an event").await
    }

    /// Nothing was reported and no request was made (so far).
    fn quiet(&mut self) {
        assert!(self.statuses.try_recv().is_err(), "unexpected status");
        assert!(self.events.try_recv().is_err(), "unexpected event");
        assert!(self.reqs.try_recv().is_err(), "unexpected reconnect");
    }
}

fn rev(kind: RevocationKind, value: &str) -> Revocation {
    Revocation {
        kind,
        value: value.into(),
        iss: None,
        not_before: None,
        expires_at: 4_000_000_000,
    }
}

#[tokio::test]
async fn reconnects_with_the_last_event_id() {
    let mut h = start(None).await;
    let first = h.request().await;
    assert_eq!(first.last_event_id, None);
    let s = first.stream();
    assert_eq!(h.status().await, FeedStatus::Up);

    let a = rev(RevocationKind::Jti, "j1");
    let b = Revocation {
        not_before: Some(100),
        ..rev(RevocationKind::Sub, "u1")
    };
    // The second event split mid-line and inside its `\r\n`-free framing.
    let b_text = b.to_sse("ev-2");
    let (b1, b2) = b_text.split_at(17);
    s.send(": connected\n\n").await;
    s.send(a.to_sse("ev-1")).await;
    s.send(b1.to_owned()).await;
    assert_eq!(h.event().await, a);
    s.send(b2.to_owned()).await;
    assert_eq!(h.event().await, b);

    drop(s); // the server ends the stream
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Ended));
    let second = h.request().await;
    assert_eq!(second.last_event_id.as_deref(), Some("ev-2"));

    let s = second.stream();
    assert_eq!(h.status().await, FeedStatus::Up);
    let c = rev(RevocationKind::Sid, "s1");
    s.send(c.to_sse("ev-3").replace('\n', "\r\n")).await;
    assert_eq!(h.event().await, c);
    s.abort().await; // the connection breaks
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Read));
    let third = h.request().await;
    assert_eq!(third.last_event_id.as_deref(), Some("ev-3"));
}

#[tokio::test]
async fn unauthorized_and_other_failures_report_down_and_retry() {
    let mut h = start(None).await;
    h.request().await.status(401, "text/plain");
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Unauthorized));
    h.request().await.status(503, "text/plain");
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Status(503)));
    h.request().await.status(200, "application/json");
    assert_eq!(
        h.status().await,
        FeedStatus::Down(DownReason::NotEventStream)
    );

    let req = h.request().await;
    assert_eq!(req.last_event_id, None, "no event was seen yet");
    let s = req.stream();
    assert_eq!(h.status().await, FeedStatus::Up);
    let r = rev(RevocationKind::Jti, "after-retry");
    s.send(r.to_sse("1")).await;
    assert_eq!(h.event().await, r);
}

#[tokio::test]
async fn garbage_events_are_skipped_but_their_ids_count() {
    let mut h = start(None).await;
    let s = h.request().await.stream();
    assert_eq!(h.status().await, FeedStatus::Up);

    s.send("id: 1\ndata: not json\n\n").await;
    s.send("id: 2\ndata: {\"kind\":\"device\",\"value\":\"x\",\"expires_at\":1}\n\n")
        .await;
    s.send("id: 2b\nevent: other\n\n").await; // no data: not an event at all
    let good = rev(RevocationKind::Sub, "u9");
    s.send(good.to_sse("3")).await;
    s.send("id: 4\ndata: {\"kind\":\"jti\",\ndata: \"value\":\"split\"}\n\n")
        .await;

    assert_eq!(h.status().await, FeedStatus::Skipped);
    assert_eq!(h.status().await, FeedStatus::Skipped);
    assert_eq!(h.event().await, good);
    assert_eq!(h.status().await, FeedStatus::Skipped);

    drop(s);
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Ended));
    let again = h.request().await;
    assert_eq!(again.last_event_id.as_deref(), Some("4"));
    assert!(h.events.try_recv().is_err(), "garbage was delivered");
}

#[tokio::test]
async fn keep_alives_keep_the_connection_and_silence_reconnects() {
    let idle = Duration::from_millis(500);
    let mut h = start(Some(idle)).await;
    let s = h.request().await.stream();
    assert_eq!(h.status().await, FeedStatus::Up);

    // Keep-alives only, for twice the idle timeout.
    let until = Instant::now() + idle * 2;
    while Instant::now() < until {
        s.send(":\n").await;
        tokio::time::sleep(idle / 10).await;
    }
    s.send(": ping\n").await;
    h.quiet();
    // Still the same connection: an event sent on it arrives.
    let r = rev(RevocationKind::Jti, "still-up");
    s.send(r.to_sse("k1")).await;
    assert_eq!(h.event().await, r);
    h.quiet();

    // Silence (the stream stays open): the client gives up on it.
    let silent_since = Instant::now();
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Idle));
    assert!(silent_since.elapsed() >= idle - Duration::from_millis(50));
    let again = h.request().await;
    assert_eq!(again.last_event_id.as_deref(), Some("k1"));
    drop(s);
}

#[tokio::test]
async fn response_headers_that_never_come_count_as_idle() {
    let mut h = start(Some(Duration::from_millis(300))).await;
    let held = h.request().await; // never answered
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Idle));
    let req = h.request().await;
    assert_eq!(req.last_event_id, None);
    drop(held);
}

#[tokio::test]
async fn an_over_long_line_drops_the_connection() {
    let mut h = start(None).await;
    let s = h.request().await.stream();
    assert_eq!(h.status().await, FeedStatus::Up);
    let r = rev(RevocationKind::Jti, "before");
    s.send(r.to_sse("1")).await;
    assert_eq!(h.event().await, r);
    let junk = "x".repeat(16 * 1024);
    for _ in 0..5 {
        // Errors once the client has hung up; the status below is what matters.
        let _ = s.0.send(Ok(Bytes::from(junk.clone()))).await;
    }
    assert_eq!(h.status().await, FeedStatus::Down(DownReason::Protocol));
    let again = h.request().await;
    assert_eq!(again.last_event_id.as_deref(), Some("1"));
}
