//! The broadcast hub: every event is serialized once per view and the bytes are shared by all
//! recipients. Each connection has a bounded queue; a full queue closes that connection
//! ("Client too slow") and never blocks the broadcaster or anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper_tungstenite::tungstenite::{Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;

/// What a connection is allowed to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Full,
    Redacted,
}

/// Close codes and reasons (SPEC §4.3), exactly as sent.
pub mod close {
    use super::CloseReason;

    pub const AUTH: CloseReason = CloseReason::new(1008, "Authentication required");
    pub const FORBIDDEN: CloseReason = CloseReason::new(1008, "Insufficient permissions");
    pub const ORIGIN: CloseReason = CloseReason::new(4003, "Origin not allowed");
    pub const USER_LIMIT: CloseReason = CloseReason::new(4008, "Too many connections");
    pub const CAPACITY: CloseReason = CloseReason::new(1013, "Server at capacity");
    pub const EXPIRED: CloseReason = CloseReason::new(4001, "Token expired");
    pub const REVOKED: CloseReason = CloseReason::new(4001, "Token revoked");
    pub const RATE: CloseReason = CloseReason::new(4029, "Rate limit exceeded");
    pub const TOO_BIG: CloseReason = CloseReason::new(1009, "Message too big");
    pub const IDLE: CloseReason = CloseReason::new(1001, "Idle timeout");
    pub const HEARTBEAT: CloseReason = CloseReason::new(1001, "Heartbeat timeout");
    pub const SLOW: CloseReason = CloseReason::new(1008, "Client too slow");
    pub const SHUTDOWN: CloseReason = CloseReason::new(1001, "Server shutting down");
    pub const NORMAL: CloseReason = CloseReason::new(1000, "");
}

/// A WebSocket close: the code and the reason text sent with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// RFC 6455 close code.
    pub code: u16,
    /// Reason text, sent as is.
    pub reason: &'static str,
}

impl CloseReason {
    /// A close with `code` and `reason`.
    pub const fn new(code: u16, reason: &'static str) -> CloseReason {
        CloseReason { code, reason }
    }
}

/// An MCP's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
}

impl Status {
    pub fn of(active: bool) -> Status {
        if active {
            Status::Active
        } else {
            Status::Inactive
        }
    }
}

/// A `health_event`'s `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    CircuitOpen,
    HalfOpen,
    Recovery,
}

/// A server → client event. Serde gives its form in the shared event log (Redis); what
/// clients see is [`Event::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    StatusChange {
        mcp_id: u32,
        mcp_name: String,
        old_status: Status,
        new_status: Status,
        reason: String,
        timestamp: String,
    },
    Health {
        mcp_id: u32,
        mcp_name: String,
        event: HealthKind,
        message: String,
        timestamp: String,
    },
    SystemMetrics {
        active_mcps: usize,
        total_mcps: usize,
        circuit_breakers_open: usize,
        timestamp: String,
    },
    /// After every poll (an addition to the SPEC's messages): the dashboard's "last check"
    /// and health move with each check, not only with circuit changes.
    HealthCheck {
        mcp_id: u32,
        mcp_name: String,
        healthy: bool,
        last_health_check: String,
    },
}

impl Event {
    /// The JSON for `view`; the redacted view omits `reason` and `message`.
    pub fn to_json(&self, view: View) -> Value {
        let full = view == View::Full;
        match self {
            Event::StatusChange {
                mcp_id,
                mcp_name,
                old_status,
                new_status,
                reason,
                timestamp,
            } => {
                let mut v = json!({"type": "mcp_status_change", "mcp_id": mcp_id, "mcp_name": mcp_name,
                    "old_status": old_status, "new_status": new_status, "timestamp": timestamp});
                if full {
                    v["reason"] = reason.as_str().into();
                }
                v
            }
            Event::Health {
                mcp_id,
                mcp_name,
                event,
                message,
                timestamp,
            } => {
                let mut v = json!({"type": "health_event", "mcp_id": mcp_id, "mcp_name": mcp_name,
                    "event": event, "timestamp": timestamp});
                if full {
                    v["message"] = message.as_str().into();
                }
                v
            }
            Event::SystemMetrics {
                active_mcps,
                total_mcps,
                circuit_breakers_open,
                timestamp,
            } => json!({
                "type": "system_metrics", "active_mcps": active_mcps, "total_mcps": total_mcps,
                "circuit_breakers_open": circuit_breakers_open, "timestamp": timestamp}),
            Event::HealthCheck {
                mcp_id,
                mcp_name,
                healthy,
                last_health_check,
            } => json!({
                "type": "health_check", "mcp_id": mcp_id, "mcp_name": mcp_name,
                "health_status": if *healthy { "healthy" } else { "unhealthy" },
                "last_health_check": last_health_check, "timestamp": last_health_check}),
        }
    }
}

/// A text frame from JSON.
pub fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

/// Asks a connection to close; the first reason wins.
#[derive(Clone)]
pub struct Closer(Arc<watch::Sender<Option<CloseReason>>>);

impl Closer {
    pub fn new() -> (Closer, watch::Receiver<Option<CloseReason>>) {
        let (tx, rx) = watch::channel(None);
        (Closer(Arc::new(tx)), rx)
    }

    pub fn close(&self, reason: CloseReason) {
        self.0.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

struct Conn {
    tx: mpsc::Sender<Message>,
    view: View,
    user: String,
    role: String,
    closer: Closer,
    ids: SocketIds,
}

/// What revocations know a socket by, besides its user: the token's issuer, `jti` and `sid`
/// (from the assertion), and when it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketIds {
    pub iss: Option<String>,
    pub tid: Option<String>,
    pub sid: Option<String>,
    pub opened_at: u64,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Conn>,
    per_user: HashMap<String, usize>,
    /// Revocations handled in the last [`RECENT_REVOCATIONS`], newest last: a handshake that
    /// gatepass allowed just before a revocation can reach `admit` just after the hub handled
    /// it; `admit` refuses such a socket instead of keeping it open.
    recent: std::collections::VecDeque<(std::time::Instant, gatepass_identity::Revocation)>,
}

/// How long `admit` remembers a revocation (longer than any handshake takes).
const RECENT_REVOCATIONS: std::time::Duration = std::time::Duration::from_secs(60);
/// At most this many remembered (a feed replaying a long list keeps its newest entries).
const RECENT_MAX: usize = 4096;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Capacity,
    UserLimit,
    /// A revocation handled moments ago covers it.
    Revoked,
}

pub struct Hub {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    max_connections: usize,
    max_per_user: usize,
    queue: usize,
    metrics: Arc<Metrics>,
}

/// A registered connection.
pub struct Registration {
    pub rx: mpsc::Receiver<Message>,
    pub tx: mpsc::Sender<Message>,
    pub closer: Closer,
    pub close_rx: watch::Receiver<Option<CloseReason>>,
    pub guard: Unregister,
}

/// Unregisters the connection when dropped.
pub struct Unregister {
    id: u64,
    hub: Arc<Hub>,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

impl Hub {
    pub fn new(
        max_connections: usize,
        max_per_user: usize,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            inner: Mutex::new(Inner::default()),
            next_id: AtomicU64::new(1),
            max_connections,
            max_per_user,
            queue,
            metrics,
        }
    }

    /// Admits a connection and queues `first` (the initial status) before any broadcast can.
    pub fn admit(
        self: &Arc<Self>,
        user: &str,
        role: &str,
        view: View,
        ids: SocketIds,
        first: impl FnOnce() -> Message,
    ) -> Result<Registration, Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.conns.len() >= self.max_connections {
            return Err(Refused::Capacity);
        }
        let count = inner.per_user.get(user).copied().unwrap_or(0);
        if count >= self.max_per_user {
            return Err(Refused::UserLimit);
        }
        let socket = gatepass_identity::SocketRef {
            iss: ids.iss.as_deref(),
            tid: ids.tid.as_deref(),
            sid: ids.sid.as_deref(),
            user,
            opened_at: ids.opened_at,
        };
        if inner.recent.iter().any(|(_, r)| r.covers_socket(&socket)) {
            return Err(Refused::Revoked);
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let _ = tx.try_send(first());
        let (closer, close_rx) = Closer::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        inner.per_user.insert(user.to_owned(), count + 1);
        inner.conns.insert(
            id,
            Conn {
                tx: tx.clone(),
                view,
                user: user.to_owned(),
                role: role.to_owned(),
                closer: closer.clone(),
                ids,
            },
        );
        self.metrics.connections(role).increment(1.0);
        Ok(Registration {
            rx,
            tx,
            closer,
            close_rx,
            guard: Unregister {
                id,
                hub: self.clone(),
            },
        })
    }

    fn unregister(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.remove(&mut inner, id);
    }

    /// Removes a connection (idempotent: a slow one is removed at overflow, then again on drop).
    fn remove(&self, inner: &mut Inner, id: u64) -> Option<Conn> {
        let c = inner.conns.remove(&id)?;
        if let Some(n) = inner.per_user.get_mut(&c.user) {
            *n -= 1;
            if *n == 0 {
                inner.per_user.remove(&c.user);
            }
        }
        self.metrics.connections(&c.role).decrement(1.0);
        Some(c)
    }

    /// Sends `event` to everyone, serialized once per view.
    pub fn publish(&self, event: &Event) {
        let full = text(&event.to_json(View::Full));
        let redacted = text(&event.to_json(View::Redacted));
        let mut sent = 0u64;
        let mut slow = Vec::new();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for (id, c) in &inner.conns {
            let m = if c.view == View::Full {
                full.clone()
            } else {
                redacted.clone()
            };
            match c.tx.try_send(m) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        // A client that fell behind is cut off now: it gets nothing more and frees its slot.
        for id in &slow {
            if let Some(c) = self.remove(&mut inner, *id) {
                c.closer.close(close::SLOW);
            }
        }
        drop(inner);
        self.metrics.sent.increment(sent);
        self.metrics.dropped.increment(slow.len() as u64);
    }

    /// Closes every socket `r` covers (4001 Token revoked); returns how many. `admit` refuses
    /// the sockets it covers for a while after.
    pub fn revoke(&self, r: &gatepass_identity::Revocation) -> usize {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        while inner.recent.len() >= RECENT_MAX
            || inner
                .recent
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RECENT_REVOCATIONS)
        {
            inner.recent.pop_front();
        }
        inner.recent.push_back((now, r.clone()));
        let mut closed = 0;
        for c in inner.conns.values() {
            let socket = gatepass_identity::SocketRef {
                iss: c.ids.iss.as_deref(),
                tid: c.ids.tid.as_deref(),
                sid: c.ids.sid.as_deref(),
                user: &c.user,
                opened_at: c.ids.opened_at,
            };
            if r.covers_socket(&socket) {
                c.closer.close(close::REVOKED);
                closed += 1;
            }
        }
        closed
    }

    /// Asks every connection to close.
    pub fn close_all(&self, reason: CloseReason) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for c in inner.conns.values() {
            c.closer.close(reason);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.conns.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue: usize) -> Arc<Hub> {
        Arc::new(Hub::new(3, 2, queue, Arc::new(Metrics::new())))
    }

    fn metrics_event() -> Event {
        Event::SystemMetrics {
            active_mcps: 1,
            total_mcps: 2,
            circuit_breakers_open: 0,
            timestamp: "t".into(),
        }
    }

    #[test]
    fn limits_and_unregister() {
        let h = hub(4);
        let a = h
            .admit("u1", "admin", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .unwrap();
        let _b = h
            .admit("u1", "admin", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .unwrap();
        assert_eq!(
            h.admit("u1", "admin", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .err(),
            Some(Refused::UserLimit)
        );
        let _c = h
            .admit("u2", "dba", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .unwrap();
        assert_eq!(
            h.admit("u3", "dba", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .err(),
            Some(Refused::Capacity)
        );
        drop(a);
        assert_eq!(h.len(), 2);
        assert!(h
            .admit("u1", "admin", View::Full, SocketIds::default(), || {
                Message::Text("hi".into())
            })
            .is_ok());
    }

    #[test]
    fn first_message_then_broadcast_and_slow_close() {
        let h = hub(2);
        let mut r = h
            .admit("u1", "admin", View::Full, SocketIds::default(), || {
                Message::Text("first".into())
            })
            .unwrap();
        h.publish(&metrics_event());
        assert_eq!(r.rx.try_recv().unwrap(), Message::Text("first".into()));
        assert!(
            matches!(r.rx.try_recv().unwrap(), Message::Text(t) if t.contains("system_metrics"))
        );
        // Nobody reads: the queue fills and the connection is asked to close.
        h.publish(&metrics_event());
        h.publish(&metrics_event());
        h.publish(&metrics_event());
        assert_eq!(*r.close_rx.borrow(), Some(close::SLOW));
        assert_eq!(h.len(), 0);
        drop(r);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn redacted_view_omits_reason_and_message() {
        let e = Event::Health {
            mcp_id: 1,
            mcp_name: "m".into(),
            event: HealthKind::Recovery,
            message: "why".into(),
            timestamp: "t".into(),
        };
        assert_eq!(e.to_json(View::Full)["message"], "why");
        assert!(e.to_json(View::Redacted).get("message").is_none());
        let e = Event::StatusChange {
            mcp_id: 1,
            mcp_name: "m".into(),
            old_status: Status::Active,
            new_status: Status::Inactive,
            reason: "r".into(),
            timestamp: "t".into(),
        };
        assert!(e.to_json(View::Redacted).get("reason").is_none());
        assert_eq!(e.to_json(View::Full)["reason"], "r");
    }
}
