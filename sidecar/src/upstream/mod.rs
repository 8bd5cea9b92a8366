//! The upstream side: pooled HTTP/1.1 and HTTP/2 connections to the third party, with errors
//! classified by what they mean for the request (was anything sent?).

pub mod connector;
pub mod tls;

use std::{error::Error as StdError, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

pub use self::connector::{ConnectError, Connector};
use crate::{body::Body, proxy::errors::ErrorCode};

/// Idle pooled connections are closed after this; third parties commonly drop them at 60-120 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(55);
const POOL_MAX_IDLE_PER_HOST: usize = 64;

/// A pooled client bound to one integration's TLS settings.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Client<Connector, Body>,
}

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
    #[error("upstream request failed: {0}")]
    Other(String),
}

impl AttemptError {
    /// True when the upstream cannot have received the request.
    pub fn never_sent(&self) -> bool {
        matches!(self, AttemptError::Connect(_))
    }

    /// The error code the app sees when this is the last attempt.
    pub fn code(&self) -> ErrorCode {
        match self {
            AttemptError::Connect(ConnectError::Tls { .. }) | AttemptError::Tls(_) => {
                ErrorCode::UpstreamTls
            }
            AttemptError::Connect(ConnectError::Timeout { .. }) => ErrorCode::Timeout,
            _ => ErrorCode::UpstreamConnect,
        }
    }

    /// The `result` label of `attache_upstream_attempts_total`.
    pub fn metric_result(&self) -> &'static str {
        match self {
            AttemptError::Connect(ConnectError::Tls { .. }) | AttemptError::Tls(_) => "tls_error",
            AttemptError::Connect(ConnectError::Timeout { .. }) => "connect_timeout",
            AttemptError::Connect(_) => "connect_error",
            AttemptError::Reset(_) => "reset",
            AttemptError::Other(_) => "error",
        }
    }
}

impl UpstreamClient {
    pub fn new(connector: Connector) -> Self {
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .timer(hyper_util::rt::TokioTimer::new())
            // The Host header is set by the request path from the integration's config.
            .set_host(false)
            .build(connector);
        Self { inner }
    }

    /// Sends one attempt and returns once the response head arrived.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Incoming>, AttemptError> {
        self.inner.request(req).await.map_err(classify)
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> AttemptError {
    if let Some(info) = e.connect_info() {
        let mut ext = http::Extensions::new();
        info.get_extras(&mut ext);
        if let Some(reason) = ext.get::<connector::TlsFailure>().and_then(|f| f.reason()) {
            return AttemptError::Tls(reason);
        }
    }
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    let connect = e.is_connect();
    let mut detail = String::new();
    while let Some(s) = source {
        if let Some(ce) = s.downcast_ref::<ConnectError>() {
            return AttemptError::Connect(clone_connect(ce));
        }
        if let Some(te) = s.downcast_ref::<rustls::Error>() {
            return AttemptError::Tls(te.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(te) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return AttemptError::Tls(te.to_string());
            }
        }
        if detail.is_empty() {
            detail = s.to_string();
        }
        source = s.source();
    }
    if detail.is_empty() {
        detail = e.to_string();
    }
    if connect {
        return AttemptError::Connect(ConnectError::Connect {
            authority: String::new(),
            source: std::io::Error::other(detail),
        });
    }
    AttemptError::Reset(detail)
}

/// `ConnectError` holds an `io::Error` (not `Clone`); rebuild it from the borrowed one.
fn clone_connect(e: &ConnectError) -> ConnectError {
    let io = |s: &std::io::Error| std::io::Error::new(s.kind(), s.to_string());
    match e {
        ConnectError::Timeout { authority, timeout } => ConnectError::Timeout {
            authority: authority.clone(),
            timeout: *timeout,
        },
        ConnectError::Resolve { host, source } => ConnectError::Resolve {
            host: host.clone(),
            source: io(source),
        },
        ConnectError::Connect { authority, source } => ConnectError::Connect {
            authority: authority.clone(),
            source: io(source),
        },
        ConnectError::Tls { authority, source } => ConnectError::Tls {
            authority: authority.clone(),
            source: io(source),
        },
        ConnectError::InvalidUri(u) => ConnectError::InvalidUri(u.clone()),
        ConnectError::Insecure(u) => ConnectError::Insecure(u.clone()),
    }
}
