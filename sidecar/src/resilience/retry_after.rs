//! Reading the provider's "come back later" signals: `Retry-After` (RFC 9110 §10.2.3, seconds
//! or an HTTP date) and the common `X-RateLimit-Remaining` / `X-RateLimit-Reset` pair.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};

use crate::clock::FAR_FUTURE;

/// `X-RateLimit-Reset` values at or above this are Unix times; below, seconds from now.
const UNIX_TIME_THRESHOLD: f64 = 1_000_000_000.0;

// Every value here comes from a third party: whatever it says, the result is a Duration of at
// most FAR_FUTURE ("practically never"), computed without overflow. How long the sidecar then
// actually waits or holds is bounded by `retry.maxRetryAfter` where it is used.

/// The delay a `Retry-After` value asks for; `None` for garbage or a negative value. A number
/// too large to represent is a very long delay, not garbage.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(FAR_FUTURE));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(FAR_FUTURE),
    )
}

/// `Retry-After` of a response, if present and valid.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v, now)
}

const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// How long the provider says it is exhausted: `X-RateLimit-Remaining: 0` with a reset given
/// as seconds from now or as a Unix time (a time in the past means now).
pub fn rate_limit_exhausted(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let remaining = headers.get(RATELIMIT_REMAINING)?.to_str().ok()?.trim();
    let remaining: f64 = remaining.parse().ok().filter(|r: &f64| r.is_finite())?;
    if remaining > 0.0 {
        return None;
    }
    let reset = headers.get(RATELIMIT_RESET)?.to_str().ok()?.trim();
    parse_rate_limit_reset(reset, now)
}

/// An `X-RateLimit-Reset` value as a delay from `now`; `None` for garbage or a negative value.
pub fn parse_rate_limit_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let n: f64 = value.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = if n >= UNIX_TIME_THRESHOLD {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        n - now.as_secs_f64()
    } else {
        n
    };
    Some(clamped_secs(secs))
}

/// `secs` (finite) as a Duration in `0..=FAR_FUTURE`.
fn clamped_secs(secs: f64) -> Duration {
    if secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs.min(FAR_FUTURE.as_secs_f64())).unwrap_or(FAR_FUTURE)
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
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994", "1e3"] {
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

    #[test]
    fn absurd_values_are_clamped_not_overflowed() {
        for huge in [
            "9999999999999999999999",
            "18446744073709551615",
            "315360000000",
        ] {
            assert_eq!(parse_retry_after(huge, t(0)), Some(FAR_FUTURE), "{huge:?}");
        }
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", t(0)),
            Some(FAR_FUTURE)
        );
        let now = t(1_700_000_000);
        for huge in [
            "18446744073709551615",
            "9223372036854775807",
            "9300000000000000000",
            "1e300",
            "1.7976931348623157e308",
        ] {
            assert_eq!(
                parse_rate_limit_reset(huge, now),
                Some(FAR_FUTURE),
                "{huge:?}"
            );
        }
        for garbage in ["inf", "NaN", "-1", "-1e300", ""] {
            assert_eq!(parse_rate_limit_reset(garbage, now), None, "{garbage:?}");
        }
        assert_eq!(
            parse_rate_limit_reset("1600000000", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_rate_limit_reset("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "NaN".parse().unwrap());
        h.insert("x-ratelimit-reset", "2".parse().unwrap());
        assert_eq!(
            rate_limit_exhausted(&h, now),
            None,
            "NaN remaining is garbage"
        );
    }
}
