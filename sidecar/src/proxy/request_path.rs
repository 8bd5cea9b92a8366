//! The request path: everything that happens to a request between the app and the third
//! party, in order, in one place.
//!
//! ```text
//! app ─► circuit open? (fail fast) ─► bulkhead ─► check + prepare (hop-by-hop, Host, URI,
//!        idempotency key) ─► credentials ─► replay buffer
//!     ─► attempt loop:  rate gate ─► breaker admit ─► send (per-try timeout)
//!                       ─► breaker record ─► provider backpressure ─► retry? (rules, budget,
//!                          Retry-After / backoff)
//!     ─► response hygiene + x-attache-attempts ─► app
//! ```
//! The whole of it runs under the integration's total request timeout. Every failure is a
//! [`SidecarError`], turned into a response by `errors::respond` and nowhere else.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};

use super::{
    errors::{self, ErrorCode, SidecarError, ATTEMPTS_HEADER},
    headers::strip_hop_by_hop,
};
use crate::{
    body::{self, Body, BoxError},
    clock,
    integration::{Integration, PathOrigin},
    resilience::{
        backoff,
        breaker::{Admit, CircuitState},
        ratelimit::Admitted,
        replay::RequestBody,
        retry::{self, AttemptOutcome, RetryAfterDecision},
        retry_after,
    },
    upstream::{AttemptError, ConnectError},
};

/// Serves one request for `integration`, recording metrics; never fails.
pub async fn serve(
    integration: Arc<Integration>,
    req: Request<Incoming>,
    origin: PathOrigin,
) -> Response<Body> {
    let started = Instant::now();
    // Counts until the response body is done (or the error is answered): like the bulkhead.
    let inflight = InflightGuard::new(&integration.inflight);
    // Only for the debug line about requests the sidecar answers: not copied otherwise.
    let what = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| format!("{} {}", req.method(), req.uri().path()));
    let total = integration.request_timeout();
    let deadline = clock::after(started, total);
    let result = match tokio::time::timeout_at(
        deadline,
        forward(&integration, req, origin, deadline, inflight),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SidecarError::new(
            ErrorCode::Timeout,
            format!("no response within the request timeout ({total:?})"),
        )),
    };
    let resp = match result {
        Ok(resp) => {
            integration.count_response(resp.status().as_str());
            resp
        }
        Err(e) => {
            if let Some(request) = what {
                tracing::debug!(
                    integration = %integration.name, %request,
                    code = e.code.as_str(), reason = %e.message, "request answered by the sidecar"
                );
            }
            integration.count_response(e.code.as_str());
            errors::respond(&e, &integration.name)
        }
    };
    integration
        .duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// The request as it goes upstream, minus the body: rebuilt for each attempt.
struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Prepared {
    fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

async fn forward(
    ig: &Arc<Integration>,
    req: Request<Incoming>,
    origin: PathOrigin,
    deadline: Instant,
    inflight: InflightGuard,
) -> Result<Response<Body>, SidecarError> {
    let (parts, incoming) = req.into_parts();
    let (prepared, held, resend_safe) = match admit(ig, parts, origin, inflight).await {
        Ok(a) => a,
        Err(e) => return Err(refuse(incoming, e).await),
    };
    let p = &ig.policies;
    let cfg = &ig.config.retry;
    let mut body = RequestBody::prepare(body::boxed(incoming), cfg.replay_buffer_bytes)
        .await
        .map_err(|e| {
            SidecarError::new(
                ErrorCode::BadRequest,
                format!("reading the request body: {e}"),
            )
            .closing()
        })?;
    p.budget.deposit();

    let max_attempts = cfg.max_attempts.max(1);
    let mut attempt = 0u32;
    let mut last: Option<Response<Incoming>> = None;
    loop {
        attempt += 1;
        // Retries pass the gate too: the third party counts them.
        match p.gate.acquire(deadline).await {
            Ok(Admitted::Immediately) => {}
            Ok(Admitted::AfterQueueing(waited)) => {
                ig.count_rate_limited("queued");
                tracing::debug!(integration = %ig.name, waited_ms = waited.as_millis() as u64, "rate limit: queued");
            }
            Err(l) => {
                ig.count_rate_limited(l.action);
                if let Some(resp) = last {
                    return Ok(finish(resp, attempt - 1, held));
                }
                let why = match l.cause {
                    "provider" => {
                        "the third party asked us to slow down (Retry-After / X-RateLimit)"
                    }
                    _ => "the integration's rate limit is reached",
                };
                return Err(
                    SidecarError::new(ErrorCode::RateLimited, why).with_retry_after(l.retry_after)
                );
            }
        }
        let admit = match p.breaker.admit() {
            Ok(a) => a,
            Err(r) => {
                if let Some(resp) = last {
                    return Ok(finish(resp, attempt - 1, held));
                }
                return Err(circuit_open(r.retry_after));
            }
        };
        let Some(attempt_body) = body.for_attempt() else {
            // Unreachable by construction (streamed bodies are never retried); be safe.
            if admit == Admit::Probe {
                p.breaker.release_probe();
            }
            return match last {
                Some(resp) => Ok(finish(resp, attempt - 1, held)),
                None => Err(SidecarError::new(
                    ErrorCode::BadRequest,
                    "request body already sent",
                )),
            };
        };
        drop(last.take());
        let per_try = ig.per_try_timeout();
        let sent =
            tokio::time::timeout(per_try, ig.client.request(prepared.request(attempt_body))).await;
        let (outcome, label, result) = match sent {
            Err(_) => (
                AttemptOutcome::Timeout,
                "timeout",
                Err(SidecarError::new(
                    ErrorCode::Timeout,
                    format!("upstream sent no response within the per-try timeout ({per_try:?})"),
                )),
            ),
            Ok(Err(e)) => (
                attempt_outcome(&e),
                e.metric_result(),
                Err(SidecarError::new(e.code(), e.to_string())),
            ),
            Ok(Ok(resp)) => (
                AttemptOutcome::Status(resp.status()),
                status_class(resp.status()),
                Ok(resp),
            ),
        };
        ig.count_attempt(label);
        if let Some(state) = p.breaker.record(admit, outcome.is_failure()) {
            match state {
                CircuitState::Open => tracing::warn!(integration = %ig.name, "circuit opened"),
                CircuitState::Closed => tracing::info!(integration = %ig.name, "circuit closed"),
                CircuitState::HalfOpen => {}
            }
        }
        let now = SystemTime::now();
        let ra = match &result {
            Ok(resp) => {
                observe_backpressure(ig, resp.status(), resp.headers(), now);
                retry_after::retry_after(resp.headers(), now)
            }
            Err(_) => None,
        };

        let replayable = body.replayable();
        let reason = retry::retry_reason(cfg, outcome, resend_safe).filter(|_| replayable);
        let Some(reason) = reason.filter(|_| attempt < max_attempts) else {
            return match result {
                Ok(resp) => Ok(finish(resp, attempt, held)),
                Err(e) => Err(after_attempts(e, attempt)),
            };
        };
        let delay = match (&result, retry::retry_after_decision(cfg, ra)) {
            (Ok(_), RetryAfterDecision::Wait(d)) => d,
            (Ok(resp), RetryAfterDecision::GiveUp) => {
                tracing::debug!(integration = %ig.name, status = resp.status().as_u16(),
                    "Retry-After is above maxRetryAfter: returning the response as it is");
                return result.map(|r| finish(r, attempt, held));
            }
            _ => backoff::delay(
                attempt,
                cfg.backoff_base.as_duration(),
                cfg.backoff_max.as_duration(),
                &mut rand::rng(),
            ),
        };
        if delay >= deadline.saturating_duration_since(Instant::now()) {
            tracing::debug!(integration = %ig.name, "no time left for another attempt");
            return match result {
                Ok(resp) => Ok(finish(resp, attempt, held)),
                Err(e) => Err(after_attempts(e, attempt)),
            };
        }
        if !p.budget.try_withdraw() {
            ig.count_retry("budget_exhausted");
            tracing::debug!(integration = %ig.name, "retry budget exhausted: not retrying");
            return match result {
                Ok(resp) => Ok(finish(resp, attempt, held)),
                Err(e) => Err(after_attempts(e, attempt)),
            };
        }
        ig.count_retry(&reason.label());
        tracing::debug!(integration = %ig.name, attempt, reason = %reason.label(),
            delay_ms = delay.as_millis() as u64, "retrying");
        last = result.ok();
        // Keep the response until the next attempt is sent: if that one is refused by the
        // gate or breaker, this is what the app gets.
        tokio::time::sleep(delay).await;
    }
}

/// Everything before the request body is read: refusals, the circuit, the bulkhead, then the
/// request as it goes upstream (hop-by-hop strip, URI, Host, idempotency key, credentials).
async fn admit(
    ig: &Arc<Integration>,
    mut parts: http::request::Parts,
    origin: PathOrigin,
    inflight: InflightGuard,
) -> Result<(Prepared, Held, bool), SidecarError> {
    // A request the sidecar will not forward is refused before it takes any slot.
    check(&parts)?;
    let p = &ig.policies;
    if let Some(wait) = p.breaker.open_for() {
        return Err(circuit_open(wait));
    }
    let permit = p.bulkhead.acquire().await.map_err(|f| {
        SidecarError::new(
            ErrorCode::Overloaded,
            format!(
                "{} requests already in flight (concurrency.maxInFlight)",
                f.max_in_flight
            ),
        )
    })?;
    let held = Held {
        _permit: permit,
        _inflight: inflight,
        integration: ig.clone(),
    };

    strip_hop_by_hop(&mut parts.headers);
    let uri = ig
        .upstream_uri(parts.uri.path_and_query(), origin)
        .map_err(|e| SidecarError::new(ErrorCode::BadRequest, format!("request path: {e}")))?;
    parts.uri = uri;
    parts.headers.insert(header::HOST, ig.host_header.clone());
    let cfg = &ig.config.retry;
    let mut has_key = parts.headers.contains_key(&ig.idempotency_header);
    if !has_key
        && cfg.generate_idempotency_key
        && (parts.method == Method::POST || parts.method == Method::PATCH)
    {
        let key = uuid::Uuid::new_v4().to_string();
        parts.headers.insert(
            ig.idempotency_header.clone(),
            HeaderValue::try_from(key).expect("a UUID is a valid header value"),
        );
        has_key = true;
    }
    let resend_safe = retry::safe_to_resend(&parts.method, has_key);
    ig.credentials.apply(&mut parts).await?;
    let prepared = Prepared {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    };
    Ok((prepared, held, resend_safe))
}

/// Request bodies up to this size are read and dropped when the sidecar answers before
/// reading them, so the app's keep-alive connection survives a fail-fast answer.
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// `e`, after reading what is left of a small request body. Without it hyper closes the
/// connection after the answer without saying so, and the app's next request on it fails
/// (a POST answered `circuit_open` looked like a lost request to the app). A body too large or
/// too slow to drain gets `Connection: close` on the answer instead.
async fn refuse(incoming: Incoming, e: SidecarError) -> SidecarError {
    use http_body_util::BodyExt;
    if incoming.is_end_stream() {
        return e;
    }
    let small = incoming
        .size_hint()
        .upper()
        .is_some_and(|n| n <= DRAIN_LIMIT);
    if small
        && matches!(
            tokio::time::timeout(DRAIN_TIME, incoming.collect()).await,
            Ok(Ok(_))
        )
    {
        return e;
    }
    e.closing()
}

/// Reads the provider's throttling signals and pauses the integration accordingly.
fn observe_backpressure(
    ig: &Integration,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) {
    if status == StatusCode::TOO_MANY_REQUESTS {
        ig.count_throttled();
    }
    // `respectRetryAfter: false` ignores Retry-After everywhere, holds included.
    let hold = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            if ig.config.retry.respect_retry_after =>
        {
            retry_after::retry_after(headers, now)
        }
        _ => None,
    }
    .or_else(|| retry_after::rate_limit_exhausted(headers, now));
    // Bounded by maxRetryAfter (DESIGN.md): no header can freeze the integration for longer.
    let hold = hold.map(|d| d.min(ig.config.retry.max_retry_after.as_duration()));
    if let Some(d) = hold.filter(|d| !d.is_zero()) {
        if ig.policies.gate.hold_for(d) {
            if status != StatusCode::TOO_MANY_REQUESTS {
                ig.count_throttled();
            }
            tracing::info!(integration = %ig.name, hold_ms = d.as_millis() as u64,
                status = status.as_u16(), "provider backpressure: holding new requests");
        }
    }
}

fn attempt_outcome(e: &AttemptError) -> AttemptOutcome {
    match e {
        AttemptError::Connect(ConnectError::Tls { source, .. }) => match source.kind() {
            // The connection broke during the handshake: a network failure, not a refusal.
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe => AttemptOutcome::ConnectFailure,
            _ => AttemptOutcome::TlsFailure,
        },
        AttemptError::Connect(ConnectError::Insecure(_) | ConnectError::InvalidUri(_)) => {
            AttemptOutcome::TlsFailure
        }
        AttemptError::Connect(_) => AttemptOutcome::ConnectFailure,
        AttemptError::Tls(_) => AttemptOutcome::TlsFailure,
        AttemptError::Reset(_) => AttemptOutcome::Reset,
    }
}

fn after_attempts(mut e: SidecarError, attempts: u32) -> SidecarError {
    if attempts > 1 {
        e.message = format!("{} (after {attempts} attempts)", e.message);
    }
    e
}

fn circuit_open(wait: Duration) -> SidecarError {
    SidecarError::new(
        ErrorCode::CircuitOpen,
        "the circuit breaker is open after repeated upstream failures",
    )
    .with_retry_after(wait)
}

/// The upstream's response as the app gets it.
fn finish(resp: Response<Incoming>, attempts: u32, held: Held) -> Response<Body> {
    let (mut parts, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(ATTEMPTS_HEADER, attempts.into());
    let idle = held.integration.idle_timeout();
    Response::from_parts(
        parts,
        body::boxed(WithHeld {
            inner: incoming,
            last_progress: Instant::now(),
            idle,
            timer: None,
            cut: false,
            held,
        }),
    )
}

/// What a request holds until its response body is done: its bulkhead slot and its place in
/// `attache_inflight_requests`; and its integration, whose `timeouts.idle` bounds the body.
struct Held {
    _permit: OwnedSemaphorePermit,
    _inflight: InflightGuard,
    integration: Arc<Integration>,
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
    last_progress: Instant,
    idle: Duration,
    /// Created the first time the body has to wait.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    cut: bool,
    held: Held,
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
                this.held.integration.count_attempt("idle_timeout");
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

/// Refuses what the sidecar cannot forward faithfully, or must not forward with the
/// integration's credentials attached.
pub fn check(parts: &http::request::Parts) -> Result<(), SidecarError> {
    let bad = |m: &str| Err(SidecarError::new(ErrorCode::BadRequest, m));
    if parts.method == Method::CONNECT {
        return bad(
            "CONNECT tunnels are not supported: send plain http:// requests; the sidecar \
             originates TLS itself so that it can add credentials",
        );
    }
    if parts.method == Method::TRACE {
        // The upstream would echo the request back, injected credentials included.
        return bad("TRACE is refused: the upstream would echo the injected credentials");
    }
    if parts.headers.contains_key(header::UPGRADE) {
        return bad("protocol upgrades (WebSocket, h2c) are not supported through the sidecar");
    }
    check_host(parts)?;
    if has_dot_segment(parts.uri.path()) {
        return bad(
            "the request path has a dot-segment (`.` or `..`, possibly percent-encoded): send \
             the normalised path; requests never leave the integration's base path",
        );
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one valid `Host`; none has two.
fn check_host(parts: &http::request::Parts) -> Result<(), SidecarError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    let problem = if hosts.next().is_some() {
        Some("more than one Host header")
    } else {
        match first {
            None if parts.version == Version::HTTP_11 => Some("no Host header"),
            None => None,
            Some(v) => {
                let valid = v
                    .to_str()
                    .ok()
                    .is_some_and(|h| h.is_empty() || h.parse::<http::uri::Authority>().is_ok());
                (!valid).then_some("an invalid Host header")
            }
        }
    };
    match problem {
        Some(p) => Err(SidecarError::new(
            ErrorCode::BadRequest,
            format!("the request has {p} (RFC 9112 requires exactly one)"),
        )),
        None => Ok(()),
    }
}

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e%2e`) or with
/// parameters (`..;x`, which some servers read as `..`): such a path could climb out of the
/// integration's base path on the upstream.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        let mut dots = 0;
        let mut rest = name.as_bytes();
        while !rest.is_empty() {
            match rest {
                [b'.', tail @ ..] => rest = tail,
                [b'%', b'2', b'e' | b'E', tail @ ..] => rest = tail,
                _ => return false,
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

/// `2xx`, `4xx`, ... for the attempts metric.
pub fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for p in [
            "/..",
            "/../x",
            "/a/../b",
            "/a/./b",
            "/.",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/%2e/x",
            "/..;/x",
            "/..;jsessionid=1/x",
            "/a/..",
            "..",
            "/a/b/../",
        ] {
            assert!(has_dot_segment(p), "{p:?}");
        }
        for p in [
            "/",
            "",
            "/a/b",
            "/.well-known/x",
            "/a..b",
            "/...",
            "/a/.../b",
            "/%2e%2e%2e",
            "/v1/charges",
            "/a.b/c",
            "/%2e%2ex",
            "/..x",
        ] {
            assert!(!has_dot_segment(p), "{p:?}");
        }
    }

    fn parts(method: Method, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/x")
            .version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let ok = |m, v, h: &[&str]| check(&parts(m, v, h)).is_ok();
        assert!(ok(Method::GET, Version::HTTP_11, &["localhost:15001"]));
        assert!(!ok(Method::GET, Version::HTTP_11, &[]));
        assert!(!ok(Method::GET, Version::HTTP_11, &["a", "b"]));
        assert!(!ok(Method::GET, Version::HTTP_11, &["bad host"]));
        assert!(ok(Method::GET, Version::HTTP_10, &[]));
        assert!(ok(Method::GET, Version::HTTP_2, &[]));
        assert!(!ok(Method::TRACE, Version::HTTP_11, &["localhost"]));
        assert!(!ok(Method::CONNECT, Version::HTTP_11, &["localhost"]));
    }
}
