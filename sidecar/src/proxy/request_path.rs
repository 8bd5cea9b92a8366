//! The request path: everything that happens to a request between the app and the third
//! party, in order, in one place.
//!
//! ```text
//! app ─► check request ─► prepare (hop-by-hop, Host, URI) ─► credentials
//!     ─► attempt (per-try timeout) ─► response hygiene + x-attache-attempts ─► app
//! ```
//! The whole of it runs under the integration's total request timeout. Every failure is a
//! [`SidecarError`], turned into a response by `errors::respond` and nowhere else.

use std::{sync::Arc, time::Instant};

use http::{header, Method, Request, Response};
use hyper::body::Incoming;

use super::{
    errors::{self, ErrorCode, SidecarError, ATTEMPTS_HEADER},
    headers::strip_hop_by_hop,
};
use crate::{
    body::{self, Body},
    integration::Integration,
};

/// Serves one request for `integration`, recording metrics; never fails.
pub async fn serve(integration: Arc<Integration>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    integration.inflight.inc();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let total = integration.request_timeout();
    let result = match tokio::time::timeout(total, forward(&integration, req)).await {
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
            tracing::debug!(
                integration = %integration.name, %method, %path,
                code = e.code.as_str(), reason = %e.message, "request answered by the sidecar"
            );
            integration.count_response(e.code.as_str());
            errors::respond(&e, &integration.name)
        }
    };
    integration.inflight.dec();
    integration
        .duration
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn forward(
    integration: &Integration,
    req: Request<Incoming>,
) -> Result<Response<Body>, SidecarError> {
    let (mut parts, incoming) = req.into_parts();
    check(&parts)?;
    strip_hop_by_hop(&mut parts.headers);
    parts.uri = integration
        .upstream_uri(parts.uri.path_and_query())
        .map_err(|e| SidecarError::new(ErrorCode::BadRequest, format!("request path: {e}")))?;
    parts
        .headers
        .insert(header::HOST, integration.host_header.clone());
    parts.version = http::Version::HTTP_11;
    integration.credentials.apply(&mut parts).await?;
    let req = Request::from_parts(parts, body::boxed(incoming));
    let attempts = 1u32;
    let per_try = integration.per_try_timeout();
    let resp = match tokio::time::timeout(per_try, integration.client.request(req)).await {
        Err(_) => {
            integration.count_attempt("timeout");
            return Err(SidecarError::new(
                ErrorCode::Timeout,
                format!("upstream sent no response within the per-try timeout ({per_try:?})"),
            ));
        }
        Ok(Err(e)) => {
            integration.count_attempt(e.metric_result());
            return Err(SidecarError::new(e.code(), e.to_string()));
        }
        Ok(Ok(resp)) => resp,
    };
    integration.count_attempt(status_class(resp.status()));
    let (mut parts, incoming) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(ATTEMPTS_HEADER, attempts.into());
    Ok(Response::from_parts(parts, body::boxed(incoming)))
}

/// Refuses what the sidecar cannot forward faithfully.
fn check(parts: &http::request::Parts) -> Result<(), SidecarError> {
    if parts.method == Method::CONNECT {
        return Err(SidecarError::new(
            ErrorCode::BadRequest,
            "CONNECT tunnels are not supported: send plain http:// requests; the sidecar \
             originates TLS itself so that it can add credentials",
        ));
    }
    if parts.headers.contains_key(header::UPGRADE) {
        return Err(SidecarError::new(
            ErrorCode::BadRequest,
            "protocol upgrades (WebSocket, h2c) are not supported through the sidecar",
        ));
    }
    Ok(())
}

/// `2xx`, `4xx`, ... for the attempts metric.
pub fn status_class(s: http::StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
