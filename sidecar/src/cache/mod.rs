//! `spec.cache`: an in-memory HTTP cache of an integration's GET and HEAD answers, per pod.
//!
//! What may be stored, for how long, and when a stored answer matches a new request (Vary)
//! or needs revalidating (ETag / Last-Modified) is RFC 9111's, as the `http-cache-semantics`
//! crate implements it, from the point of view of a private cache (one pod's app: `private`
//! answers may be kept, `s-maxage` is ignored). This module keeps the answers (bounded by
//! bytes, least recently used first out, entries over an eighth of the bound not kept) and
//! decides what to do with a request; `proxy::cached` wires it into the request path.
//! `staleIfError` lets an expired answer stand in when the upstream fails or the circuit is
//! open.

pub mod store;
pub mod tee;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use attache_api::config::CacheConfig;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use http_cache_semantics::{AfterResponse, BeforeRequest, CacheOptions, CachePolicy, RequestLike};

use self::store::{Lru, Weighed};
use crate::{body, body::Body, metrics::LabelValue};

/// `x-attache-cache: hit|miss|stale` on every answer of an integration with a cache.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-attache-cache");

/// Entries larger than this share of `maxBytes` are not kept, so one large answer cannot push
/// out everything else.
const MAX_ENTRY_SHARE: u64 = 8;

/// Bytes counted for each entry besides its body and headers.
const ENTRY_OVERHEAD: usize = 2048;

/// The `result` label of `attache_cache_total` and the value of [`CACHE_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Stale,
}

impl LabelValue for CacheResult {
    fn label(&self) -> &str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
        }
    }
}

/// A request as the cache sees it: the app's method, headers and the upstream URL without
/// credentials (they are added later, and never part of a key).
pub struct CacheRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl RequestLike for CacheRequest {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        &self.uri == other
    }
    fn method(&self) -> &Method {
        &self.method
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
}

impl CacheRequest {
    fn key(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }

    /// Whether the cache takes part: GET or HEAD, without conditional headers of the app's
    /// own (its validators are for its own copy; their 304 must reach it unchanged).
    pub fn cacheable(&self) -> bool {
        (self.method == Method::GET || self.method == Method::HEAD)
            && ![
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                header::IF_MATCH,
                header::IF_UNMODIFIED_SINCE,
                header::IF_RANGE,
                header::RANGE,
            ]
            .iter()
            .any(|h| self.headers.contains_key(h))
    }
}

/// One stored answer.
pub struct Entry {
    policy: CachePolicy,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When it stops being fresh (then it may only be revalidated, or served on error).
    fresh_until: SystemTime,
}

impl Weighed for Entry {
    fn size(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        // The response headers are kept twice (here and in the policy, with the request's);
        // the rest is the policy, the key and the map's own bookkeeping.
        (self.body.len() + 2 * headers + ENTRY_OVERHEAD) as u64
    }
}

/// What to do with a request.
pub enum Lookup {
    /// A fresh stored answer: serve it, the upstream is not asked.
    Fresh(Response<Body>),
    /// Ask the upstream, adding `conditional` (the stored answer's validators) when there is
    /// one; `stored` is kept to be served again on a 304, or as stale on an error.
    Forward {
        stored: Option<Arc<Entry>>,
        conditional: HeaderMap,
    },
}

pub struct HttpCache {
    entries: Mutex<Lru<Entry>>,
    max_entry: u64,
    stale_if_error: Duration,
}

impl HttpCache {
    pub fn new(cfg: &CacheConfig) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Lru::new(cfg.max_bytes)),
            max_entry: (cfg.max_bytes / MAX_ENTRY_SHARE).max(1),
            stale_if_error: cfg.stale_if_error.as_duration(),
        })
    }

    /// The largest answer body kept.
    pub fn max_entry(&self) -> u64 {
        self.max_entry
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn lookup(&self, req: &CacheRequest, now: SystemTime) -> Lookup {
        let Some(entry) = self.lock().get(&req.key()) else {
            return Lookup::Forward {
                stored: None,
                conditional: HeaderMap::new(),
            };
        };
        match entry.policy.before_request(req, now) {
            BeforeRequest::Fresh(parts) => Lookup::Fresh(answer(
                entry.status,
                parts.headers,
                &entry.body,
                &req.method,
                CacheResult::Hit,
            )),
            BeforeRequest::Stale { request, matches } => {
                let mut conditional = HeaderMap::new();
                if matches {
                    for h in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                        if let Some(v) = request.headers.get(&h) {
                            conditional.insert(h, v.clone());
                        }
                    }
                }
                Lookup::Forward {
                    stored: matches.then_some(entry),
                    conditional,
                }
            }
        }
    }

    /// A policy for a fresh answer, if it may be stored (status, Cache-Control, size).
    pub fn storable(
        &self,
        req: &CacheRequest,
        resp: &Response<Body>,
        now: SystemTime,
    ) -> Option<CachePolicy> {
        if req.method != Method::GET && req.method != Method::HEAD {
            return None;
        }
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_entry) {
            return None;
        }
        let policy = CachePolicy::new_options(req, resp, now, private_cache());
        // Worth keeping when fresh for a while, or when it can be revalidated cheaply.
        let useful = policy.time_to_live(now) > Duration::ZERO || has_validator(resp.headers());
        (policy.is_storable() && useful).then_some(policy)
    }

    /// Keeps an answer whose whole body arrived.
    pub fn store(
        &self,
        req_key: String,
        policy: CachePolicy,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        now: SystemTime,
    ) {
        let fresh_until = now + policy.time_to_live(now);
        let entry = Entry {
            policy,
            status,
            headers,
            body,
            fresh_until,
        };
        self.lock().insert(req_key, entry);
    }

    /// The upstream answered a revalidation with 304: the stored body with the refreshed
    /// headers, kept for the new freshness lifetime. `None` if the 304 does not match it.
    pub fn revalidated(
        &self,
        req: &CacheRequest,
        stored: &Entry,
        not_modified: &Response<Body>,
        now: SystemTime,
    ) -> Option<Response<Body>> {
        match stored.policy.after_response(req, not_modified, now) {
            AfterResponse::NotModified(policy, parts) => {
                let resp = answer(
                    stored.status,
                    parts.headers.clone(),
                    &stored.body,
                    &req.method,
                    CacheResult::Hit,
                );
                self.store(
                    req.key(),
                    policy,
                    stored.status,
                    parts.headers,
                    stored.body.clone(),
                    now,
                );
                Some(resp)
            }
            AfterResponse::Modified(..) => None,
        }
    }

    /// The stored answer, marked stale, when it expired less than `staleIfError` ago.
    pub fn stale(
        &self,
        req: &CacheRequest,
        stored: &Entry,
        now: SystemTime,
    ) -> Option<Response<Body>> {
        if self.stale_if_error.is_zero() || now > stored.fresh_until + self.stale_if_error {
            return None;
        }
        let mut headers = stored.headers.clone();
        let age = stored.policy.age(now).as_secs();
        headers.insert(header::AGE, HeaderValue::from(age));
        Some(answer(
            stored.status,
            headers,
            &stored.body,
            &req.method,
            CacheResult::Stale,
        ))
    }

    /// Bytes and entries kept (for tests and `/metrics`).
    pub fn usage(&self) -> (u64, usize) {
        let l = self.lock();
        (l.bytes(), l.len())
    }

    pub fn key_of(req: &CacheRequest) -> String {
        req.key()
    }
}

fn private_cache() -> CacheOptions {
    CacheOptions {
        shared: false,
        ..CacheOptions::default()
    }
}

fn has_validator(h: &HeaderMap) -> bool {
    h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED)
}

/// A stored answer as the app gets it.
fn answer(
    status: StatusCode,
    mut headers: HeaderMap,
    body: &Bytes,
    method: &Method,
    result: CacheResult,
) -> Response<Body> {
    headers.insert(CACHE_HEADER, HeaderValue::from_static(result_text(result)));
    let body = if *method == Method::HEAD || body.is_empty() {
        body::empty()
    } else {
        body::full(body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn result_text(r: CacheResult) -> &'static str {
    match r {
        CacheResult::Hit => "hit",
        CacheResult::Miss => "miss",
        CacheResult::Stale => "stale",
    }
}

/// Marks an answer that came from the upstream.
pub fn mark_miss(resp: &mut Response<Body>) {
    resp.headers_mut()
        .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_api::duration::KubeDuration;

    fn request(path: &str) -> CacheRequest {
        CacheRequest {
            method: Method::GET,
            uri: format!("https://api.example.com{path}").parse().unwrap(),
            headers: HeaderMap::new(),
        }
    }

    fn response(cache_control: &str) -> Response<Body> {
        let mut r = Response::new(body::full("hello"));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, cache_control.parse().unwrap());
        r
    }

    #[test]
    fn a_fresh_answer_is_stored_and_found() {
        let cache = HttpCache::new(&CacheConfig {
            max_bytes: 1 << 20,
            stale_if_error: KubeDuration::from_secs(0),
        });
        let req = request("/a");
        let now = SystemTime::now();
        let resp = response("max-age=60");
        let policy = cache.storable(&req, &resp, now).expect("storable");
        cache.store(
            HttpCache::key_of(&req),
            policy,
            StatusCode::OK,
            resp.headers().clone(),
            Bytes::from_static(b"hello"),
            now,
        );
        assert!(matches!(cache.lookup(&req, now), Lookup::Fresh(_)));
        assert!(cache.storable(&req, &response("no-store"), now).is_none());
    }
}
