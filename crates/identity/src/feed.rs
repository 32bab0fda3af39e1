//! The client of gatepass's `GET /revocations` Server-Sent Events feed (feature
//! `revocation-feed`).

use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::time::{timeout, Instant};

use crate::sse::{SseEvent, SseParser};
use crate::Revocation;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection up this long counts as healthy even if it delivered nothing.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// The default [`RevocationFeed::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a [`RevocationFeed`] could not be built. Never contains the URL or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The URL does not parse.
    #[error("revocation feed URL is not a valid URL")]
    Url,
    /// The URL is not `http` or `https`.
    #[error("revocation feed URL must be http or https")]
    Scheme,
    /// The secret is empty or not usable in an HTTP header.
    #[error("revocation feed secret is empty or not a valid header value")]
    Secret,
    /// The default HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Client,
}

/// Why the feed connection is down; short and free of the URL and the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// Connecting or sending the request failed.
    Connect,
    /// gatepass answered 401: the secret is wrong.
    Unauthorized,
    /// Any other non-200 status.
    Status(u16),
    /// A 200 that is not `text/event-stream`.
    NotEventStream,
    /// The server ended the stream.
    Ended,
    /// Reading the stream failed (the connection broke).
    Read,
    /// Nothing, not even a keep-alive, arrived within the idle timeout.
    Idle,
    /// The stream broke the SSE bounds (an over-long line or event).
    Protocol,
}

impl DownReason {
    /// A short fixed label, e.g. for a metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            DownReason::Connect => "connect",
            DownReason::Unauthorized => "unauthorized",
            DownReason::Status(_) => "status",
            DownReason::NotEventStream => "not_event_stream",
            DownReason::Ended => "ended",
            DownReason::Read => "read",
            DownReason::Idle => "idle",
            DownReason::Protocol => "protocol",
        }
    }
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Status(code) => write!(f, "status {code}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What [`RevocationFeed::run`] reports besides revocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStatus {
    /// A 200 `text/event-stream` response arrived; revocations flow.
    Up,
    /// The connection failed or ended; a reconnect follows after the backoff.
    Down(DownReason),
    /// An event whose data is not a [`Revocation`] was skipped; the connection stays up.
    Skipped,
}

/// Follows gatepass's `GET /revocations` feed.
pub struct RevocationFeed {
    url: reqwest::Url,
    /// `Bearer <secret>`, marked sensitive.
    auth: HeaderValue,
    client: reqwest::Client,
    idle_timeout: Duration,
}

impl std::fmt::Debug for RevocationFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Without the secret, and without userinfo, query or fragment of the URL: any of
        // them may carry a credential.
        let mut url = self.url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        f.debug_struct("RevocationFeed")
            .field("url", &url.as_str())
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// How one connection went.
struct Outcome {
    reason: DownReason,
    /// When the 200 arrived, if it did.
    up_at: Option<Instant>,
    /// At least one event was dispatched.
    delivered: bool,
}

/// Exponential reconnect delay: 250 ms doubling to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_INITIAL,
        }
    }

    /// The delay to wait now; the following one doubles.
    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        d
    }

    /// After `outcome`, at `now`: a connection that delivered events or stayed up long enough
    /// was healthy, so the next failure starts over from the initial delay.
    fn after(&mut self, outcome: &Outcome, now: Instant) {
        let stayed_up = outcome
            .up_at
            .is_some_and(|up| now.duration_since(up) > HEALTHY_AFTER);
        if outcome.delivered || stayed_up {
            self.next = BACKOFF_INITIAL;
        }
    }
}

impl RevocationFeed {
    /// A feed client for `url` (`http` or `https`), authenticating with `secret`.
    /// The default client has a 10 s connect timeout, no overall timeout and follows no
    /// redirects (the secret goes to `url` only).
    pub fn new(url: &str, secret: String) -> Result<Self, FeedError> {
        let url = reqwest::Url::parse(url).map_err(|_| FeedError::Url)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FeedError::Scheme);
        }
        if secret.is_empty() {
            return Err(FeedError::Secret);
        }
        let mut auth =
            HeaderValue::try_from(format!("Bearer {secret}")).map_err(|_| FeedError::Secret)?;
        auth.set_sensitive(true);
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| FeedError::Client)?;
        Ok(RevocationFeed {
            url,
            auth,
            client,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        })
    }

    /// Uses `client` instead of the default one. It must have no overall request timeout
    /// (that would cut the stream); the idle timeout already bounds a dead connection.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    /// Treats a connection as dead when nothing, not even a keep-alive comment, arrives for
    /// `idle` (default [`DEFAULT_IDLE_TIMEOUT`]); also bounds the wait for the response
    /// headers. Should be a few times gatepass's keep-alive interval.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Runs forever (stop it by dropping the future, e.g. aborting its task). Connects with
    /// `Authorization: Bearer <secret>` and `Accept: text/event-stream`, and on reconnect
    /// sends `Last-Event-ID` with the id of the last event seen. Calls `on_event` for each
    /// event whose data is a [`Revocation`] (others are skipped and reported as
    /// [`FeedStatus::Skipped`]), `on_status(Up)` once a 200 `text/event-stream` response
    /// arrives and `on_status(Down(reason))` whenever a connection fails or ends, then
    /// reconnects after an exponential backoff (250 ms doubling to 5 s, reset after a
    /// connection that delivered events or stayed up more than 10 s).
    pub async fn run(
        self,
        mut on_event: impl FnMut(Revocation) + Send,
        mut on_status: impl FnMut(FeedStatus) + Send,
    ) {
        let mut last_id: Option<String> = None;
        let mut backoff = Backoff::new();
        loop {
            let outcome = self
                .connect_once(&mut last_id, &mut on_event, &mut on_status)
                .await;
            on_status(FeedStatus::Down(outcome.reason));
            backoff.after(&outcome, Instant::now());
            tokio::time::sleep(backoff.step()).await;
        }
    }

    /// One connection, until it fails or ends.
    async fn connect_once(
        &self,
        last_id: &mut Option<String>,
        on_event: &mut (impl FnMut(Revocation) + Send),
        on_status: &mut (impl FnMut(FeedStatus) + Send),
    ) -> Outcome {
        let mut outcome = Outcome {
            reason: DownReason::Connect,
            up_at: None,
            delivered: false,
        };
        let mut req = self
            .client
            .get(self.url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "text/event-stream")
            .header(CACHE_CONTROL, "no-cache");
        // An id that is not a valid header value is not sent: the server then replays from
        // its start, which is safe (revocations are idempotent).
        if let Some(id) = last_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            req = req.header(LAST_EVENT_ID, id);
        }
        let mut resp = match timeout(self.idle_timeout, req.send()).await {
            Err(_) => {
                outcome.reason = DownReason::Idle;
                return outcome;
            }
            Ok(Err(_)) => return outcome,
            Ok(Ok(resp)) => resp,
        };
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => {
                outcome.reason = DownReason::Unauthorized;
                return outcome;
            }
            other => {
                outcome.reason = DownReason::Status(other.as_u16());
                return outcome;
            }
        }
        if !is_event_stream(resp.headers().get(CONTENT_TYPE)) {
            outcome.reason = DownReason::NotEventStream;
            return outcome;
        }
        outcome.up_at = Some(Instant::now());
        on_status(FeedStatus::Up);

        let mut parser = SseParser::new();
        let mut events: Vec<SseEvent> = Vec::new();
        loop {
            let chunk = match timeout(self.idle_timeout, resp.chunk()).await {
                Err(_) => {
                    outcome.reason = DownReason::Idle;
                    return outcome;
                }
                Ok(Err(_)) => {
                    outcome.reason = DownReason::Read;
                    return outcome;
                }
                Ok(Ok(None)) => {
                    outcome.reason = DownReason::Ended;
                    return outcome;
                }
                Ok(Ok(Some(chunk))) => chunk,
            };
            let parsed = parser.feed(&chunk, &mut events);
            for event in events.drain(..) {
                outcome.delivered = true;
                match serde_json::from_str::<Revocation>(&event.data) {
                    Ok(rev) => on_event(rev),
                    Err(_) => on_status(FeedStatus::Skipped),
                }
            }
            // After the events: the id names the last event handled, skipped ones included
            // (asking for them again would not make them parse).
            if let Some(id) = parser.last_event_id() {
                if last_id.as_deref() != Some(id) {
                    *last_id = Some(id.to_owned());
                }
            }
            if parsed.is_err() {
                outcome.reason = DownReason::Protocol;
                return outcome;
            }
        }
    }
}

/// `Content-Type: text/event-stream`, parameters allowed.
fn is_event_stream(value: Option<&HeaderValue>) -> bool {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_healthy_connection() {
        let mut b = Backoff::new();
        let steps: Vec<u128> = (0..7).map(|_| b.step().as_millis()).collect();
        assert_eq!(steps, [250, 500, 1000, 2000, 4000, 5000, 5000]);

        let now = Instant::now();
        let failed = Outcome {
            reason: DownReason::Connect,
            up_at: None,
            delivered: false,
        };
        b.after(&failed, now);
        assert_eq!(b.step(), BACKOFF_MAX);

        let short_and_silent = Outcome {
            up_at: Some(now),
            ..failed
        };
        b.after(&short_and_silent, now + HEALTHY_AFTER);
        assert_eq!(b.step(), BACKOFF_MAX, "exactly 10 s is not more than 10 s");

        b.after(
            &short_and_silent,
            now + HEALTHY_AFTER + Duration::from_millis(1),
        );
        assert_eq!(b.step(), BACKOFF_INITIAL);

        b.step();
        let delivered = Outcome {
            delivered: true,
            ..short_and_silent
        };
        b.after(&delivered, now);
        assert_eq!(b.step(), BACKOFF_INITIAL);
    }

    #[test]
    fn content_type_check() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_event_stream(Some(&v("text/event-stream"))));
        assert!(is_event_stream(Some(&v(
            "Text/Event-Stream; charset=utf-8"
        ))));
        assert!(!is_event_stream(Some(&v("text/plain"))));
        assert!(!is_event_stream(None));
    }

    #[test]
    fn new_validates_and_debug_hides_credentials() {
        assert_eq!(
            RevocationFeed::new("ftp://h/revocations", "s".into()).unwrap_err(),
            FeedError::Scheme
        );
        assert_eq!(
            RevocationFeed::new("not a url", "s".into()).unwrap_err(),
            FeedError::Url
        );
        assert_eq!(
            RevocationFeed::new("http://h/", String::new()).unwrap_err(),
            FeedError::Secret
        );
        assert_eq!(
            RevocationFeed::new("http://h/", "a\nb".into()).unwrap_err(),
            FeedError::Secret
        );
        let feed = RevocationFeed::new(
            "https://user:pw-secret@gatepass:8443/revocations?key=q-secret#f",
            "tok-secret".into(),
        )
        .unwrap();
        let debug = format!("{feed:?}");
        assert!(
            debug.contains("https://gatepass:8443/revocations"),
            "{debug}"
        );
        for secret in ["tok-secret", "pw-secret", "q-secret", "user"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    /// `run` must be spawnable.
    #[test]
    fn run_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let feed = RevocationFeed::new("http://127.0.0.1:1/", "s".into()).unwrap();
        let fut = feed.run(|_| {}, |_| {});
        assert_send(&fut);
    }
}
