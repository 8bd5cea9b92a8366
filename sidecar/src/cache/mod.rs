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

pub mod size;
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

/// A `Cache-Control` parsed into the policy (a small hash map of boxed strings), per side.
const CACHE_CONTROL_BYTES: usize = 256;

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
    /// The heap it holds, counted when stored (see [`size`]).
    bytes: u64,
}

impl Weighed for Entry {
    fn size(&self) -> u64 {
        self.bytes
    }
}

/// An answer that may be stored, with copies of its headers that own their bytes.
pub struct Storable {
    policy: CachePolicy,
    headers: HeaderMap,
    /// What the policy holds: its copies of the request's and the response's headers, the
    /// URL, the parsed `Cache-Control`s.
    policy_bytes: usize,
}

impl Storable {
    fn new(req: &CacheRequest, status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Self {
        let owned_req = CacheRequest {
            method: req.method.clone(),
            uri: req.uri.clone(),
            headers: size::owned_headers(&req.headers),
        };
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.headers_mut() = size::owned_headers(headers);
        let policy = CachePolicy::new_options(&owned_req, &resp, now, private_cache());
        Self::from_policy(policy, &owned_req, resp.into_parts().0.headers)
    }

    fn from_policy(policy: CachePolicy, owned_req: &CacheRequest, headers: HeaderMap) -> Self {
        let uri = owned_req
            .uri
            .path_and_query()
            .map_or(0, |pq| pq.as_str().len());
        let policy_bytes = size::header_map_bytes(&owned_req.headers)
            + size::header_map_bytes(&headers)
            + uri
            + size::ALLOCATION_OVERHEAD
            + 2 * CACHE_CONTROL_BYTES;
        Self {
            policy,
            headers,
            policy_bytes,
        }
    }
}

/// The LRU's own bookkeeping per entry: the key twice (the map's and the use order's), a hash
/// slot (tables run between half and seven eighths full) and a B-tree slot, the `Arc`.
fn bookkeeping_bytes(key: &str) -> usize {
    2 * (key.len() + size::ALLOCATION_OVERHEAD)
        + 2 * std::mem::size_of::<(String, (u64, Arc<Entry>))>()
        + 2 * std::mem::size_of::<(u64, String)>()
        + std::mem::size_of::<Entry>()
        + 2 * std::mem::size_of::<usize>()
        + size::ALLOCATION_OVERHEAD
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
    ) -> Option<Storable> {
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
        (policy.is_storable() && useful)
            .then(|| Storable::new(req, resp.status(), resp.headers(), now))
    }

    /// Keeps an answer whose whole body arrived (`body` as [`size::owned_body`] makes it).
    pub fn store(
        &self,
        req_key: String,
        storable: Storable,
        status: StatusCode,
        body: Bytes,
        now: SystemTime,
    ) {
        let Storable {
            policy,
            headers,
            policy_bytes,
        } = storable;
        let fresh_until = now + policy.time_to_live(now);
        let body_bytes = if body.is_empty() {
            0
        } else {
            body.len() + size::ALLOCATION_OVERHEAD
        };
        let bytes = bookkeeping_bytes(&req_key)
            + body_bytes
            + size::header_map_bytes(&headers)
            + policy_bytes;
        let entry = Entry {
            policy,
            status,
            headers,
            body,
            fresh_until,
            bytes: bytes as u64,
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
        // The policy keeps what it is given: copies that own their bytes (see `size`).
        let owned_req = CacheRequest {
            method: req.method.clone(),
            uri: req.uri.clone(),
            headers: size::owned_headers(&req.headers),
        };
        let mut owned_304 = Response::new(());
        *owned_304.status_mut() = not_modified.status();
        *owned_304.headers_mut() = size::owned_headers(not_modified.headers());
        match stored.policy.after_response(&owned_req, &owned_304, now) {
            AfterResponse::NotModified(policy, parts) => {
                let resp = answer(
                    stored.status,
                    parts.headers.clone(),
                    &stored.body,
                    &req.method,
                    CacheResult::Hit,
                );
                let storable = Storable::from_policy(policy, &owned_req, parts.headers);
                self.store(req.key(), storable, stored.status, stored.body.clone(), now);
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
        let storable = cache.storable(&req, &resp, now).expect("storable");
        cache.store(
            HttpCache::key_of(&req),
            storable,
            StatusCode::OK,
            Bytes::from_static(b"hello"),
            now,
        );
        assert!(matches!(cache.lookup(&req, now), Lookup::Fresh(_)));
        assert!(cache.storable(&req, &response("no-store"), now).is_none());
    }
}
