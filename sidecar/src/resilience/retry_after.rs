//! Reading the provider's "come back later" signals: `Retry-After` (RFC 9110 §10.2.3, seconds
//! or an HTTP date) and the common `X-RateLimit-Remaining` / `X-RateLimit-Reset` pair.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

/// `X-RateLimit-Reset` values at or above this are Unix times; below, seconds from now.
const UNIX_TIME_THRESHOLD: u64 = 1_000_000_000;

/// The delay a `Retry-After` value asks for; `None` for garbage or a negative value.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `Retry-After` of a response, if present and valid.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, now)
}

const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// How long the provider says it is exhausted: `X-RateLimit-Remaining: 0` with a reset.
pub fn rate_limit_exhausted(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let remaining = headers.get(RATELIMIT_REMAINING)?.to_str().ok()?.trim();
    if remaining.parse::<f64>().ok()? > 0.0 {
        return None;
    }
    let reset = headers.get(RATELIMIT_RESET)?.to_str().ok()?.trim();
    let n: f64 = reset.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    if n as u64 >= UNIX_TIME_THRESHOLD {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(n);
        return Some(at.duration_since(now).unwrap_or(Duration::ZERO));
    }
    Some(Duration::from_secs_f64(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn seconds_form() {
        assert_eq!(parse_retry_after("1", t(0)), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", t(0)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("0", t(0)), Some(Duration::ZERO));
    }

    #[test]
    fn http_date_form() {
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        let now = t(784_111_777 - 30);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t(784_111_777 + 5)),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
    }

    #[test]
    fn garbage_is_ignored() {
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994",
            "9999999999999999999999",
        ] {
            assert_eq!(parse_retry_after(bad, t(0)), None, "{bad:?}");
        }
    }

    #[test]
    fn ratelimit_headers_both_reset_forms() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "2".parse().unwrap());
        assert_eq!(
            rate_limit_exhausted(&h, t(100)),
            Some(Duration::from_secs(2))
        );
        h.insert("x-ratelimit-reset", "1700000010".parse().unwrap());
        assert_eq!(
            rate_limit_exhausted(&h, t(1_700_000_000)),
            Some(Duration::from_secs(10))
        );
        h.insert("x-ratelimit-remaining", "5".parse().unwrap());
        assert_eq!(rate_limit_exhausted(&h, t(1_700_000_000)), None);
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        h.insert("x-ratelimit-reset", "later".parse().unwrap());
        assert_eq!(rate_limit_exhausted(&h, t(0)), None);
    }
}
