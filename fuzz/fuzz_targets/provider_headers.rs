//! Every parser of a value a third party sends about time: `Retry-After` (seconds or HTTP
//! date), `X-RateLimit-Remaining` / `X-RateLimit-Reset`, and Kubernetes-style durations. No
//! value may panic (overflow included), and every delay stays within the far-future bound.
#![no_main]
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use attache_sidecar::{clock::FAR_FUTURE, resilience::retry_after};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes pick "now" (any Unix second up to ~year 2500), the rest is the value.
    let (now, value) = match data.split_first_chunk::<8>() {
        Some((n, rest)) => (u64::from_le_bytes(*n) % 17_000_000_000, rest),
        None => (1_700_000_000, data),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    let bounded = |d: Option<Duration>| assert!(d.is_none_or(|d| d <= FAR_FUTURE), "{d:?}");
    bounded(retry_after::parse_retry_after(text, now));
    bounded(retry_after::parse_rate_limit_reset(text, now));
    let _ = text.parse::<attache_api::KubeDuration>();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, v.clone());
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", v.clone());
        bounded(retry_after::retry_after(&h, now));
        bounded(retry_after::rate_limit_exhausted(&h, now));
        h.insert("x-ratelimit-remaining", v);
        bounded(retry_after::rate_limit_exhausted(&h, now));
    }
    // Deadlines from any of these never overflow the clock.
    let _ = attache_sidecar::clock::after(std::time::Instant::now(), Duration::MAX);
});
