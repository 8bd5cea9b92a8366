//! The sidecar's own errors and the one place they become HTTP responses.
//!
//! Every response the sidecar makes itself carries `x-attache-error: CODE` and a JSON body
//! `{"error": CODE, "integration": NAME, "message": ...}` (DESIGN.md), so an app can tell a
//! sidecar decision from an upstream answer. Messages never include credential values: they are
//! built from names, addresses and error kinds only.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};

// `HeaderName` constants, not `&str`: a string key is validated byte by byte on every use.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-attache-error");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-attache-attempts");

/// The error codes of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    CircuitOpen,
    RateLimited,
    Overloaded,
    Timeout,
    UpstreamConnect,
    UpstreamTls,
    UpstreamAuth,
    UnknownDestination,
    BadRequest,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::CircuitOpen => "circuit_open",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UpstreamConnect => "upstream_connect",
            ErrorCode::UpstreamTls => "upstream_tls",
            ErrorCode::UpstreamAuth => "upstream_auth",
            ErrorCode::UnknownDestination => "unknown_destination",
            ErrorCode::BadRequest => "bad_request",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::CircuitOpen | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::UpstreamConnect | ErrorCode::UpstreamTls | ErrorCode::UpstreamAuth => {
                StatusCode::BAD_GATEWAY
            }
            ErrorCode::UnknownDestination => StatusCode::FORBIDDEN,
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request the sidecar answered itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct SidecarError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, rounded up).
    pub retry_after: Option<Duration>,
    /// The app's connection cannot be reused (its request body was not read): the answer
    /// says `Connection: close`.
    pub close_connection: bool,
}

impl SidecarError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            close_connection: false,
        }
    }

    pub fn closing(mut self) -> Self {
        self.close_connection = true;
        self
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }
}

/// Turns a sidecar error into the response the app sees.
pub fn respond(err: &SidecarError, integration: &str) -> Response<Body> {
    let json = serde_json::json!({
        "error": err.code.as_str(),
        "integration": integration,
        "message": err.message,
    });
    let mut resp = Response::new(body::full(json.to_string()));
    *resp.status_mut() = err.code.status();
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(err.code.as_str()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if err.close_connection {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(d) = err.retry_after {
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn response_carries_code_header_and_json() {
        let e = SidecarError::new(ErrorCode::CircuitOpen, "breaker open")
            .with_retry_after(Duration::from_millis(2500));
        let resp = respond(&e, "stripe");
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()[ERROR_HEADER], "circuit_open");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "circuit_open");
        assert_eq!(v["integration"], "stripe");
        assert_eq!(v["message"], "breaker open");
    }

    #[test]
    fn every_code_has_the_documented_status() {
        use ErrorCode::*;
        let table = [
            (CircuitOpen, 503),
            (RateLimited, 429),
            (Overloaded, 503),
            (Timeout, 504),
            (UpstreamConnect, 502),
            (UpstreamTls, 502),
            (UpstreamAuth, 502),
            (UnknownDestination, 403),
            (BadRequest, 400),
        ];
        for (code, status) in table {
            assert_eq!(code.status().as_u16(), status, "{code:?}");
        }
    }
}
