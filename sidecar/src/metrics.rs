//! The sidecar's Prometheus metrics (names fixed by DESIGN.md).
//!
//! Label values are integration names, status codes, error codes and reasons: never anything
//! taken from a request's headers, so a credential cannot become a label.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabel {
    pub integration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub integration: String,
    /// The upstream's status code, or the sidecar's error code when it answered itself.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub integration: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub integration: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub integration: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// All metric families; cheap to clone (each family is an `Arc`).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub requests: Family<CodeLabels, Counter>,
    pub request_duration: Family<IntegrationLabel, Histogram, fn() -> Histogram>,
    pub upstream_attempts: Family<ResultLabels, Counter>,
    pub retries: Family<ReasonLabels, Counter>,
    pub circuit_state: Family<IntegrationLabel, Gauge>,
    pub rate_limited: Family<ActionLabels, Counter>,
    pub inflight: Family<IntegrationLabel, Gauge>,
    pub config_reloads: Family<ReloadLabels, Counter>,
    pub client_cert_expiry: Family<IntegrationLabel, Gauge>,
    pub upstream_throttled: Family<IntegrationLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::<CodeLabels, Counter>::default();
        let request_duration =
            Family::<IntegrationLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        let upstream_attempts = Family::<ResultLabels, Counter>::default();
        let retries = Family::<ReasonLabels, Counter>::default();
        let circuit_state = Family::<IntegrationLabel, Gauge>::default();
        let rate_limited = Family::<ActionLabels, Counter>::default();
        let inflight = Family::<IntegrationLabel, Gauge>::default();
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let client_cert_expiry = Family::<IntegrationLabel, Gauge>::default();
        let upstream_throttled = Family::<IntegrationLabel, Counter>::default();
        // prometheus-client appends `_total` to counters itself.
        r.register(
            "attache_requests",
            "Requests answered to the app, by upstream status or sidecar error code",
            requests.clone(),
        );
        r.register(
            "attache_request_duration_seconds",
            "Time from receiving a request to sending the response headers, all attempts included",
            request_duration.clone(),
        );
        r.register(
            "attache_upstream_attempts",
            "Attempts sent to the upstream, by outcome",
            upstream_attempts.clone(),
        );
        r.register("attache_retries", "Retries, by reason", retries.clone());
        r.register(
            "attache_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        r.register(
            "attache_rate_limited",
            "Requests held back by the rate limit, by action (queued, rejected, timed_out)",
            rate_limited.clone(),
        );
        r.register(
            "attache_inflight_requests",
            "Requests in flight",
            inflight.clone(),
        );
        r.register(
            "attache_config_reloads",
            "Configuration reloads, by result",
            config_reloads.clone(),
        );
        r.register(
            "attache_client_certificate_expiry_timestamp_seconds",
            "notAfter of the client certificate, Unix seconds",
            client_cert_expiry.clone(),
        );
        r.register(
            "attache_upstream_throttled",
            "Upstream throttling signals (429s and Retry-After holds)",
            upstream_throttled.clone(),
        );
        Self {
            registry: Arc::new(r),
            requests,
            request_duration,
            upstream_attempts,
            retries,
            circuit_state,
            rate_limited,
            inflight,
            config_reloads,
            client_cert_expiry,
            upstream_throttled,
        }
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn label(integration: &str) -> IntegrationLabel {
        IntegrationLabel {
            integration: integration.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let m = Metrics::new();
        m.requests
            .get_or_create(&CodeLabels {
                integration: "a".into(),
                code: "200".into(),
            })
            .inc();
        m.request_duration
            .get_or_create(&Metrics::label("a"))
            .observe(0.01);
        m.config_reloads
            .get_or_create(&ReloadLabels {
                result: "success".into(),
            })
            .inc();
        let text = m.encode();
        for name in [
            "attache_requests_total{integration=\"a\",code=\"200\"} 1",
            "attache_request_duration_seconds_bucket",
            "attache_config_reloads_total{result=\"success\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
