//! When retrying stops early, through the real sidecar: a retry refused by the sidecar's own
//! rate limit (or budget, or breaker) gives the app the upstream's last answer, or its error,
//! never a `429 rate_limited` for a request the upstream already saw; `attache_retries_total`
//! counts only retries that were sent; and whenever the app gets a failure that `retryOn` lists
//! after fewer than `maxAttempts` attempts, `x-attache-retry-stopped` says why.

use std::time::Duration;

use attache_tests::resilience_harness::{assert_sidecar_error, assert_upstream_response, Rig};
use attache_tests::Action;
use serde_json::json;

const STOPPED: &str = "x-attache-retry-stopped";

fn fast_retries() -> serde_json::Value {
    json!({"maxAttempts": 3, "backoff": {"base": "1ms", "max": "5ms"}})
}

/// One request per 10 s, refused beyond it: the first attempt passes, its retry does not.
fn one_request_then_reject() -> serde_json::Value {
    json!({
        "retry": fast_retries(),
        "rateLimit": {"requests": 1, "per": "10s", "burst": 1, "onLimit": "reject"},
        "circuitBreaker": {"consecutiveFailures": 100},
    })
}

#[tokio::test]
async fn a_retry_refused_by_the_rate_limit_returns_the_last_upstream_error() {
    let rig = Rig::start(Action::respond(200, "ok"), one_request_then_reject()).await;
    rig.up().script(
        "/x",
        vec![Action::ResetBeforeResponse, Action::respond(200, "ok")],
    );
    let resp = rig.get("/x").await;
    // The upstream saw the request and broke the connection: that is what the app learns,
    // not that the sidecar's own limit refused it.
    assert_sidecar_error(&resp, 502, "upstream_connect");
    assert_eq!(
        resp.header(STOPPED),
        Some("rate_limit"),
        "{:?}",
        resp.headers
    );
    assert_eq!(rig.up().count(), 1);
    assert_eq!(rig.rate_limited("rejected").await, 1.0);
    assert_eq!(
        rig.retries("reset").await,
        0.0,
        "the refused retry was never sent"
    );
}

#[tokio::test]
async fn a_retry_refused_by_the_rate_limit_returns_the_last_upstream_response() {
    let rig = Rig::start(Action::respond(200, "ok"), one_request_then_reject()).await;
    rig.up().script(
        "/flaky",
        vec![Action::respond(503, "busy"), Action::respond(200, "ok")],
    );
    let resp = rig.get("/flaky").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(resp.text(), "busy");
    assert_eq!(resp.header(STOPPED), Some("rate_limit"));
    assert_eq!(rig.retries("503").await, 0.0, "no retry was sent");
}

#[tokio::test]
async fn a_retry_refused_by_the_budget_says_so() {
    let rig = Rig::start(
        Action::respond(503, "down"),
        json!({
            "retry": {
                "maxAttempts": 3,
                "backoff": {"base": "1ms", "max": "5ms"},
                "budget": {"ratio": 0.0, "minPerSecond": 1},
            },
            "circuitBreaker": {"consecutiveFailures": 10000},
        }),
    )
    .await;
    // 1/s over the 10 s window: ten retries, i.e. five requests of three attempts.
    for i in 0..5 {
        let resp = rig.get(&format!("/down/{i}")).await;
        assert_upstream_response(&resp, 503, 3);
        assert_eq!(resp.header(STOPPED), None, "every attempt was made");
    }
    let resp = rig.get("/down/spent").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(resp.header(STOPPED), Some("budget"));
    assert_eq!(rig.retries("503").await, 10.0);
    assert_eq!(
        rig.retries("budget_exhausted").await,
        0.0,
        "attache_retries_total counts only retries that were sent"
    );
}

#[tokio::test]
async fn an_unkeyed_post_says_it_was_not_retried_because_it_is_not_idempotent() {
    let rig = Rig::start(
        Action::respond(503, "busy"),
        json!({"retry": fast_retries(), "timeouts": {"perTry": "300ms"}}),
    )
    .await;
    let resp = rig.post("/charges", r#"{"amount": 5}"#).await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(resp.header(STOPPED), Some("not_idempotent"));

    // The same for a failure the sidecar reports itself.
    rig.up().script(
        "/slow",
        vec![Action::respond(200, "late").delayed(Duration::from_secs(2))],
    );
    let resp = rig.post("/slow", "{}").await;
    assert_sidecar_error(&resp, 504, "timeout");
    assert_eq!(resp.header(STOPPED), Some("not_idempotent"));
}

/// A rig whose request timeout is 2 s and `maxRetryAfter` 5 s. One rig per request below: the
/// provider's Retry-After also holds the whole integration for a while.
async fn retry_after_rig() -> Rig {
    Rig::start(
        Action::respond(200, "ok"),
        json!({
            "timeouts": {"request": "2s"},
            "retry": {"maxAttempts": 3, "maxRetryAfter": "5s"},
        }),
    )
    .await
}

#[tokio::test]
async fn retry_after_past_max_retry_after_says_so() {
    let rig = retry_after_rig().await;
    rig.up().script(
        "/cap",
        vec![Action::respond(429, "later").with_header("retry-after", "60")],
    );
    let resp = rig.get("/cap").await;
    assert_upstream_response(&resp, 429, 1);
    assert_eq!(resp.header(STOPPED), Some("retry_after"));
}

#[tokio::test]
async fn retry_after_past_the_request_timeout_says_deadline() {
    let rig = retry_after_rig().await;
    rig.up().script(
        "/deadline",
        vec![Action::respond(503, "later").with_header("retry-after", "3")],
    );
    let resp = rig.get("/deadline").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(resp.header(STOPPED), Some("deadline"));
}

#[tokio::test]
async fn no_header_when_nothing_was_cut_short() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"retry": {"maxAttempts": 2, "backoff": {"base": "1ms", "max": "5ms"}, "retryOn": ["503"]}}),
    )
    .await;
    let up = rig.up();
    up.script("/ok", vec![Action::respond(200, "ok")]);
    up.script("/unlisted", vec![Action::respond(500, "boom")]);
    up.script(
        "/exhausted",
        vec![Action::respond(503, "a"), Action::respond(503, "b")],
    );
    for (path, status, attempts) in [
        ("/ok", 200, 1),
        ("/unlisted", 500, 1),
        ("/exhausted", 503, 2),
    ] {
        let resp = rig.get(path).await;
        assert_upstream_response(&resp, status, attempts);
        assert_eq!(resp.header(STOPPED), None, "{path}: {:?}", resp.headers);
    }
}
