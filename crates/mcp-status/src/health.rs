//! MCP health polling with a circuit breaker and auto-disable (SPEC §4.4). One task per MCP,
//! so checks of one MCP never overlap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::broadcast::{Event, Hub, View};
use crate::config::McpConfig;
use crate::metrics::Metrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One MCP's state.
#[derive(Debug, Clone)]
pub struct Mcp {
    pub id: u32,
    pub cfg: McpConfig,
    pub active: bool,
    pub circuit: Circuit,
    /// `None` until the first check.
    pub healthy: Option<bool>,
    pub last_check: Option<SystemTime>,
    failures: u32,
    cycles: u32,
    pub manual: bool,
}

fn status(active: bool) -> &'static str {
    if active {
        "active"
    } else {
        "inactive"
    }
}

impl Mcp {
    pub fn to_json(&self, view: View) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.cfg.name,
            "status": status(self.active),
            "last_health_check": self.last_check.map(rfc3339),
            "health_status": match self.healthy { Some(true) => "healthy", Some(false) => "unhealthy", None => "unknown" },
        });
        if view == View::Full {
            v["circuit_state"] = self.circuit.as_str().into();
        }
        v
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

/// All MCPs and their pollers' wake-ups.
pub struct Registry {
    mcps: Mutex<Vec<Mcp>>,
    wake: Vec<Notify>,
    hub: Arc<Hub>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct NotFound;

impl Registry {
    pub fn new(cfgs: &[McpConfig], hub: Arc<Hub>, metrics: Arc<Metrics>) -> Registry {
        let mcps: Vec<Mcp> = cfgs
            .iter()
            .enumerate()
            .map(|(i, c)| Mcp {
                id: i as u32 + 1,
                cfg: c.clone(),
                active: true,
                circuit: Circuit::Closed,
                healthy: None,
                last_check: None,
                failures: 0,
                cycles: 0,
                manual: false,
            })
            .collect();
        for m in &mcps {
            metrics.circuit(&m.cfg.name, m.circuit.as_str());
        }
        Registry {
            wake: mcps.iter().map(|_| Notify::new()).collect(),
            mcps: Mutex::new(mcps),
            hub,
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap_or_default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Mcp>> {
        self.mcps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self, view: View) -> Vec<Value> {
        self.lock().iter().map(|m| m.to_json(view)).collect()
    }

    pub fn get(&self, name: &str) -> Option<Mcp> {
        self.lock().iter().find(|m| m.cfg.name == name).cloned()
    }

    pub fn system_metrics(&self) -> Event {
        let mcps = self.lock();
        Event::SystemMetrics {
            active_mcps: mcps.iter().filter(|m| m.active).count(),
            total_mcps: mcps.len(),
            circuit_breakers_open: mcps.iter().filter(|m| m.circuit == Circuit::Open).count(),
            timestamp: now_rfc3339(),
        }
    }

    /// Manual enable/disable. A manual disable sticks and stops polling; enable resets the
    /// breaker and resumes polling. Returns the MCP's new state.
    pub fn set_manual(&self, name: &str, enable: bool, by: &str) -> Result<Mcp, NotFound> {
        let (idx, event, snapshot) = {
            let mut mcps = self.lock();
            let (idx, m) = mcps
                .iter_mut()
                .enumerate()
                .find(|(_, m)| m.cfg.name == name)
                .ok_or(NotFound)?;
            let old = status(m.active);
            m.manual = !enable;
            m.active = enable;
            if enable {
                m.circuit = Circuit::Closed;
                m.failures = 0;
                m.cycles = 0;
            }
            self.metrics.circuit(&m.cfg.name, m.circuit.as_str());
            let reason = if enable {
                format!("Manually enabled by {by}")
            } else {
                format!("Manually disabled by {by}")
            };
            let event = (old != status(m.active)).then(|| Event::StatusChange {
                mcp_id: m.id,
                mcp_name: m.cfg.name.clone(),
                old_status: old,
                new_status: status(m.active),
                reason,
                timestamp: now_rfc3339(),
            });
            (idx, event, m.clone())
        };
        if let Some(e) = event {
            self.hub.publish(&e);
            self.hub.publish(&self.system_metrics());
        }
        self.wake[idx].notify_one();
        Ok(snapshot)
    }

    async fn check(&self, url: &str, timeout: Duration) -> bool {
        match self.client.get(url).timeout(timeout).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Applies a check result; returns the events to broadcast.
    fn apply(&self, idx: usize, ok: bool) -> Vec<Event> {
        let mut mcps = self.lock();
        let m = &mut mcps[idx];
        let ts = now_rfc3339();
        m.last_check = Some(SystemTime::now());
        m.healthy = Some(ok);
        let mut events = vec![Event::HealthCheck {
            mcp_id: m.id,
            mcp_name: m.cfg.name.clone(),
            healthy: ok,
            last_health_check: ts.clone(),
        }];
        let before = (m.circuit, m.active);
        match (m.circuit, ok) {
            (Circuit::Closed, true) => m.failures = 0,
            (Circuit::Closed, false) => {
                m.failures += 1;
                if m.failures >= m.cfg.failure_threshold {
                    open(m, &ts, &mut events);
                }
            }
            (Circuit::HalfOpen, true) | (Circuit::Open, true) => {
                m.circuit = Circuit::Closed;
                m.failures = 0;
                m.cycles = 0;
                events.push(health(
                    m,
                    "recovery",
                    "MCP recovered after circuit breaker timeout".into(),
                    &ts,
                ));
                if !m.active && !m.manual {
                    m.active = true;
                    events.push(change(
                        m,
                        "inactive",
                        "Recovered after health check".into(),
                        &ts,
                    ));
                }
            }
            (Circuit::HalfOpen, false) | (Circuit::Open, false) => open(m, &ts, &mut events),
        }
        let changed = before != (m.circuit, m.active);
        if changed {
            self.metrics.circuit(&m.cfg.name, m.circuit.as_str());
        }
        drop(mcps);
        if changed {
            events.push(self.system_metrics());
        }
        events
    }

    /// Polls MCP `idx` forever.
    pub async fn run_poller(self: Arc<Self>, idx: usize) {
        loop {
            let (manual, circuit, cfg) = {
                let m = &self.lock()[idx];
                (m.manual, m.circuit, m.cfg.clone())
            };
            if manual {
                self.wake[idx].notified().await;
                continue;
            }
            if circuit == Circuit::Open {
                // Wait out the recovery timeout, then probe half-open.
                tokio::select! {
                    _ = tokio::time::sleep(cfg.recovery_timeout.0) => {}
                    _ = self.wake[idx].notified() => continue,
                }
                let event = {
                    let mut mcps = self.lock();
                    let m = &mut mcps[idx];
                    if m.manual || m.circuit != Circuit::Open {
                        continue;
                    }
                    m.circuit = Circuit::HalfOpen;
                    self.metrics.circuit(&m.cfg.name, m.circuit.as_str());
                    health(
                        m,
                        "half_open",
                        "Circuit breaker half-open: probing".into(),
                        &now_rfc3339(),
                    )
                };
                self.hub.publish(&event);
            }
            let ok = self.check(&cfg.health_url, cfg.timeout.0).await;
            self.metrics.health_check(&cfg.name, ok);
            if self.lock()[idx].manual {
                continue;
            }
            for e in self.apply(idx, ok) {
                self.hub.publish(&e);
            }
            if self.lock()[idx].circuit == Circuit::Closed {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.interval.0) => {}
                    _ = self.wake[idx].notified() => {}
                }
            }
        }
    }
}

fn health(m: &Mcp, event: &'static str, message: String, ts: &str) -> Event {
    Event::Health {
        mcp_id: m.id,
        mcp_name: m.cfg.name.clone(),
        event,
        message,
        timestamp: ts.to_owned(),
    }
}

fn change(m: &Mcp, old: &'static str, reason: String, ts: &str) -> Event {
    Event::StatusChange {
        mcp_id: m.id,
        mcp_name: m.cfg.name.clone(),
        old_status: old,
        new_status: status(m.active),
        reason,
        timestamp: ts.to_owned(),
    }
}

/// Enters OPEN: counts a cycle and auto-disables after `disable_after_cycles`.
fn open(m: &mut Mcp, ts: &str, events: &mut Vec<Event>) {
    m.circuit = Circuit::Open;
    m.cycles += 1;
    events.push(health(
        m,
        "circuit_open",
        format!(
            "Circuit breaker opened after {} consecutive failures",
            m.failures.max(1)
        ),
        ts,
    ));
    if m.cycles >= m.cfg.disable_after_cycles && m.active {
        m.active = false;
        events.push(change(
            m,
            "active",
            format!("Auto-disabled after {} failure cycles", m.cycles),
            ts,
        ));
    }
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

    fn registry() -> Registry {
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(10, 10, 10, metrics.clone()));
        let cfg = McpConfig {
            name: "m".into(),
            health_url: "http://127.0.0.1:1/".into(),
            interval: Dur::secs(1),
            timeout: Dur::secs(1),
            failure_threshold: 2,
            recovery_timeout: Dur::secs(1),
            disable_after_cycles: 2,
        };
        Registry::new(&[cfg], hub, metrics)
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
        let r = registry();
        // Every check is reported, whatever the breaker does.
        assert_eq!(kinds(&r.apply(0, false)), ["health_check"]);
        assert_eq!(
            kinds(&r.apply(0, false)),
            ["health_check", "health:circuit_open", "system_metrics"]
        );
        assert_eq!(r.get("m").unwrap().circuit, Circuit::Open);
        for (probe_ok, want, active) in [
            // Half-open probe fails: second cycle, auto-disabled.
            (
                false,
                [
                    "health_check",
                    "health:circuit_open",
                    "status:inactive",
                    "system_metrics",
                ],
                false,
            ),
            // Probe succeeds: recovery and back to active.
            (
                true,
                [
                    "health_check",
                    "health:recovery",
                    "status:active",
                    "system_metrics",
                ],
                true,
            ),
        ] {
            r.lock()[0].circuit = Circuit::HalfOpen;
            assert_eq!(kinds(&r.apply(0, probe_ok)), want);
            assert_eq!(r.get("m").unwrap().active, active, "probe ok: {probe_ok}");
        }
        let m = r.get("m").unwrap();
        assert_eq!(m.circuit, Circuit::Closed);
        let check = r.apply(0, true)[0].to_json(View::Redacted);
        assert_eq!(check["type"], "health_check");
        assert_eq!(check["mcp_name"], "m");
        assert_eq!(check["health_status"], "healthy");
        assert_eq!(
            check["last_health_check"],
            r.get("m").unwrap().to_json(View::Full)["last_health_check"]
        );
    }

    #[test]
    fn manual_disable_sticks() {
        let r = registry();
        let m = r.set_manual("m", false, "alice").unwrap();
        assert!(!m.active && m.manual);
        assert_eq!(r.set_manual("nope", true, "alice").unwrap_err(), NotFound);
        let m = r.set_manual("m", true, "alice").unwrap();
        assert!(m.active && !m.manual);
    }
}
