//! The `ExternalIntegration` custom resource, as users write it.
//!
//! Optional fields stay `Option` here so that what the user wrote can be told apart from a
//! default; [`crate::defaults`] fills them in and [`crate::render`] turns the result into the
//! sidecar's config. Field names are fixed by DESIGN.md.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::KubeDuration;

/// A third-party API that pods of this namespace may call through the Attaché sidecar.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "attache.dev",
    version = "v1alpha1",
    kind = "ExternalIntegration",
    plural = "externalintegrations",
    shortname = "xint",
    namespaced,
    status = "ExternalIntegrationStatus",
    printcolumn = r#"{"name":"Upstream","type":"string","jsonPath":".spec.upstream.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
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
}

/// Where requests go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Base URL of the third party, `https://...`; a path is prefixed to every request path.
    pub url: String,
    /// Allows a plain `http://` URL. Off by default: credentials must not cross a network in
    /// clear text unless someone said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure: Option<bool>,
}

/// How the sidecar authenticates to the third party; at most one method is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
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
    pub name: String,
    pub key: String,
}

/// A whole Secret of the integration's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
}

/// An API key sent in a header, e.g. `Authorization: Bearer sk_...` or `X-Api-Key: ...`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyAuth {
    /// Header name; default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub name: String,
    pub secret_key_ref: SecretKeyRef,
}

/// OAuth 2.0 client-credentials grant; the token is cached until shortly before it expires.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret_ref: SecretKeyRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// How the sidecar verifies the third party and proves its own identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
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
    pub min_version: Option<String>,
    /// SNI and certificate name to use instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Where a PEM CA bundle lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// `Secret` (default) or `ConfigMap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CaBundleKind>,
    pub name: String,
    /// Default `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub secret_name: String,
}

/// Time limits; `request` bounds all attempts together.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<KubeDuration>,
}

/// Which failures are retried, how often and how far apart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Attempts in all, the first included; 1 disables retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    /// `connect-failure`, `reset`, `timeout`, `5xx`, or a status code such as `"503"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackoffSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<KubeDuration>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencyKeySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
}

/// Stops calling a failing third party for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_duration: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_requests: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRateSpec {
    /// Trip when at least this percentage of requests in the window failed (1-100).
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<KubeDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_requests: Option<u32>,
}

/// Requests per period towards the third party.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    pub requests: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<KubeDuration>,
    /// Requests allowed at once after idle; default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RateLimitScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_limit: Option<OnLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait: Option<KubeDuration>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RateLimitScope {
    /// The limit applies in each pod.
    Pod,
    /// The limit is divided among the pods that use the integration.
    Shared,
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
    pub max_in_flight: Option<u32>,
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
