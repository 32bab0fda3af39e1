//! `[telemetry]` end to end within one process, against a real OTLP/HTTP receiver: off, no
//! span is even enabled and nothing is sent (even with the SDK's environment variables
//! pointing at the receiver); on, the services' spans arrive as protobuf, continuing the
//! incoming `traceparent`, and log lines inside them carry its `trace_id`.
//!
//! One test: the subscriber is installed process-wide, as the binaries do (a log line reads
//! the current span through the global dispatcher).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatepass_service::telemetry::{self, TelemetryConfig};
use gatepass_testkit::OtlpReceiver;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Log lines, captured.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn incoming() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        "traceparent",
        format!("00-{TRACE}-{PARENT}-01").parse().unwrap(),
    );
    h.insert("authorization", "Bearer not-a-real-token".parse().unwrap());
    h
}

/// What a request does in the services: a decision span continuing the incoming trace, a
/// child span, a log line inside, a library's span and a log line outside.
async fn request() {
    let span = tracing::info_span!(
        target: "gatepass::server",
        "gatepass.decision",
        gatepass.outcome = tracing::field::Empty,
        gatepass.cache_hit = false,
    );
    telemetry::continue_trace(&span, &incoming());
    async {
        tracing::info_span!(target: "gatepass_service::state", "redis", op = "get").in_scope(|| {});
        tracing::info_span!(target: "hyper::proto", "library").in_scope(|| {});
        tracing::Span::current().record("gatepass.outcome", "deny");
        tracing::info!(target: "gatepass::decision", reason = "missing_token", "request denied");
    }
    .instrument(span)
    .await;
    tracing::info!(target: "gatepass::server", "outside any trace");
}

// Multi-threaded: flushing at shutdown blocks while the receiver answers on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_sends_nothing_and_on_exports_the_services_spans() {
    let receiver = OtlpReceiver::start().await;
    // Were an exporter built, these would point it at the receiver, and quickly.
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{}", receiver.addr),
    );
    std::env::set_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url());
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "50");

    // Off (the default table): no exporter and no span enabled, so spans cost nothing.
    let logs = Captured::default();
    let off = TelemetryConfig::default();
    let (sub, t) = gatepass_service::logging_subscriber(
        EnvFilter::new("info"),
        false,
        false,
        Some(&off),
        "svc",
        logs.clone(),
    )
    .unwrap();
    assert!(!t.is_on());
    {
        let _guard = tracing::subscriber::set_default(sub);
        let span = tracing::info_span!(target: "gatepass::server", "gatepass.decision");
        assert!(span.is_disabled(), "a span is enabled with telemetry off");
        request().await;
    }
    t.shutdown();
    assert!(!telemetry::enabled());
    let text = logs.text();
    assert!(text.contains("request denied"), "{text}");
    assert!(
        !text.contains("trace_id") && !text.contains("gatepass.decision"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests(), vec![], "telemetry off sent something");

    // On: the services' spans only, protobuf, the incoming trace continued.
    let logs = Captured::default();
    let on = TelemetryConfig {
        otlp_endpoint: Some(receiver.url()),
        service_name: Some("svc-test".into()),
        ..TelemetryConfig::default()
    };
    let (sub, t) = gatepass_service::logging_subscriber(
        EnvFilter::new("info"),
        false,
        false,
        Some(&on),
        "svc",
        logs.clone(),
    )
    .unwrap();
    assert!(t.is_on());
    tracing::subscriber::set_global_default(sub).unwrap();
    assert!(telemetry::enabled());
    request().await;
    t.shutdown();

    let spans = receiver.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let decision = spans
        .iter()
        .find(|s| s.name == "gatepass.decision")
        .unwrap();
    let redis = spans.iter().find(|s| s.name == "redis").unwrap();
    assert_eq!(decision.trace_id, TRACE);
    assert_eq!(decision.parent_span_id, PARENT);
    assert_eq!(redis.trace_id, TRACE);
    assert_eq!(redis.parent_span_id, decision.span_id);
    assert_eq!(decision.attr("gatepass.outcome"), Some("deny"));
    assert_eq!(decision.attr("gatepass.cache_hit"), Some("false"));
    assert_eq!(redis.attr("op"), Some("get"));
    assert_eq!(decision.service(), "svc-test");
    for s in &spans {
        for t in s.all_text() {
            assert!(
                !t.contains("Bearer") && !t.contains("not-a-real-token"),
                "{t}"
            );
        }
    }
    for r in receiver.requests() {
        assert_eq!(r.path, "/v1/traces");
        assert_eq!(r.content_type, "application/x-protobuf");
    }
    // Log lines: the one inside the trace ends with its id; spans never appear in them.
    let text = logs.text();
    let denied = text.lines().find(|l| l.contains("request denied")).unwrap();
    assert!(denied.ends_with(&format!(" trace_id={TRACE}")), "{denied}");
    let outside = text
        .lines()
        .find(|l| l.contains("outside any trace"))
        .unwrap();
    assert!(!outside.contains("trace_id"), "{outside}");
    assert!(!text.contains("gatepass.decision"), "{text}");
}
