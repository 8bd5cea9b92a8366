//! `--otlp-endpoint`: the request and attempt spans of each trail, exported with OTLP over
//! HTTP (protobuf, `POST /v1/traces`) to a collector.
//!
//! A request never waits for export: finished spans go into a bounded queue (a full queue drops
//! them, counted in `attache_telemetry_dropped_total{kind="span"}`), and one task sends them in
//! batches, every [`BATCH_DELAY`] or once [`BATCH_SPANS`] are waiting. A batch the collector
//! refuses or does not answer within [`SEND_TIMEOUT`] is dropped and counted too: a sidecar
//! keeps no backlog for a collector that is down.
//!
//! The protobuf types are `opentelemetry-proto`'s; the POST goes through hyper's client that
//! the sidecar already has (the OTLP exporter crate would bring reqwest and a second TLS
//! stack). Only `http://` collectors (an in-cluster collector on 4318).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue},
    resource::v1::Resource,
    trace::v1::{
        span::SpanKind, status::StatusCode as OtlpStatus, ResourceSpans, ScopeSpans, Span, Status,
    },
};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use tokio::sync::mpsc;

use super::trail::{AttemptEnd, AttemptRecord, Trail};
use crate::{
    metrics::LabelValue,
    resilience::{breaker::CircuitState, retry::RetryReason},
};

/// Spans waiting for export; beyond this they are dropped (and counted).
const QUEUE_SPANS: usize = 4096;
/// A batch goes out when this many spans wait ...
const BATCH_SPANS: usize = 512;
/// ... or this long after its first span.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// A collector that does not answer within this loses the batch.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `--otlp-endpoint` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("--otlp-endpoint {0:?} is not a URL: {1}")]
    Invalid(String, http::uri::InvalidUri),
    #[error("--otlp-endpoint {0:?}: only http:// collectors are supported (OTLP/HTTP, usually port 4318)")]
    Scheme(String),
}

/// The collector's traces URL: `http://HOST:PORT` gets OTLP's `/v1/traces`; a URL with a path
/// is used as it is.
pub fn traces_url(endpoint: &str) -> Result<Uri, EndpointError> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|e| EndpointError::Invalid(endpoint.to_string(), e))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(EndpointError::Scheme(endpoint.to_string()));
    }
    if matches!(uri.path(), "" | "/") {
        let with_path = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        return with_path
            .parse()
            .map_err(|e| EndpointError::Invalid(endpoint.to_string(), e));
    }
    Ok(uri)
}

/// The queue into the export task.
#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Vec<Span>>,
    dropped: Counter,
}

impl Exporter {
    /// Starts the export task (on the current runtime) toward `url`.
    pub fn start(url: Uri, dropped: Counter) -> Self {
        // Counted in batches of one request's spans; QUEUE_SPANS / 2 requests of 2 spans.
        let (queue, rx) = mpsc::channel(QUEUE_SPANS / 2);
        tokio::spawn(export_loop(url, rx, dropped.clone()));
        Self { queue, dropped }
    }

    /// Queues one finished request's spans; never waits.
    pub fn export(&self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        if self.queue.try_send(spans).is_err() {
            self.dropped.inc_by(n);
        }
    }
}

async fn export_loop(url: Uri, mut rx: mpsc::Receiver<Vec<Span>>, dropped: Counter) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    while let Some(first) = rx.recv().await {
        let mut batch = first;
        let due = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let body = request(batch).encode_to_vec();
        let req = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("a POST with a valid URI is a valid request");
        let sent = tokio::time::timeout(SEND_TIMEOUT, client.request(req)).await;
        match sent {
            Ok(Ok(resp)) if resp.status() == StatusCode::OK => {}
            Ok(Ok(resp)) => {
                dropped.inc_by(n);
                tracing::warn!(status = resp.status().as_u16(), spans = n, %url, "OTLP collector refused spans");
            }
            Ok(Err(e)) => {
                dropped.inc_by(n);
                tracing::warn!(error = %e, spans = n, %url, "cannot send spans to the OTLP collector");
            }
            Err(_) => {
                dropped.inc_by(n);
                tracing::warn!(spans = n, %url, "OTLP collector did not answer within 10 s");
            }
        }
    }
}

/// One export request holding `spans`.
fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "attache-sidecar")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "attache-sidecar".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The spans of one finished request: the request's (its parent: the app's span), and one per
/// attempt under it. `code` is the sidecar's error code when it answered itself.
pub fn spans(
    trail: &Trail,
    integration: &str,
    status: StatusCode,
    code: Option<&str>,
    duration: Duration,
) -> Vec<Span> {
    let trace_id = trail.trace.trace_id.to_vec();
    let mut attributes = vec![
        text("attache.integration", integration),
        text("http.request.method", trail.method.as_str()),
        text("url.path", &trail.path),
        int("http.response.status_code", i64::from(status.as_u16())),
        int("attache.attempts", trail.attempts.len() as i64),
    ];
    if let Some(c) = code {
        attributes.push(text("attache.error_code", c));
    }
    let failed = code.is_some() || status.is_server_error();
    let mut out = Vec::with_capacity(1 + trail.attempts.len());
    out.push(Span {
        trace_id: trace_id.clone(),
        span_id: trail.span_id.to_vec(),
        parent_span_id: trail.trace.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: format!("{} {integration}", trail.method),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: nanos(trail.started_at),
        end_time_unix_nano: nanos(trail.started_at + duration),
        attributes,
        status: Some(status_of(failed, code.unwrap_or(""))),
        ..Default::default()
    });
    for a in &trail.attempts {
        out.push(attempt_span(trail, a, integration, trace_id.clone()));
    }
    out
}

fn attempt_span(trail: &Trail, a: &AttemptRecord, integration: &str, trace_id: Vec<u8>) -> Span {
    let mut attributes = vec![
        text("attache.integration", integration),
        int("attache.attempt", i64::from(a.number)),
        double(
            "attache.rate_gate_wait_ms",
            a.gate_wait.as_secs_f64() * 1000.0,
        ),
        text("attache.circuit_state", circuit(a.breaker)),
    ];
    if let Some(r) = a.retry_reason.as_ref() {
        attributes.push(text("attache.retry_reason", RetryReason::label(r)));
    }
    let failed = match a.outcome {
        AttemptEnd::Status(s) => {
            attributes.push(int("http.response.status_code", i64::from(s.as_u16())));
            s.is_server_error()
        }
        AttemptEnd::Failed(result) => {
            attributes.push(text("error.type", result.label()));
            true
        }
    };
    let message = match a.outcome {
        AttemptEnd::Failed(result) => result.label().to_string(),
        AttemptEnd::Status(_) => String::new(),
    };
    Span {
        trace_id,
        span_id: a.span_id.to_vec(),
        parent_span_id: trail.span_id.to_vec(),
        name: format!("{} attempt", trail.method),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: nanos(a.started_at),
        end_time_unix_nano: nanos(a.started_at + a.duration),
        attributes,
        status: Some(status_of(failed, &message)),
        ..Default::default()
    }
}

fn circuit(s: CircuitState) -> &'static str {
    match s {
        CircuitState::Closed => "closed",
        CircuitState::HalfOpen => "half_open",
        CircuitState::Open => "open",
    }
}

fn status_of(failed: bool, message: &str) -> Status {
    Status {
        code: if failed {
            OtlpStatus::Error
        } else {
            OtlpStatus::Unset
        } as i32,
        message: message.to_string(),
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_string()))
}

fn int(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn double(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_gets_otlps_path_unless_it_has_one() {
        let url = |s: &str| traces_url(s).map(|u| u.to_string());
        assert_eq!(
            url("http://otel:4318").unwrap(),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            url("http://otel:4318/").unwrap(),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            url("http://otel:4318/custom").unwrap(),
            "http://otel:4318/custom"
        );
        assert!(matches!(
            traces_url("https://otel:4318"),
            Err(EndpointError::Scheme(_))
        ));
        assert!(traces_url("otel:4318").is_err());
        assert!(traces_url("http://bad host").is_err());
    }
}
