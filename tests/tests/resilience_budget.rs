//! The retry budget through the real sidecar: against an upstream that always fails, retries
//! add at most `ratio` × recent requests + `minPerSecond` × the 10-second window, so an outage
//! is never amplified `maxAttempts`-fold. `attache_retries_total` counts only the retries that
//! were sent; a request whose retry the budget refused says so to the app with
//! `x-attache-retry-stopped: budget`.

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{Rig, NAME};
use attache_tests::Action;
use serde_json::json;

/// The budget's window (sidecar/src/resilience/budget.rs): retries within it are counted.
const WINDOW: Duration = Duration::from_secs(10);

const REQUESTS: usize = 30;

fn policies(ratio: f64) -> serde_json::Value {
    json!({
        "retry": {
            "maxAttempts": 3,
            "backoff": {"base": "1ms", "max": "5ms"},
            "budget": {"ratio": ratio, "minPerSecond": 1},
        },
        // The breaker would otherwise stop the traffic this test needs.
        "circuitBreaker": {"consecutiveFailures": 10000},
    })
}

/// Sends [`REQUESTS`] sequential GETs to an always-503 upstream; returns (sum of the
/// `x-attache-attempts` the app saw, requests whose retries the budget stopped, how long it
/// took).
async fn hammer(rig: &Rig) -> (usize, usize, Duration) {
    let started = Instant::now();
    let (mut seen_by_app, mut stopped) = (0, 0);
    for i in 0..REQUESTS {
        let resp = rig.get(&format!("/outage/{i}")).await;
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert_eq!(resp.header("x-attache-error"), None, "the upstream's 503");
        let attempts = resp
            .header("x-attache-attempts")
            .expect("x-attache-attempts")
            .parse::<usize>()
            .unwrap();
        seen_by_app += attempts;
        match resp.header("x-attache-retry-stopped") {
            Some("budget") => stopped += 1,
            Some(other) => panic!("retries stopped by {other:?}, not the budget"),
            None => assert_eq!(attempts, 3, "no header only when every attempt was made"),
        }
    }
    let took = started.elapsed();
    // All retries fall in one window only if the run was shorter than it; on a machine so slow
    // that it was not, the bound below would be wrong, so say so rather than mislead.
    assert!(
        took < WINDOW - Duration::from_secs(1),
        "{REQUESTS} requests took {took:?}: too slow for a one-window budget check"
    );
    (seen_by_app, stopped, took)
}

#[tokio::test]
async fn always_failing_upstream_gets_no_more_retries_than_the_reserve() {
    let rig = Rig::start(Action::respond(503, "down"), policies(0.0)).await;
    let (seen_by_app, refused, took) = hammer(&rig).await;
    let attempts = rig.up().count();
    let retried = rig.retries("503").await;
    eprintln!(
        "measurement: ratio 0, minPerSecond 1: {REQUESTS} requests → {attempts} upstream \
         attempts ({retried} retries, {refused} refused by the budget) in {took:?}"
    );
    // ratio 0 × requests + 1/s × 10 s = 10 retries at most, instead of 2 × 30 = 60.
    assert!(
        attempts <= REQUESTS + 10,
        "{attempts} attempts for {REQUESTS} requests: the budget allows 10 retries"
    );
    assert_eq!(attempts, seen_by_app, "x-attache-attempts adds up");
    assert_eq!(attempts as f64, REQUESTS as f64 + retried);
    assert!(refused > 0, "the budget stopped some retries");
    // Every request either used its two retries or was refused at its first one.
    assert_eq!(retried / 2.0 + refused as f64, REQUESTS as f64);
    assert_eq!(
        rig.retries("budget_exhausted").await,
        0.0,
        "attache_retries_total counts only retries that were sent"
    );
    assert_eq!(
        rig.sidecar
            .metric(
                "attache_upstream_attempts_total",
                &[("integration", NAME), ("result", "5xx")]
            )
            .await,
        Some(attempts as f64)
    );
}

#[tokio::test]
async fn budget_ratio_lets_retries_grow_with_traffic_but_stay_bounded() {
    let rig = Rig::start(Action::respond(503, "down"), policies(0.5)).await;
    let (seen_by_app, refused, took) = hammer(&rig).await;
    let attempts = rig.up().count();
    eprintln!(
        "measurement: ratio 0.5, minPerSecond 1: {REQUESTS} requests → {attempts} upstream \
         attempts ({refused} retries refused) in {took:?}"
    );
    // 0.5 × 30 requests + 10 reserve = 25 retries at most; more than the reserve alone.
    assert!(
        attempts <= REQUESTS + 25,
        "{attempts} attempts: above ratio × requests + reserve"
    );
    assert!(
        attempts > REQUESTS + 10,
        "{attempts} attempts: the ratio added nothing to the reserve"
    );
    assert_eq!(attempts, seen_by_app);
    assert!(refused > 0);
}
