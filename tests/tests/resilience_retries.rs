//! Retries through the real sidecar: status sequences retried to success, the sent / never-sent
//! rule of the README (a reset after the request went out is retried only for idempotent
//! requests; a refused connection is retried whatever the method), only `retryOn` failures
//! retried, `maxAttempts` honoured, and `attache_retries_total{reason}` counting each retry.

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{assert_sidecar_error, assert_upstream_response, Rig};
use attache_tests::Action;
use serde_json::json;

/// Fast backoff, so the tests measure behaviour rather than waiting.
fn fast_retries(max_attempts: u32) -> serde_json::Value {
    json!({
        "maxAttempts": max_attempts,
        "backoff": {"base": "5ms", "max": "20ms"},
    })
}

#[tokio::test]
async fn get_503_503_200_is_retried_to_success() {
    let rig = Rig::start(
        Action::respond(200, "default"),
        json!({"retry": fast_retries(3), "circuitBreaker": {"consecutiveFailures": 100}}),
    )
    .await;
    let up = rig.up();
    up.script(
        "/flaky",
        vec![
            Action::respond(503, "busy"),
            Action::respond(503, "busy"),
            Action::json(200, json!({"charged": false})),
        ],
    );
    let resp = rig.get("/flaky").await;
    assert_upstream_response(&resp, 200, 3);
    assert_eq!(resp.json()["charged"], false, "the last attempt's body");
    let seen = up.requests_for("/flaky");
    assert_eq!(seen.len(), 3, "three attempts reached the upstream");
    assert!(seen.iter().all(|o| o.method == "GET"));

    // maxAttempts bounds the attempts: the last upstream answer goes back as it is.
    up.script("/down", vec![Action::respond(503, "still down"); 5]);
    let resp = rig.get("/down").await;
    assert_upstream_response(&resp, 503, 3);
    assert_eq!(resp.text(), "still down");
    assert_eq!(up.requests_for("/down").len(), 3);

    assert_eq!(rig.retries("503").await, 4.0, "two retries per request");
    assert_eq!(rig.attempts("5xx").await, 5.0);
    assert_eq!(rig.attempts("2xx").await, 1.0);
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "200")])
            .await,
        1.0
    );
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "503")])
            .await,
        1.0
    );
}

#[tokio::test]
async fn only_listed_failures_are_retried() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": {"maxAttempts": 3, "backoff": {"base": "5ms", "max": "20ms"},
                      "retryOn": ["5xx", "reset"]},
            "circuitBreaker": {"consecutiveFailures": 100},
        }),
    )
    .await;
    let up = rig.up();
    // "5xx" covers every server error...
    up.script(
        "/five-hundred",
        vec![Action::respond(500, "oops"), Action::respond(200, "ok")],
    );
    assert_upstream_response(&rig.get("/five-hundred").await, 200, 2);
    // ... but not a 429, which is not listed here.
    up.script(
        "/throttled",
        vec![Action::respond(429, "slow"), Action::respond(200, "ok")],
    );
    assert_upstream_response(&rig.get("/throttled").await, 429, 1);
    // A client error is never retried.
    up.script(
        "/missing",
        vec![Action::respond(404, "no"), Action::respond(200, "ok")],
    );
    assert_upstream_response(&rig.get("/missing").await, 404, 1);
    assert_eq!(up.requests_for("/five-hundred").len(), 2);
    assert_eq!(up.requests_for("/throttled").len(), 1);
    assert_eq!(up.requests_for("/missing").len(), 1);
    assert_eq!(rig.retries("500").await, 1.0);
    assert_eq!(rig.retries("429").await, 0.0);
}

#[tokio::test]
async fn reset_after_send_retries_get_but_not_an_unkeyed_post() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"retry": fast_retries(3), "circuitBreaker": {"consecutiveFailures": 100}}),
    )
    .await;
    let up = rig.up();
    for (fault, name) in [
        (Action::ResetBeforeResponse, "reset"),
        (Action::CloseWithoutResponse, "close"),
    ] {
        // GET is idempotent: the upstream saw it, broke the connection, and sees it again.
        let get_key = format!("/get-{name}");
        up.script(
            &get_key,
            vec![fault.clone(), Action::respond(200, "second time")],
        );
        let resp = rig.get(&get_key).await;
        assert_upstream_response(&resp, 200, 2);
        assert_eq!(resp.text(), "second time", "{name}");
        assert_eq!(up.requests_for(&get_key).len(), 2, "{name}");

        // A POST without an idempotency key reached the upstream: never sent twice.
        let post_key = format!("/post-{name}");
        up.script(
            &post_key,
            vec![fault, Action::respond(200, "charged twice")],
        );
        let resp = rig.post(&post_key, r#"{"amount": 5}"#).await;
        assert_sidecar_error(&resp, 502, "upstream_connect");
        let seen = up.requests_for(&post_key);
        assert_eq!(seen.len(), 1, "{name}: an unkeyed POST was sent again");
        assert_eq!(seen[0].text(), r#"{"amount": 5}"#);
    }
    assert_eq!(rig.retries("reset").await, 2.0);
    assert_eq!(rig.attempts("reset").await, 4.0);
}

#[tokio::test]
async fn refused_connection_post_is_retried_because_it_was_never_sent() {
    let (rig, _port) = Rig::dead_upstream(json!({"retry": fast_retries(3)})).await;
    let started = Instant::now();
    let resp = rig.post("/v1/charges", r#"{"amount": 5}"#).await;
    eprintln!(
        "measurement: 3 refused attempts answered in {:?}",
        started.elapsed()
    );
    assert_sidecar_error(&resp, 502, "upstream_connect");
    assert_eq!(rig.attempts("connect_error").await, 3.0);
    assert_eq!(rig.retries("connect-failure").await, 2.0);
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "upstream_connect")])
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_post_reaches_an_upstream_that_comes_up_between_attempts() {
    let (rig, port) = Rig::dead_upstream(json!({
        "retry": {"maxAttempts": 10, "backoff": {"base": "300ms", "max": "300ms"}},
        "circuitBreaker": {"consecutiveFailures": 100},
    }))
    .await;
    let url = rig.url("/v1/charges");
    let client = rig.client.clone();
    let pending = tokio::spawn(async move {
        let req = http::Request::post(url)
            .body(bytes::Bytes::from_static(b"{\"amount\": 5}"))
            .unwrap();
        client.send(req).await
    });
    // Once the first attempt was refused, the upstream comes up on that very port.
    rig.sidecar
        .wait_metric(
            "attache_upstream_attempts_total",
            &[("integration", "api"), ("result", "connect_error")],
            1.0,
            Duration::from_secs(20),
        )
        .await
        .expect("a refused attempt");
    let up = attache_tests::Upstream::builder()
        .tls(rig.ca.localhost_cert())
        .port(port)
        .default_action(Action::json(201, json!({"id": "ch_1"})))
        .start()
        .await;
    let resp = pending.await.unwrap().expect("a response");
    assert_eq!(resp.status, 201, "{}", resp.text());
    let attempts: u32 = resp
        .header("x-attache-attempts")
        .expect("x-attache-attempts")
        .parse()
        .unwrap();
    let refused = rig.attempts("connect_error").await;
    assert!(attempts >= 2, "attempts {attempts}");
    assert_eq!(
        f64::from(attempts),
        refused + 1.0,
        "every attempt but the last was refused"
    );
    assert_eq!(up.count(), 1, "the POST reached the upstream exactly once");
    assert_eq!(up.requests()[0].text(), r#"{"amount": 5}"#);
}
