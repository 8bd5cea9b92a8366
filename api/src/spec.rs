//! The `ExternalIntegration` custom resource, as users write it.
//!
//! Optional fields stay `Option` here so that what the user wrote can be told apart from a
//! default; [`crate::defaults`] fills them in and [`crate::render`] turns the result into the
//! sidecar's config. Field names are the public API (README, "Configuration reference").
//!
//! # Validation at `kubectl apply`
//!
//! The CRD generated from these types carries the rules of [`crate::validate`]: value ranges
//! and lengths as OpenAPI constraints (`#[schemars(range/length)]`), everything else as CEL
//! rules (`#[x_kube(validation = ...)]`, emitted as `x-kubernetes-validations`). Each CEL
//! message starts with the full field path so `kubectl` users see which field is wrong.
//! Strings that CEL rules scan carry a `maxLength`, and lists a `maxItems`, so the API server's
//! cost estimate stays within budget. Integers carry their `u32` maximum, so a value the
//! operator could not deserialize is refused at apply time instead of failing its watch. Keep both sides in step: the operator's tests check that
//! `attache-operator validate` and the CRD reject the same manifests.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::KubeDuration;
pub use crate::webhooks::{WebhookVerifySpec, WebhooksSpec};

/// A third-party API that pods of this namespace may call through the Attaché sidecar.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "attache.dev",
    version = "v1alpha1",
    kind = "ExternalIntegration",
    plural = "externalintegrations",
    shortname = "xint",
    namespaced,
    doc = "A third-party API declared once for a namespace: the Attaché sidecar calls it on the \
           pods' behalf with credentials, TLS, timeouts, retries, circuit breaking and limits.",
    status = "ExternalIntegrationStatus",
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".spec.upstream.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "!has(self.auth) || !has(self.auth.oauth2ClientCredentials) \
     || self.auth.oauth2ClientCredentials.tokenUrl.matches('^(?i)https://') \
     || (has(self.upstream.allowInsecure) && self.upstream.allowInsecure \
     && self.auth.oauth2ClientCredentials.tokenUrl.matches('^(?i)http://'))"
).message(
    "spec.auth.oauth2ClientCredentials.tokenUrl must start with https:// \
     (http:// only with spec.upstream.allowInsecure: true)"
).field_path(".auth.oauth2ClientCredentials.tokenUrl"))]
#[serde(rename_all = "camelCase")]
pub struct ExternalIntegrationSpec {
    pub upstream: UpstreamSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
    /// The third party's signed callbacks, verified by the sidecar (`crate::webhooks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<WebhooksSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,
}

/// An in-memory HTTP cache of GET and HEAD answers, per pod, as HTTP caching allows
/// (RFC 9111: Cache-Control, Expires, Vary, validators).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Memory for cached answers in each pod (`16Mi`); the least recently used go first.
    pub max_bytes: crate::bytesize::ByteSize,
    /// How long past its freshness an answer may still be served when the upstream fails
    /// (connect errors, timeouts, 5xx) or the circuit is open; default 0 (never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<KubeDuration>,
}

/// Where requests go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "self.url.matches('^(?i)https://') \
     || (has(self.allowInsecure) && self.allowInsecure && self.url.matches('^(?i)http://'))"
).message(
    "spec.upstream.url must start with https:// \
     (plain http:// only with spec.upstream.allowInsecure: true)"
).field_path(".url"))]
#[x_kube(validation = Rule::new(
    "!has(self.failover) || self.failover.all(f, f.url.matches('^(?i)https://') \
     || (has(self.allowInsecure) && self.allowInsecure && f.url.matches('^(?i)http://')))"
).message(
    "spec.upstream.failover[].url must start with https:// \
     (plain http:// only with spec.upstream.allowInsecure: true)"
).field_path(".failover"))]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Base URL of the third party, `https://...`; a path is prefixed to every request path.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("!self.matches('[\\\\x00-\\\\x20\\\\x7f]')")
            .message("spec.upstream.url must not contain spaces or control characters"),
        validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9+.-]*://([^/?#@]*@)?[^/?#@:]')").message(
            "spec.upstream.url must be an absolute URL with a host, like https://api.example.com"
        ),
        validation = Rule::new("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')")
            .message("spec.upstream.url must not carry credentials: use spec.auth"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')")
            .message("spec.upstream.url must not have a query or fragment")
    )]
    pub url: String,
    /// Allows a plain `http://` URL. Off by default: credentials must not cross a network in
    /// clear text unless someone said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure: Option<bool>,
    /// Other endpoints of the same API (another region, a mirror), in order: an attempt that
    /// may be retried goes to the next one when the current one failed to connect, answered a
    /// `retryOn` status or has its circuit open. Same credentials and TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub failover: Option<Vec<FailoverEndpoint>>,
}

/// One failover endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailoverEndpoint {
    /// Base URL, `https://...` (or `http://` with `allowInsecure`); its path replaces the
    /// primary's base path.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("!self.matches('[\\\\x00-\\\\x20\\\\x7f]')")
            .message("spec.upstream.failover[].url must not contain spaces or control characters"),
        validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9+.-]*://([^/?#@]*@)?[^/?#@:]')").message(
            "spec.upstream.failover[].url must be an absolute URL with a host, like https://eu.api.example.com"
        ),
        validation = Rule::new("!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')")
            .message("spec.upstream.failover[].url must not carry credentials: use spec.auth"),
        validation = Rule::new("!self.contains('?') && !self.contains('#')")
            .message("spec.upstream.failover[].url must not have a query or fragment")
    )]
    pub url: String,
}

/// How the sidecar authenticates to the third party; at most one method is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.apiKey) ? 1 : 0) + (has(self.bearer) ? 1 : 0) + (has(self.basic) ? 1 : 0) \
     + (has(self.queryParam) ? 1 : 0) + (has(self.oauth2ClientCredentials) ? 1 : 0) <= 1"
).message(
    "spec.auth: set at most one of apiKey, bearer, basic, queryParam, oauth2ClientCredentials"
))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_param: Option<QueryParamAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2_client_credentials: Option<OAuth2ClientCredentials>,
}

/// A key in a Secret of the integration's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole Secret of the integration's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An API key sent in a header, e.g. `Authorization: Bearer sk_...` or `X-Api-Key: ...`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// Header name; default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(r#"self.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")"#)
        .message("spec.auth.apiKey.header must be a valid HTTP header name"))]
    pub header: Option<String>,
    /// Text put before the key, e.g. `"Bearer "`; default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub secret_key_ref: SecretKeyRef,
}

/// `Authorization: Bearer <token>`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BearerAuth {
    pub secret_key_ref: SecretKeyRef,
}

/// HTTP basic authentication from a Secret with keys `username` and `password`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    pub secret_ref: SecretRef,
}

/// A key sent as a query parameter, e.g. `?api_key=...`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamAuth {
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    pub secret_key_ref: SecretKeyRef,
}

/// OAuth 2.0 client-credentials grant; the token is cached until shortly before it expires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredentials {
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("!self.matches('[\\\\x00-\\\\x20\\\\x7f]')").message(
            "spec.auth.oauth2ClientCredentials.tokenUrl must not contain spaces or control characters"
        ),
        validation = Rule::new("self.matches('^[A-Za-z][A-Za-z0-9+.-]*://([^/?#@]*@)?[^/?#@:]')")
            .message("spec.auth.oauth2ClientCredentials.tokenUrl must be an absolute URL with a host")
    )]
    pub token_url: String,
    #[schemars(length(min = 1))]
    pub client_id: String,
    pub client_secret_ref: SecretKeyRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// How the sidecar verifies the third party and proves its own identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Trusted CAs instead of the Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) presented to the upstream (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateRef>,
    /// Lowest TLS version offered: `"1.2"` (default) or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self == '1.2' || self == '1.3'")
        .message(r#"spec.tls.minVersion must be "1.2" or "1.3""#))]
    pub min_version: Option<String>,
    /// SNI and certificate name to use instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(
        r"isIP(self) || self.matches('^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$')"
    ).message("spec.tls.serverName must be a DNS name or an IP address"))]
    pub server_name: Option<String>,
}

/// Where a PEM CA bundle lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// `Secret` (default) or `ConfigMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CaBundleKind>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CaBundleKind {
    Secret,
    ConfigMap,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateRef {
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// Time limits; `request` bounds all attempts together, `idle` a response body's pauses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.timeouts.connect must be greater than 0"))]
    pub connect: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.timeouts.perTry must be greater than 0"))]
    pub per_try: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.timeouts.request must be greater than 0"))]
    pub request: Option<KubeDuration>,
    /// Longest silence between two chunks of a response body; `request` never cuts a
    /// healthy stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.timeouts.idle must be greater than 0"))]
    pub idle: Option<KubeDuration>,
}

/// Which failures are retried, how often and how far apart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts in all, the first included; 1 disables retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// `connect-failure`, `reset`, `timeout`, `5xx`, or a status code such as `"503"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(length(max = 32)))]
    #[x_kube(validation = Rule::new(
        "self.all(x, x in ['connect-failure', 'reset', 'timeout', '5xx'] \
         || x.matches('^[45][0-9][0-9]$'))"
    ).message(
        "spec.retry.retryOn entries must be connect-failure, reset, timeout, 5xx \
         or a status code 400-599"
    ))]
    pub retry_on: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respect_retry_after: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_after: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKeySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudgetSpec>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.base) || !has(self.max) || duration(self.base) <= duration(self.max)"
).message("spec.retry.backoff.base must not exceed spec.retry.backoff.max").field_path(".base"))]
#[serde(rename_all = "camelCase")]
pub struct BackoffSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.retry.backoff.base must be greater than 0"))]
    pub base: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.retry.backoff.max must be greater than 0"))]
    pub max: Option<KubeDuration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyKeySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(r#"self.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")"#)
        .message("spec.retry.idempotencyKey.header must be a valid HTTP header name"))]
    pub header: Option<String>,
    /// Add a fresh key to POST/PATCH requests that carry none, kept across attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<bool>,
}

/// Retries may add at most `ratio` of the recent request rate, plus `minPerSecond`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub min_per_second: Option<u32>,
}

/// Stops calling a failing third party for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[x_kube(
    validation = Rule::new("!(has(self.consecutiveFailures) && has(self.failureRate))").message(
        "spec.circuitBreaker: set either consecutiveFailures or failureRate, not both"
    ),
    validation = Rule::new(
        "!has(self.openDuration) || !has(self.maxOpenDuration) \
         || duration(self.openDuration) <= duration(self.maxOpenDuration)"
    )
    .message("spec.circuitBreaker.openDuration must not exceed spec.circuitBreaker.maxOpenDuration")
    .field_path(".openDuration")
)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Open after this many failed attempts in a row, retries included (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.circuitBreaker.openDuration must be greater than 0"))]
    pub open_duration: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.circuitBreaker.maxOpenDuration must be greater than 0"))]
    pub max_open_duration: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub half_open_requests: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRateSpec {
    /// Trip when at least this percentage of attempts (retries included) in the window
    /// failed (1-100).
    #[schemars(range(min = 1, max = 100))]
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.circuitBreaker.failureRate.window must be greater than 0"))]
    pub window: Option<KubeDuration>,
    /// Attempts the window must hold before the rate can trip it (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub minimum_requests: Option<u32>,
}

/// Requests per period towards the third party.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.quota) || (has(self.scope) && self.scope == 'global')")
    .message("spec.rateLimit.quota needs spec.rateLimit.scope: global (its counter lives in Redis)"))]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    #[schemars(range(min = 1, max = u32::MAX))]
    pub requests: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.rateLimit.per must be greater than 0"))]
    pub per: Option<KubeDuration>,
    /// Requests allowed at once after idle; default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RateLimitScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<OnLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait: Option<KubeDuration>,
    /// An allowance per window (e.g. a day) across every pod; `scope: global` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitScope {
    /// The limit applies in each pod.
    Pod,
    /// The limit is divided among the pods that use the integration.
    Shared,
    /// One exact bucket for every pod, kept in Redis (the `shared` split while Redis is away).
    Global,
}

/// `requests` per window of `per`, windows aligned to the Unix epoch (`24h`: UTC days).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    #[schemars(range(min = 1, max = u32::MAX))]
    pub requests: u32,
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')")
        .message("spec.rateLimit.quota.per must be at least 1s"))]
    pub per: KubeDuration,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnLimit {
    /// Wait (FIFO) up to `maxQueueWait`.
    Queue,
    /// Answer 429 `rate_limited` at once.
    Reject,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub max_in_flight: Option<u32>,
}

/// The third party is an LLM API: token usage is read from its answers (JSON and streamed),
/// counted, optionally budgeted, and its token limit headers are obeyed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    pub provider: LlmProvider,
    /// Token budget per minute (input + output), divided among pods like `rateLimit.scope`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub tokens_per_minute: Option<u32>,
    /// Output tokens a request is estimated to use when it sets no `max_tokens` /
    /// `max_completion_tokens` / `max_output_tokens` (the budget settles the real usage later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub default_max_tokens: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// OpenAI's API (chat completions, responses, embeddings) and compatible ones.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

/// What the sidecar tells the third party about traces (README, "Access log").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Send the third party a W3C `traceparent` (parent: the sidecar's attempt span) and the
    /// app's `tracestate`. Off by default: trace headers stay inside the trust boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagate_trace_context: Option<bool>,
}

/// What the operator last observed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalIntegrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_not_after: Option<String>,
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
