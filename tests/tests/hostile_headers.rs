//! Throttling headers a careless or hostile third party may send, through the real sidecar
//! (README, "Configuration reference": every hold is bounded by retry.maxRetryAfter): no value can stop, freeze or crash the sidecar, and every
//! hold a header asks for is bounded by `retry.maxRetryAfter`.

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{assert_upstream_response, Rig};
use attache_tests::Action;
use serde_json::json;

/// `maxRetryAfter: 1s`: the longest any header may pause the integration.
fn policies() -> serde_json::Value {
    json!({
        "retry": {
            "maxAttempts": 3,
            "backoff": {"base": "5ms", "max": "20ms"},
            "maxRetryAfter": "1s",
        },
        "circuitBreaker": {"consecutiveFailures": 100},
    })
}

/// Sends one more request right after a throttling response: it must be held (the provider
/// asked for a pause) but for no longer than `maxRetryAfter` (1 s), then reach the upstream.
async fn assert_held_about_max_retry_after(rig: &Rig, after: &str) {
    let started = Instant::now();
    let resp = rig.get(&format!("/next-after-{after}")).await;
    let waited = started.elapsed();
    eprintln!("measurement: request after {after}: held {waited:?}");
    assert_upstream_response(&resp, 200, 1);
    assert!(
        waited >= Duration::from_millis(300),
        "{after}: the provider's pause was ignored (waited {waited:?})"
    );
    assert!(
        waited < Duration::from_secs(3),
        "{after}: held {waited:?}, longer than maxRetryAfter (1s)"
    );
}

fn assert_alive(rig: &mut Rig) {
    assert!(
        rig.sidecar.try_status().is_none(),
        "the sidecar exited:\n{}",
        rig.sidecar.output()
    );
}

#[tokio::test]
async fn rate_limit_reset_beyond_any_clock_neither_crashes_nor_freezes() {
    let mut rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    // u64::MAX, past i64 seconds (SystemTime overflow), and past Duration's range as a float.
    for (i, reset) in ["18446744073709551615", "9300000000000000000", "1e300"]
        .iter()
        .enumerate()
    {
        let key = format!("/reset-{i}");
        rig.up().script(
            &key,
            vec![Action::respond(200, "last one")
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", reset)],
        );
        let resp = rig.get(&key).await;
        assert_upstream_response(&resp, 200, 1);
        assert_eq!(resp.text(), "last one", "X-RateLimit-Reset: {reset}");
        assert_alive(&mut rig);
        assert_held_about_max_retry_after(&rig, &format!("reset-{reset}")).await;
    }
    assert!(rig.throttled().await >= 3.0);
    assert!(rig.rate_limited("queued").await >= 3.0);
    assert_alive(&mut rig);
}

#[tokio::test]
async fn retry_after_of_years_is_returned_and_holds_only_max_retry_after() {
    let mut rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    let cases = [
        // Ten years in seconds, a number past u64, and an HTTP date in 2099.
        (429, "315360000"),
        (503, "99999999999999999999999999"),
        (503, "Thu, 01 Jan 2099 00:00:00 GMT"),
    ];
    for (i, (status, value)) in cases.iter().enumerate() {
        let key = format!("/later-{i}");
        rig.up().script(
            &key,
            vec![
                Action::respond(*status, "come back later").with_header("retry-after", value),
                Action::respond(200, "should not be asked"),
            ],
        );
        let started = Instant::now();
        let resp = rig.get(&key).await;
        // Longer than maxRetryAfter: not waited for, the response goes back as it is.
        assert_upstream_response(&resp, *status, 1);
        assert_eq!(resp.header("retry-after"), Some(*value));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(rig.up().requests_for(&key).len(), 1, "Retry-After: {value}");
        assert_alive(&mut rig);
        assert_held_about_max_retry_after(&rig, &format!("retry-after-{i}")).await;
    }
    assert_alive(&mut rig);
}

#[tokio::test]
async fn rate_limit_reset_years_ahead_holds_only_max_retry_after() {
    let rig = Rig::start(Action::respond(200, "ok"), policies()).await;
    // A Unix time in 2100.
    rig.up().script(
        "/exhausted",
        vec![Action::respond(200, "ok")
            .with_header("x-ratelimit-remaining", "0")
            .with_header("x-ratelimit-reset", "4102444800")],
    );
    let resp = rig.get("/exhausted").await;
    assert_upstream_response(&resp, 200, 1);
    assert_held_about_max_retry_after(&rig, "unix-2100").await;
}
