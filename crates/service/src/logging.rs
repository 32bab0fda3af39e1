//! Tracing setup shared by both services: log lines on stderr and, with `[telemetry]`, spans
//! exported over OTLP.

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::ConfigError;
use crate::telemetry::{self, Telemetry, TelemetryConfig};

/// Tracing to stderr, filtered by the environment variable `env_var` (default `info`); JSON
/// lines when `json`, plain text otherwise. Colour codes only when stderr is a terminal, so
/// log files (`make run`'s run/logs/) stay plain text.
pub fn init_tracing(env_var: &str, json: bool) {
    let _ = init_tracing_with(env_var, json, None, "");
}

/// [`init_tracing`], plus OpenTelemetry traces when `telemetry` names an endpoint (service
/// name `default_name` unless the table sets one). Keep the returned [`Telemetry`] until the
/// process ends: dropping it flushes and stops the exporter.
pub fn init_tracing_with(
    env_var: &str,
    json: bool,
    telemetry: Option<&TelemetryConfig>,
    default_name: &str,
) -> Result<Telemetry, ConfigError> {
    let filter = EnvFilter::try_from_env(env_var).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (subscriber, t) = subscriber(filter, json, ansi, telemetry, default_name, std::io::stderr)?;
    let _ = subscriber.try_init();
    if let Some(c) = telemetry.filter(|_| t.is_on()) {
        let service = c.service_name.as_deref().unwrap_or(default_name);
        tracing::info!(
            service,
            sampling_ratio = c.sampling_ratio,
            "exporting traces (OTLP/HTTP protobuf)"
        );
    }
    Ok(t)
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// The subscriber [`init_tracing_with`] installs, writing log lines to `writer` (for tests:
/// use it with `tracing::subscriber::with_default`). Spans of the services never reach the
/// log lines; with telemetry on, a line written inside a sampled trace ends with its
/// `trace_id`.
pub fn subscriber<W>(
    filter: EnvFilter,
    json: bool,
    ansi: bool,
    telemetry: Option<&TelemetryConfig>,
    default_name: &str,
    writer: W,
) -> Result<(impl Subscriber + Send + Sync, Telemetry), ConfigError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let mut layers: Vec<Boxed> = Vec::with_capacity(2);
    let mut t = Telemetry::off();
    if let Some(config) = telemetry.filter(|c| c.enabled()) {
        let (layer, on) = telemetry::layer(config, default_name)?;
        layers.push(Box::new(layer));
        t = on;
    }
    let traced = t.is_on();
    // Per layer, so the exporter's spans don't depend on the log level.
    let logged = filter_fn(|m| !telemetry::is_traced_span(m)).and(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi && !traced);
    let fmt: Boxed = match (json, traced) {
        (true, false) => fmt.json().flatten_event(true).with_filter(logged).boxed(),
        (false, false) => fmt.with_filter(logged).boxed(),
        (true, true) => fmt
            .json()
            .flatten_event(true)
            .map_event_format(|f| WithTraceId {
                inner: f,
                json: true,
            })
            .with_filter(logged)
            .boxed(),
        (false, true) => fmt
            .map_event_format(|f| WithTraceId {
                inner: f,
                json: false,
            })
            .with_filter(logged)
            .boxed(),
    };
    layers.push(fmt);
    Ok((tracing_subscriber::registry().with(layers), t))
}

/// A log line format that appends the current trace's id: `... trace_id=<32 hex>` in text,
/// a `"trace_id"` member in JSON. Lines outside a sampled trace are unchanged.
struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = telemetry::current_trace_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_trace_id(&line, &id.to_string(), self.json))
    }
}

/// `line` (one formatted log line) with `trace_id` appended: a last member of the JSON
/// object, or a last `trace_id=` field of the text line.
fn with_trace_id(line: &str, id: &str, json: bool) -> String {
    let body = line.strip_suffix('\n').unwrap_or(line);
    match body.strip_suffix('}') {
        Some(head) if json => format!("{head},\"trace_id\":\"{id}\"}}\n"),
        _ => format!("{body} trace_id={id}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_trace_id;

    #[test]
    fn trace_id_goes_last_in_both_formats() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let json = "{\"timestamp\":\"t\",\"level\":\"INFO\",\"message\":\"request denied\",\"reason\":\"expired\"}\n";
        let out = with_trace_id(json, id, true);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["trace_id"], id);
        assert_eq!(v["reason"], "expired");
        assert!(out.ends_with("}\n") && out.matches('\n').count() == 1);
        let text =
            "2026-01-01T00:00:00Z  INFO gatepass::decision: request denied reason=\"expired\"\n";
        assert_eq!(
            with_trace_id(text, id, false),
            format!("{} trace_id={id}\n", text.trim_end())
        );
    }
}
