//! The sidecar's config format: what the operator writes into ConfigMap `attache-NAME` and what
//! `attache-sidecar run --config-dir` reads.
//!
//! # Layout of a config dir
//!
//! ```text
//! DIR/
//!   NAME/                  one folder per integration (a projected ConfigMap + Secret volume)
//!     config.json          SidecarConfig, every default resolved, no secret values
//!     auth-credential      apiKey / bearer / queryParam value          (Secret)
//!     auth-username        basic auth                                   (Secret)
//!     auth-password        basic auth                                   (Secret)
//!     oauth2-client-secret oauth2ClientCredentials client secret        (Secret)
//!     ca.crt               PEM CA bundle, when tls.caBundleRef is set   (Secret)
//!     tls.crt, tls.key     client certificate chain and key (mTLS)      (Secret)
//!     webhook-secrets      webhook signing secrets, one per line        (Secret)
//!     redis-password       Redis password of `scope: global` limits     (Secret)
//!     redis-ca.crt         CA of the Redis server (`rediss://`)         (Secret)
//! ```
//!
//! `config.json` names the secret files it needs, so a missing file is an error that names it.
//! The format is versioned by `apiVersion`; a sidecar refuses versions it does not know.

use serde::{Deserialize, Serialize};

use crate::{
    duration::KubeDuration,
    spec::{LlmProvider, OnLimit, RateLimitScope},
};

/// The `apiVersion` of this format.
pub const CONFIG_API_VERSION: &str = "attache.dev/sidecar-config/v1";
/// The ConfigMap key (and file name) holding the rendered [`SidecarConfig`].
pub const CONFIG_FILE: &str = "config.json";

/// The sidecar's well-known ports, shared by its flag defaults and the injector (which
/// writes `ATTACHE_<NAME>_URL` from them), so the two cannot drift apart.
pub mod ports {
    /// Integration `i` of a pod (sorted by name) listens on `FIRST_INTEGRATION + i`.
    pub const FIRST_INTEGRATION: u16 = 15001;
    /// The HTTP proxy listener (`ATTACHE_PROXY_URL`).
    pub const PROXY: u16 = 15080;
    /// `/metrics`, `/healthz`, `/readyz`.
    pub const ADMIN: u16 = 15090;
    /// The webhook listener (container port `attache-webhooks`).
    pub const WEBHOOKS: u16 = 15100;
}

/// `ATTACHE_<NAME>_URL`, the variable that carries an integration's listener URL to the app:
/// the name upper-cased, `-` and `.` to `_`. The injector sets it; local mode prints it.
pub fn url_env_name(integration: &str) -> String {
    let name: String = integration
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect();
    format!("ATTACHE_{name}_URL")
}

/// Secret keys (file names) in the generated Secret.
pub mod files {
    pub const AUTH_CREDENTIAL: &str = "auth-credential";
    pub const AUTH_USERNAME: &str = "auth-username";
    pub const AUTH_PASSWORD: &str = "auth-password";
    pub const OAUTH2_CLIENT_SECRET: &str = "oauth2-client-secret";
    pub const CA_BUNDLE: &str = "ca.crt";
    pub const CLIENT_CERT: &str = "tls.crt";
    pub const CLIENT_KEY: &str = "tls.key";
    /// The Redis password of global rate limits.
    pub const REDIS_PASSWORD: &str = "redis-password";
    /// The CA that signed the Redis server's certificate (`rediss://`).
    pub const REDIS_CA: &str = "redis-ca.crt";
}

/// Everything one integration's listener needs, defaults resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarConfig {
    pub api_version: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub upstream: UpstreamConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub timeouts: TimeoutsConfig,
    pub retry: RetryConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    pub concurrency: ConcurrencyConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
    /// Inbound webhooks, when the integration has `spec.webhooks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<crate::webhooks::WebhooksConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Absent in configs rendered before it existed: nothing propagated.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `spec.cache`, resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    pub max_bytes: u64,
    pub stale_if_error: KubeDuration,
}

/// Trace headers toward the third party.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    pub propagate_trace_context: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Prefixed to every request path; empty or starting with `/`, never ending with `/`.
    pub base_path: String,
    /// `upstream.failover`: the other endpoints, in order (their own `failover` is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<UpstreamConfig>,
}

impl UpstreamConfig {
    /// `host:port` as sent in the Host header (port omitted when it is the scheme's default).
    pub fn authority(&self) -> String {
        let default_port = match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        if self.port == default_port {
            self.uri_host()
        } else {
            self.host_port()
        }
    }

    /// `host:port`, always with the port (what connections are made to).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.uri_host(), self.port)
    }

    /// The host as written in a URI: IPv6 addresses in brackets.
    fn uri_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Credential injection; secret values are read from the files named here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum AuthConfig {
    None,
    #[serde(rename_all = "camelCase")]
    ApiKey {
        header: String,
        prefix: String,
    },
    Bearer,
    Basic,
    #[serde(rename_all = "camelCase")]
    QueryParam {
        name: String,
    },
    #[serde(rename_all = "camelCase")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        scopes: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
    },
}

impl AuthConfig {
    /// The secret files this method reads.
    pub fn secret_files(&self) -> &'static [&'static str] {
        match self {
            AuthConfig::None => &[],
            AuthConfig::ApiKey { .. } | AuthConfig::Bearer | AuthConfig::QueryParam { .. } => {
                &[files::AUTH_CREDENTIAL]
            }
            AuthConfig::Basic => &[files::AUTH_USERNAME, files::AUTH_PASSWORD],
            AuthConfig::OAuth2ClientCredentials { .. } => &[files::OAUTH2_CLIENT_SECRET],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::ApiKey { .. } => "apiKey",
            AuthConfig::Bearer => "bearer",
            AuthConfig::Basic => "basic",
            AuthConfig::QueryParam { .. } => "queryParam",
            AuthConfig::OAuth2ClientCredentials { .. } => "oauth2ClientCredentials",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Trust `ca.crt` instead of the Mozilla roots.
    pub custom_ca: bool,
    /// Present `tls.crt` + `tls.key` (mTLS).
    pub client_certificate: bool,
    pub min_version: TlsVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutsConfig {
    pub connect: KubeDuration,
    pub per_try: KubeDuration,
    pub request: KubeDuration,
    /// Longest pause between two response body chunks (absent in configs rendered before
    /// it existed: the default then).
    #[serde(default = "default_idle_timeout")]
    pub idle: KubeDuration,
}

fn default_idle_timeout() -> KubeDuration {
    crate::defaults::IDLE_TIMEOUT
}

/// A class of failure that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    Timeout,
    Any5xx,
    Status(u16),
}

impl RetryOn {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connect-failure" => Some(Self::ConnectFailure),
            "reset" => Some(Self::Reset),
            "timeout" => Some(Self::Timeout),
            "5xx" => Some(Self::Any5xx),
            code => match code.parse::<u16>() {
                Ok(c) if (400..=599).contains(&c) && code.len() == 3 => Some(Self::Status(c)),
                _ => None,
            },
        }
    }

    pub fn as_string(&self) -> String {
        match self {
            Self::ConnectFailure => "connect-failure".into(),
            Self::Reset => "reset".into(),
            Self::Timeout => "timeout".into(),
            Self::Any5xx => "5xx".into(),
            Self::Status(c) => c.to_string(),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RetryOn::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown retryOn {s:?}")))
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub backoff_base: KubeDuration,
    pub backoff_max: KubeDuration,
    pub retry_on: Vec<RetryOn>,
    pub respect_retry_after: bool,
    pub max_retry_after: KubeDuration,
    pub idempotency_header: String,
    pub generate_idempotency_key: bool,
    pub budget_ratio: f64,
    pub budget_min_per_second: u32,
    /// Request bodies up to this size are kept for replay; larger ones are sent once.
    pub replay_buffer_bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "mode", rename_all = "camelCase", deny_unknown_fields)]
pub enum BreakerMode {
    #[serde(rename_all = "camelCase")]
    ConsecutiveFailures { failures: u32 },
    #[serde(rename_all = "camelCase")]
    FailureRate {
        percent: u32,
        window: KubeDuration,
        minimum_requests: u32,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    pub trip: BreakerMode,
    pub open_duration: KubeDuration,
    pub max_open_duration: KubeDuration,
    pub half_open_requests: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per `per` for the whole integration, as written.
    pub requests: u32,
    pub per: KubeDuration,
    /// Bucket capacity in this pod (for `scope: shared`, this pod's share, at least 1).
    pub burst: u32,
    pub scope: RateLimitScope,
    pub on_limit: OnLimit,
    pub max_queue_wait: KubeDuration,
    /// Pods the limit is divided among (1 for `scope: pod`): this pod may send
    /// `requests` per `per × pods`. For `scope: global` this is the fallback split.
    pub pods: u32,
    /// `scope: global`: the whole bucket in Redis; `burst` and `pods` above are the `shared`
    /// split used while Redis cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalLimitConfig>,
}

/// What a `scope: global` limit needs beyond the pod's fallback share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalLimitConfig {
    /// The whole bucket's capacity (every pod together).
    pub burst: u32,
    /// Prefix of the Redis keys: `attache:{NAMESPACE/NAME}`, one bucket per integration.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaConfig>,
    /// Where Redis is; absent when the operator was given none (then the split is permanent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
}

/// `requests` per window of `per` (windows aligned to the Unix epoch).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaConfig {
    pub requests: u32,
    pub per: KubeDuration,
}

/// The Redis server of global limits. The URL carries no password: that is the Secret file
/// [`files::REDIS_PASSWORD`]; a private CA is [`files::REDIS_CA`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS) `HOST:PORT[/DB]`, optionally with a user name.
    pub url: String,
    #[serde(default)]
    pub password: bool,
    #[serde(default)]
    pub ca: bool,
}

impl RedisConfig {
    /// The secret files this config names.
    pub fn secret_files(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.password {
            f.push(files::REDIS_PASSWORD);
        }
        if self.ca {
            f.push(files::REDIS_CA);
        }
        f
    }
}

impl RateLimitConfig {
    /// This pod's share of the period: one request may start every `pod_interval`.
    pub fn pod_interval(&self) -> std::time::Duration {
        let per = self.per.as_duration().saturating_mul(self.pods.max(1));
        per / self.requests.max(1)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConcurrencyConfig {
    pub max_in_flight: u32,
    /// Beyond `maxInFlight`: `reject` answers 503 `overloaded`, `queue` waits up to `maxQueueWait`.
    pub on_limit: OnLimit,
    pub max_queue_wait: KubeDuration,
}

/// An LLM provider's token accounting and budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: LlmProvider,
    /// The budget as written, for the whole integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Pods the budget is divided among (1 unless `rateLimit.scope` shares it).
    pub pods: u32,
    pub default_max_tokens: u32,
    /// Over budget: `queue` waits up to `maxQueueWait`, `reject` answers 429 `token_limited`.
    pub on_limit: OnLimit,
    pub max_queue_wait: KubeDuration,
}

impl LlmConfig {
    /// This pod's share of the budget per minute (at least 1), if there is a budget.
    pub fn pod_tokens_per_minute(&self) -> Option<u32> {
        self.tokens_per_minute
            .map(|t| (t / self.pods.max(1)).max(1))
    }
}

/// Without a rate limit, a full bulkhead rejects at once: queueing is opt-in via
/// `rateLimit.onLimit: queue`, because a silent wait is worse than a clear 503 by default.
pub const fn default_concurrency_on_limit() -> OnLimit {
    OnLimit::Reject
}
