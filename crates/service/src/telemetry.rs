//! Distributed tracing: the `[telemetry]` table both services share, and OpenTelemetry traces
//! exported over OTLP/HTTP (protobuf) when it names an endpoint.
//!
//! Off (no `otlp_endpoint`, the default) there is no exporter, no tracer and no extra layer:
//! the services' spans are disabled at their call sites, so they cost a cached interest check.
//! On, spans of this workspace's crates (targets `gatepass*`, `mcp_status*`) go to the
//! collector in batches from a thread of their own, sampled parent-based: a request that
//! arrives with a W3C `traceparent` (Traefik's) keeps its sampling decision, a new trace is
//! sampled at `sampling_ratio`. Log events never become span events, and spans never reach the
//! log lines (which carry `trace_id` instead).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::ConfigError;

/// The `[telemetry]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL, path included
    /// (`http://127.0.0.1:4318/v1/traces`); none: no traces. Printed with any credentials
    /// redacted.
    #[serde(serialize_with = "redacted_endpoint")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute; none: the binary's name.
    pub service_name: Option<String>,
    /// The share of new traces (no sampled parent) that are kept, 0.0–1.0.
    pub sampling_ratio: f64,
}

fn redacted_endpoint<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&crate::config::redact_url(u)),
        None => s.serialize_none(),
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// Does it export traces?
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }

    /// Checks the table; errors are one line naming the key and never quote the endpoint (it
    /// may carry credentials).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            let uri: Option<http::Uri> = url.parse().ok();
            let ok = uri.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
            });
            if !ok {
                return Err(ConfigError::new(
                    "telemetry.otlp_endpoint",
                    "must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces",
                ));
            }
            if uri.is_some_and(|u| matches!(u.path(), "" | "/")) {
                return Err(ConfigError::new(
                    "telemetry.otlp_endpoint",
                    "must name the traces path, like http://127.0.0.1:4318/v1/traces",
                ));
            }
        }
        if let Some(name) = &self.service_name {
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "telemetry.service_name",
                    "must be a non-empty name without control characters",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::new(
                "telemetry.sampling_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }
}

/// Set once an exporter is installed: the request paths read it before touching spans.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Are traces exported by this process? One relaxed load.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans exported when telemetry is on: this workspace's own (never a library's).
pub(crate) fn is_traced_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && {
        let t = meta.target();
        t.starts_with("gatepass") || t.starts_with("mcp_status")
    }
}

/// The installed tracer provider; flushed and stopped by [`Telemetry::shutdown`] (or drop).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// No exporter.
    pub fn off() -> Telemetry {
        Telemetry { provider: None }
    }

    pub fn is_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still queued (bounded by the exporter's timeout) and stops.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "traces not all exported at shutdown");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The OTLP/HTTP client: the workspace's reqwest (rustls, system roots), blocking, since the
/// batch processor exports from a plain thread with no async runtime.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()
            .map_err(|e| e.without_url())?;
        let mut out = http::Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            *h = resp.headers().clone();
        }
        let bytes = resp.bytes().map_err(|e| e.without_url())?;
        Ok(out.body(bytes)?)
    }
}

/// Longest wait for one export.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the tracer provider for `config` (which must name an endpoint), with `service.name`
/// `config.service_name` or `default_name`.
pub(crate) fn provider(
    config: &TelemetryConfig,
    default_name: &str,
) -> Result<SdkTracerProvider, ConfigError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let endpoint = config.otlp_endpoint.clone().unwrap_or_default();
    let failed = |what: String| ConfigError::new("telemetry.otlp_endpoint", what);
    // Built on a thread of its own: a blocking client can't be made inside a runtime.
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .no_proxy()
            .build()
    })
    .join()
    .map_err(|_| failed("cannot start the HTTP client".into()))?
    .map_err(|e| failed(format!("cannot start the HTTP client: {e}")))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| failed(format!("cannot start the exporter: {e}")))?;
    let name = config
        .service_name
        .clone()
        .unwrap_or_else(|| default_name.to_owned());
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// The tracing layer that turns the services' spans into OpenTelemetry spans, and the
/// provider it exports through. Marks telemetry enabled for [`enabled`].
pub(crate) fn layer<S>(
    config: &TelemetryConfig,
    default_name: &str,
) -> Result<(impl tracing_subscriber::Layer<S>, Telemetry), ConfigError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let provider = provider(config, default_name)?;
    let tracer = provider.tracer("gatepass-service");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Only the attributes the services set: no source paths, threads or timings.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(is_traced_span));
    ENABLED.store(true, Ordering::Relaxed);
    Ok((
        layer,
        Telemetry {
            provider: Some(provider),
        },
    ))
}

/// Reads `traceparent`/`tracestate` (and nothing else) from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the W3C trace context in `headers` (`traceparent`, `tracestate`),
/// when telemetry is on and the headers carry a valid one; call it before entering the span.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id of the current span, when telemetry is on and it is sampled.
pub fn current_trace_id() -> Option<TraceId> {
    if !enabled() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| sc.trace_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TelemetryConfig, ConfigError> {
        let c: TelemetryConfig = crate::config::from_toml(text)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_and_values() {
        let c = parse("").unwrap();
        assert_eq!(c, TelemetryConfig::default());
        assert!(!c.enabled());
        assert_eq!(c.sampling_ratio, 1.0);
        let c = parse(
            "otlp_endpoint = \"https://collector.internal:4318/v1/traces\"\nservice_name = \"gp-eu\"\nsampling_ratio = 0\n",
        )
        .unwrap();
        assert!(c.enabled());
        assert_eq!(c.service_name.as_deref(), Some("gp-eu"));
        assert_eq!(c.sampling_ratio, 0.0);
        assert_eq!(parse("sampling_ratio = 1").unwrap().sampling_ratio, 1.0);
    }

    /// Every bad value is one line naming the key; the endpoint is never quoted.
    #[test]
    fn errors_name_the_key() {
        let err = |t: &str| parse(t).unwrap_err().to_string();
        for (text, want) in [
            ("otlp_endpoint = \"127.0.0.1:4318\"", "config error: telemetry.otlp_endpoint: must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces"),
            ("otlp_endpoint = \"grpc://collector:4317/v1/traces\"", "config error: telemetry.otlp_endpoint: must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces"),
            ("otlp_endpoint = \"\"", "config error: telemetry.otlp_endpoint: must be an http:// or https:// URL like http://127.0.0.1:4318/v1/traces"),
            ("otlp_endpoint = \"http://collector:4318\"", "config error: telemetry.otlp_endpoint: must name the traces path, like http://127.0.0.1:4318/v1/traces"),
            ("service_name = \" \"", "config error: telemetry.service_name: must be a non-empty name without control characters"),
            ("sampling_ratio = 1.5", "config error: telemetry.sampling_ratio: must be between 0.0 and 1.0"),
            ("sampling_ratio = -0.1", "config error: telemetry.sampling_ratio: must be between 0.0 and 1.0"),
            ("sampling_ratio = nan", "config error: telemetry.sampling_ratio: must be between 0.0 and 1.0"),
        ] {
            let e = err(text);
            assert_eq!(e, want, "{text}");
            assert!(!e.contains('\n'));
        }
        let e = err("sampling_ratio = \"half\"");
        assert!(e.contains("sampling_ratio") && !e.contains('\n'), "{e}");
        let e = err("endpoint = \"http://c/v1/traces\"");
        assert!(
            e.contains("unknown field `endpoint`") && !e.contains('\n'),
            "{e}"
        );
        assert!(!err("otlp_endpoint = \"http://u:s3cret@collector\"").contains("s3cret"));
    }

    #[test]
    fn printed_endpoint_has_no_credentials() {
        let c = parse("otlp_endpoint = \"https://u:s3cret@collector:4318/v1/traces\"\n").unwrap();
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("https://<redacted>@collector:4318/v1/traces"),
            "{text}"
        );
        assert!(!toml::to_string(&TelemetryConfig::default())
            .unwrap()
            .contains("otlp_endpoint"));
    }
}
