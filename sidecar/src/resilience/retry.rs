//! Whether a failed attempt may be retried: pure decisions, no I/O.
//!
//! The rule (DESIGN.md): an attempt that never reached the upstream may be retried whatever its
//! method; one that was sent is retried only if its method is idempotent or it carries the
//! idempotency-key header. Only failures listed in `retryOn` are retried at all.

use std::time::Duration;

use attache_api::config::{RetryConfig, RetryOn};
use http::{Method, StatusCode};

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Status(StatusCode),
    /// No connection was made (refused, unreachable, connect timeout, reset during handshake).
    ConnectFailure,
    /// The TLS handshake was refused (bad certificate): retrying cannot help.
    TlsFailure,
    /// Sent, then the connection broke before a response.
    Reset,
    /// Sent, no response head within the per-try timeout.
    Timeout,
}

impl AttemptOutcome {
    /// Whether this outcome counts against the upstream's health (circuit breaker).
    pub fn is_failure(self) -> bool {
        match self {
            AttemptOutcome::Status(s) => s.is_server_error(),
            _ => true,
        }
    }
}

/// Why an attempt is retried (the `reason` label of `attache_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    ConnectFailure,
    Reset,
    Timeout,
    Status(StatusCode),
}

impl RetryReason {
    pub fn label(self) -> String {
        match self {
            RetryReason::ConnectFailure => "connect-failure".into(),
            RetryReason::Reset => "reset".into(),
            RetryReason::Timeout => "timeout".into(),
            RetryReason::Status(s) => s.as_u16().to_string(),
        }
    }
}

/// Whether an attempt with this outcome may be retried, ignoring attempt counts and budget.
pub fn retry_reason(
    cfg: &RetryConfig,
    outcome: AttemptOutcome,
    replayable_request: bool,
) -> Option<RetryReason> {
    let listed = |r: RetryOn| cfg.retry_on.contains(&r);
    let (reason, sent) = match outcome {
        AttemptOutcome::ConnectFailure if listed(RetryOn::ConnectFailure) => {
            (RetryReason::ConnectFailure, false)
        }
        AttemptOutcome::Reset if listed(RetryOn::Reset) => (RetryReason::Reset, true),
        AttemptOutcome::Timeout if listed(RetryOn::Timeout) => (RetryReason::Timeout, true),
        AttemptOutcome::Status(s)
            if listed(RetryOn::Status(s.as_u16()))
                || (s.is_server_error() && listed(RetryOn::Any5xx)) =>
        {
            (RetryReason::Status(s), true)
        }
        _ => return None,
    };
    (!sent || replayable_request).then_some(reason)
}

/// Whether a request that reached the upstream may be sent again.
pub fn safe_to_resend(method: &Method, has_idempotency_key: bool) -> bool {
    has_idempotency_key
        || matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
        )
}

/// What to do with a `Retry-After` on a retryable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfterDecision {
    /// Wait this long before the next attempt.
    Wait(Duration),
    /// Longer than `maxRetryAfter`: give the response back as it is.
    GiveUp,
    /// No usable `Retry-After` (or not respected): use backoff.
    Backoff,
}

pub fn retry_after_decision(
    cfg: &RetryConfig,
    retry_after: Option<Duration>,
) -> RetryAfterDecision {
    match retry_after {
        Some(d) if cfg.respect_retry_after => {
            if d > cfg.max_retry_after.as_duration() {
                RetryAfterDecision::GiveUp
            } else {
                RetryAfterDecision::Wait(d)
            }
        }
        _ => RetryAfterDecision::Backoff,
    }
}

#[cfg(test)]
mod tests {
    use attache_api::KubeDuration;

    use super::*;

    fn cfg(retry_on: &[RetryOn]) -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            backoff_base: KubeDuration::from_millis(100),
            backoff_max: KubeDuration::from_secs(10),
            retry_on: retry_on.to_vec(),
            respect_retry_after: true,
            max_retry_after: KubeDuration::from_secs(30),
            idempotency_header: "Idempotency-Key".into(),
            generate_idempotency_key: false,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            replay_buffer_bytes: 65536,
        }
    }

    #[test]
    fn never_sent_is_retried_even_when_not_replay_safe() {
        let c = cfg(&[RetryOn::ConnectFailure]);
        assert_eq!(
            retry_reason(&c, AttemptOutcome::ConnectFailure, false),
            Some(RetryReason::ConnectFailure)
        );
        assert_eq!(retry_reason(&c, AttemptOutcome::TlsFailure, true), None);
    }

    #[test]
    fn sent_failures_need_a_safe_request() {
        let c = cfg(&[RetryOn::Reset, RetryOn::Timeout, RetryOn::Status(503)]);
        let s503 = AttemptOutcome::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_reason(&c, s503, false), None);
        assert!(retry_reason(&c, s503, true).is_some());
        assert_eq!(retry_reason(&c, AttemptOutcome::Reset, false), None);
        assert_eq!(
            retry_reason(&c, AttemptOutcome::Timeout, true),
            Some(RetryReason::Timeout)
        );
        assert_eq!(
            retry_reason(&c, AttemptOutcome::Status(StatusCode::BAD_GATEWAY), true),
            None,
            "502 is not listed"
        );
    }

    #[test]
    fn five_xx_class_matches_every_server_error_only() {
        let c = cfg(&[RetryOn::Any5xx]);
        assert!(retry_reason(
            &c,
            AttemptOutcome::Status(StatusCode::INTERNAL_SERVER_ERROR),
            true
        )
        .is_some());
        assert!(retry_reason(
            &c,
            AttemptOutcome::Status(StatusCode::TOO_MANY_REQUESTS),
            true
        )
        .is_none());
    }

    #[test]
    fn idempotent_methods_and_keys() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(safe_to_resend(&m, false), "{m}");
        }
        assert!(!safe_to_resend(&Method::POST, false));
        assert!(!safe_to_resend(&Method::PATCH, false));
        assert!(safe_to_resend(&Method::POST, true));
    }

    #[test]
    fn retry_after_is_capped() {
        let c = cfg(&[]);
        assert_eq!(
            retry_after_decision(&c, Some(Duration::from_secs(1))),
            RetryAfterDecision::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after_decision(&c, Some(Duration::from_secs(31))),
            RetryAfterDecision::GiveUp
        );
        assert_eq!(retry_after_decision(&c, None), RetryAfterDecision::Backoff);
        let mut ignore = cfg(&[]);
        ignore.respect_retry_after = false;
        assert_eq!(
            retry_after_decision(&ignore, Some(Duration::from_secs(99))),
            RetryAfterDecision::Backoff
        );
    }

    #[test]
    fn only_5xx_and_transport_errors_are_breaker_failures() {
        assert!(AttemptOutcome::Status(StatusCode::SERVICE_UNAVAILABLE).is_failure());
        assert!(!AttemptOutcome::Status(StatusCode::TOO_MANY_REQUESTS).is_failure());
        assert!(!AttemptOutcome::Status(StatusCode::NOT_FOUND).is_failure());
        assert!(AttemptOutcome::Timeout.is_failure());
        assert!(AttemptOutcome::ConnectFailure.is_failure());
    }
}
