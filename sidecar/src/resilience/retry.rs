//! Retries: the pure rules (README, "Configuration reference", `spec.retry.*`), and [`Retrying`], the small state
//! machine that decides, after each attempt, whether the request goes out again and after what
//! delay, or why it stops.
//!
//! The rules, in the order they are checked:
//! 1. only failures listed in `retryOn` are retried at all (`5xx` stands for every 5xx);
//! 2. at most `maxAttempts` attempts in all, the first included;
//! 3. an attempt that never reached the upstream (connect failure) may be retried whatever its
//!    method; one that was sent only if its method is idempotent (GET, HEAD, OPTIONS, PUT,
//!    DELETE) or it carries the idempotency-key header;
//! 4. a body larger than the replay buffer was streamed once and is not sent again;
//! 5. `Retry-After` (when `respectRetryAfter`) sets the delay, and past `maxRetryAfter` the
//!    response goes back as it is; otherwise exponential backoff with full jitter;
//! 6. no retry whose delay would end past the request's deadline (`timeouts.request`);
//! 7. the retry budget (`ratio` of recent requests + `minPerSecond`) must allow it.
//!
//! When the next attempt is then refused by the rate gate or the breaker, the app gets the
//! last attempt's answer (`proxy/respond.rs`). Whenever retrying stops before `maxAttempts`
//! although `retryOn` lists the failure, [`Stopped`] says why (`x-attache-retry-stopped`).

use std::time::Duration;

use attache_api::config::{RetryConfig, RetryOn};
use http::{Method, StatusCode};
use rand::Rng;
use tokio::time::Instant;

use super::{backoff, budget::RetryBudget};
use crate::{metrics::LabelValue, upstream::AttemptOutcome};

/// Why an attempt is retried (the `reason` label of `attache_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    ConnectFailure,
    Reset,
    Timeout,
    Status(StatusCode),
}

impl LabelValue for RetryReason {
    fn label(&self) -> &str {
        match self {
            RetryReason::ConnectFailure => "connect-failure",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status(s) => s.as_str(),
        }
    }
}

/// Why retrying stopped before `maxAttempts` although `retryOn` lists the last failure (the
/// value of the `x-attache-retry-stopped` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The request was sent and may not be sent twice (no idempotent method, no key).
    NotIdempotent,
    /// The request body was larger than the replay buffer: it was streamed once.
    BodyNotReplayable,
    /// The upstream's `Retry-After` is longer than `maxRetryAfter`.
    RetryAfter,
    /// The delay before the next attempt would end past the request timeout.
    Deadline,
    /// The retry budget is spent.
    Budget,
    /// The rate gate refused the next attempt (the integration's limit or a provider hold).
    RateLimit,
    /// The circuit breaker refused the next attempt.
    CircuitOpen,
}

impl Stopped {
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped::NotIdempotent => "not_idempotent",
            Stopped::BodyNotReplayable => "body_not_replayable",
            Stopped::RetryAfter => "retry_after",
            Stopped::Deadline => "deadline",
            Stopped::Budget => "budget",
            Stopped::RateLimit => "rate_limit",
            Stopped::CircuitOpen => "circuit_open",
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send another attempt after `delay`.
    Retry {
        reason: RetryReason,
        delay: Duration,
    },
    /// Give this attempt's answer to the app; `Some` when retrying stopped early.
    Done(Option<Stopped>),
}

/// The retry state of one request: attempts sent, the retry that is due, the deadline. The
/// request is deposited in the budget when retrying starts, and each retry withdraws from it
/// here and nowhere else.
pub struct Retrying<'a> {
    cfg: &'a RetryConfig,
    budget: &'a RetryBudget,
    /// The request may be sent again after it reached the upstream (rule 3).
    resend_safe: bool,
    deadline: Instant,
    attempts: u32,
    due: Option<RetryReason>,
}

// === impl Retrying ===

impl<'a> Retrying<'a> {
    /// Starts retrying for one request (counting it in the budget).
    pub fn start(
        cfg: &'a RetryConfig,
        budget: &'a RetryBudget,
        resend_safe: bool,
        deadline: Instant,
    ) -> Self {
        budget.deposit();
        Self {
            cfg,
            budget,
            resend_safe,
            deadline,
            attempts: 0,
            due: None,
        }
    }

    /// An attempt is being sent: counts it, and returns its retry reason when it is a retry.
    pub fn sending(&mut self) -> Option<RetryReason> {
        self.attempts += 1;
        self.due.take()
    }

    /// Attempts sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Decides after an attempt with `outcome`: `retry_after` is the response's `Retry-After`,
    /// `replayable` whether the request body can be sent again; `rng` gives the backoff's
    /// jitter, only when a backoff is due.
    pub fn after<R: Rng>(
        &mut self,
        outcome: AttemptOutcome,
        retry_after: Option<Duration>,
        replayable: bool,
        rng: impl FnOnce() -> R,
    ) -> Next {
        let Some(reason) = listed(self.cfg, outcome) else {
            return Next::Done(None);
        };
        if self.attempts >= self.cfg.max_attempts.max(1) {
            return Next::Done(None);
        }
        if outcome.was_sent() && !self.resend_safe {
            return Next::Done(Some(Stopped::NotIdempotent));
        }
        if !replayable {
            return Next::Done(Some(Stopped::BodyNotReplayable));
        }
        let delay = match retry_after_decision(self.cfg, retry_after) {
            RetryAfterDecision::Wait(d) => d,
            RetryAfterDecision::GiveUp => return Next::Done(Some(Stopped::RetryAfter)),
            RetryAfterDecision::Backoff => backoff::delay(
                self.attempts,
                self.cfg.backoff_base.as_duration(),
                self.cfg.backoff_max.as_duration(),
                &mut rng(),
            ),
        };
        if delay >= self.deadline.saturating_duration_since(Instant::now()) {
            return Next::Done(Some(Stopped::Deadline));
        }
        if !self.budget.try_withdraw() {
            return Next::Done(Some(Stopped::Budget));
        }
        self.due = Some(reason);
        Next::Retry { reason, delay }
    }
}

/// The retry reason when `retryOn` lists this outcome (rule 1).
pub fn listed(cfg: &RetryConfig, outcome: AttemptOutcome) -> Option<RetryReason> {
    let on = |r: RetryOn| cfg.retry_on.contains(&r);
    match outcome {
        AttemptOutcome::ConnectFailure if on(RetryOn::ConnectFailure) => {
            Some(RetryReason::ConnectFailure)
        }
        AttemptOutcome::Reset if on(RetryOn::Reset) => Some(RetryReason::Reset),
        AttemptOutcome::Timeout if on(RetryOn::Timeout) => Some(RetryReason::Timeout),
        AttemptOutcome::Status(s)
            if on(RetryOn::Status(s.as_u16())) || (s.is_server_error() && on(RetryOn::Any5xx)) =>
        {
            Some(RetryReason::Status(s))
        }
        _ => None,
    }
}

/// Whether an attempt with this outcome may be retried, ignoring attempt counts, budget and
/// delays (rules 1 and 3).
pub fn retry_reason(
    cfg: &RetryConfig,
    outcome: AttemptOutcome,
    resend_safe: bool,
) -> Option<RetryReason> {
    listed(cfg, outcome).filter(|_| !outcome.was_sent() || resend_safe)
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
#[path = "retry_tests.rs"]
mod tests;
