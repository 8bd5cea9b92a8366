//! The request path through an integration's HTTP cache (`spec.cache`): a fresh stored answer
//! is served without asking the upstream; otherwise the request is forwarded (with the stored
//! answer's validators), a 304 serves the stored body, a storable answer is kept as it
//! streams to the app, and a failure (the sidecar's own error, or a 5xx) is replaced by a
//! stored answer younger than `staleIfError` past its freshness.

use std::{future::Future, sync::Arc, time::SystemTime};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::errors::SidecarError;
use crate::{
    body::{self, Body},
    cache::{self, tee, CacheRequest, CacheResult, HttpCache, Lookup},
    integration::{Integration, PathOrigin},
};

/// Runs `forward` for `req`, through the cache when the integration has one and the request
/// may use it.
pub async fn through_cache<F, Fut>(
    ig: &Arc<Integration>,
    mut req: Request<Incoming>,
    origin: PathOrigin,
    forward: F,
) -> Result<Response<Body>, SidecarError>
where
    F: FnOnce(Request<Incoming>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, SidecarError>>,
{
    let Some(cache) = ig.policies.cache.clone() else {
        return forward(req).await;
    };
    let Some(creq) = cache_request(ig, &req, origin) else {
        return forward(req).await;
    };
    let now = SystemTime::now();
    let stored = match cache.lookup(&creq, now) {
        Lookup::Fresh(resp) => {
            ig.metrics.cache(CacheResult::Hit);
            return Ok(resp);
        }
        Lookup::Forward {
            stored,
            conditional,
        } => {
            req.headers_mut().extend(conditional);
            stored
        }
    };
    let result = forward(req).await;
    let now = SystemTime::now();
    let failed = match &result {
        Ok(resp) => resp.status().is_server_error(),
        Err(_) => true,
    };
    if let Some(entry) = &stored {
        if failed {
            if let Some(resp) = cache.stale(&creq, entry, now) {
                ig.metrics.cache(CacheResult::Stale);
                return Ok(resp);
            }
        }
        if let Ok(resp) = &result {
            if resp.status() == StatusCode::NOT_MODIFIED {
                if let Some(resp) = cache.revalidated(&creq, entry, resp, now) {
                    ig.metrics.cache(CacheResult::Hit);
                    return Ok(resp);
                }
            }
        }
    }
    let mut resp = result?;
    ig.metrics.cache(CacheResult::Miss);
    cache::mark_miss(&mut resp);
    Ok(keep_when_done(&cache, &creq, resp, now))
}

/// The app's request as the cache sees it, when it may use the cache.
fn cache_request(
    ig: &Integration,
    req: &Request<Incoming>,
    origin: PathOrigin,
) -> Option<CacheRequest> {
    let creq = CacheRequest {
        method: req.method().clone(),
        uri: ig.upstream_uri(req.uri().path_and_query(), origin).ok()?,
        headers: req.headers().clone(),
    };
    creq.cacheable().then_some(creq)
}

/// The answer, copied into the cache as it streams when it may be stored.
fn keep_when_done(
    cache: &Arc<HttpCache>,
    creq: &CacheRequest,
    resp: Response<Body>,
    now: SystemTime,
) -> Response<Body> {
    let Some(storable) = cache.storable(creq, &resp, now) else {
        return resp;
    };
    let (parts, inner) = resp.into_parts();
    let pending = tee::Pending {
        cache: cache.clone(),
        key: HttpCache::key_of(creq),
        storable,
        status: parts.status,
    };
    Response::from_parts(parts, body::boxed(tee::Tee::new(inner, pending)))
}
