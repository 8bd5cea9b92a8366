//! What a failed attempt means, read in one place: the pool's failure becomes an
//! [`AttemptError`] (`classify`: was it refused at the TLS layer? was anything sent?), and an
//! attempt's result becomes an [`AttemptOutcome`] (what retries and the breaker judge) and an
//! [`AttemptResult`] (the `result` label of `attache_upstream_attempts_total`).
//!
//! The app-facing error code is not chosen here: `proxy/errors.rs` alone does that.

use std::{error::Error as StdError, io::ErrorKind, time::Duration};

use http::StatusCode;

use super::{
    connector::ConnectError,
    pool::{PoolError, MAX_RESPONSE_HEADERS},
};
use crate::metrics::AttemptResult;

/// How one attempt failed, and whether the upstream could have seen it.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No connection: nothing was sent, so any request may be retried.
    #[error("{0}")]
    Connect(ConnectError),
    /// TLS failed after the handshake (e.g. the server rejected our certificate in TLS 1.3).
    #[error("TLS error: {0}")]
    Tls(String),
    /// The connection broke after the request went out, before a complete response head.
    #[error("connection closed or reset by the upstream: {0}")]
    Reset(String),
    /// Sent, and no response head within `timeouts.perTry`.
    #[error("upstream sent no response within the per-try timeout ({0:?})")]
    PerTryTimeout(Duration),
}

/// What one attempt produced, as far as retries and the circuit breaker are concerned.
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

// === impl AttemptOutcome ===

impl AttemptOutcome {
    /// The outcome of an attempt that got a response head or failed with `e`.
    pub fn of<B>(result: &Result<http::Response<B>, AttemptError>) -> Self {
        match result {
            Ok(resp) => AttemptOutcome::Status(resp.status()),
            Err(e) => e.outcome(),
        }
    }

    /// Whether this outcome counts against the upstream's health (circuit breaker): 5xx and
    /// transport failures; 429 is the provider pacing us, not failing.
    pub fn is_failure(self) -> bool {
        match self {
            AttemptOutcome::Status(s) => s.is_server_error(),
            _ => true,
        }
    }

    /// Whether the upstream may have received the request (and may act on it twice).
    pub fn was_sent(self) -> bool {
        !matches!(self, AttemptOutcome::ConnectFailure)
    }
}

// === impl AttemptError ===

impl AttemptError {
    /// What this failure means for retries and the breaker.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            AttemptError::Connect(ConnectError::Tls { source, .. }) => match source.kind() {
                // The connection broke during the handshake: a network failure, not a refusal.
                ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe => {
                    AttemptOutcome::ConnectFailure
                }
                _ => AttemptOutcome::TlsFailure,
            },
            AttemptError::Connect(ConnectError::Insecure(_) | ConnectError::InvalidUri(_)) => {
                AttemptOutcome::TlsFailure
            }
            AttemptError::Connect(_) => AttemptOutcome::ConnectFailure,
            AttemptError::Tls(_) => AttemptOutcome::TlsFailure,
            AttemptError::Reset(_) => AttemptOutcome::Reset,
            AttemptError::PerTryTimeout(_) => AttemptOutcome::Timeout,
        }
    }

    /// The `result` label of `attache_upstream_attempts_total`.
    pub fn result(&self) -> AttemptResult {
        match self {
            AttemptError::Connect(ConnectError::Tls { .. }) | AttemptError::Tls(_) => {
                AttemptResult::TlsError
            }
            AttemptError::Connect(ConnectError::Timeout { .. }) => AttemptResult::ConnectTimeout,
            AttemptError::Connect(_) => AttemptResult::ConnectError,
            AttemptError::Reset(_) => AttemptResult::Reset,
            AttemptError::PerTryTimeout(_) => AttemptResult::Timeout,
        }
    }
}

/// What a pool failure means for the request: a TLS refusal (whatever hyper made of it), no
/// connection at all, or a connection that broke after the request went out.
pub(super) fn classify(e: PoolError) -> AttemptError {
    let (error, tls) = match e {
        PoolError::Connect(e) => return AttemptError::Connect(e),
        PoolError::Http { error, tls } => (error, tls),
    };
    if let Some(reason) = tls.reason() {
        return AttemptError::Tls(reason);
    }
    if let Some(te) = rustls_error_in(&error) {
        return AttemptError::Tls(te.to_string());
    }
    if error.is_parse_too_large() {
        return AttemptError::Reset(format!(
            "the upstream's response head is too large (more than {MAX_RESPONSE_HEADERS} header \
             fields, or too many bytes): {error}"
        ));
    }
    AttemptError::Reset(error.to_string())
}

/// The rustls error somewhere in `error`'s chain of sources, directly or inside an I/O error.
fn rustls_error_in<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(error);
    while let Some(s) = source {
        if let Some(te) = s.downcast_ref::<rustls::Error>() {
            return Some(te);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(te) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(te);
            }
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
#[path = "failure_tests.rs"]
mod tests;
