//! One WebSocket connection (SPEC §4.3): accept, then close at once with the table's code when
//! a check fails; otherwise stream events, answer pings, and enforce the limits.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hyper_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use hyper_tungstenite::tungstenite::{Error as WsError, Message};
use hyper_tungstenite::HyperWebsocketStream;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::auth::User;
use crate::broadcast::{close, text, CloseReason, Refused, SocketIds};
use crate::leases::Lease;
use gatepass_service::state::OnUnavailable;

/// Who, from where: for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub user: String,
    pub role: String,
    pub origin: String,
    pub client_ip: String,
}

fn frame(reason: CloseReason) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(reason.code),
        reason: reason.reason.into(),
    }))
}

/// Serves an accepted socket; `verdict` is the outcome of the handshake checks.
pub async fn serve(
    app: Arc<App>,
    mut ws: HyperWebsocketStream,
    verdict: Result<User, CloseReason>,
    audit: Audit,
) {
    let refused = match verdict {
        Ok(user) => {
            let registry = app.registry.clone();
            let view = user.view;
            let first =
                move || text(&json!({"type": "initial_status", "mcps": registry.snapshot(view)}));
            match lease(&app, &user.identity.id).await {
                Err(reason) => reason,
                Ok(lease) => {
                    let ids = SocketIds {
                        iss: user.iss.clone(),
                        tid: user.tid.clone(),
                        sid: user.sid.clone(),
                        opened_at: crate::auth::now_secs(),
                    };
                    match app.hub.admit(
                        &user.identity.id,
                        &user.identity.role,
                        user.view,
                        ids,
                        first,
                    ) {
                        Ok(reg) => return connection(app, ws, user, reg, lease, audit).await,
                        Err(Refused::Capacity) => close::CAPACITY,
                        Err(Refused::UserLimit) => close::USER_LIMIT,
                        Err(Refused::Revoked) => close::REVOKED,
                    }
                }
            }
        }
        Err(reason) => reason,
    };
    app.metrics.closed(refused.code);
    tracing::warn!(code = refused.code, reason = refused.reason, user = %audit.user, role = %audit.role,
        origin = %audit.origin, client_ip = %audit.client_ip, "websocket refused");
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.send(frame(refused))).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}

/// With `[state] backend = "redis"`: the user's lease, counted on every replica (4008 at the
/// limit). Redis unreachable: `local` leaves the decision to the hub's per-replica count (the
/// lease is added once Redis answers again), `deny` refuses with 1013.
async fn lease(app: &App, user: &str) -> Result<Option<Lease>, CloseReason> {
    let Some(redis) = &app.shared else {
        return Ok(None);
    };
    match Lease::acquire(redis, user, app.config.limits.max_connections_per_user).await {
        Ok(Some(lease)) => Ok(Some(lease)),
        Ok(None) => Err(close::USER_LIMIT),
        Err(_) => match redis.on_unavailable() {
            OnUnavailable::Deny => Err(close::CAPACITY),
            _ => Ok(Some(Lease::pending(redis, user))),
        },
    }
}

/// Fixed-window message counter.
struct Window {
    len: Duration,
    max: u32,
    start: Instant,
    count: u32,
}

impl Window {
    fn new(len: Duration, max: u32) -> Window {
        Window {
            len,
            max,
            start: Instant::now(),
            count: 0,
        }
    }

    fn hit(&mut self, now: Instant) -> bool {
        if now.duration_since(self.start) >= self.len {
            self.start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.max
    }
}

/// The instant `exp` (Unix seconds) is reached.
fn deadline(exp: Option<u64>) -> Option<tokio::time::Instant> {
    let at = UNIX_EPOCH + Duration::from_secs(exp?);
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + left)
}

type Sink = futures_util::stream::SplitSink<HyperWebsocketStream, Message>;

/// Sends queued messages, then our close frame; hands the sink back for the final drain.
async fn writer(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Message>,
    mut close_rx: watch::Receiver<Option<CloseReason>>,
) -> Option<Sink> {
    loop {
        tokio::select! {
            biased;
            _ = close_rx.changed() => break,
            m = rx.recv() => match m {
                // A slow client blocks only this task; the broadcaster never waits for it.
                Some(m) => if sink.send(m).await.is_err() { return None },
                None => break,
            },
        }
    }
    let reason = *close_rx.borrow();
    match reason {
        Some(r) if r != close::NORMAL => {
            let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(frame(r))).await;
        }
        _ => {}
    }
    // Flushes a queued close reply and shuts the sink down.
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    Some(sink)
}

/// After a 1009 the rest of the oversized message is still arriving: dropping the socket with
/// unread bytes makes the kernel send a reset, and the client loses our close frame (1006).
/// So: FIN our side, then read and discard raw bytes (fixed buffer) until the client closes,
/// for at most `linger`.
async fn drain_raw(ws: &mut HyperWebsocketStream, linger: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = ws.get_mut();
    let _ = tokio::time::timeout(linger, async {
        let _ = io.shutdown().await;
        // On the heap: in the future it would be part of every connection's task, all its life.
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

async fn connection(
    app: Arc<App>,
    ws: HyperWebsocketStream,
    user: User,
    reg: crate::broadcast::Registration,
    // Held while the socket lives; released when it ends.
    _lease: Option<Lease>,
    audit: Audit,
) {
    let crate::broadcast::Registration {
        rx,
        tx,
        closer,
        close_rx,
        guard: _guard,
    } = reg;
    let limits = app.config.limits.clone();
    let (sink, mut stream) = ws.split();
    let mut writer = tokio::spawn(writer(sink, rx, close_rx.clone()));
    let mut close_seen = close_rx.clone();
    let mut per_sec = Window::new(Duration::from_secs(1), limits.messages_per_second);
    let mut per_min = Window::new(Duration::from_secs(60), limits.messages_per_minute);
    let hb = limits.heartbeat_interval.0;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + hb, hb);
    let mut unanswered = 0u32;
    let mut last_frame = tokio::time::Instant::now();
    let expiry = deadline(user.identity.expires);
    let reason: Option<CloseReason> = loop {
        let idle_at = last_frame + limits.idle_timeout.0;
        tokio::select! {
            biased;
            _ = close_seen.changed() => break None,
            _ = async { match expiry { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break Some(close::EXPIRED),
            _ = tokio::time::sleep_until(idle_at) => break Some(close::IDLE),
            _ = heartbeat.tick() => {
                if unanswered >= 2 {
                    break Some(close::HEARTBEAT);
                }
                if tx.try_send(Message::Ping(Default::default())).is_err() {
                    break Some(close::SLOW);
                }
                unanswered += 1;
            }
            m = stream.next() => {
                let m = match m {
                    None => break None,
                    Some(Err(WsError::Capacity(_))) => break Some(close::TOO_BIG),
                    Some(Err(_)) => break None,
                    Some(Ok(m)) => m,
                };
                let now = tokio::time::Instant::now();
                last_frame = now;
                let reply = match &m {
                    Message::Pong(_) => {
                        unanswered = 0;
                        continue;
                    }
                    Message::Close(_) => break Some(close::NORMAL),
                    Message::Frame(_) => continue,
                    Message::Ping(_) => None,
                    Message::Text(t) if t.as_str() == "ping" => Some(Message::Text("pong".into())),
                    Message::Text(t) => Some(match serde_json::from_str::<serde_json::Value>(t.as_str()) {
                        Ok(v) if v["type"] == "ping" => text(&json!({"type": "pong"})),
                        Ok(_) => text(&json!({"type": "error", "message": "unknown message type"})),
                        Err(_) => text(&json!({"type": "error", "message": "messages must be JSON or \"ping\""})),
                    }),
                    Message::Binary(_) => Some(text(&json!({"type": "error", "message": "binary messages are not supported"}))),
                };
                // Every client message counts, pings and invalid ones included.
                let now_std = now.into_std();
                if !(per_sec.hit(now_std) & per_min.hit(now_std)) {
                    break Some(close::RATE);
                }
                if let Some(r) = reply {
                    if tx.try_send(r).is_err() {
                        break Some(close::SLOW);
                    }
                }
            }
        }
    };
    if let Some(r) = reason {
        closer.close(r);
    }
    let used = *close_rx.borrow();
    let code = used.map_or(1006, |r| r.code);
    app.metrics.closed(code);
    if code != 1000 {
        tracing::info!(code, reason = used.map_or("connection lost", |r| r.reason), user = %audit.user,
            client_ip = %audit.client_ip, "websocket closed");
    }
    drop(tx);
    let sink = match tokio::time::timeout(Duration::from_secs(4), &mut writer).await {
        Ok(Ok(sink)) => sink,
        _ => {
            writer.abort();
            None
        }
    };
    if used == Some(close::TOO_BIG) {
        if let Some(mut ws) = sink.and_then(|sink| stream.reunite(sink).ok()) {
            drain_raw(&mut ws, Duration::from_secs(2)).await;
        }
        return;
    }
    // RFC 6455: after our Close, wait (bounded) for the peer's before dropping TCP, so a client
    // still reading buffered frames gets the close frame rather than a reset.
    if code != 1000 {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let mut w = Window::new(Duration::from_secs(1), 2);
        let t = Instant::now();
        assert!(w.hit(t));
        assert!(w.hit(t));
        assert!(!w.hit(t));
        assert!(w.hit(t + Duration::from_secs(1)));
    }
}
