//! One MCP: its shared state and the circuit breaker's transitions (SPEC §4.4). Every change
//! returns the events it causes, so the same transition feeds the in-process backend and the
//! shared event log alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::broadcast::{Event, HealthKind, Status, View};
use crate::config::McpConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "CLOSED",
            Circuit::Open => "OPEN",
            Circuit::HalfOpen => "HALF_OPEN",
        }
    }
}

/// What changes about an MCP (the rest is config): the part replicas share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpState {
    pub active: bool,
    pub circuit: Circuit,
    /// `None` until the first check.
    pub healthy: Option<bool>,
    /// Unix time of the last check, in ms.
    pub last_check_ms: Option<u64>,
    pub failures: u32,
    pub cycles: u32,
    /// Manually disabled: sticks, and nobody polls it.
    pub manual: bool,
}

impl Default for McpState {
    fn default() -> Self {
        McpState {
            active: true,
            circuit: Circuit::Closed,
            healthy: None,
            last_check_ms: None,
            failures: 0,
            cycles: 0,
            manual: false,
        }
    }
}

/// One MCP: config and state.
#[derive(Debug, Clone)]
pub struct Mcp {
    pub id: u32,
    pub cfg: McpConfig,
    pub state: McpState,
    /// The version of `state` in the cluster's log (0 in process, or before the first write).
    pub version: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Mcp {
    pub fn new(id: u32, cfg: McpConfig) -> Mcp {
        Mcp {
            id,
            cfg,
            state: McpState::default(),
            version: 0,
        }
    }

    fn last_check(&self) -> Option<String> {
        self.state
            .last_check_ms
            .map(|ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms)))
    }

    pub fn to_json(&self, view: View) -> Value {
        let s = &self.state;
        let mut v = json!({
            "id": self.id,
            "name": self.cfg.name,
            "status": Status::of(s.active),
            "last_health_check": self.last_check(),
            "health_status": match s.healthy { Some(true) => "healthy", Some(false) => "unhealthy", None => "unknown" },
        });
        if view == View::Full {
            v["circuit_state"] = s.circuit.as_str().into();
        }
        v
    }

    fn health(&self, event: HealthKind, message: String, ts: &str) -> Event {
        Event::Health {
            mcp_id: self.id,
            mcp_name: self.cfg.name.clone(),
            event,
            message,
            timestamp: ts.to_owned(),
        }
    }

    fn change(&self, old: Status, reason: String, ts: &str) -> Event {
        Event::StatusChange {
            mcp_id: self.id,
            mcp_name: self.cfg.name.clone(),
            old_status: old,
            new_status: Status::of(self.state.active),
            reason,
            timestamp: ts.to_owned(),
        }
    }

    /// A check's result: reported whatever the breaker does; a manually disabled MCP ignores
    /// it (no events, no change).
    pub fn record_check(&mut self, ok: bool, at: SystemTime) -> Vec<Event> {
        if self.state.manual {
            return Vec::new();
        }
        let ts = rfc3339(at);
        self.state.last_check_ms = Some(unix_ms(at));
        self.state.healthy = Some(ok);
        let mut events = vec![Event::HealthCheck {
            mcp_id: self.id,
            mcp_name: self.cfg.name.clone(),
            healthy: ok,
            last_health_check: ts.clone(),
        }];
        match (self.state.circuit, ok) {
            (Circuit::Closed, true) => self.state.failures = 0,
            (Circuit::Closed, false) => {
                self.state.failures += 1;
                if self.state.failures >= self.cfg.failure_threshold {
                    self.open(&ts, &mut events);
                }
            }
            (Circuit::HalfOpen | Circuit::Open, true) => {
                let s = &mut self.state;
                s.circuit = Circuit::Closed;
                s.failures = 0;
                s.cycles = 0;
                events.push(self.health(
                    HealthKind::Recovery,
                    "MCP recovered after circuit breaker timeout".into(),
                    &ts,
                ));
                if !self.state.active {
                    self.state.active = true;
                    events.push(self.change(
                        Status::Inactive,
                        "Recovered after health check".into(),
                        &ts,
                    ));
                }
            }
            (Circuit::HalfOpen | Circuit::Open, false) => self.open(&ts, &mut events),
        }
        events
    }

    /// Enters OPEN: counts a cycle and auto-disables after `disable_after_cycles`.
    fn open(&mut self, ts: &str, events: &mut Vec<Event>) {
        self.state.circuit = Circuit::Open;
        self.state.cycles += 1;
        events.push(self.health(
            HealthKind::CircuitOpen,
            format!(
                "Circuit breaker opened after {} consecutive failures",
                self.state.failures.max(1)
            ),
            ts,
        ));
        if self.state.cycles >= self.cfg.disable_after_cycles && self.state.active {
            self.state.active = false;
            events.push(self.change(
                Status::Active,
                format!("Auto-disabled after {} failure cycles", self.state.cycles),
                ts,
            ));
        }
    }

    /// The recovery timeout is over: OPEN → HALF_OPEN (nothing when no longer OPEN).
    pub fn half_open(&mut self) -> Vec<Event> {
        if self.state.manual || self.state.circuit != Circuit::Open {
            return Vec::new();
        }
        self.state.circuit = Circuit::HalfOpen;
        vec![self.health(
            HealthKind::HalfOpen,
            "Circuit breaker half-open: probing".into(),
            &now_rfc3339(),
        )]
    }

    /// Manual enable/disable. A manual disable sticks and stops polling; enable resets the
    /// breaker and resumes polling.
    pub fn set_manual(&mut self, enable: bool, by: &str) -> Vec<Event> {
        let (old, was_closed) = (
            Status::of(self.state.active),
            self.state.circuit == Circuit::Closed,
        );
        let s = &mut self.state;
        s.manual = !enable;
        s.active = enable;
        if enable {
            s.circuit = Circuit::Closed;
            s.failures = 0;
            s.cycles = 0;
        }
        let ts = now_rfc3339();
        let mut events = Vec::new();
        // Sockets see the breaker reset too, not only the status.
        if enable && !was_closed {
            events.push(self.health(
                HealthKind::Recovery,
                format!("Circuit breaker reset by {by}"),
                &ts,
            ));
        }
        if old != Status::of(enable) {
            let reason = if enable {
                format!("Manually enabled by {by}")
            } else {
                format!("Manually disabled by {by}")
            };
            events.push(self.change(old, reason, &ts));
        }
        events
    }

    /// What a socket that missed the changes from `old` to this state is told: the new
    /// breaker state, status and last check, as the events that would have said so.
    pub fn catch_up(&self, old: &McpState) -> Vec<Event> {
        let ts = now_rfc3339();
        let mut events = Vec::new();
        if self.state.last_check_ms != old.last_check_ms {
            if let (Some(healthy), Some(at)) = (self.state.healthy, self.last_check()) {
                events.push(Event::HealthCheck {
                    mcp_id: self.id,
                    mcp_name: self.cfg.name.clone(),
                    healthy,
                    last_health_check: at,
                });
            }
        }
        if self.state.circuit != old.circuit {
            let (kind, message) = match self.state.circuit {
                Circuit::Open => (HealthKind::CircuitOpen, "Circuit breaker open"),
                Circuit::HalfOpen => (HealthKind::HalfOpen, "Circuit breaker half-open: probing"),
                Circuit::Closed => (HealthKind::Recovery, "Circuit breaker closed"),
            };
            events.push(self.health(kind, message.into(), &ts));
        }
        if self.state.active != old.active {
            events.push(self.change(
                Status::of(old.active),
                "Changed while this replica could not reach the shared state".into(),
                &ts,
            ));
        }
        events
    }
}

/// `2026-01-26T10:30:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_769_423_400)),
            "2026-01-26T10:30:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    fn mcp() -> Mcp {
        Mcp::new(
            1,
            McpConfig {
                name: "m".into(),
                health_url: "http://127.0.0.1:1/".into(),
                interval: Dur::secs(1),
                timeout: Dur::secs(1),
                failure_threshold: 2,
                recovery_timeout: Dur::secs(1),
                disable_after_cycles: 2,
            },
        )
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e.to_json(View::Full) {
                v if v["type"] == "health_event" => {
                    format!("health:{}", v["event"].as_str().unwrap())
                }
                v if v["type"] == "mcp_status_change" => {
                    format!("status:{}", v["new_status"].as_str().unwrap())
                }
                v => v["type"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn breaker_state_machine() {
        let mut m = mcp();
        let now = SystemTime::now();
        // Every check is reported, whatever the breaker does.
        assert_eq!(kinds(&m.record_check(false, now)), ["health_check"]);
        assert_eq!(
            kinds(&m.record_check(false, now)),
            ["health_check", "health:circuit_open"]
        );
        assert_eq!(m.state.circuit, Circuit::Open);
        assert_eq!(kinds(&m.half_open()), ["health:half_open"]);
        assert!(m.half_open().is_empty(), "only from OPEN");
        for (probe_ok, want, active) in [
            // Half-open probe fails: second cycle, auto-disabled.
            (
                false,
                &["health_check", "health:circuit_open", "status:inactive"][..],
                false,
            ),
            // Probe succeeds: recovery and back to active.
            (
                true,
                &["health_check", "health:recovery", "status:active"][..],
                true,
            ),
        ] {
            m.state.circuit = Circuit::HalfOpen;
            assert_eq!(kinds(&m.record_check(probe_ok, now)), want);
            assert_eq!(m.state.active, active, "probe ok: {probe_ok}");
        }
        assert_eq!(m.state.circuit, Circuit::Closed);
        let check = m.record_check(true, now)[0].to_json(View::Redacted);
        assert_eq!(check["type"], "health_check");
        assert_eq!(check["mcp_name"], "m");
        assert_eq!(check["health_status"], "healthy");
        assert_eq!(
            check["last_health_check"],
            m.to_json(View::Full)["last_health_check"]
        );
    }

    #[test]
    fn manual_disable_sticks_and_ignores_checks() {
        let mut m = mcp();
        assert_eq!(kinds(&m.set_manual(false, "alice")), ["status:inactive"]);
        assert!(!m.state.active && m.state.manual);
        assert!(m.record_check(true, SystemTime::now()).is_empty());
        assert!(!m.state.active);
        assert!(m.set_manual(false, "alice").is_empty(), "already disabled");
        m.state.circuit = Circuit::Open;
        assert_eq!(
            kinds(&m.set_manual(true, "alice")),
            ["health:recovery", "status:active"]
        );
        assert!(m.state.active && !m.state.manual);
        assert_eq!(m.state.circuit, Circuit::Closed);
    }

    #[test]
    fn catch_up_says_what_changed() {
        let mut m = mcp();
        let old = m.state.clone();
        assert!(m.catch_up(&old).is_empty());
        m.record_check(false, SystemTime::now());
        m.record_check(false, SystemTime::now());
        m.set_manual(false, "bob");
        assert_eq!(
            kinds(&m.catch_up(&old)),
            ["health_check", "health:circuit_open", "status:inactive"]
        );
    }

    #[test]
    fn state_round_trips_as_json() {
        let mut m = mcp();
        m.record_check(false, SystemTime::now());
        let text = serde_json::to_string(&m.state).unwrap();
        assert_eq!(serde_json::from_str::<McpState>(&text).unwrap(), m.state);
        assert!(text.contains(r#""circuit":"CLOSED""#), "{text}");
    }
}
