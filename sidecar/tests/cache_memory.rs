//! The cache's byte count against the allocator's: dhat's allocator counts live bytes and
//! so measures what stored answers really hold, with their headers arriving as slices of a
//! large read buffer, as hyper hands them out. Its own test binary, so no other test's
//! allocations are counted.

use std::time::SystemTime;

use attache_api::{config::CacheConfig, duration::KubeDuration};
use attache_sidecar::{
    body,
    cache::{size, CacheRequest, HttpCache},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Bytes allocated and not yet freed, with the allocator's own overhead per block (dhat
/// counts what was asked for; glibc adds a header and rounds up to 16 bytes).
fn live() -> i64 {
    let stats = dhat::HeapStats::get();
    (stats.curr_bytes + stats.curr_blocks * size::ALLOCATION_OVERHEAD) as i64
}

/// Header values cut from one 16 KiB buffer, as hyper's parser leaves them.
fn sliced(buffer: &Bytes, pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut at = 0;
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let v = buffer.slice(at..at + value.len());
        assert_eq!(&v[..], value.as_bytes());
        at += value.len();
        map.append(
            *name,
            HeaderValue::from_maybe_shared(v).expect("valid value"),
        );
    }
    map
}

fn buffer_with(pairs: &[(&'static str, String)]) -> Bytes {
    let mut buf = Vec::with_capacity(16 * 1024);
    for (_, v) in pairs {
        buf.extend_from_slice(v.as_bytes());
    }
    buf.resize(16 * 1024, b' ');
    Bytes::from(buf)
}

/// Stores answer `i` (1 KiB body) as the request path does.
fn store_one(cache: &HttpCache, i: usize) {
    let req_pairs = [
        ("host", "api.example.com".to_string()),
        ("user-agent", "app/1.2 (rust)".to_string()),
        ("accept", "application/json".to_string()),
        ("x-request-id", format!("req-{i:08}")),
    ];
    let req_buf = buffer_with(&req_pairs);
    let req = CacheRequest {
        method: Method::GET,
        uri: format!("https://api.example.com/v1/items/{i}")
            .parse()
            .expect("uri"),
        headers: sliced(&req_buf, &req_pairs),
    };
    let resp_pairs = [
        ("content-type", "application/json".to_string()),
        ("content-length", "1024".to_string()),
        ("cache-control", "max-age=600".to_string()),
        ("etag", format!("\"v{i}\"")),
        ("date", "Thu, 03 Dec 2026 09:00:00 GMT".to_string()),
        ("x-provider-trace", format!("trace-{i:016}")),
    ];
    let resp_buf = buffer_with(&resp_pairs);
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    *resp.headers_mut() = sliced(&resp_buf, &resp_pairs);
    let now = SystemTime::now();
    let storable = cache.storable(&req, &resp, now).expect("storable");
    // The tee copies the body chunk by chunk into a vector sized to the declared length.
    let mut copy = Vec::with_capacity(1024);
    copy.extend_from_slice(&resp_buf.slice(0..1024));
    let body = size::owned_body(copy);
    cache.store(HttpCache::key_of(&req), storable, StatusCode::OK, body, now);
}

fn cache(max_bytes: u64) -> std::sync::Arc<HttpCache> {
    HttpCache::new(&CacheConfig {
        max_bytes,
        stale_if_error: KubeDuration::from_secs(0),
    })
}

#[test]
fn the_count_matches_what_the_entries_hold_and_the_bound_holds() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // Below the bound: what the cache counts against what is really allocated.
    let big = cache(1 << 30);
    let before = live();
    for i in 0..5_000 {
        store_one(&big, i);
    }
    let held = (live() - before) as f64;
    let (counted, entries) = big.usage();
    assert_eq!(entries, 5_000);
    let ratio = counted as f64 / held;
    eprintln!(
        "measurement: 5,000 entries of 1 KiB hold {:.0} bytes each, counted {:.0} (ratio {ratio:.2})",
        held / 5_000.0,
        counted as f64 / 5_000.0
    );
    assert!(
        (1.0..=1.3).contains(&ratio),
        "counted {counted} bytes, the allocator holds {held}: ratio {ratio:.2}"
    );
    drop(big);

    // At the bound: 10,000 answers through a 1 MiB cache hold about 1 MiB.
    let small = cache(1 << 20);
    let before = live();
    for i in 0..10_000 {
        store_one(&small, i);
    }
    let held = live() - before;
    let (counted, entries) = small.usage();
    eprintln!(
        "measurement: a 1 MiB cache holds {held} bytes in {entries} entries (counted {counted})"
    );
    assert!(counted <= 1 << 20);
    assert!(held <= 1 << 20, "a 1 MiB cache holds {held} bytes");
}
