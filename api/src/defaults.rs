//! Every default of the spec in one place, so documentation and behaviour cannot drift.

use crate::{
    bytesize::ByteSize,
    config::RetryOn,
    duration::KubeDuration,
    spec::{OnLimit, RateLimitScope},
};

pub const API_KEY_HEADER: &str = "Authorization";
pub const API_KEY_PREFIX: &str = "";
pub const CA_BUNDLE_KEY: &str = "ca.crt";
pub const BASIC_USERNAME_KEY: &str = "username";
pub const BASIC_PASSWORD_KEY: &str = "password";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

pub const CONNECT_TIMEOUT: KubeDuration = KubeDuration::from_secs(2);
pub const PER_TRY_TIMEOUT: KubeDuration = KubeDuration::from_secs(10);
pub const REQUEST_TIMEOUT: KubeDuration = KubeDuration::from_secs(30);
pub const IDLE_TIMEOUT: KubeDuration = KubeDuration::from_secs(60);

pub const MAX_ATTEMPTS: u32 = 3;
pub const BACKOFF_BASE: KubeDuration = KubeDuration::from_millis(100);
pub const BACKOFF_MAX: KubeDuration = KubeDuration::from_secs(10);
pub const RETRY_ON: &[RetryOn] = &[
    RetryOn::ConnectFailure,
    RetryOn::Reset,
    RetryOn::Timeout,
    RetryOn::Status(429),
    RetryOn::Status(502),
    RetryOn::Status(503),
    RetryOn::Status(504),
];
pub const RESPECT_RETRY_AFTER: bool = true;
pub const MAX_RETRY_AFTER: KubeDuration = KubeDuration::from_secs(30);
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
pub const GENERATE_IDEMPOTENCY_KEY: bool = false;
pub const BUDGET_RATIO: f64 = 0.2;
pub const BUDGET_MIN_PER_SECOND: u32 = 10;
/// Request bodies up to 64 KiB are kept so they can be sent again.
pub const REPLAY_BUFFER_BYTES: u64 = 64 * 1024;

pub const CONSECUTIVE_FAILURES: u32 = 5;
pub const FAILURE_RATE_WINDOW: KubeDuration = KubeDuration::from_secs(30);
pub const FAILURE_RATE_MINIMUM_REQUESTS: u32 = 20;
pub const OPEN_DURATION: KubeDuration = KubeDuration::from_secs(30);
pub const MAX_OPEN_DURATION: KubeDuration = KubeDuration::from_secs(300);
pub const HALF_OPEN_REQUESTS: u32 = 1;

pub const RATE_LIMIT_PER: KubeDuration = KubeDuration::from_secs(1);
pub const RATE_LIMIT_SCOPE: RateLimitScope = RateLimitScope::Pod;
pub const ON_LIMIT: OnLimit = OnLimit::Queue;
pub const MAX_QUEUE_WAIT: KubeDuration = KubeDuration::from_secs(5);

pub const MAX_IN_FLIGHT: u32 = 100;

/// Output tokens estimated for an LLM request that does not say how many it may use.
pub const LLM_DEFAULT_MAX_TOKENS: u32 = 1024;
/// Stripe's own libraries accept signatures up to 5 minutes old.
pub const WEBHOOK_TOLERANCE: KubeDuration = KubeDuration::from_secs(300);
/// Providers retry failed deliveries for hours to days; a day covers the common retries.
pub const WEBHOOK_REPLAY_WINDOW: KubeDuration = KubeDuration::from_secs(24 * 3600);
pub const WEBHOOK_MAX_BODY_BYTES: ByteSize = ByteSize::mebibytes(1);
