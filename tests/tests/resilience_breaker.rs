//! The circuit breaker through the real sidecar: after N failures requests fail fast with
//! 503 `circuit_open` + Retry-After without touching the upstream; after the open duration a
//! half-open probe reaches the upstream and closes the circuit once it is healthy; a failed
//! probe reopens it for longer; only the configured number of probes go out at once; the
//! failure-rate mode; 429 and 4xx are not failures, timeouts are. `attache_circuit_state` shows
//! each state (0 closed, 1 half-open, 2 open).

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{
    assert_gap_at_least, assert_sidecar_error, assert_upstream_response, retry_after_secs, Rig,
};
use attache_tests::{Action, Response};
use serde_json::json;

fn no_retries() -> serde_json::Value {
    json!({"maxAttempts": 1})
}

/// Sends GETs every 50 ms until one is not `circuit_open` (each refused one is checked);
/// returns it. Gives up after `within`.
async fn until_admitted(rig: &Rig, path: &str, within: Duration) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let resp = rig.get(path).await;
        if resp.header("x-attache-error") != Some("circuit_open") {
            return resp;
        }
        assert_sidecar_error(&resp, 503, "circuit_open");
        assert!(
            Instant::now() < deadline,
            "the circuit did not let a probe through within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn consecutive_failures_open_the_circuit_then_a_probe_closes_it() {
    let rig = Rig::start(
        Action::respond(503, "down"),
        json!({
            "retry": no_retries(),
            "circuitBreaker": {"consecutiveFailures": 3, "openDuration": "1s",
                               "maxOpenDuration": "10s"},
        }),
    )
    .await;
    let up = rig.up();
    assert_eq!(rig.circuit_state().await, 0.0);
    for _ in 0..3 {
        assert_upstream_response(&rig.get("/pay").await, 503, 1);
    }
    assert_eq!(rig.circuit_state().await, 2.0, "open after 3 failures");
    let tripped_by = up.requests()[2].at;

    // Open: fail fast, never touching the upstream.
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let resp = rig.get("/pay").await;
        latencies.push(started.elapsed());
        assert_sidecar_error(&resp, 503, "circuit_open");
        let ra = retry_after_secs(&resp);
        assert!(
            (1..=1).contains(&ra),
            "Retry-After {ra}: the open time left"
        );
    }
    assert_eq!(up.count(), 3, "the upstream saw nothing while open");
    latencies.sort();
    eprintln!(
        "measurement: circuit_open as seen by the app (keep-alive, debug build): \
         p50 {:?}, max {:?} over {} requests",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    assert!(
        latencies[latencies.len() / 2] < Duration::from_millis(50),
        "failing fast takes {:?}",
        latencies[latencies.len() / 2]
    );
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "circuit_open")])
            .await,
        20.0
    );

    // The upstream heals; after the open duration one probe goes through and closes it.
    up.set_default_action(Action::respond(200, "healed"));
    let resp = until_admitted(&rig, "/pay", Duration::from_secs(10)).await;
    assert_upstream_response(&resp, 200, 1);
    assert_eq!(resp.text(), "healed");
    assert_eq!(up.count(), 4, "exactly one probe");
    assert_gap_at_least(
        tripped_by,
        up.requests()[3].at,
        Duration::from_secs(1),
        "probe after openDuration",
    );
    assert_eq!(rig.circuit_state().await, 0.0, "closed again");
    for _ in 0..3 {
        assert_upstream_response(&rig.get("/pay").await, 200, 1);
    }
    assert_eq!(up.count(), 7, "traffic flows");
}

#[tokio::test]
async fn failed_probe_reopens_the_circuit_for_longer() {
    let rig = Rig::start(
        Action::respond(503, "down"),
        json!({
            "retry": no_retries(),
            "circuitBreaker": {"consecutiveFailures": 2, "openDuration": "1s",
                               "maxOpenDuration": "2s"},
        }),
    )
    .await;
    let up = rig.up();
    for _ in 0..2 {
        assert_upstream_response(&rig.get("/x").await, 503, 1);
    }
    // The probe finds the upstream still down: the app gets the upstream's answer...
    let resp = until_admitted(&rig, "/x", Duration::from_secs(10)).await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(up.count(), 3);
    let probe_at = up.requests()[2].at;
    // ... and the circuit is open again, for twice as long.
    let resp = rig.get("/x").await;
    assert_sidecar_error(&resp, 503, "circuit_open");
    assert_eq!(retry_after_secs(&resp), 2, "openDuration doubled");
    assert_eq!(rig.circuit_state().await, 2.0);

    // The second probe fails too: 4 s would be next, but maxOpenDuration caps it at 2 s.
    let resp = until_admitted(&rig, "/x", Duration::from_secs(10)).await;
    assert_upstream_response(&resp, 503, 1);
    let second_probe_at = up.requests()[3].at;
    assert_gap_at_least(
        probe_at,
        second_probe_at,
        Duration::from_secs(2),
        "second probe after the doubled open duration",
    );
    let resp = rig.get("/x").await;
    assert_sidecar_error(&resp, 503, "circuit_open");
    assert_eq!(retry_after_secs(&resp), 2, "capped by maxOpenDuration");

    up.set_default_action(Action::respond(200, "healed"));
    let resp = until_admitted(&rig, "/x", Duration::from_secs(10)).await;
    assert_upstream_response(&resp, 200, 1);
    let healed_at = up.requests()[4].at;
    assert_gap_at_least(
        second_probe_at,
        healed_at,
        Duration::from_secs(2),
        "third probe after the capped open duration",
    );
    assert!(
        healed_at - second_probe_at < Duration::from_millis(3500),
        "the open duration did not stop at maxOpenDuration: {:?}",
        healed_at - second_probe_at
    );
    assert_eq!(rig.circuit_state().await, 0.0);
    assert_upstream_response(&rig.get("/x").await, 200, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_lets_only_the_configured_probes_through() {
    let rig = Rig::start(
        Action::respond(503, "down"),
        json!({
            "retry": no_retries(),
            "circuitBreaker": {"consecutiveFailures": 1, "openDuration": "500ms",
                               "halfOpenRequests": 1},
        }),
    )
    .await;
    let up = rig.up();
    assert_upstream_response(&rig.get("/x").await, 503, 1);
    assert_eq!(rig.circuit_state().await, 2.0);
    // A slow but healthy upstream: the probe takes a while.
    up.set_default_action(Action::respond(200, "healed").delayed(Duration::from_millis(1500)));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let url = rig.url("/probe");
    let client = rig.client.clone();
    let probe = tokio::spawn(async move { client.get(&url).await });
    assert!(up.wait_for_count(2, Duration::from_secs(10)).await);
    assert_eq!(rig.circuit_state().await, 1.0, "half-open while probing");
    // The one allowed probe is out: others are refused meanwhile.
    let resp = rig.get("/other").await;
    assert_sidecar_error(&resp, 503, "circuit_open");
    assert!(retry_after_secs(&resp) >= 1);
    assert_eq!(up.count(), 2, "no second probe");
    let resp = probe.await.unwrap().unwrap();
    assert_upstream_response(&resp, 200, 1);
    assert_eq!(rig.circuit_state().await, 0.0);
    up.set_default_action(Action::respond(200, "fast"));
    assert_upstream_response(&rig.get("/after").await, 200, 1);
}

#[tokio::test]
async fn failure_rate_mode_trips_on_the_rate_over_minimum_requests() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": no_retries(),
            "circuitBreaker": {
                "failureRate": {"percent": 50, "window": "30s", "minimumRequests": 4},
                "openDuration": "30s",
            },
        }),
    )
    .await;
    let up = rig.up();
    up.script(
        "/r",
        vec![
            Action::respond(503, "a"),
            Action::respond(200, "b"),
            Action::respond(200, "c"),
            Action::respond(503, "d"),
        ],
    );
    // 1/1 failed, then 1/2, 1/3: under the minimum number of requests or under 50 %.
    for status in [503, 200, 200] {
        assert_upstream_response(&rig.get("/r").await, status, 1);
        assert_eq!(rig.circuit_state().await, 0.0, "closed after a {status}");
    }
    // 2/4 = 50 %: open, though there never were two failures in a row.
    assert_upstream_response(&rig.get("/r").await, 503, 1);
    assert_eq!(rig.circuit_state().await, 2.0);
    let resp = rig.get("/r").await;
    assert_sidecar_error(&resp, 503, "circuit_open");
    let ra = retry_after_secs(&resp);
    assert!((29..=30).contains(&ra), "Retry-After {ra} for a 30s open");
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn failure_rate_forgets_failures_older_than_the_window() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": no_retries(),
            "circuitBreaker": {
                "failureRate": {"percent": 50, "window": "1s", "minimumRequests": 3},
                "openDuration": "30s",
            },
        }),
    )
    .await;
    let up = rig.up();
    up.script(
        "/r",
        vec![Action::respond(503, "x"), Action::respond(503, "y")],
    );
    for _ in 0..2 {
        assert_upstream_response(&rig.get("/r").await, 503, 1);
    }
    assert_eq!(rig.circuit_state().await, 0.0, "under minimumRequests");
    // Once the failures have left the 1 s window, a success is 0 of 1, not 2 of 3.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for _ in 0..3 {
        assert_upstream_response(&rig.get("/r").await, 200, 1);
    }
    assert_eq!(rig.circuit_state().await, 0.0);
    assert_eq!(up.count(), 5);
}

#[tokio::test]
async fn throttling_and_client_errors_are_not_failures_but_timeouts_are() {
    let rig = Rig::start(
        Action::respond(200, "ok"),
        json!({
            "retry": no_retries(),
            "timeouts": {"perTry": "300ms"},
            "circuitBreaker": {"consecutiveFailures": 3, "openDuration": "30s"},
        }),
    )
    .await;
    let up = rig.up();
    up.script("/throttled", vec![Action::respond(429, "slow down"); 4]);
    up.script("/missing", vec![Action::respond(404, "nope"); 4]);
    for _ in 0..4 {
        assert_upstream_response(&rig.get("/throttled").await, 429, 1);
        assert_upstream_response(&rig.get("/missing").await, 404, 1);
    }
    assert_eq!(
        rig.circuit_state().await,
        0.0,
        "429 and 404 are not failures"
    );
    up.script(
        "/slow",
        vec![Action::respond(200, "late").delayed(Duration::from_secs(3)); 3],
    );
    for _ in 0..3 {
        assert_sidecar_error(&rig.get("/slow").await, 504, "timeout");
    }
    assert_eq!(rig.circuit_state().await, 2.0, "three timeouts in a row");
    assert_sidecar_error(&rig.get("/ok").await, 503, "circuit_open");
    assert_eq!(up.count(), 11);
}

/// Reads one response head (and its `content-length` body) from a raw connection; `None` if
/// the connection closed first.
async fn read_response(c: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Some(text);
            }
        }
    }
}

#[tokio::test]
async fn a_fail_fast_answer_keeps_the_apps_connection_usable() {
    use tokio::io::AsyncWriteExt;
    let (rig, _port) = Rig::dead_upstream(json!({
        "retry": no_retries(),
        "circuitBreaker": {"consecutiveFailures": 1, "openDuration": "60s"},
    }))
    .await;
    assert_sidecar_error(&rig.get("/trip").await, 502, "upstream_connect");

    // A POST whose body arrives after its head: answered circuit_open before the body is
    // read. The connection must still carry the next request.
    let mut c = tokio::net::TcpStream::connect(rig.sidecar.addr(0))
        .await
        .unwrap();
    c.write_all(b"POST /charges HTTP/1.1\r\nHost: localhost\r\ncontent-length: 16\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    c.write_all(b"{\"amount\": 100}\n").await.unwrap();
    let first = read_response(&mut c).await.expect("an answer to the POST");
    assert!(first.contains("x-attache-error: circuit_open"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    c.write_all(b"GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut c)
        .await
        .expect("the connection was closed after the fail-fast answer, without saying so");
    assert!(second.contains("x-attache-error: circuit_open"), "{second}");

    // A body that cannot be drained (chunked, never finished): the answer says so.
    let mut c = tokio::net::TcpStream::connect(rig.sidecar.addr(0))
        .await
        .unwrap();
    c.write_all(
        b"POST /upload HTTP/1.1\r\nHost: localhost\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut c).await.expect("an answer");
    assert!(answer.contains("x-attache-error: circuit_open"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
}

/// `consecutiveFailures` counts attempts, as Envoy's outlier detection does: one request whose
/// three attempts all failed opens a breaker set to 3 (the README's reference says so).
#[tokio::test]
async fn consecutive_failures_count_attempts_retries_included() {
    let rig = Rig::start(
        Action::respond(503, "down"),
        json!({
            "retry": {"maxAttempts": 3, "backoff": {"base": "1ms", "max": "5ms"}},
            "circuitBreaker": {"consecutiveFailures": 3, "openDuration": "30s"},
        }),
    )
    .await;
    assert_upstream_response(&rig.get("/pay").await, 503, 3);
    assert_eq!(
        rig.circuit_state().await,
        2.0,
        "open after one request of 3 failed attempts"
    );
    assert_sidecar_error(&rig.get("/pay").await, 503, "circuit_open");
    assert_eq!(rig.up().count(), 3);
}
