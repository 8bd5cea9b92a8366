//! `upstream.failover` through the real sidecar (README, "Failover"): two real HTTPS upstreams,
//! the primary made to fail in each way that moves an attempt to the next endpoint (down,
//! a `retryOn` status, an open circuit), the retry rules unchanged (a sent POST without a key
//! is not resent anywhere), `x-attache-endpoint` on every answer, and traffic back on the
//! primary once its circuit closes.

use std::time::Duration;

use attache_tests::process::free_port;
use attache_tests::resilience_harness::{assert_upstream_response, Rig};
use attache_tests::{Action, TestCa, Upstream};
use serde_json::{json, Value};

/// A rig whose primary is `primary_url` and whose one failover endpoint is a healthy upstream
/// answering "from the mirror" under its own base path `/mirror`.
async fn rig_with_mirror(
    ca: TestCa,
    primary: Option<Upstream>,
    primary_url: &str,
    extra: Value,
) -> (Rig, Upstream) {
    let mirror = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::respond(200, "from the mirror"))
        .start()
        .await;
    let mut policies = json!({
        "upstream": {"url": primary_url, "failover": [{"url": format!("{}/mirror", mirror.url())}]},
        "retry": {"maxAttempts": 3, "backoff": {"base": "5ms", "max": "20ms"},
                  "retryOn": ["connect-failure", "503"]},
        "timeouts": {"connect": "500ms"},
    });
    if let (Some(p), Value::Object(e)) = (policies.as_object_mut(), extra) {
        p.extend(e);
    }
    let rig = Rig::start_at(ca, primary, primary_url, policies).await;
    (rig, mirror)
}

async fn failovers(rig: &Rig) -> f64 {
    rig.metric("attache_failovers_total", &[]).await
}

#[tokio::test]
async fn a_primary_that_is_down_fails_over_to_the_next_endpoint() {
    let ca = TestCa::new("failover ca");
    let dead = format!("https://localhost:{}", free_port());
    let (rig, mirror) = rig_with_mirror(ca, None, &dead, json!({})).await;
    let resp = rig.get("/v1/things?page=2").await;
    assert_upstream_response(&resp, 200, 2);
    assert_eq!(resp.text(), "from the mirror");
    assert_eq!(resp.header("x-attache-endpoint"), Some("1"));
    let seen = mirror.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path_and_query, "/mirror/v1/things?page=2",
        "the app's path goes under the endpoint's own base path"
    );
    assert_eq!(
        seen[0].header("host"),
        Some(
            mirror
                .addr()
                .to_string()
                .replace("127.0.0.1", "localhost")
                .as_str()
        )
    );
    assert_eq!(failovers(&rig).await, 1.0);
}

#[tokio::test]
async fn a_retryable_status_fails_over_for_a_get_but_a_sent_post_is_not_resent() {
    let ca = TestCa::new("failover ca");
    let primary = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::respond(503, "primary overloaded"))
        .start()
        .await;
    let url = primary.url();
    let (rig, mirror) = rig_with_mirror(
        ca,
        Some(primary),
        &url,
        json!({"circuitBreaker": {"consecutiveFailures": 100}}),
    )
    .await;
    let resp = rig.get("/orders").await;
    assert_upstream_response(&resp, 200, 2);
    assert_eq!(resp.header("x-attache-endpoint"), Some("1"));

    let resp = rig.post("/orders", "{}").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(resp.header("x-attache-endpoint"), Some("0"));
    assert_eq!(
        resp.header("x-attache-retry-stopped"),
        Some("not_idempotent")
    );
    assert_eq!(
        mirror
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count(),
        0,
        "a POST that reached the primary is not sent to another endpoint"
    );
    assert_eq!(rig.up().requests_for("/orders").len(), 2);
}

#[tokio::test]
async fn an_open_circuit_sends_attempts_straight_to_the_next_endpoint_and_traffic_returns() {
    let ca = TestCa::new("failover ca");
    let primary = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::respond(200, "from the primary"))
        .start()
        .await;
    let url = primary.url();
    let (rig, _mirror) = rig_with_mirror(
        ca,
        Some(primary),
        &url,
        json!({"circuitBreaker": {"consecutiveFailures": 2, "openDuration": "300ms",
                                  "maxOpenDuration": "300ms"}}),
    )
    .await;
    let up = rig.up();
    up.script(
        "/a",
        vec![Action::respond(503, "down"), Action::respond(503, "down")],
    );
    // Two 503s from the primary open its circuit (each fails over to the mirror).
    assert_eq!(rig.get("/a").await.header("x-attache-endpoint"), Some("1"));
    assert_eq!(rig.get("/a").await.header("x-attache-endpoint"), Some("1"));
    assert_eq!(
        rig.circuit_state().await,
        2.0,
        "the primary's circuit is open"
    );

    // With the primary's circuit open, a request goes to the mirror at once: one attempt,
    // the primary never sees it, and the sidecar does not fail fast.
    let before = up.requests_for("/b").len();
    let resp = rig.get("/b").await;
    assert_upstream_response(&resp, 200, 1);
    assert_eq!(resp.header("x-attache-endpoint"), Some("1"));
    assert_eq!(up.requests_for("/b").len(), before);

    // After openDuration the primary gets the probe, succeeds, and takes the traffic back.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = rig.get("/c").await;
    assert_upstream_response(&resp, 200, 1);
    assert_eq!(resp.header("x-attache-endpoint"), Some("0"));
    assert_eq!(resp.text(), "from the primary");
    assert_eq!(rig.circuit_state().await, 0.0);
    assert_eq!(rig.get("/d").await.header("x-attache-endpoint"), Some("0"));
    assert_eq!(failovers(&rig).await, 3.0);
}

#[tokio::test]
async fn without_failover_endpoints_no_endpoint_header_is_sent() {
    let rig = Rig::start(Action::respond(200, "ok"), json!({})).await;
    let resp = rig.get("/x").await;
    assert_eq!(resp.header("x-attache-endpoint"), None);
}
