//! Timeouts through the real sidecar: `perTry` ends a slow attempt (a GET is retried, an
//! unkeyed POST is not, since it was sent), attempts exhausted → 504 `timeout`; `request` bounds
//! all attempts together; `connect` (TCP + TLS handshake) ends an attempt that never reached the
//! upstream, which is retried whatever the method.

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{
    assert_sidecar_error, assert_upstream_response, Rig, SilentListener,
};
use attache_tests::{Action, TestCa};
use serde_json::json;

fn policies(timeouts: serde_json::Value, max_attempts: u32) -> serde_json::Value {
    json!({
        "timeouts": timeouts,
        "retry": {"maxAttempts": max_attempts, "backoff": {"base": "5ms", "max": "20ms"}},
        "circuitBreaker": {"consecutiveFailures": 100},
    })
}

fn slow(d: Duration) -> Action {
    Action::respond(200, "too late").delayed(d)
}

#[tokio::test]
async fn per_try_timeout_retries_a_get_to_success() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        policies(json!({"perTry": "300ms"}), 3),
    )
    .await;
    let up = rig.up();
    up.script(
        "/once-slow",
        vec![slow(Duration::from_secs(5)), Action::respond(200, "fast")],
    );
    let started = Instant::now();
    let resp = rig.get("/once-slow").await;
    let elapsed = started.elapsed();
    assert_upstream_response(&resp, 200, 2);
    assert_eq!(resp.text(), "fast");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(up.requests_for("/once-slow").len(), 2);
    assert_eq!(rig.retries("timeout").await, 1.0);
    assert_eq!(rig.attempts("timeout").await, 1.0);
}

#[tokio::test]
async fn per_try_timeouts_exhaust_into_504_and_spare_an_unkeyed_post() {
    let rig = Rig::start(
        slow(Duration::from_secs(5)),
        policies(json!({"perTry": "300ms"}), 3),
    )
    .await;
    let up = rig.up();
    let started = Instant::now();
    let resp = rig.get("/slow").await;
    let elapsed = started.elapsed();
    assert_sidecar_error(&resp, 504, "timeout");
    assert_eq!(up.requests_for("/slow").len(), 3, "every attempt timed out");
    assert!(
        elapsed + Duration::from_millis(50) >= Duration::from_millis(900),
        "3 × 300ms in {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(rig.attempts("timeout").await, 3.0);
    assert_eq!(rig.retries("timeout").await, 2.0);

    // The POST was sent: the upstream may be processing it, so it is not sent again.
    let resp = rig.post("/charge", "{}").await;
    assert_sidecar_error(&resp, 504, "timeout");
    assert_eq!(up.requests_for("/charge").len(), 1);
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "timeout")])
            .await,
        2.0
    );
}

#[tokio::test]
async fn request_timeout_bounds_all_attempts() {
    let rig = Rig::start(
        slow(Duration::from_secs(10)),
        policies(json!({"perTry": "400ms", "request": "1s"}), 10),
    )
    .await;
    let up = rig.up();
    let started = Instant::now();
    let resp = rig.get("/slow").await;
    let elapsed = started.elapsed();
    eprintln!(
        "measurement: request timeout 1s, perTry 400ms, maxAttempts 10: 504 after {elapsed:?}, \
         {} attempts",
        up.count()
    );
    assert_sidecar_error(&resp, 504, "timeout");
    assert!(
        elapsed + Duration::from_millis(50) >= Duration::from_millis(800),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let attempts = up.count();
    assert!(
        (2..=3).contains(&attempts),
        "{attempts} attempts of 400ms fit a 1s request timeout"
    );
}

#[tokio::test]
async fn connect_timeout_post_is_retried_because_it_was_never_sent() {
    let silent = SilentListener::start().await;
    let rig = Rig::start_at(
        TestCa::new("unused ca"),
        None,
        &format!("https://localhost:{}", silent.port),
        policies(json!({"connect": "200ms"}), 3),
    )
    .await;
    let started = Instant::now();
    let resp = rig.post("/v1/charges", "{}").await;
    let elapsed = started.elapsed();
    assert_sidecar_error(&resp, 504, "timeout");
    assert_eq!(silent.accepted(), 3, "one connection per attempt");
    assert!(
        elapsed + Duration::from_millis(50) >= Duration::from_millis(600),
        "3 × 200ms in {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!(rig.attempts("connect_timeout").await, 3.0);
    assert_eq!(rig.retries("connect-failure").await, 2.0);
}

/// Sends `GET path` on a fresh connection to the integration's listener and reads the raw
/// response until the sidecar closes the connection (or `limit`): returns what arrived, with
/// the time since the request of each read.
async fn read_stream(rig: &Rig, path: &str, limit: Duration) -> Vec<(Duration, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(rig.sidecar.addr(0))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut reads = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) =
        tokio::time::timeout_at((started + limit).into(), conn.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        reads.push((
            started.elapsed(),
            String::from_utf8_lossy(&buf[..n]).into_owned(),
        ));
    }
    reads
}

#[tokio::test]
async fn a_stalled_response_body_is_cut_after_timeouts_idle_and_frees_its_slot() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "timeouts": {"idle": "1s", "request": "30s"},
            "concurrency": {"maxInFlight": 1},
        }),
    )
    .await;
    // One line at once, the next only 5 s later.
    rig.up()
        .script("/stalls", vec![Action::drip(3, Duration::from_secs(5))]);
    let reads = read_stream(&rig, "/stalls", Duration::from_secs(8)).await;
    let text: String = reads.iter().map(|(_, s)| s.as_str()).collect();
    let ended = reads.last().map(|(t, _)| *t);
    eprintln!(
        "measurement: stalled body: reads at {:?}",
        reads.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.contains("tick 0"), "{text:?}");
    assert!(
        !text.contains("tick 1"),
        "the body was relayed past the stall: {text:?}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut body must not look complete: {text:?}"
    );
    // Closed about 1 s after the last chunk (not when the upstream spoke again, 5 s later).
    let closed = Instant::now();
    let resp = rig.get("/after").await;
    assert_upstream_response(&resp, 200, 1);
    assert!(
        closed.elapsed() < Duration::from_secs(2),
        "the bulkhead slot was still held"
    );
    assert_eq!(rig.attempts("idle_timeout").await, 1.0);
    assert_eq!(rig.metric("attache_inflight_requests", &[]).await, 0.0);
    let ended = ended.expect("something arrived");
    assert!(ended < Duration::from_secs(4), "cut after {ended:?}");
}

#[tokio::test]
async fn a_live_stream_outlasts_the_request_timeout() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({"timeouts": {"idle": "1s", "perTry": "1s", "request": "1s"}}),
    )
    .await;
    // 2.1 s in all, never silent for more than 300 ms.
    rig.up()
        .script("/events", vec![Action::drip(8, Duration::from_millis(300))]);
    let reads = read_stream(&rig, "/events", Duration::from_secs(10)).await;
    let text: String = reads.iter().map(|(_, s)| s.as_str()).collect();
    for i in 0..8 {
        assert!(
            text.contains(&format!("tick {i}\n")),
            "tick {i} missing: {text:?}"
        );
    }
    assert!(
        text.ends_with("0\r\n\r\n"),
        "the stream did not end cleanly: {text:?}"
    );
    let lasted = reads.last().unwrap().0;
    assert!(lasted >= Duration::from_secs(2), "{lasted:?}");
    assert_eq!(rig.attempts("idle_timeout").await, 0.0);
}
