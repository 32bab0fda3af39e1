//! MCP health (SPEC §4.4, §5): the registry every snapshot is served from and the pollers (one
//! task per MCP, so checks of one MCP never overlap).
//!
//! In process, the registry is the state. With `[state] backend = "redis"` the state lives in
//! the cluster's log ([`McpLog`]): every change (a check's result on the replica holding the
//! poller lease, a manual change on any replica) is committed there, and every replica's
//! follower applies the log to its registry and broadcasts each change to its own sockets, in
//! the log's order. While Redis is away, sockets keep the last known state; the follower
//! reloads and tells them what changed once it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gatepass_service::state::{RedisState, StateError};
use gatepass_service::Tasks;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::broadcast::{Event, Hub, View};
use crate::config::McpConfig;
use crate::mcp::{now_rfc3339, Circuit, Mcp, McpState};
use crate::mcp_log::{parse_entry, parse_snapshot, Entry, McpLog, Snapshot};
use crate::metrics::Metrics;
use gatepass_service::table::{Change, Replica, TableSnapshot};

/// Between attempts while Redis is unreachable.
const RETRY: Duration = Duration::from_millis(250);
/// The poller lease lasts the shortest `interval` within these bounds (its holder renews it
/// three times per lease): a dead holder is replaced within 2 × interval, and within 40 s
/// whatever the interval.
const MIN_LEASE: Duration = Duration::from_millis(100);
const MAX_LEASE: Duration = Duration::from_secs(30);
/// How long an API change waits to see its own write come back through the log.
const READ_YOUR_WRITE: Duration = Duration::from_secs(1);

/// Why a manual change did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum ChangeError {
    NotFound,
    /// The shared state could not be reached.
    Unavailable,
}

/// All MCPs, their pollers' wake-ups, and (with Redis) the log they share.
pub struct Registry {
    mcps: Mutex<Vec<Mcp>>,
    wake: Vec<Notify>,
    hub: Arc<Hub>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    log: Option<McpLog>,
    /// Does this replica poll? Always in process; the lease holder's with Redis.
    polling: AtomicBool,
    /// Bumped after each change the follower applies.
    applied: watch::Sender<()>,
    /// Set on shutdown: the lease holder stops and gives its lease up.
    stop: watch::Sender<bool>,
    /// The lease task holds a receiver; `stop_polling` waits until it is gone.
    lease_task: watch::Sender<()>,
}

impl Registry {
    /// The registry of `cfgs`; `shared` puts their state in the cluster's log.
    pub fn new(
        cfgs: &[McpConfig],
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<RedisState>>,
    ) -> Registry {
        let mcps: Vec<Mcp> = cfgs
            .iter()
            .enumerate()
            .map(|(i, c)| Mcp::new(i as u32 + 1, c.clone()))
            .collect();
        for m in &mcps {
            metrics.circuit(&m.cfg.name, m.state.circuit.as_str());
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
            log: shared.map(McpLog::new),
            polling: AtomicBool::new(false),
            applied: watch::channel(()).0,
            stop: watch::channel(false).0,
            lease_task: watch::channel(()).0,
        }
    }

    /// Starts the pollers (in process), or the follower and the lease (Redis), on `tasks`.
    pub fn start(self: &Arc<Self>, tasks: &Tasks) {
        if self.wake.is_empty() {
            return;
        }
        if self.log.is_some() {
            tasks.spawn(self.clone().follow());
            tasks.spawn(self.clone().lead());
        } else {
            self.set_polling(true);
            for i in 0..self.wake.len() {
                tasks.spawn(self.clone().run_poller(i));
            }
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

    fn index(&self, name: &str) -> Option<usize> {
        self.lock().iter().position(|m| m.cfg.name == name)
    }

    /// Does this replica poll MCP health?
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    fn set_polling(&self, on: bool) {
        self.polling.store(on, Ordering::Relaxed);
        self.metrics.poller.set(if on { 1.0 } else { 0.0 });
    }

    pub fn system_metrics(&self) -> Event {
        let mcps = self.lock();
        Event::SystemMetrics {
            active_mcps: mcps.iter().filter(|m| m.state.active).count(),
            total_mcps: mcps.len(),
            circuit_breakers_open: mcps
                .iter()
                .filter(|m| m.state.circuit == Circuit::Open)
                .count(),
            timestamp: now_rfc3339(),
        }
    }

    /// Tells this replica's sockets (and metrics, and the poller) about a change from
    /// `before` to `after`. Called with the registry unlocked: the hub calls back into it.
    fn announce(&self, idx: usize, before: &McpState, after: &Mcp, events: &[Event], wake: bool) {
        let (b, a) = (before, &after.state);
        if b.circuit != a.circuit {
            self.metrics.circuit(&after.cfg.name, a.circuit.as_str());
        }
        for e in events {
            self.hub.publish(e);
        }
        if (b.circuit, b.active) != (a.circuit, a.active) {
            self.hub.publish(&self.system_metrics());
        }
        if wake {
            self.wake[idx].notify_one();
        }
    }

    /// Applies `f` to MCP `idx` where its state lives and returns the new state. With Redis,
    /// `f` runs on the latest stored state and is run again when another write came first;
    /// the follower announces the change.
    async fn update(
        &self,
        idx: usize,
        wake: bool,
        f: impl Fn(&mut Mcp) -> Vec<Event>,
    ) -> Result<Mcp, StateError> {
        let Some(log) = &self.log else {
            let (before, after, events) = {
                let mut mcps = self.lock();
                let before = mcps[idx].state.clone();
                let events = f(&mut mcps[idx]);
                (before, mcps[idx].clone(), events)
            };
            if !events.is_empty() || before != after.state {
                self.announce(idx, &before, &after, &events, wake);
            }
            return Ok(after);
        };
        let mut m = self.lock()[idx].clone();
        for _ in 0..5 {
            let stored = log.load(&m.cfg.name).await?;
            if let Some(s) = stored.state {
                m.state = s;
            }
            let before = m.state.clone();
            let events = f(&mut m);
            if events.is_empty() && before == m.state {
                return Ok(m);
            }
            let expected = stored.version.unwrap_or(m.version);
            if let Some(v) = log
                .commit(&m.cfg.name, expected, &m.state, &events, wake)
                .await?
            {
                m.version = v;
                return Ok(m);
            }
        }
        Err(StateError::Failed("conflicting writes"))
    }

    /// Manual enable/disable by `by`; returns the MCP's new state. With Redis, the change is
    /// on every replica, this one included, when it returns (or within a second).
    pub async fn set_manual(&self, name: &str, enable: bool, by: &str) -> Result<Mcp, ChangeError> {
        let idx = self.index(name).ok_or(ChangeError::NotFound)?;
        let mut applied = self.applied.subscribe();
        let m = self
            .update(idx, true, |m| m.set_manual(enable, by))
            .await
            .map_err(|_| ChangeError::Unavailable)?;
        if self.log.is_some() {
            let seen = async {
                while self.lock()[idx].version < m.version {
                    if applied.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(READ_YOUR_WRITE, seen).await;
        }
        Ok(m)
    }

    async fn check(&self, url: &str, timeout: Duration) -> bool {
        match self.client.get(url).timeout(timeout).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }

    /// Polls MCP `idx` until aborted.
    pub async fn run_poller(self: Arc<Self>, idx: usize) {
        let mut m = self.lock()[idx].clone();
        // A poller taking over from another replica keeps the cluster's rhythm.
        if let Some(ms) = m
            .state
            .last_check_ms
            .filter(|_| m.state.circuit == Circuit::Closed)
        {
            let next = UNIX_EPOCH + Duration::from_millis(ms) + m.cfg.interval.0;
            if let Ok(wait) = next.duration_since(SystemTime::now()) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.wake[idx].notified() => {}
                }
                m = self.lock()[idx].clone();
            }
        }
        loop {
            if m.state.manual {
                self.wake[idx].notified().await;
                m = self.lock()[idx].clone();
                continue;
            }
            if m.state.circuit == Circuit::Open {
                // Wait out the recovery timeout, then probe half-open.
                let recovery = m.cfg.recovery_timeout.0;
                tokio::select! {
                    _ = tokio::time::sleep(recovery) => {}
                    _ = self.wake[idx].notified() => {
                        m = self.lock()[idx].clone();
                        continue;
                    }
                }
                match self.update(idx, false, Mcp::half_open).await {
                    Ok(n) if n.state.circuit == Circuit::HalfOpen => m = n,
                    Ok(n) => {
                        m = n;
                        continue;
                    }
                    Err(_) => {
                        // The shared state is away: nothing can be recorded; try later.
                        tokio::time::sleep(m.cfg.interval.0).await;
                        m = self.lock()[idx].clone();
                        continue;
                    }
                }
            }
            let ok = self.check(&m.cfg.health_url, m.cfg.timeout.0).await;
            self.metrics.health_check(&m.cfg.name, ok);
            let recorded = self
                .update(idx, false, |m| m.record_check(ok, SystemTime::now()))
                .await;
            let open = matches!(&recorded, Ok(n) if n.state.circuit != Circuit::Closed);
            if !open {
                tokio::select! {
                    _ = tokio::time::sleep(m.cfg.interval.0) => {}
                    _ = self.wake[idx].notified() => {}
                }
            }
            m = match recorded {
                Ok(n) if open => n,
                _ => self.lock()[idx].clone(),
            };
        }
    }

    /// The follower (Redis): applies the cluster's log to this registry, in order, and
    /// reloads the whole state at start, after Redis was away, or when it missed entries.
    async fn follow(self: Arc<Self>) {
        if let Some(log) = &self.log {
            log.table().follow(&*self).await;
        }
    }

    /// Applies one logged change; false when it does not follow the version this replica has
    /// (entries were missed, or Redis lost its data): the caller reloads.
    fn apply_entry(&self, e: Entry) -> bool {
        let Some(idx) = self.index(&e.mcp) else {
            // Not in this replica's config (a rolling config change): nothing to show.
            return true;
        };
        let (before, after) = {
            let mut mcps = self.lock();
            let m = &mut mcps[idx];
            if e.version != m.version + 1 {
                return false;
            }
            let before = std::mem::replace(&mut m.state, e.state);
            m.version = e.version;
            (before, m.clone())
        };
        self.announce(idx, &before, &after, &e.events, e.wake);
        self.applied.send_replace(());
        true
    }

    /// Replaces every MCP's state with the snapshot's and tells sockets what changed. An MCP the snapshot lacks keeps its state and
    /// version here (Redis lost it): the next write stores it again, from that version.
    fn reload_snapshot(&self, s: Snapshot) {
        for idx in 0..self.wake.len() {
            let (before, after) = {
                let mut mcps = self.lock();
                let m = &mut mcps[idx];
                let before = m.state.clone();
                if let Some((state, version)) = s.states.get(&m.cfg.name) {
                    m.state = state.clone();
                    m.version = *version;
                }
                (before, m.clone())
            };
            if before != after.state {
                let events = after.catch_up(&before);
                let wake =
                    before.manual != after.state.manual || before.circuit != after.state.circuit;
                self.announce(idx, &before, &after, &events, wake);
            }
        }
        self.applied.send_replace(());
    }

    /// The poller lease (Redis): while this replica holds it, it runs the pollers; it renews
    /// it three times per lease, and gives it up on shutdown so another replica takes over at
    /// once. A holder that dies stops renewing: another replica takes over when it lapses.
    async fn lead(self: Arc<Self>) {
        let Some(log) = &self.log else { return };
        let _running = self.lease_task.subscribe();
        let mut stop = self.stop.subscribe();
        let shortest = self.lock().iter().map(|m| m.cfg.interval.0).min();
        let lease = shortest.unwrap_or(MIN_LEASE).clamp(MIN_LEASE, MAX_LEASE);
        let id = gatepass_service::state::random_id();
        let mut pollers: Option<Tasks> = None;
        while !*stop.borrow() {
            let answer = log.hold(&id, lease).await;
            let held = matches!(answer, Ok(true));
            if held != pollers.is_some() {
                if held {
                    tracing::info!("this replica now polls MCP health for the cluster");
                    let tasks = Tasks::new();
                    for i in 0..self.wake.len() {
                        tasks.spawn(self.clone().run_poller(i));
                    }
                    pollers = Some(tasks);
                } else {
                    tracing::info!("another replica polls MCP health");
                    pollers = None;
                }
                self.set_polling(held);
            }
            // No answer (Redis away, or not connected yet): ask again soon.
            let pause = if answer.is_err() { RETRY } else { lease / 3 };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
        if pollers.take().is_some() {
            self.set_polling(false);
            let _ = log.release(&id).await;
        }
    }

    /// Shutdown: stops polling and gives the lease up (bounded by a second).
    pub async fn stop_polling(&self) {
        self.stop.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.lease_task.closed()).await;
    }
}

impl Replica for Registry {
    fn reload(&self, snapshot: TableSnapshot) {
        self.reload_snapshot(parse_snapshot(snapshot));
    }

    fn apply(&self, change: Change) -> bool {
        // An unreadable entry is skipped; the version gap it leaves makes the next one reload.
        parse_entry(&change).is_none_or(|e| self.apply_entry(e))
    }
}
