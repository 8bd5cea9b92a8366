//! The upstream side: connections to the third party (`connector`, with the integration's
//! `tls` settings), kept open between requests by `pool`, and failures classified by what they
//! mean for the request in `failure` (was anything sent? was it refused at the TLS layer?).

pub mod connector;
pub mod failure;
pub mod pool;
pub mod tls;

use std::sync::{Arc, RwLock};

use http::{Request, Response, Uri};
use hyper::body::Incoming;

pub use self::connector::{ConnectError, Connector};
pub use self::failure::{AttemptError, AttemptOutcome};
use self::pool::{Pool, PoolConfig};
use crate::body::Body;

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
        pool.send(req).await.map_err(failure::classify)
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
