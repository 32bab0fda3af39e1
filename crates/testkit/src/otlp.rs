//! A small OTLP/HTTP trace receiver (a collector's `POST /v1/traces`, protobuf): what the
//! services and Traefik export, decoded with `opentelemetry-proto` and kept for assertions.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message;

/// One exported span, flattened: its resource's attributes (`service.name` among them), ids
/// in lower-case hex (`parent_span_id` empty for a root), and its attributes as text
/// (`true`, `200`, `allow`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// Span events' names and attributes, as text.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl ExportedSpan {
    /// The resource's `service.name`.
    pub fn service(&self) -> &str {
        self.resource
            .get("service.name")
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Every text the span carries: names, ids, keys and values of all its attributes, its
    /// events' and its resource's.
    pub fn all_text(&self) -> Vec<String> {
        let mut out = vec![self.name.clone(), self.scope.clone()];
        let maps = std::iter::once(&self.resource)
            .chain(std::iter::once(&self.attributes))
            .chain(self.events.iter().map(|(_, a)| a));
        for m in maps {
            for (k, v) in m {
                out.push(k.clone());
                out.push(v.clone());
            }
        }
        out.extend(self.events.iter().map(|(n, _)| n.clone()));
        out
    }
}

/// One export request: its path, `Content-Type` and `Content-Encoding` (empty: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub path: String,
    pub content_type: String,
    pub content_encoding: String,
}

#[derive(Default)]
struct Received {
    spans: Vec<ExportedSpan>,
    requests: Vec<ExportRequest>,
}

/// Listens on 127.0.0.1 (HTTP/1.1): `POST /v1/traces` with `application/x-protobuf`
/// (gzip-compressed or not, as Traefik sends it compressed) is decoded and answered 200 with
/// an empty `ExportTraceServiceResponse`; another content type or encoding is 415, a body
/// that does not decode 400, another path 404. Every request is recorded.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    accept: tokio::task::AbortHandle,
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| receive(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            received,
            accept: accept.abort_handle(),
        }
    }

    /// The traces endpoint, `http://127.0.0.1:PORT/v1/traces`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Every export request received so far.
    pub fn requests(&self) -> Vec<ExportRequest> {
        self.received.lock().unwrap().requests.clone()
    }

    /// Polls until `found` picks something out of the spans received; fails the test after
    /// `timeout`, listing what did arrive.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut found: impl FnMut(&[ExportedSpan]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if let Some(t) = found(&spans) {
                return t;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{}:{} {:?}", s.service(), s.name, s.attributes))
                    .collect();
                panic!(
                    "no {what} within {timeout:?}; requests: {:?}; spans received:\n{}",
                    self.requests(),
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as text: strings as they are, other scalars in their usual form,
/// arrays and maps as JSON-ish lists.
fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(Any::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Any::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| text(&Some(v.clone()))).collect();
            format!("[{}]", items.join(","))
        }
        Some(Any::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|p| format!("{}={}", p.key, text(&p.value)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => String::new(),
    }
}

fn map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = rs.resource.map(|r| map(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| s.name).unwrap_or_default();
            for s in ss.spans {
                out.push(ExportedSpan {
                    resource: resource.clone(),
                    scope: scope.clone(),
                    name: s.name,
                    kind: s.kind,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: map(&s.attributes),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| (e.name, map(&e.attributes)))
                        .collect(),
                });
            }
        }
    }
    out
}

async fn receive(
    received: Arc<Mutex<Received>>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let content_encoding = header(http::header::CONTENT_ENCODING);
    received.lock().unwrap().requests.push(ExportRequest {
        path: path.clone(),
        content_type: content_type.clone(),
        content_encoding: content_encoding.clone(),
    });
    let status = |s: u16| {
        Ok(http::Response::builder()
            .status(s)
            .body(Full::default())
            .unwrap())
    };
    if path != "/v1/traces" || req.method() != http::Method::POST {
        return status(404);
    }
    if content_type != "application/x-protobuf" || !matches!(content_encoding.as_str(), "" | "gzip")
    {
        return status(415);
    }
    let Ok(mut body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return status(400);
    };
    if content_encoding == "gzip" {
        use std::io::Read;
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .is_err()
        {
            return status(400);
        }
        body = Bytes::from(plain);
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return status(400);
    };
    received.lock().unwrap().spans.extend(flatten(export));
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(answer)))
        .unwrap())
}
