//! What the sidecar tells about each request besides metrics: the access log
//! (`access_log`), traces (`context`: W3C `traceparent`; `trail`: one request's record;
//! `export`: OTLP/HTTP), and the trust boundary for trace headers toward the third party
//! (`boundary`).
//!
//! With the access log and tracing both off, [`Telemetry::begin`] returns `None` and the
//! request path records nothing.

pub mod access_log;
pub mod boundary;
pub mod context;
pub mod export;
pub mod trail;

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use prometheus_client::metrics::counter::Counter;

use self::{
    access_log::{AccessLog, AccessLogFormat, Line},
    context::TraceContext,
    export::Exporter,
    trail::Trail,
};
use crate::metrics::Metrics;

/// How the sidecar reports requests (`attache-sidecar run` flags).
#[derive(Debug, Clone, Default)]
pub struct TelemetryOptions {
    pub access_log: AccessLogFormat,
    /// The OTLP/HTTP collector's traces URL (see `export::traces_url`).
    pub otlp_endpoint: Option<http::Uri>,
}

/// The running reporters; cheap to clone.
#[derive(Clone, Default)]
pub struct Telemetry {
    inner: Option<Arc<Reporters>>,
}

struct Reporters {
    access_log: Option<AccessLog>,
    exporter: Option<Exporter>,
}

impl Telemetry {
    /// Nothing reported.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts the reporters `opts` asks for; what they drop is counted in `metrics`.
    pub fn start(opts: &TelemetryOptions, metrics: &Metrics) -> std::io::Result<Self> {
        let access_log = match opts.access_log {
            AccessLogFormat::Off => None,
            AccessLogFormat::Json => {
                Some(AccessLog::start(metrics.telemetry_dropped("access_log"))?)
            }
        };
        let exporter = opts
            .otlp_endpoint
            .clone()
            .map(|url| Exporter::start(url, metrics.telemetry_dropped("span")));
        let inner = (access_log.is_some() || exporter.is_some()).then(|| {
            Arc::new(Reporters {
                access_log,
                exporter,
            })
        });
        Ok(Self { inner })
    }

    /// Starts the record of a request, when anything reports requests.
    pub fn begin(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Trail> {
        self.inner.as_ref()?;
        Some(Self::trail_of(method, path, headers))
    }

    /// The record of `req`, whatever reports it.
    pub fn trail<B>(req: &http::Request<B>) -> Trail {
        Self::trail_of(req.method(), req.uri().path(), req.headers())
    }

    fn trail_of(method: &Method, path: &str, headers: &HeaderMap) -> Trail {
        let trace = TraceContext::from_app(headers.get(boundary::TRACEPARENT));
        Trail::new(method, path, trace)
    }

    /// Reports a finished request of `integration` ("" when none was found) answered with
    /// `status`; `code` is the sidecar's error code when it answered itself.
    pub fn finish(
        &self,
        trail: Option<Trail>,
        integration: &str,
        status: StatusCode,
        code: Option<&'static str>,
    ) {
        let (Some(trail), Some(r)) = (trail, &self.inner) else {
            return;
        };
        let duration = trail.started.elapsed();
        if let Some(log) = &r.access_log {
            log.write(&Line::of(
                &trail,
                integration,
                status.as_u16(),
                code,
                duration,
            ));
        }
        // The app's sampling decision holds (a new trace is sampled).
        if let Some(exporter) = r.exporter.as_ref().filter(|_| trail.trace.sampled) {
            exporter.export(export::spans(&trail, integration, status, code, duration));
        }
    }
}

/// Registers the telemetry's own counter family on `registry`.
pub fn dropped_family(
    registry: &mut prometheus_client::registry::Registry,
) -> prometheus_client::metrics::family::Family<DroppedLabels, Counter> {
    let family = prometheus_client::metrics::family::Family::<DroppedLabels, Counter>::default();
    registry.register(
        "attache_telemetry_dropped",
        "Access-log lines and spans dropped because their queue was full or the receiver failed",
        family.clone(),
    );
    family
}

/// The label of `attache_telemetry_dropped_total`: `access_log` or `span`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DroppedLabels {
    pub kind: String,
}
