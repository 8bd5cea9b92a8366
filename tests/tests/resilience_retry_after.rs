//! `Retry-After` through the real sidecar (README): seconds or an HTTP date set the delay
//! before the next attempt, capped by `retry.maxRetryAfter`; past the cap the response goes
//! back to the app as it is. The upstream's arrival times (`Observed::at`) prove the waits.

use std::time::{Duration, Instant, SystemTime};

use attache_tests::resilience_harness::{
    assert_gap_at_least, assert_upstream_response, http_date, unix_secs_ceil, Rig, WallClock,
    CLOCK_SLACK,
};
use attache_tests::Action;
use serde_json::json;

fn policies() -> serde_json::Value {
    json!({
        "retry": {
            "maxAttempts": 3,
            "backoff": {"base": "5ms", "max": "20ms"},
            "maxRetryAfter": "5s",
        },
        "circuitBreaker": {"consecutiveFailures": 100},
    })
}

#[tokio::test]
async fn retry_after_seconds_delays_the_next_attempt() {
    let rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    let up = rig.up();
    for status in [429, 503] {
        let key = format!("/ra-{status}");
        up.script(
            &key,
            vec![
                Action::respond(status, "later").with_header("retry-after", "1"),
                Action::respond(200, "now"),
            ],
        );
        let started = Instant::now();
        let resp = rig.get(&key).await;
        let elapsed = started.elapsed();
        assert_upstream_response(&resp, 200, 2);
        assert_eq!(resp.text(), "now");
        let seen = up.requests_for(&key);
        assert_eq!(seen.len(), 2);
        let gap = seen[1].at - seen[0].at;
        eprintln!("measurement: {status} + Retry-After: 1 → next attempt {gap:?} later");
        assert_gap_at_least(
            seen[0].at,
            seen[1].at,
            Duration::from_secs(1),
            "attempts around a Retry-After: 1",
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{status}: waited {elapsed:?}"
        );
    }
    assert_eq!(rig.retries("429").await, 1.0);
    assert_eq!(rig.retries("503").await, 1.0);
    assert!(rig.throttled().await >= 1.0, "the 429 counts as throttling");
}

#[tokio::test]
async fn retry_after_above_max_retry_after_returns_the_response_untouched() {
    let rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    let up = rig.up();
    up.script(
        "/capped",
        vec![
            Action::json(429, json!({"error": "slow down"}))
                .with_header("retry-after", "60")
                .with_header("x-provider-request", "req_123"),
            Action::respond(200, "should not be asked"),
        ],
    );
    let started = Instant::now();
    let resp = rig.get("/capped").await;
    let elapsed = started.elapsed();
    assert_upstream_response(&resp, 429, 1);
    assert_eq!(resp.header("retry-after"), Some("60"), "{:?}", resp.headers);
    assert_eq!(resp.header("x-provider-request"), Some("req_123"));
    assert_eq!(resp.json()["error"], "slow down");
    assert!(
        elapsed < Duration::from_secs(3),
        "answered without waiting: {elapsed:?}"
    );
    assert_eq!(up.requests_for("/capped").len(), 1, "one attempt");
    assert_eq!(rig.retries("429").await, 0.0);
    assert!(rig.throttled().await >= 1.0);
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    let up = rig.up();
    let clock = WallClock::now();

    // A date at least a second ahead: the next attempt goes out no earlier than that date.
    let not_before = unix_secs_ceil(SystemTime::now()) + 1;
    let date = http_date(not_before);
    up.script(
        "/dated",
        vec![
            Action::respond(503, "maintenance").with_header("retry-after", &date),
            Action::respond(200, "back"),
        ],
    );
    let resp = rig.get("/dated").await;
    assert_upstream_response(&resp, 200, 2);
    let seen = up.requests_for("/dated");
    assert_eq!(seen.len(), 2);
    let second = clock.wall(seen[1].at);
    let target = SystemTime::UNIX_EPOCH + Duration::from_secs(not_before);
    assert!(
        second + CLOCK_SLACK >= target,
        "Retry-After: {date}: the retry went out {:?} early",
        target.duration_since(second).unwrap_or_default()
    );
    assert!(
        seen[1].at - seen[0].at < Duration::from_secs(4),
        "waited {:?}",
        seen[1].at - seen[0].at
    );

    // A date in the past means "now"; garbage is ignored (backoff): both retried promptly.
    for (key, value) in [
        ("/past", http_date(784_111_777)),
        ("/garbage", "soon".to_string()),
    ] {
        up.script(
            key,
            vec![
                Action::respond(503, "x").with_header("retry-after", &value),
                Action::respond(200, "ok"),
            ],
        );
        let resp = rig.get(key).await;
        assert_upstream_response(&resp, 200, 2);
        let seen = up.requests_for(key);
        let gap = seen[1].at - seen[0].at;
        assert!(gap < Duration::from_secs(1), "{key}: retried after {gap:?}");
    }
}

#[tokio::test]
async fn retry_after_beyond_the_request_timeout_returns_the_response_at_once() {
    // Waiting 2 s would overrun the 1 s request timeout: better give the app the 429 now than
    // a 504 later.
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "timeouts": {"request": "1s"},
            "retry": {"maxAttempts": 3, "maxRetryAfter": "5s"},
        }),
    )
    .await;
    rig.up().script(
        "/x",
        vec![
            Action::respond(429, "slow down").with_header("retry-after", "2"),
            Action::respond(200, "ok"),
        ],
    );
    let started = Instant::now();
    let resp = rig.get("/x").await;
    let elapsed = started.elapsed();
    assert_upstream_response(&resp, 429, 1);
    assert_eq!(resp.header("retry-after"), Some("2"));
    assert!(elapsed < Duration::from_millis(900), "waited {elapsed:?}");
    assert_eq!(rig.up().count(), 1);
}

#[tokio::test]
async fn respect_retry_after_false_ignores_it_for_the_retry_and_the_hold() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": {
                "maxAttempts": 3,
                "backoff": {"base": "5ms", "max": "20ms"},
                "respectRetryAfter": false,
            },
            "circuitBreaker": {"consecutiveFailures": 100},
        }),
    )
    .await;
    let up = rig.up();
    up.script(
        "/ignored",
        vec![
            Action::respond(429, "later").with_header("retry-after", "3"),
            Action::respond(200, "now"),
        ],
    );
    let started = Instant::now();
    let resp = rig.get("/ignored").await;
    assert_upstream_response(&resp, 200, 2);
    // Backoff (≤ 20 ms), not the 3 s the header asked for; nor is anyone else held.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        started.elapsed()
    );
    let other = Instant::now();
    let resp = rig.get("/other").await;
    assert_upstream_response(&resp, 200, 1);
    assert!(
        other.elapsed() < Duration::from_secs(1),
        "held {:?}",
        other.elapsed()
    );
}
