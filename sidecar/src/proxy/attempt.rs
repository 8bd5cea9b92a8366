//! One attempt: the rate gate, the breaker's admission, the send under `timeouts.perTry`, the
//! breaker's verdict and the provider's backpressure. The breaker's admission and verdict are
//! one [`Ticket`]: an attempt that is refused or never sent cannot leave a probe open.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::prepare::Prepared;
use crate::{
    body::Body,
    integration::Integration,
    llm,
    metrics::{AttemptResult, LabelValue},
    resilience::{
        breaker::{CircuitState, Rejected, Ticket},
        ratelimit::{Admitted, Limited, RateLimitAction},
        replay::RequestBody,
        retry::RetryReason,
        retry_after,
    },
    telemetry::boundary,
    upstream::{AttemptError, AttemptOutcome},
};

/// Leave to send one attempt: the breaker's ticket and the body to send.
pub struct Cleared<'a> {
    ticket: Ticket<'a>,
    body: Body,
    /// The endpoint it goes to (0: the primary; then `upstream.failover` in order).
    pub endpoint: usize,
}

/// Why an attempt could not go out.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("rate gate: {0:?}")]
    RateLimited(Limited),
    #[error("circuit breaker: {0:?}")]
    CircuitOpen(Rejected),
    /// Unreachable by construction (a streamed body is never retried); kept safe.
    #[error("request body already sent")]
    BodySpent,
}

/// What one attempt produced.
pub struct Attempted {
    pub result: Result<Response<Incoming>, AttemptError>,
    pub outcome: AttemptOutcome,
    /// The response's `Retry-After`, if it has one.
    pub retry_after: Option<Duration>,
    /// The endpoint that answered (or failed).
    pub endpoint: usize,
}

/// Waits for the rate gate (retries pass it too: the third party counts them), then asks the
/// breaker of endpoint `from`, and of the next endpoints in turn while theirs are open (with
/// no failover endpoints, only the primary's). Never waits past `deadline`.
pub async fn clear<'a>(
    ig: &'a Integration,
    deadline: Instant,
    body: &mut RequestBody,
    from: usize,
) -> Result<Cleared<'a>, Refused> {
    let p = &ig.policies;
    match p.gate.acquire(deadline).await {
        Ok(Admitted::Immediately) => {}
        Ok(Admitted::AfterQueueing(waited)) => {
            ig.metrics.rate_limited(RateLimitAction::Queued);
            tracing::debug!(integration = %ig.name, waited_ms = waited.as_millis() as u64, "rate limit: queued");
        }
        Err(l) => {
            ig.metrics.rate_limited(l.action);
            return Err(Refused::RateLimited(l));
        }
    }
    let (ticket, endpoint) = admit_endpoint(ig, from).map_err(Refused::CircuitOpen)?;
    // Dropping the ticket here frees its probe slot.
    let body = body.for_attempt().ok_or(Refused::BodySpent)?;
    Ok(Cleared {
        ticket,
        body,
        endpoint,
    })
}

/// The first endpoint from `from` on (wrapping around) whose breaker lets an attempt through.
fn admit_endpoint(ig: &Integration, from: usize) -> Result<(Ticket<'_>, usize), Rejected> {
    let p = &ig.policies;
    let n = p.endpoints();
    let mut first_refusal = None;
    for i in (0..n).map(|k| (from + k) % n) {
        match p.breaker_of(i).admit() {
            Ok(ticket) => return Ok((ticket, i)),
            Err(r) => {
                first_refusal.get_or_insert(r);
            }
        }
    }
    Err(first_refusal.expect("at least the primary endpoint"))
}

/// Sends one cleared attempt (a retry when `retry` says why, with `traceparent` when the
/// integration propagates trace context), records it with the breaker and in the metrics, and
/// applies the provider's backpressure.
pub async fn send(
    ig: &Integration,
    cleared: Cleared<'_>,
    prepared: &Prepared,
    retry: Option<RetryReason>,
    traceparent: Option<HeaderValue>,
) -> Attempted {
    if let Some(reason) = retry {
        ig.metrics.retry(reason);
        tracing::debug!(integration = %ig.name, reason = reason.label(), "retrying");
    }
    let per_try = ig.per_try_timeout();
    let endpoint = cleared.endpoint;
    let mut req = prepared.request_to(ig, endpoint, cleared.body);
    if let Some(tp) = traceparent {
        req.headers_mut().insert(boundary::TRACEPARENT, tp);
    }
    let sent = tokio::time::timeout(per_try, ig.client.request(req));
    let result = match sent.await {
        Ok(result) => result,
        Err(_) => Err(AttemptError::PerTryTimeout(per_try)),
    };
    let outcome = AttemptOutcome::of(&result);
    ig.metrics.attempt(match &result {
        Ok(resp) => AttemptResult::of_status(resp.status()),
        Err(e) => e.result(),
    });
    match cleared.ticket.record(outcome.is_failure()) {
        Some(CircuitState::Open) => tracing::warn!(integration = %ig.name, "circuit opened"),
        Some(CircuitState::Closed) => tracing::info!(integration = %ig.name, "circuit closed"),
        Some(CircuitState::HalfOpen) | None => {}
    }
    let retry_after = match &result {
        Ok(resp) => {
            let now = SystemTime::now();
            backpressure(ig, resp.status(), resp.headers(), now);
            provider_retry_after(ig, resp.headers(), now)
        }
        Err(_) => None,
    };
    Attempted {
        result,
        outcome,
        retry_after,
        endpoint,
    }
}

/// The delay a response asks for: `Retry-After`, or an LLM provider's `retry-after-ms`
/// (more precise, so preferred).
fn provider_retry_after(
    ig: &Integration,
    headers: &HeaderMap,
    now: SystemTime,
) -> Option<Duration> {
    ig.config
        .llm
        .as_ref()
        .and_then(|_| llm::limits::retry_after_ms(headers))
        .or_else(|| retry_after::retry_after(headers, now))
}

/// Reads the provider's throttling signals and holds the integration's gate accordingly.
fn backpressure(ig: &Integration, status: StatusCode, headers: &HeaderMap, now: SystemTime) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        ig.metrics.throttled();
    }
    let retry = &ig.config.retry;
    // `respectRetryAfter: false` ignores Retry-After everywhere, holds included.
    let hold = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            if retry.respect_retry_after =>
        {
            provider_retry_after(ig, headers, now)
        }
        _ => None,
    }
    .or_else(|| retry_after::rate_limit_exhausted(headers, now));
    // An LLM provider's own limit headers: the remaining counts are shown, and a used-up
    // limit holds the integration until it resets.
    let hold = match &ig.config.llm {
        Some(l) => {
            let reported = llm::limits::read(l.provider, headers, now);
            for (kind, left) in &reported.remaining {
                ig.metrics.llm_remaining(kind.label(), *left);
            }
            match (hold, reported.hold) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            }
        }
        None => hold,
    };
    // Bounded by maxRetryAfter (README, `spec.retry.maxRetryAfter`): no header can freeze the integration for longer.
    let hold = hold.map(|d| d.min(retry.max_retry_after.as_duration()));
    if let Some(d) = hold.filter(|d| !d.is_zero()) {
        if ig.policies.gate.hold_for(d) {
            if status != StatusCode::TOO_MANY_REQUESTS {
                ig.metrics.throttled();
            }
            tracing::info!(integration = %ig.name, hold_ms = d.as_millis() as u64,
                status = status.as_u16(), "provider backpressure: holding new requests");
        }
    }
}
