//! The rate limit and provider backpressure through the real sidecar: `onLimit: reject` lets
//! the burst through at once and answers 429 `rate_limited` + Retry-After beyond it; `queue`
//! spaces requests by `per / requests` and serves them all, up to `maxQueueWait`; retries pass
//! the limit too. When the provider throttles (429/503 with Retry-After, or
//! `X-RateLimit-Remaining: 0` with a reset), the whole integration holds new requests until
//! then (queued, or rejected in reject mode, or rejected when the hold outlasts maxQueueWait).

use std::time::{Duration, Instant, SystemTime};

use attache_tests::resilience_harness::{
    assert_gap_at_least, assert_sidecar_error, assert_upstream_response, retry_after_secs,
    unix_secs_ceil, Rig, WallClock, CLOCK_SLACK,
};
use attache_tests::{Action, Response};
use serde_json::json;

fn retry() -> serde_json::Value {
    json!({"maxAttempts": 3, "backoff": {"base": "5ms", "max": "20ms"}})
}

/// `n` GETs to `path` sent at once; responses in completion order.
async fn concurrent_gets(rig: &Rig, path: &str, n: usize) -> Vec<Response> {
    let tasks: Vec<_> = (0..n).map(|_| rig.spawn_get(path)).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_mode_lets_the_burst_through_then_answers_rate_limited() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"rateLimit": {"requests": 1, "per": "10s", "burst": 3, "onLimit": "reject"}}),
    )
    .await;
    for resp in concurrent_gets(&rig, "/burst", 3).await {
        assert_upstream_response(&resp, 200, 1);
    }
    for _ in 0..2 {
        let started = Instant::now();
        let resp = rig.get("/over").await;
        assert_sidecar_error(&resp, 429, "rate_limited");
        let ra = retry_after_secs(&resp);
        assert!(
            (5..=10).contains(&ra),
            "Retry-After {ra}: until the next token"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "rejected at once"
        );
    }
    assert_eq!(rig.up().count(), 3, "only the burst reached the upstream");
    assert_eq!(rig.rate_limited("rejected").await, 2.0);
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "rate_limited")])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_spaces_requests_and_serves_them_all() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"rateLimit": {"requests": 5, "per": "1s", "burst": 1, "onLimit": "queue",
                             "maxQueueWait": "5s"}}),
    )
    .await;
    let interval = Duration::from_millis(200);
    let n = 5;
    let started = Instant::now();
    for resp in concurrent_gets(&rig, "/q", n).await {
        assert_upstream_response(&resp, 200, 1);
    }
    let elapsed = started.elapsed();
    let mut ats: Vec<Instant> = rig.up().requests().iter().map(|o| o.at).collect();
    ats.sort();
    assert_eq!(ats.len(), n);
    let gaps: Vec<Duration> = ats.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("measurement: 5 queued requests at 5/s, burst 1: arrival gaps {gaps:?}");
    // After idle the bucket holds one request; each further one waits for its turn.
    assert_gap_at_least(
        started,
        ats[n - 1],
        interval * (n as u32 - 1),
        "the last of 5 requests at 5/s",
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert!(rig.rate_limited("queued").await >= 1.0);
    assert_eq!(rig.rate_limited("rejected").await, 0.0);
}

#[tokio::test]
async fn queue_mode_answers_rate_limited_when_the_wait_exceeds_max_queue_wait() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"rateLimit": {"requests": 1, "per": "10s", "burst": 1, "onLimit": "queue",
                             "maxQueueWait": "300ms"}}),
    )
    .await;
    assert_upstream_response(&rig.get("/first").await, 200, 1);
    let started = Instant::now();
    let resp = rig.get("/second").await;
    let elapsed = started.elapsed();
    assert_sidecar_error(&resp, 429, "rate_limited");
    let ra = retry_after_secs(&resp);
    assert!(
        (5..=10).contains(&ra),
        "Retry-After {ra}: until the next token"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "gave up after {elapsed:?}"
    );
    assert_eq!(rig.up().count(), 1);
    assert_eq!(rig.rate_limited("timed_out").await, 1.0);
}

#[tokio::test]
async fn retries_pass_the_rate_limit_too() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": retry(),
            "rateLimit": {"requests": 1, "per": "10s", "burst": 1, "onLimit": "reject"},
        }),
    )
    .await;
    rig.up().script(
        "/flaky",
        vec![Action::respond(503, "busy"), Action::respond(200, "ok")],
    );
    // The retry finds the limit spent: the app gets the upstream's last answer.
    let resp = rig.get("/flaky").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(rig.up().count(), 1);
    assert_eq!(rig.rate_limited("rejected").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_429_with_retry_after_holds_other_requests() {
    let rig = Rig::start(Action::respond(200, "ok"), json!({"retry": retry()})).await;
    let up = rig.up();
    up.script(
        "/charges",
        vec![Action::respond(429, "slow down").with_header("retry-after", "2")],
    );
    // A POST without a key is not retried: the app gets the 429 at once...
    let resp = rig.post("/charges", "{}").await;
    assert_upstream_response(&resp, 429, 1);
    assert_eq!(resp.header("retry-after"), Some("2"));
    let throttled_at = up.requests()[0].at;
    // ... and a different request sent right after is held until the provider's time.
    let started = Instant::now();
    let resp = rig.get("/balance").await;
    assert_upstream_response(&resp, 200, 1);
    let seen = up.requests_for("/balance");
    assert_eq!(seen.len(), 1);
    eprintln!(
        "measurement: request after a 429 + Retry-After: 2 held {:?} (arrived {:?} after the 429)",
        started.elapsed(),
        seen[0].at - throttled_at
    );
    assert_gap_at_least(
        throttled_at,
        seen[0].at,
        Duration::from_secs(2),
        "held after 429 Retry-After: 2",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(rig.rate_limited("queued").await >= 1.0);
    assert!(rig.throttled().await >= 1.0);
}

#[tokio::test]
async fn provider_hold_in_reject_mode_answers_rate_limited() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"retry": retry(), "rateLimit": {"requests": 1000, "onLimit": "reject"}}),
    )
    .await;
    let up = rig.up();
    up.script(
        "/charges",
        vec![Action::respond(429, "slow down").with_header("retry-after", "2")],
    );
    assert_upstream_response(&rig.post("/charges", "{}").await, 429, 1);
    let throttled_at = up.requests()[0].at;
    let resp = rig.get("/balance").await;
    assert_sidecar_error(&resp, 429, "rate_limited");
    let ra = retry_after_secs(&resp);
    assert!((1..=2).contains(&ra), "Retry-After {ra}: the hold left");
    assert_eq!(up.requests_for("/balance").len(), 0, "not sent");
    assert_eq!(rig.rate_limited("rejected").await, 1.0);
    // Once the provider's time has passed, traffic flows again.
    let wait =
        (throttled_at + Duration::from_millis(2100)).saturating_duration_since(Instant::now());
    tokio::time::sleep(wait).await;
    assert_upstream_response(&rig.get("/balance").await, 200, 1);
}

#[tokio::test]
async fn provider_hold_beyond_max_queue_wait_answers_rate_limited_at_once() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"retry": retry(),
               "rateLimit": {"requests": 1000, "onLimit": "queue", "maxQueueWait": "500ms"}}),
    )
    .await;
    let up = rig.up();
    // 503 with Retry-After is throttling too.
    up.script(
        "/charges",
        vec![Action::respond(503, "maintenance").with_header("retry-after", "3")],
    );
    assert_upstream_response(&rig.post("/charges", "{}").await, 503, 1);
    let started = Instant::now();
    let resp = rig.get("/balance").await;
    assert_sidecar_error(&resp, 429, "rate_limited");
    let ra = retry_after_secs(&resp);
    assert!((2..=3).contains(&ra), "Retry-After {ra}: the hold left");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(up.requests_for("/balance").len(), 0);
    assert_eq!(rig.rate_limited("timed_out").await, 1.0);
    assert!(
        rig.throttled().await >= 1.0,
        "a 503 hold counts as throttling"
    );
}

#[tokio::test]
async fn ratelimit_headers_hold_the_next_request() {
    let rig = Rig::start(Action::respond(200, "ok"), json!({"retry": retry()})).await;
    let up = rig.up();
    let clock = WallClock::now();

    // Reset as seconds from now.
    up.script(
        "/a",
        vec![Action::respond(200, "last one")
            .with_header("x-ratelimit-remaining", "0")
            .with_header("x-ratelimit-reset", "1")],
    );
    assert_upstream_response(&rig.get("/a").await, 200, 1);
    assert_upstream_response(&rig.get("/b").await, 200, 1);
    let (a, b) = (up.requests_for("/a")[0].at, up.requests_for("/b")[0].at);
    assert_gap_at_least(a, b, Duration::from_secs(1), "held by X-RateLimit-Reset: 1");

    // Reset as a Unix time.
    let reset = unix_secs_ceil(SystemTime::now()) + 1;
    up.script(
        "/c",
        vec![Action::respond(200, "last one")
            .with_header("x-ratelimit-remaining", "0")
            .with_header("x-ratelimit-reset", &reset.to_string())],
    );
    assert_upstream_response(&rig.get("/c").await, 200, 1);
    assert_upstream_response(&rig.get("/d").await, 200, 1);
    let d = clock.wall(up.requests_for("/d")[0].at);
    let target = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
    assert!(
        d + CLOCK_SLACK >= target,
        "X-RateLimit-Reset: {reset}: the next request went out {:?} early",
        target.duration_since(d).unwrap_or_default()
    );
    assert!(rig.throttled().await >= 2.0, "both holds counted");

    // Remaining above 0 holds nothing.
    up.script(
        "/e",
        vec![Action::respond(200, "plenty")
            .with_header("x-ratelimit-remaining", "10")
            .with_header("x-ratelimit-reset", "5")],
    );
    assert_upstream_response(&rig.get("/e").await, 200, 1);
    let started = Instant::now();
    assert_upstream_response(&rig.get("/f").await, 200, 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn shared_scope_in_local_mode_is_the_whole_limit() {
    // Local mode has no operator counting pods: the pod's share is the whole limit.
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"rateLimit": {"requests": 1, "per": "10s", "burst": 2, "scope": "shared",
                             "onLimit": "reject"}}),
    )
    .await;
    for _ in 0..2 {
        assert_upstream_response(&rig.get("/x").await, 200, 1);
    }
    assert_sidecar_error(&rig.get("/x").await, 429, "rate_limited");
    assert_eq!(rig.up().count(), 2);
}
