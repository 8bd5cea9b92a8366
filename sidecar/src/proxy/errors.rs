//! The sidecar's own errors and the one place they become HTTP responses.
//!
//! Each step of the request path returns its own error type (`RouteError`, `PrepareError`,
//! `BodyError`, `OverBudget`, `Refused`, `AttemptError`, `RequestTimeout`); the `From` impls below are the
//! only place where one becomes an [`ErrorCode`], a status and a `Retry-After`.
//!
//! Every response the sidecar makes itself carries `x-attache-error: CODE` and a JSON body
//! `{"error": CODE, "integration": NAME, "message": ...}` (README, "Errors the sidecar makes
//! itself"), so an app can tell a sidecar decision from an upstream answer. Messages never
//! include credential values: they are built from names, addresses and error kinds only.

use std::time::Duration;

use http::{header, HeaderName, HeaderValue, Response, StatusCode};

use super::{
    attempt::Refused,
    prepare::{BodyError, PrepareError},
    RouteError,
};
use crate::{
    body::{self, Body},
    credentials::ApplyError,
    resilience::{ratelimit::LimitCause, retry::Stopped, tokens::OverBudget},
    upstream::{AttemptError, ConnectError},
};

// `HeaderName` constants, not `&str`: a string key is validated byte by byte on every use.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-attache-error");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-attache-attempts");
/// Why retrying stopped before `maxAttempts` although `retryOn` lists the failure.
pub const RETRY_STOPPED_HEADER: HeaderName = HeaderName::from_static("x-attache-retry-stopped");
/// Which endpoint answered (0: the primary, then `upstream.failover` in order); sent only by
/// integrations with failover endpoints.
pub const ENDPOINT_HEADER: HeaderName = HeaderName::from_static("x-attache-endpoint");

/// The error codes of the README ("Errors the sidecar makes itself").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    CircuitOpen,
    RateLimited,
    TokenLimited,
    QuotaExhausted,
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
            ErrorCode::TokenLimited => "token_limited",
            ErrorCode::QuotaExhausted => "quota_exhausted",
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
            ErrorCode::RateLimited | ErrorCode::TokenLimited | ErrorCode::QuotaExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
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
    /// The failure came from an attempt after which retrying stopped early: why.
    pub retry_stopped: Option<Stopped>,
}

/// No response head within `timeouts.request` (all attempts and waits together).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no response within the request timeout ({0:?})")]
pub struct RequestTimeout(pub Duration);

impl SidecarError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
            close_connection: false,
            retry_stopped: None,
        }
    }

    /// Says how many attempts failed, when there were several.
    pub fn after_attempts(mut self, attempts: u32) -> Self {
        if attempts > 1 {
            self.message = format!("{} (after {attempts} attempts)", self.message);
        }
        self
    }

    pub fn with_retry_stopped(mut self, stopped: Option<Stopped>) -> Self {
        self.retry_stopped = stopped;
        self
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

// === the leaf errors of the request path, mapped ===

impl From<RouteError> for SidecarError {
    fn from(e: RouteError) -> Self {
        let code = match e {
            RouteError::NotLoaded | RouteError::UnknownHost(_) => ErrorCode::UnknownDestination,
            RouteError::Connect | RouteError::NoHost => ErrorCode::BadRequest,
        };
        SidecarError::new(code, e.to_string())
    }
}

impl From<PrepareError> for SidecarError {
    fn from(e: PrepareError) -> Self {
        let message = e.to_string();
        match e {
            PrepareError::Check(_) | PrepareError::Path(_) => {
                SidecarError::new(ErrorCode::BadRequest, message)
            }
            PrepareError::CircuitOpen(wait) => {
                SidecarError::new(ErrorCode::CircuitOpen, message).with_retry_after(wait)
            }
            PrepareError::Overloaded(_) => SidecarError::new(ErrorCode::Overloaded, message),
            PrepareError::Credentials(ApplyError::Query(_)) => {
                SidecarError::new(ErrorCode::BadRequest, message)
            }
            PrepareError::Credentials(ApplyError::Token(_)) => {
                SidecarError::new(ErrorCode::UpstreamAuth, message)
            }
        }
    }
}

impl From<BodyError> for SidecarError {
    fn from(e: BodyError) -> Self {
        // What is left of the body is unknown: the connection cannot carry another request.
        SidecarError::new(ErrorCode::BadRequest, e.to_string()).closing()
    }
}

impl From<OverBudget> for SidecarError {
    fn from(e: OverBudget) -> Self {
        let why = if e.queued {
            "the integration's token budget (llm.tokensPerMinute) had no room within maxQueueWait"
        } else {
            "the integration's token budget (llm.tokensPerMinute) is spent"
        };
        SidecarError::new(ErrorCode::TokenLimited, why).with_retry_after(e.retry_after)
    }
}

impl From<Refused> for SidecarError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::RateLimited(l) if l.cause == LimitCause::Quota => SidecarError::new(
                ErrorCode::QuotaExhausted,
                "the integration's quota for this window is used up",
            )
            .with_retry_after(l.retry_after),
            Refused::RateLimited(l) => {
                let why = match l.cause {
                    LimitCause::Provider => {
                        "the third party asked us to slow down (Retry-After / X-RateLimit)"
                    }
                    LimitCause::RateLimit | LimitCause::Quota => {
                        "the integration's rate limit is reached"
                    }
                };
                SidecarError::new(ErrorCode::RateLimited, why).with_retry_after(l.retry_after)
            }
            Refused::CircuitOpen(r) => SidecarError::new(
                ErrorCode::CircuitOpen,
                "the circuit breaker is open after repeated upstream failures",
            )
            .with_retry_after(r.retry_after),
            Refused::BodySpent => SidecarError::new(ErrorCode::BadRequest, e.to_string()),
        }
    }
}

impl From<AttemptError> for SidecarError {
    fn from(e: AttemptError) -> Self {
        let code = match &e {
            AttemptError::Connect(ConnectError::Tls { .. }) | AttemptError::Tls(_) => {
                ErrorCode::UpstreamTls
            }
            AttemptError::Connect(ConnectError::Timeout { .. })
            | AttemptError::PerTryTimeout(_) => ErrorCode::Timeout,
            AttemptError::Connect(_) | AttemptError::Reset(_) => ErrorCode::UpstreamConnect,
        };
        SidecarError::new(code, e.to_string())
    }
}

impl From<RequestTimeout> for SidecarError {
    fn from(e: RequestTimeout) -> Self {
        SidecarError::new(ErrorCode::Timeout, e.to_string())
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
    if let Some(why) = err.retry_stopped {
        h.insert(RETRY_STOPPED_HEADER, HeaderValue::from_static(why.as_str()));
    }
    if let Some(d) = err.retry_after {
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    resp
}

#[cfg(test)]
#[path = "errors_tests.rs"]
mod tests;
