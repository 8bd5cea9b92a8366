//! The upstream side: connections to the third party (`connector`, with the integration's
//! `tls` settings), kept open between requests by `pool`, and failures classified here by what
//! they mean for the request (was anything sent? was it refused at the TLS layer?).

pub mod connector;
pub mod pool;
pub mod tls;

use std::{
    error::Error as StdError,
    sync::{Arc, RwLock},
};

use http::{Request, Response, Uri};
use hyper::body::Incoming;

pub use self::connector::{ConnectError, Connector};
use self::pool::{Pool, PoolConfig, PoolError};
use crate::{body::Body, proxy::errors::ErrorCode};

/// A pooled client bound to one integration's TLS settings.
///
/// One pool per upstream authority: in practice the integration's upstream, plus its OAuth2
/// token endpoint when that lives elsewhere, so finding the pool is a scan of one or two.
#[derive(Clone)]
pub struct UpstreamClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    connector: Connector,
    pools: RwLock<Vec<Pool>>,
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
        }
    }
}

impl UpstreamClient {
    pub fn new(connector: Connector) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                connector,
                pools: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Sends one attempt and returns once the response head arrived. The request's URI is
    /// absolute; the `Host` header is the caller's to set.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Incoming>, AttemptError> {
        let pool = self.pool_for(req.uri()).map_err(AttemptError::Connect)?;
        pool.send(req).await.map_err(classify)
    }

    fn pool_for(&self, uri: &Uri) -> Result<Pool, ConnectError> {
        let pools = &self.inner.pools;
        if let Some(p) = pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|p| p.serves(uri))
        {
            return Ok(p.clone());
        }
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(ConnectError::InvalidUri(uri.to_string()));
        };
        let dst = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| ConnectError::InvalidUri(uri.to_string()))?;
        let mut pools = pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pools.iter().find(|p| p.serves(uri)) {
            return Ok(p.clone());
        }
        let pool = Pool::new(self.inner.connector.clone(), dst, PoolConfig::default());
        pools.push(pool.clone());
        Ok(pool)
    }
}

/// What a failure means for the request: a TLS refusal (whatever hyper made of it), no
/// connection at all, or a connection that broke after the request went out.
fn classify(e: PoolError) -> AttemptError {
    let (error, tls) = match e {
        PoolError::Connect(e) => return AttemptError::Connect(e),
        PoolError::Http { error, tls } => (error, tls),
    };
    if let Some(reason) = tls.reason() {
        return AttemptError::Tls(reason);
    }
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    while let Some(s) = source {
        if let Some(te) = s.downcast_ref::<rustls::Error>() {
            return AttemptError::Tls(te.to_string());
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(te) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return AttemptError::Tls(te.to_string());
            }
        }
        source = s.source();
    }
    if error.is_parse_too_large() {
        return AttemptError::Reset(format!(
            "the upstream's response head is too large (more than {} header fields, or too \
             many bytes): {error}",
            pool::MAX_RESPONSE_HEADERS
        ));
    }
    AttemptError::Reset(error.to_string())
}
