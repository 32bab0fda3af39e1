//! mcp-status metrics: connections by role, messages sent/dropped, closes by code, health
//! check results, circuit states and the shared state (Redis) client. One recorder per
//! instance.

pub use gatepass_service::state::{StateMetrics, TopologyMetrics};
use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// The Redis calls mcp-status makes: the `op` label of `mcp_status_state_errors_total`.
pub const STATE_OPS: &[&str] = &[
    "ping",
    "conn_acquire",
    "conn_renew",
    "conn_release",
    "mcp_load",
    "mcp_commit",
    "mcp_snapshot",
    "mcp_read",
    "poller_lease",
];

const STATE_SECONDS: &str = "mcp_status_state_seconds";

const META: Metadata<'static> =
    Metadata::new("mcp_status", Level::INFO, Some("mcp_status::metrics"));

pub struct Metrics {
    recorder: std::sync::Arc<PrometheusRecorder>,
    pub sent: Counter,
    pub dropped: Counter,
    pub state: std::sync::Arc<StateMetrics>,
    /// 1 while this replica polls MCP health (always in process; the lease holder's with Redis).
    pub poller: Gauge,
    /// 1 while gatepass's revocation feed is connected.
    pub feed_up: Gauge,
    /// Revocations received from the feed.
    pub revocations: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let buckets = [
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(STATE_SECONDS.into()), &buckets)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        // Shared with the state client, which registers one gauge per master address it uses.
        let recorder = std::sync::Arc::new(recorder);
        let sent = recorder.register_counter(
            &Key::from_static_name("mcp_status_messages_sent_total"),
            &META,
        );
        let dropped = recorder.register_counter(
            &Key::from_static_name("mcp_status_messages_dropped_total"),
            &META,
        );
        let errors = STATE_OPS.iter().map(|op| {
            let key = Key::from_parts("mcp_status_state_errors_total", vec![Label::new("op", *op)]);
            recorder.register_counter(&key, &META)
        });
        let state = std::sync::Arc::new(
            StateMetrics::new(
                recorder.register_gauge(&Key::from_static_name("mcp_status_state_up"), &META),
                STATE_OPS,
                errors.collect(),
                Some(recorder.register_histogram(&Key::from_static_name(STATE_SECONDS), &META)),
            )
            .with_topology(TopologyMetrics::on(
                recorder.clone(),
                "mcp_status_state_master",
                &META,
                recorder.register_counter(
                    &Key::from_static_name("mcp_status_state_failovers_total"),
                    &META,
                ),
            )),
        );
        let poller =
            recorder.register_gauge(&Key::from_static_name("mcp_status_health_poller"), &META);
        let feed_up = recorder.register_gauge(
            &Key::from_static_name("mcp_status_revocation_feed_up"),
            &META,
        );
        let revocations = recorder.register_counter(
            &Key::from_static_name("mcp_status_revocations_total"),
            &META,
        );
        Metrics {
            recorder,
            sent,
            dropped,
            state,
            poller,
            feed_up,
            revocations,
        }
    }

    fn key(name: &'static str, labels: Vec<Label>) -> Key {
        Key::from_parts(name, labels)
    }

    /// Open WebSocket connections for a role (roles come from the config's allow-list).
    pub fn connections(&self, role: &str) -> Gauge {
        self.recorder.register_gauge(
            &Self::key(
                "mcp_status_connections",
                vec![Label::new("role", role.to_owned())],
            ),
            &META,
        )
    }

    pub fn closed(&self, code: u16) {
        self.recorder
            .register_counter(
                &Self::key(
                    "mcp_status_closes_total",
                    vec![Label::new("code", code.to_string())],
                ),
                &META,
            )
            .increment(1);
    }

    pub fn health_check(&self, mcp: &str, ok: bool) {
        let labels = vec![
            Label::new("mcp", mcp.to_owned()),
            Label::new("result", if ok { "healthy" } else { "unhealthy" }),
        ];
        self.recorder
            .register_counter(&Self::key("mcp_status_health_checks_total", labels), &META)
            .increment(1);
    }

    /// 1 for the MCP's current circuit state, 0 for the others.
    pub fn circuit(&self, mcp: &str, state: &'static str) {
        for s in ["CLOSED", "OPEN", "HALF_OPEN"] {
            let labels = vec![Label::new("mcp", mcp.to_owned()), Label::new("state", s)];
            self.recorder
                .register_gauge(&Self::key("mcp_status_circuit_state", labels), &META)
                .set(if s == state { 1.0 } else { 0.0 });
        }
    }

    pub fn render(&self) -> String {
        let h = self.recorder.handle();
        h.run_upkeep();
        h.render()
    }
}
