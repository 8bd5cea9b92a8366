//! The sidecar's Prometheus metrics (names listed in the README, "Metrics").
//!
//! Label values are integration names, status codes, error codes and reasons: never anything
//! taken from a request's headers, so a credential cannot become a label. The request path
//! counts through one [`IntegrationMetrics`] per integration, with typed label values.

use std::sync::{Arc, OnceLock};

use http::StatusCode;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::resilience::{ratelimit::RateLimitAction, retry::RetryReason};

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
pub struct TokenLabels {
    pub integration: String,
    /// As the provider named it in its answer (at most [`MAX_MODELS`] per integration).
    pub model: String,
    /// `input` or `output`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub integration: String,
    pub kind: String,
}

/// Distinct `model` label values kept per integration: the name comes from the third party,
/// so an endless variety must not become endless series. Later ones are counted as `other`.
pub const MAX_MODELS: usize = 32;

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
    pub llm_tokens: Family<TokenLabels, Counter>,
    pub llm_ratelimit_remaining: Family<KindLabels, Gauge>,
    pub failovers: Family<IntegrationLabel, Counter>,
    pub cache: Family<ResultLabels, Counter>,
    /// `attache_webhooks_total{integration,result}` (inbound webhooks, `webhooks/`).
    pub webhooks: Family<ResultLabels, Counter>,
    /// `scope: global` only: `attache_rate_limit_backend`, `attache_quota_remaining`.
    pub rate_limit_backend: Family<IntegrationLabel, Gauge>,
    pub quota_remaining: Family<IntegrationLabel, Gauge>,
    /// `attache_telemetry_dropped_total` (see `telemetry`).
    pub telemetry_dropped: Family<crate::telemetry::DroppedLabels, Counter>,
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
        let llm_tokens = Family::<TokenLabels, Counter>::default();
        let llm_ratelimit_remaining = Family::<KindLabels, Gauge>::default();
        let failovers = Family::<IntegrationLabel, Counter>::default();
        let cache = Family::<ResultLabels, Counter>::default();
        let rate_limit_backend = Family::<IntegrationLabel, Gauge>::default();
        let quota_remaining = Family::<IntegrationLabel, Gauge>::default();
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
        r.register(
            "attache_llm_tokens",
            "LLM tokens the provider reported using, by model and kind (input, output)",
            llm_tokens.clone(),
        );
        r.register(
            "attache_llm_ratelimit_remaining",
            "What the LLM provider last said is left of its limits, by kind",
            llm_ratelimit_remaining.clone(),
        );
        r.register(
            "attache_failovers",
            "Attempts sent to another endpoint than the one before (upstream.failover)",
            failovers.clone(),
        );
        r.register(
            "attache_cache",
            "Answers of integrations with spec.cache, by result (hit, miss, stale)",
            cache.clone(),
        );
        let webhooks = Family::<ResultLabels, Counter>::default();
        r.register(
            "attache_webhooks",
            "Inbound webhook requests, by result (verified, bad_signature, stale, replay, too_large, forward_error)",
            webhooks.clone(),
        );
        r.register(
            "attache_rate_limit_backend",
            "Where a scope: global rate limit is decided: 1 Redis, 0 the shared-split fallback",
            rate_limit_backend.clone(),
        );
        r.register(
            "attache_quota_remaining",
            "Requests left in the current quota window (as last known from Redis)",
            quota_remaining.clone(),
        );
        let telemetry_dropped = crate::telemetry::dropped_family(&mut r);
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
            llm_tokens,
            llm_ratelimit_remaining,
            failovers,
            cache,
            webhooks,
            rate_limit_backend,
            quota_remaining,
            telemetry_dropped,
        }
    }

    /// `attache_webhooks_total`: one webhook request's outcome.
    pub fn webhook(&self, integration: &str, result: WebhookResult) {
        self.webhooks
            .get_or_create(&ResultLabels {
                integration: integration.to_string(),
                result: result.label().to_string(),
            })
            .inc();
    }

    /// The counter of `kind` (`access_log`, `span`) in `attache_telemetry_dropped_total`.
    pub fn telemetry_dropped(&self, kind: &str) -> Counter {
        self.telemetry_dropped
            .get_or_create(&crate::telemetry::DroppedLabels {
                kind: kind.to_string(),
            })
            .clone()
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// `attache_config_reloads_total`: one reload attempt (a few per hour at most: no cache).
    pub fn config_reload(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadLabels {
                result: result.label().to_string(),
            })
            .inc();
    }

    pub fn label(integration: &str) -> IntegrationLabel {
        IntegrationLabel {
            integration: integration.to_string(),
        }
    }
}

/// A label value of a known, small set, compared as a value (not as text) to find its series.
pub trait LabelValue: Copy + Eq {
    /// The label's text; borrowed, never allocated.
    fn label(&self) -> &str;
}

/// The `result` label of `attache_webhooks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// Verified and answered by the app (whatever its status).
    Verified,
    BadSignature,
    Stale,
    Replay,
    TooLarge,
    /// Verified, but the app did not answer.
    ForwardError,
}

impl LabelValue for WebhookResult {
    fn label(&self) -> &str {
        match self {
            WebhookResult::Verified => "verified",
            WebhookResult::BadSignature => "bad_signature",
            WebhookResult::Stale => "stale",
            WebhookResult::Replay => "replay",
            WebhookResult::TooLarge => "too_large",
            WebhookResult::ForwardError => "forward_error",
        }
    }
}

/// The `result` label of `attache_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl LabelValue for ReloadResult {
    fn label(&self) -> &str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

/// The `code` label of `attache_requests_total`: the upstream's status, or the sidecar's error
/// code when it answered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseCode {
    Upstream(StatusCode),
    /// The name of the sidecar's error code (`ErrorCode::as_str` in `proxy/errors.rs`; kept
    /// as its name so that this module does not depend on the proxy).
    Sidecar(&'static str),
}

impl LabelValue for ResponseCode {
    fn label(&self) -> &str {
        match self {
            ResponseCode::Upstream(s) => s.as_str(),
            ResponseCode::Sidecar(c) => c,
        }
    }
}

/// The `result` label of `attache_upstream_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// No response head within `timeouts.perTry`.
    Timeout,
    ConnectTimeout,
    ConnectError,
    TlsError,
    Reset,
    /// Counted once more for an attempt whose response body then stalled past `timeouts.idle`.
    IdleTimeout,
}

impl AttemptResult {
    /// `2xx`, `4xx`, ... of a response.
    pub fn of_status(s: StatusCode) -> Self {
        match s.as_u16() {
            100..=199 => AttemptResult::Informational,
            200..=299 => AttemptResult::Success,
            300..=399 => AttemptResult::Redirection,
            400..=499 => AttemptResult::ClientError,
            _ => AttemptResult::ServerError,
        }
    }
}

impl LabelValue for AttemptResult {
    fn label(&self) -> &str {
        match self {
            AttemptResult::Informational => "1xx",
            AttemptResult::Success => "2xx",
            AttemptResult::Redirection => "3xx",
            AttemptResult::ClientError => "4xx",
            AttemptResult::ServerError => "5xx",
            AttemptResult::Timeout => "timeout",
            AttemptResult::ConnectTimeout => "connect_timeout",
            AttemptResult::ConnectError => "connect_error",
            AttemptResult::TlsError => "tls_error",
            AttemptResult::Reset => "reset",
            AttemptResult::IdleTimeout => "idle_timeout",
        }
    }
}

/// One integration's series of every family, each found without hashing a label set: the
/// hot path compares a typed label value in a short list (SipHash over the label strings in
/// `Family::get_or_create` was the largest single cost of a proxied request in callgrind,
/// bench/README.md). Series are created on first use, so `/metrics` shows only what happened.
pub struct IntegrationMetrics {
    integration: String,
    families: Metrics,
    responses: Series<ResponseCode>,
    attempts: Series<AttemptResult>,
    retries: Series<RetryReason>,
    rate_limited: Series<RateLimitAction>,
    throttled: OnceLock<Counter>,
    failovers: OnceLock<Counter>,
    cache: Series<crate::cache::CacheResult>,
    /// Model names seen (bounded by [`MAX_MODELS`]); LLM answers are slow, a lock is fine.
    models: std::sync::Mutex<Vec<String>>,
    /// `attache_inflight_requests`.
    pub inflight: Gauge,
    /// `attache_request_duration_seconds`.
    pub duration: Histogram,
    /// `attache_circuit_state`.
    pub circuit: Gauge,
}

impl IntegrationMetrics {
    pub fn new(families: &Metrics, integration: &str) -> Self {
        let label = Metrics::label(integration);
        Self {
            integration: integration.to_string(),
            responses: Series::default(),
            attempts: Series::default(),
            retries: Series::default(),
            rate_limited: Series::default(),
            throttled: OnceLock::new(),
            failovers: OnceLock::new(),
            cache: Series::default(),
            models: std::sync::Mutex::new(Vec::new()),
            inflight: families.inflight.get_or_create(&label).clone(),
            duration: families.request_duration.get_or_create(&label).clone(),
            circuit: families.circuit_state.get_or_create(&label).clone(),
            families: families.clone(),
        }
    }

    /// `attache_requests_total`: one response to the app.
    pub fn response(&self, code: ResponseCode) {
        self.responses.inc(code, |code| {
            self.families
                .requests
                .get_or_create(&CodeLabels {
                    integration: self.integration.clone(),
                    code: code.to_string(),
                })
                .clone()
        });
    }

    /// `attache_upstream_attempts_total`: one attempt's outcome.
    pub fn attempt(&self, result: AttemptResult) {
        self.attempts.inc(result, |result| {
            self.families
                .upstream_attempts
                .get_or_create(&ResultLabels {
                    integration: self.integration.clone(),
                    result: result.to_string(),
                })
                .clone()
        });
    }

    /// `attache_retries_total`: one retry, counted when it is sent.
    pub fn retry(&self, reason: RetryReason) {
        self.retries.inc(reason, |reason| {
            self.families
                .retries
                .get_or_create(&ReasonLabels {
                    integration: self.integration.clone(),
                    reason: reason.to_string(),
                })
                .clone()
        });
    }

    /// `attache_rate_limited_total`: one attempt held back by the rate gate.
    pub fn rate_limited(&self, action: RateLimitAction) {
        self.rate_limited.inc(action, |action| {
            self.families
                .rate_limited
                .get_or_create(&ActionLabels {
                    integration: self.integration.clone(),
                    action: action.to_string(),
                })
                .clone()
        });
    }

    /// `attache_upstream_throttled_total`: one throttling signal from the upstream.
    pub fn throttled(&self) {
        self.throttled
            .get_or_init(|| {
                self.families
                    .upstream_throttled
                    .get_or_create(&Metrics::label(&self.integration))
                    .clone()
            })
            .inc();
    }

    /// `attache_failovers_total`: an attempt went to another endpoint than the one before.
    pub fn failover(&self) {
        self.failovers
            .get_or_init(|| {
                self.families
                    .failovers
                    .get_or_create(&Metrics::label(&self.integration))
                    .clone()
            })
            .inc();
    }

    /// `attache_cache_total`: one answer of an integration with a cache.
    pub fn cache(&self, result: crate::cache::CacheResult) {
        self.cache.inc(result, |result| {
            self.families
                .cache
                .get_or_create(&ResultLabels {
                    integration: self.integration.clone(),
                    result: result.to_string(),
                })
                .clone()
        });
    }

    /// `attache_llm_tokens_total`: one answer's reported usage.
    pub fn llm_tokens(&self, model: Option<&str>, input: u64, output: u64) {
        let model = self.model_label(model);
        for (kind, n) in [("input", input), ("output", output)] {
            self.families
                .llm_tokens
                .get_or_create(&TokenLabels {
                    integration: self.integration.clone(),
                    model: model.clone(),
                    kind: kind.to_string(),
                })
                .inc_by(n);
        }
    }

    /// The label for a model name from the third party: kept as it is when it looks like a
    /// model name and fewer than [`MAX_MODELS`] were seen, else `other` (`unknown` if none).
    fn model_label(&self, model: Option<&str>) -> String {
        let Some(m) = model else {
            return "unknown".to_string();
        };
        let plausible = !m.is_empty()
            && m.len() <= 100
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@".contains(&b));
        if !plausible {
            return "other".to_string();
        }
        let mut seen = self.models.lock().expect("models lock");
        if seen.iter().any(|s| s == m) {
            return m.to_string();
        }
        if seen.len() < MAX_MODELS {
            seen.push(m.to_string());
            return m.to_string();
        }
        "other".to_string()
    }

    /// `attache_llm_ratelimit_remaining`: what the provider last said is left.
    pub fn llm_remaining(&self, kind: &str, remaining: u64) {
        self.families
            .llm_ratelimit_remaining
            .get_or_create(&KindLabels {
                integration: self.integration.clone(),
                kind: kind.to_string(),
            })
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }

    /// `attache_client_certificate_expiry_timestamp_seconds`.
    pub fn client_certificate_expiry(&self, unix_seconds: i64) {
        self.families
            .client_cert_expiry
            .get_or_create(&Metrics::label(&self.integration))
            .set(unix_seconds);
    }
}

/// Label values a [`Series`] keeps at hand; more (an upstream answering many distinct status
/// codes) are still counted, through the family's own map.
const SLOTS: usize = 16;

/// The counters of one family for one integration, by label value: a handful of values per
/// family, found by a scan of slots that are filled once and then only read (one atomic load
/// each, no lock, no hashing).
struct Series<K> {
    slots: [OnceLock<(K, Counter)>; SLOTS],
}

impl<K> Default for Series<K> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl<K: LabelValue> Series<K> {
    /// Increments `key`'s counter; `make` finds it in the family the first time (given the
    /// label's text).
    fn inc(&self, key: K, make: impl FnOnce(&str) -> Counter) {
        for slot in &self.slots {
            match slot.get() {
                Some((k, c)) if *k == key => {
                    c.inc();
                    return;
                }
                Some(_) => continue,
                None => {
                    // Two threads may fill two slots with the same key at once: both hold the
                    // family's one counter for it, so counts stay exact.
                    let (_, c) = slot.get_or_init(|| (key, make(key.label())));
                    c.inc();
                    return;
                }
            }
        }
        make(key.label()).inc();
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

    #[test]
    fn the_integration_handle_counts_each_label_in_its_own_series() {
        let m = Metrics::new();
        let h = IntegrationMetrics::new(&m, "pay");
        h.response(ResponseCode::Upstream(StatusCode::OK));
        h.response(ResponseCode::Upstream(StatusCode::OK));
        h.response(ResponseCode::Sidecar("rate_limited"));
        h.attempt(AttemptResult::of_status(StatusCode::SERVICE_UNAVAILABLE));
        h.attempt(AttemptResult::ConnectTimeout);
        h.retry(RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE));
        h.rate_limited(RateLimitAction::TimedOut);
        h.throttled();
        h.throttled();
        m.config_reload(ReloadResult::Failure);
        let text = m.encode();
        for line in [
            "attache_requests_total{integration=\"pay\",code=\"200\"} 2",
            "attache_requests_total{integration=\"pay\",code=\"rate_limited\"} 1",
            "attache_upstream_attempts_total{integration=\"pay\",result=\"5xx\"} 1",
            "attache_upstream_attempts_total{integration=\"pay\",result=\"connect_timeout\"} 1",
            "attache_retries_total{integration=\"pay\",reason=\"503\"} 1",
            "attache_rate_limited_total{integration=\"pay\",action=\"timed_out\"} 1",
            "attache_upstream_throttled_total{integration=\"pay\"} 2",
            "attache_config_reloads_total{result=\"failure\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(
            !text.contains("attache_retries_total{integration=\"pay\",reason=\"reset\"}"),
            "series appear on first use only"
        );
    }

    #[test]
    fn values_beyond_the_kept_slots_are_still_counted() {
        let m = Metrics::new();
        let h = IntegrationMetrics::new(&m, "pay");
        for round in 0..3 {
            for code in 200..(200 + SLOTS as u16 + 4) {
                h.response(ResponseCode::Upstream(StatusCode::from_u16(code).unwrap()));
            }
            let text = m.encode();
            for code in [200, 215, 219] {
                let line = format!(
                    "attache_requests_total{{integration=\"pay\",code=\"{code}\"}} {}",
                    round + 1
                );
                assert!(text.contains(&line), "{line} missing in\n{text}");
            }
        }
    }
}
