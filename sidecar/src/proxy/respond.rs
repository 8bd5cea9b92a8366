//! The app's answer: the upstream's response after hygiene (hop-by-hop strip,
//! `x-attache-attempts`, `x-attache-retry-stopped`), with its body wrapped so that the request's
//! bulkhead slot and in-flight count are held until the body ends and a stalled stream is cut
//! after `timeouts.idle`; or the last attempt's failure, for `errors` to turn into a response.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use super::{
    attempt::{Attempted, Refused},
    errors::{SidecarError, ATTEMPTS_HEADER, ENDPOINT_HEADER, RETRY_STOPPED_HEADER},
    headers::strip_hop_by_hop,
};
use crate::{
    body::{self, Body, BoxError, EndWatch},
    clock,
    integration::Integration,
    llm::meter::Meter,
    metrics::AttemptResult,
    resilience::{retry::Stopped, tokens::Charge},
};

/// The answer to the app after its last attempt: the response, or the failure with its count.
pub fn answer(
    attempted: Attempted,
    attempts: u32,
    stopped: Option<Stopped>,
    held: Held,
) -> Result<Response<Body>, SidecarError> {
    if let Some(why) = stopped {
        tracing::debug!(integration = %held.integration.name, attempts, stopped = why.as_str(),
            "retrying stopped before maxAttempts");
    }
    let endpoint = attempted.endpoint;
    match attempted.result {
        Ok(resp) => Ok(finish(resp, attempts, stopped, endpoint, held)),
        Err(e) => Err(SidecarError::from(e)
            .after_attempts(attempts)
            .with_retry_stopped(stopped)),
    }
}

/// The answer when the next attempt was refused: the kept answer of the attempt before, if
/// there was one (the app gets the upstream's last word, not the sidecar's refusal of a retry;
/// README, "Errors the sidecar makes itself"), else the refusal itself.
pub fn refused(
    refusal: Refused,
    kept: Option<Attempted>,
    attempts: u32,
    held: Held,
) -> Result<Response<Body>, SidecarError> {
    let Some(kept) = kept else {
        return Err(refusal.into());
    };
    let stopped = match refusal {
        Refused::RateLimited(_) => Stopped::RateLimit,
        Refused::CircuitOpen(_) => Stopped::CircuitOpen,
        Refused::BodySpent => Stopped::BodyNotReplayable,
    };
    answer(kept, attempts, Some(stopped), held)
}

/// The upstream's response as the app gets it.
fn finish(
    resp: Response<Incoming>,
    attempts: u32,
    stopped: Option<Stopped>,
    endpoint: usize,
    mut held: Held,
) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(ATTEMPTS_HEADER, attempts.into());
    if !held.integration.failover.is_empty() {
        parts.headers.insert(ENDPOINT_HEADER, endpoint.into());
    }
    if let Some(why) = stopped {
        parts
            .headers
            .insert(RETRY_STOPPED_HEADER, HeaderValue::from_static(why.as_str()));
    }
    let idle = held.integration.idle_timeout();
    let meter = match &held.integration.config.llm {
        Some(llm) if parts.status.is_success() => {
            let content_type = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            Some(Box::new(Meter::new(
                llm.provider,
                content_type,
                held.charge.take(),
            )))
        }
        _ => None,
    };
    Response::from_parts(
        parts,
        body::boxed(WithHeld {
            end: EndWatch::new(&incoming),
            inner: incoming,
            last_progress: Instant::now(),
            idle,
            timer: None,
            cut: false,
            meter,
            held,
        }),
    )
}

/// What a request holds until its response body is done: its place in
/// `attache_inflight_requests`, its bulkhead slot once it has one, and its integration, whose
/// `timeouts.idle` bounds the body.
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    _inflight: InflightGuard,
    integration: Arc<Integration>,
    /// The tokens an LLM request was admitted against, settled by its answer's usage (given
    /// back whole when no successful answer comes).
    charge: Option<Charge>,
}

impl Held {
    /// Counts the request in flight (until this is dropped).
    pub fn new(integration: &Arc<Integration>) -> Self {
        Self {
            _permit: None,
            _inflight: InflightGuard::new(&integration.metrics.inflight),
            integration: integration.clone(),
            charge: None,
        }
    }

    pub fn with_charge(mut self, charge: Option<Charge>) -> Self {
        self.charge = charge;
        self
    }

    pub fn with_permit(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._permit = Some(permit);
        self
    }
}

/// Decrements the in-flight gauge when dropped, whichever way the request ends.
struct InflightGuard(Gauge);

impl InflightGuard {
    fn new(g: &Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The upstream's body, keeping [`Held`] alive until it ends, and cut when it pauses for
/// longer than `timeouts.idle` (a stalled stream must not hold its bulkhead slot forever).
struct WithHeld {
    inner: Incoming,
    end: EndWatch,
    last_progress: Instant,
    idle: Duration,
    /// Created the first time the body has to wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: bool,
    /// Token accounting of an LLM answer: sees every chunk, settles at the end.
    meter: Option<Box<Meter>>,
    held: Held,
}

impl WithHeld {
    fn finish_meter(&mut self) {
        if let Some(m) = &mut self.meter {
            m.finish(&self.held.integration);
        }
    }
}

impl Drop for WithHeld {
    /// The app went away mid-stream (or the body ended): what arrived is counted.
    fn drop(&mut self) {
        self.finish_meter();
    }
}

/// The error a stalled response body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's response body paused for longer than timeouts.idle ({0:?})")]
pub struct BodyIdleTimeout(Duration);

impl HttpBody for WithHeld {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cut {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.last_progress = Instant::now();
                if let (Some(m), Some(Ok(f))) = (&mut this.meter, &frame) {
                    if let Some(data) = f.data_ref() {
                        m.feed(data);
                    }
                }
                if this.end.ended_after(&frame, this.inner.is_end_stream()) {
                    this.finish_meter();
                }
                Poll::Ready(frame.map(|f| f.map_err(|e| Box::new(e) as BoxError)))
            }
            Poll::Pending => {
                let due = clock::after(this.last_progress, this.idle);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.cut = true;
                // The attempt was counted by its status already; this says its body stalled.
                this.held
                    .integration
                    .metrics
                    .attempt(AttemptResult::IdleTimeout);
                Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
