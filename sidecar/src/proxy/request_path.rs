//! The request path: everything that happens to a request between the app and the third
//! party, in order, in one place.
//!
//! ```text
//! app ─► prepare: check ─► circuit open? (fail fast) ─► bulkhead ─► hop-by-hop, URI, Host,
//!        idempotency key ─► credentials ─► replay buffer                      (prepare.rs)
//!     ─► token budget of an LLM integration (estimate now, settled by the answer)   (llm/)
//!     ─► attempt: rate gate ─► breaker admit ─► send (per-try timeout) ─► breaker record
//!        ─► provider backpressure                                            (attempt.rs)
//!     ─► retrying: retryOn, maxAttempts, idempotency, Retry-After or backoff, deadline,
//!        budget ─► next attempt (to the next failover endpoint after a connect failure or
//!        a retryOn status), or the answer            (resilience/retry.rs, failover.rs)
//!     ─► respond: hygiene, x-attache-attempts, held slot until the body ends (respond.rs)
//! ```
//! The whole of it runs under the integration's total request timeout. Every failure is a
//! leaf error of its step, turned into a response in `errors.rs` and nowhere else.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::{
    attempt, cached, errors,
    errors::{RequestTimeout, SidecarError},
    failover, prepare,
    respond::{self, Held},
};
use crate::{
    body::Body,
    clock,
    integration::{Integration, PathOrigin},
    llm,
    metrics::ResponseCode,
    resilience::retry::{Next, Retrying},
    telemetry::{
        context,
        trail::{AttemptEnd, Trail},
        Telemetry,
    },
};

/// Serves one request for `integration`, recording metrics, and reporting it to `telemetry`
/// when `trail` records it; never fails.
pub async fn serve(
    integration: Arc<Integration>,
    req: Request<Incoming>,
    origin: PathOrigin,
    telemetry: &Telemetry,
    mut trail: Option<Trail>,
) -> Response<Body> {
    let started = Instant::now();
    if trail.is_none() && integration.config.telemetry.propagate_trace_context {
        // The attempt spans are the third party's parents even when nothing reports them.
        trail = Some(Telemetry::trail(&req));
    }
    // Counts until the response body is done (or the error is answered): like the bulkhead.
    let held = Held::new(&integration);
    // Only for the debug line about requests the sidecar answers: not copied otherwise.
    let what = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| format!("{} {}", req.method(), req.uri().path()));
    let total = integration.request_timeout();
    let deadline = clock::after(started, total);
    let forwarded = cached::through_cache(&integration, req, origin, |req| {
        forward(&integration, req, origin, deadline, held, &mut trail)
    });
    let result = match tokio::time::timeout_at(deadline, forwarded).await {
        Ok(r) => r,
        Err(_) => Err(RequestTimeout(total).into()),
    };
    let metrics = &integration.metrics;
    let (resp, code) = match result {
        Ok(resp) => {
            metrics.response(ResponseCode::Upstream(resp.status()));
            (resp, None)
        }
        Err(e) => {
            if let Some(request) = what {
                tracing::debug!(
                    integration = %integration.name, %request,
                    code = e.code.as_str(), reason = %e.message, "request answered by the sidecar"
                );
            }
            metrics.response(ResponseCode::Sidecar(e.code.as_str()));
            (
                errors::respond(&e, &integration.name),
                Some(e.code.as_str()),
            )
        }
    };
    metrics.duration.observe(started.elapsed().as_secs_f64());
    telemetry.finish(trail, &integration.name, resp.status(), code);
    resp
}

/// The steps of the module diagram, one line each.
async fn forward(
    ig: &Arc<Integration>,
    req: Request<Incoming>,
    origin: PathOrigin,
    deadline: Instant,
    held: Held,
    trail: &mut Option<Trail>,
) -> Result<Response<Body>, SidecarError> {
    let (parts, incoming) = req.into_parts();
    let (prepared, held) = match prepare::request(ig, parts, origin, held).await {
        Ok(p) => p,
        Err(e) => return Err(refuse(incoming, e.into()).await),
    };
    let mut body = prepare::body(ig, incoming).await?;
    let estimate = llm::estimate_for(ig, &body);
    let held = held.with_charge(llm::admit(ig, estimate, deadline).await?);
    let (retry, budget) = (&ig.config.retry, &ig.policies.budget);
    let mut retrying = Retrying::start(retry, budget, prepared.resend_safe, deadline);
    // The last answer, kept while the next attempt waits: the app gets it if that is refused.
    let mut kept = None;
    // Where the next attempt goes first (`upstream.failover`); every request starts at the
    // primary, so traffic returns to it once its circuit lets attempts through again.
    let (mut endpoint, mut previous) = (0, 0);
    loop {
        let at_gate = Instant::now();
        let cleared = match attempt::clear(ig, deadline, &mut body, endpoint).await {
            Ok(c) => c,
            Err(r) => return respond::refused(r, kept, retrying.attempts(), held),
        };
        if cleared.endpoint != previous {
            ig.metrics.failover();
        }
        previous = cleared.endpoint;
        drop(kept.take()); // its connection goes back to the pool before the next attempt
        let retry = retrying.sending();
        let recording = trail
            .as_ref()
            .map(|_| Trail::attempt_starts(retry, at_gate.elapsed()));
        let traceparent = match (&recording, trail.as_ref()) {
            (Some(start), Some(t)) if ig.config.telemetry.propagate_trace_context => {
                Some(context::traceparent(&t.trace, start.span_id))
            }
            _ => None,
        };
        let attempted = attempt::send(ig, cleared, &prepared, retry, traceparent).await;
        if let (Some(t), Some(start)) = (trail.as_mut(), recording) {
            let breaker = ig.policies.breaker.state();
            t.attempt_ended(start, AttemptEnd::of(&attempted.result), breaker);
        }
        let (outcome, retry_after) = (attempted.outcome, attempted.retry_after);
        let delay = match retrying.after(outcome, retry_after, body.replayable(), rand::rng) {
            Next::Retry { delay, reason } => {
                endpoint = failover::next_endpoint(ig, attempted.endpoint, reason);
                delay
            }
            Next::Done(why) => return respond::answer(attempted, retrying.attempts(), why, held),
        };
        kept = Some(attempted);
        tokio::time::sleep(delay).await;
    }
}

/// `e`, after reading what is left of a small request body (see `prepare::drain`); a body too
/// large or too slow to drain gets `Connection: close` on the answer instead.
async fn refuse(incoming: Incoming, e: SidecarError) -> SidecarError {
    if prepare::drain(incoming).await {
        e
    } else {
        e.closing()
    }
}
