//! LLM providers' rate-limit headers, read as backpressure: what is left of each limit, and
//! how long to hold the integration when one is used up.
//!
//! - OpenAI: `x-ratelimit-remaining-requests` / `-tokens` with `x-ratelimit-reset-requests` /
//!   `-tokens` as Go-style durations (`1s`, `6m0s`, `20ms`, `59.832s`).
//! - Anthropic: `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining`
//!   with `-reset` as an RFC 3339 time.
//! - `retry-after-ms` (both): a `Retry-After` in milliseconds, preferred when present.
//!
//! Every value comes from a third party: garbage is ignored, huge values are clamped (the
//! caller bounds holds by `retry.maxRetryAfter`).

use std::time::{Duration, SystemTime};

use attache_api::spec::LlmProvider;
use http::{HeaderMap, HeaderName};

use crate::{clock::FAR_FUTURE, metrics::LabelValue};

/// Which of the provider's limits a remaining count is about (the `kind` label of
/// `attache_llm_ratelimit_remaining`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    InputTokens,
    OutputTokens,
}

impl LabelValue for LimitKind {
    fn label(&self) -> &str {
        match self {
            LimitKind::Requests => "requests",
            LimitKind::Tokens => "tokens",
            LimitKind::InputTokens => "input_tokens",
            LimitKind::OutputTokens => "output_tokens",
        }
    }
}

/// What one response said about the provider's limits.
#[derive(Debug, Default, PartialEq)]
pub struct Reported {
    /// Remaining count per limit, as given.
    pub remaining: Vec<(LimitKind, u64)>,
    /// The longest reset among the limits that are used up.
    pub hold: Option<Duration>,
}

const OPENAI: [(LimitKind, &str, &str); 2] = [
    (
        LimitKind::Requests,
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    (
        LimitKind::Tokens,
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
];

const ANTHROPIC: [(LimitKind, &str, &str); 4] = [
    (
        LimitKind::Requests,
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    (
        LimitKind::Tokens,
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    (
        LimitKind::InputTokens,
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    (
        LimitKind::OutputTokens,
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

/// Reads the provider's limit headers of one response.
pub fn read(provider: LlmProvider, headers: &HeaderMap, now: SystemTime) -> Reported {
    let mut out = Reported::default();
    let table: &[(LimitKind, &str, &str)] = match provider {
        LlmProvider::Openai => &OPENAI,
        LlmProvider::Anthropic => &ANTHROPIC,
    };
    for &(kind, remaining, reset) in table {
        let Some(left) = header_str(headers, remaining).and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        out.remaining.push((kind, left));
        if left > 0 {
            continue;
        }
        let until = header_str(headers, reset).and_then(|v| match provider {
            LlmProvider::Openai => parse_go_duration(v),
            LlmProvider::Anthropic => parse_rfc3339_from(v, now),
        });
        if let Some(d) = until {
            out.hold = Some(out.hold.map_or(d, |h| h.max(d)));
        }
    }
    out
}

/// `retry-after-ms`, if present and valid.
pub fn retry_after_ms(headers: &HeaderMap) -> Option<Duration> {
    let v: f64 = headers
        .get(RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(v / 1000.0).map_or(FAR_FUTURE, |d| d.min(FAR_FUTURE)))
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// A Go `time.Duration` string (`6m0s`, `1h2m3.5s`, `20ms`, `0s`); `None` for garbage.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs_per_unit = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * secs_per_unit;
    }
    if !total.is_finite() {
        return Some(FAR_FUTURE);
    }
    Some(Duration::try_from_secs_f64(total.min(FAR_FUTURE.as_secs_f64())).unwrap_or(FAR_FUTURE))
}

/// An RFC 3339 time as a delay from `now` (a time in the past means now).
fn parse_rfc3339_from(s: &str, now: SystemTime) -> Option<Duration> {
    let at: jiff::Timestamp = s.parse().ok()?;
    let now = jiff::Timestamp::try_from(now).ok()?;
    let span = at.duration_since(now);
    if span.is_negative() {
        return Some(Duration::ZERO);
    }
    Some(Duration::try_from(span).map_or(FAR_FUTURE, |d| d.min(FAR_FUTURE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn go_durations_as_openai_sends_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_go_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_go_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_go_duration("20ms"), Some(ms(20)));
        assert_eq!(parse_go_duration("59.832s"), Some(ms(59_832)));
        assert_eq!(parse_go_duration("1h2m3s"), Some(ms(3_723_000)));
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "s", "5", "5x", "-1s", "1..2s", "1s5"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_go_duration("99999999999999999999h"), Some(FAR_FUTURE));
    }

    #[test]
    fn openai_holds_until_the_exhausted_limit_resets() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let r = read(LlmProvider::Openai, &h, SystemTime::now());
        assert_eq!(
            r.remaining,
            vec![(LimitKind::Requests, 59), (LimitKind::Tokens, 0)]
        );
        assert_eq!(r.hold, Some(Duration::from_secs(360)));
    }

    #[test]
    fn anthropic_reset_times_are_rfc3339() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:40Z"),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2023-11-14T22:13:25Z",
            ),
            ("anthropic-ratelimit-input-tokens-remaining", "4000"),
        ]);
        let r = read(LlmProvider::Anthropic, &h, now);
        assert_eq!(
            r.hold,
            Some(Duration::from_secs(20)),
            "the later reset wins"
        );
        assert_eq!(r.remaining.len(), 3);
        let past = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2000-01-01T00:00:00Z"),
        ]);
        assert_eq!(
            read(LlmProvider::Anthropic, &past, now).hold,
            Some(Duration::ZERO)
        );
        let far = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "9000-12-31T23:59:59Z"),
        ]);
        assert_eq!(
            read(LlmProvider::Anthropic, &far, now).hold,
            Some(FAR_FUTURE)
        );
    }

    #[test]
    fn garbage_is_ignored_and_other_providers_headers_not_read() {
        let h = headers(&[
            ("x-ratelimit-remaining-tokens", "lots"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "soon"),
        ]);
        assert_eq!(
            read(LlmProvider::Openai, &h, SystemTime::now()),
            Reported::default()
        );
        let r = read(LlmProvider::Anthropic, &h, SystemTime::now());
        assert_eq!(r.hold, None);
    }

    #[test]
    fn retry_after_ms_is_milliseconds_and_clamped() {
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after_ms(&headers(&[("retry-after-ms", "1e300")])),
            Some(FAR_FUTURE)
        );
        assert_eq!(retry_after_ms(&headers(&[("retry-after-ms", "-5")])), None);
        assert_eq!(retry_after_ms(&headers(&[("retry-after-ms", "NaN")])), None);
    }
}
