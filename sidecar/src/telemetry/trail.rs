//! What one request did, as the access log and the trace need it: kept only while access
//! logging or tracing is on (the request path holds an `Option<Trail>`), so that with both off
//! a request pays for nothing but a `None`.

use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use tokio::time::Instant;

use super::context::{new_span_id, TraceContext};
use crate::{
    metrics::AttemptResult,
    resilience::{breaker::CircuitState, retry::RetryReason},
    upstream::AttemptError,
};

/// One request's record, from the moment the sidecar read its head.
#[derive(Debug)]
pub struct Trail {
    pub started_at: SystemTime,
    pub started: Instant,
    pub method: Method,
    /// The path only: the query string may hold an API key (`queryParam` credentials).
    pub path: String,
    pub trace: TraceContext,
    /// The sidecar's request span; also the access log's `request_id`.
    pub span_id: [u8; 8],
    pub attempts: Vec<AttemptRecord>,
}

/// One attempt sent upstream.
#[derive(Debug)]
pub struct AttemptRecord {
    pub span_id: [u8; 8],
    /// 1 for the first attempt.
    pub number: u32,
    /// Why this attempt is a retry.
    pub retry_reason: Option<RetryReason>,
    /// Time spent at the rate gate before it went out (limit queue and provider holds).
    pub gate_wait: Duration,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub outcome: AttemptEnd,
    /// The breaker's state once the outcome was recorded.
    pub breaker: CircuitState,
}

/// How an attempt ended: the upstream's status, or the failure's `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    Status(StatusCode),
    Failed(AttemptResult),
}

impl AttemptEnd {
    pub fn of<B>(result: &Result<http::Response<B>, AttemptError>) -> Self {
        match result {
            Ok(resp) => AttemptEnd::Status(resp.status()),
            Err(e) => AttemptEnd::Failed(e.result()),
        }
    }
}

/// An attempt begun: its span id is known before it is sent (for `traceparent`).
#[derive(Debug)]
pub struct AttemptStart {
    pub span_id: [u8; 8],
    pub retry_reason: Option<RetryReason>,
    pub gate_wait: Duration,
    started_at: SystemTime,
    started: Instant,
}

impl Trail {
    pub fn new(method: &Method, path: &str, trace: TraceContext) -> Self {
        Self {
            started_at: SystemTime::now(),
            started: Instant::now(),
            method: method.clone(),
            path: path.to_string(),
            trace,
            span_id: new_span_id(),
            attempts: Vec::new(),
        }
    }

    /// An attempt about to be sent, after `gate_wait` at the rate gate.
    pub fn attempt_starts(retry_reason: Option<RetryReason>, gate_wait: Duration) -> AttemptStart {
        AttemptStart {
            span_id: new_span_id(),
            retry_reason,
            gate_wait,
            started_at: SystemTime::now(),
            started: Instant::now(),
        }
    }

    pub fn attempt_ended(
        &mut self,
        start: AttemptStart,
        outcome: AttemptEnd,
        breaker: CircuitState,
    ) {
        self.attempts.push(AttemptRecord {
            span_id: start.span_id,
            number: self.attempts.len() as u32 + 1,
            retry_reason: start.retry_reason,
            gate_wait: start.gate_wait,
            started_at: start.started_at,
            duration: start.started.elapsed(),
            outcome,
            breaker,
        });
    }

    /// Time spent in attempts (the upstream's share of the request's duration).
    pub fn upstream_time(&self) -> Duration {
        self.attempts.iter().map(|a| a.duration).sum()
    }
}
