//! Prometheus metrics. Each server instance owns its recorder (so tests in one process don't
//! share counters) and registers handles up front: the hot path increments a handle, it never
//! looks a metric up by name.

pub use gatepass_service::state::{StateMetrics, TopologyMetrics};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::policy::deny::DenyReason;

const LATENCY: &str = "gatepass_decision_duration_seconds";
const STATE_SECONDS: &str = "gatepass_state_seconds";
/// The Redis calls gatepass makes: the `op` label of `gatepass_state_errors_total`.
pub const STATE_OPS: &[&str] = &[
    "ping",
    "ticket_issue",
    "ticket_redeem",
    "limits",
    "ip_budget",
    "revocation_commit",
    "revocation_snapshot",
    "revocation_read",
    "revocation_purge",
    "logout_jti",
    "dpop_jti",
    "limit_slice",
    "session_create",
    "session_load",
    "session_replace",
    "session_touch",
    "session_delete",
    "session_lease",
    "signin_flow",
];
const META: Metadata<'static> = Metadata::new("gatepass", Level::INFO, Some("gatepass::metrics"));

/// Every metric gatepass exports.
pub struct Metrics {
    recorder: std::sync::Arc<PrometheusRecorder>,
    pub allowed: Counter,
    /// Navigations sent to sign in (`outcome="signin"`).
    pub signin_redirects: Counter,
    denied: Vec<Counter>,
    /// `gatepass_rate_limited_total{limit}`, for the reasons that are rate limits.
    rate_limited: Vec<Option<Counter>>,
    pub latency: Histogram,
    pub cache_hit: Counter,
    pub cache_miss: Counter,
    pub spoofed: Counter,
    pub tickets_issued: Counter,
    pub tickets_redeemed: Counter,
    /// Accepted connections by transport: `plain`, `h2`, `http/1.1` (TLS ALPN) or `tls`.
    pub conn_plain: Counter,
    pub conn_h2: Counter,
    pub conn_http11: Counter,
    pub conn_tls_other: Counter,
    /// What the shared Redis client reports.
    pub state: std::sync::Arc<StateMetrics>,
    /// Decisions the in-process limiter made because Redis was unavailable.
    pub state_fallbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let buckets = [
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &buckets)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STATE_SECONDS.into()), &buckets))
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        // Shared with the state client, which registers one gauge per master address it uses.
        let recorder = std::sync::Arc::new(recorder);
        let describe = |name: &'static str, help: &'static str, unit: Option<Unit>| {
            recorder.describe_counter(KeyName::from_const_str(name), unit, help.into());
        };
        describe(
            "gatepass_requests_total",
            "ForwardAuth decisions by outcome and reason",
            None,
        );
        describe(
            "gatepass_token_cache_total",
            "Verified-token cache lookups by result",
            None,
        );
        describe(
            "gatepass_spoofed_headers_total",
            "Requests that carried client-sent identity headers",
            None,
        );
        describe(
            "gatepass_rate_limited_total",
            "Requests refused by a rate limit",
            None,
        );
        describe(
            "gatepass_jwks_fetches_total",
            "JWKS fetches by issuer and result",
            None,
        );
        describe("gatepass_tickets_total", "WebSocket tickets by event", None);
        describe(
            "gatepass_connections_total",
            "Accepted connections by transport (ALPN for TLS)",
            None,
        );
        describe(
            "gatepass_state_errors_total",
            "Failed or timed-out calls to the shared state (Redis) by operation",
            None,
        );
        describe(
            "gatepass_state_fallbacks_total",
            "Rate-limit decisions made in process because the shared state was unavailable",
            None,
        );
        recorder.describe_gauge(
            KeyName::from_const_str("gatepass_state_up"),
            None,
            "1 while the shared state (Redis) answers, else 0".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(STATE_SECONDS),
            Some(Unit::Seconds),
            "Time of one call to the shared state (Redis)".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(LATENCY),
            Some(Unit::Seconds),
            "Time to decide a /validate request".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str("gatepass_jwks_key_age_seconds"),
            Some(Unit::Seconds),
            "Seconds since the issuer's keys were last loaded".into(),
        );
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &META)
        };
        let req = |outcome: &'static str, reason: &'static str| {
            counter(
                "gatepass_requests_total",
                vec![Label::new("outcome", outcome), Label::new("reason", reason)],
            )
        };
        let allowed = req("allow", "ok");
        let signin_redirects = req("signin", "redirect");
        let denied = DenyReason::ALL
            .iter()
            .map(|r| req("deny", r.code()))
            .collect();
        let rate_limited = DenyReason::ALL
            .iter()
            .map(|r| {
                r.rate_limit_name().map(|limit| {
                    counter(
                        "gatepass_rate_limited_total",
                        vec![Label::new("limit", limit)],
                    )
                })
            })
            .collect();
        let cache =
            |r: &'static str| counter("gatepass_token_cache_total", vec![Label::new("result", r)]);
        let tickets =
            |e: &'static str| counter("gatepass_tickets_total", vec![Label::new("event", e)]);
        let conns = |t: &'static str| {
            counter(
                "gatepass_connections_total",
                vec![Label::new("transport", t)],
            )
        };
        let state = std::sync::Arc::new(
            StateMetrics::new(
                recorder.register_gauge(&Key::from_static_name("gatepass_state_up"), &META),
                STATE_OPS,
                STATE_OPS
                    .iter()
                    .map(|op| counter("gatepass_state_errors_total", vec![Label::new("op", *op)]))
                    .collect(),
                Some(recorder.register_histogram(&Key::from_static_name(STATE_SECONDS), &META)),
            )
            .with_topology(TopologyMetrics::on(
                recorder.clone(),
                "gatepass_state_master",
                &META,
                counter("gatepass_state_failovers_total", vec![]),
            )),
        );
        Metrics {
            state_fallbacks: counter("gatepass_state_fallbacks_total", vec![]),
            state,
            allowed,
            signin_redirects,
            denied,
            rate_limited,
            latency: recorder.register_histogram(&Key::from_static_name(LATENCY), &META),
            cache_hit: cache("hit"),
            cache_miss: cache("miss"),
            spoofed: counter("gatepass_spoofed_headers_total", vec![]),
            tickets_issued: tickets("issued"),
            tickets_redeemed: tickets("redeemed"),
            conn_plain: conns("plain"),
            conn_h2: conns("h2"),
            conn_http11: conns("http/1.1"),
            conn_tls_other: conns("tls"),
            recorder,
        }
    }

    pub fn denied(&self, reason: DenyReason) {
        self.denied[reason as usize].increment(1);
        if let Some(c) = &self.rate_limited[reason as usize] {
            c.increment(1);
        }
    }

    /// Registers (or finds) a counter; for cold paths.
    pub fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    pub fn gauge(&self, name: &'static str, labels: Vec<Label>) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &META)
    }

    /// Folds recorded histogram samples into their buckets. The exporter keeps raw samples
    /// until this runs, so it runs on a timer too: an unscraped gatepass must not grow.
    pub fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let handle = self.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}

#[cfg(test)]
mod tests {
    /// Every Redis call the code names (`call("op", ...)`, `set_new("op", ...)`) is a known
    /// `op`: an unknown one would never be counted in `gatepass_state_errors_total`.
    #[test]
    fn every_redis_op_is_counted() {
        fn sources(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    sources(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(std::fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut texts = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut texts,
        );
        let mut found = 0;
        for text in &texts {
            for pat in [
                ".call(",
                ".set_new(",
                ".call_replicated(",
                ".set_new_replicated(",
            ] {
                for (i, _) in text.match_indices(pat) {
                    let rest = text[i + pat.len()..].trim_start();
                    // A literal op; calls that pass a variable name theirs at their callers.
                    let Some(lit) = rest.strip_prefix('"') else {
                        continue;
                    };
                    let op: String = lit.chars().take_while(|c| *c != '"').collect();
                    // Only op names (this test's own pattern strings are not).
                    let name = op.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                    if op.is_empty() || !name || op == "test" {
                        continue;
                    }
                    found += 1;
                    assert!(
                        super::STATE_OPS.contains(&op.as_str()),
                        "op `{op}` is not in STATE_OPS"
                    );
                }
            }
        }
        assert!(found >= 10, "{found} ops found");
    }
}
