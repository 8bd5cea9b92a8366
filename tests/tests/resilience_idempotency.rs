//! Idempotency through the real sidecar (README): a POST or PATCH that reached the upstream
//! is sent again only when it carries the idempotency-key header, whether the app set it or the
//! sidecar generated it (`generate: true`), and the key stays the same on every attempt, so a
//! retried payment is never charged twice. Bodies beyond the replay buffer are sent once.

use attache_tests::resilience_harness::{assert_upstream_response, Rig};
use attache_tests::{Action, Observed};
use bytes::Bytes;
use http::Request;
use serde_json::json;

fn policies(idempotency_key: serde_json::Value) -> serde_json::Value {
    json!({
        "retry": {
            "maxAttempts": 3,
            "backoff": {"base": "5ms", "max": "20ms"},
            "idempotencyKey": idempotency_key,
        },
        "circuitBreaker": {"consecutiveFailures": 100},
    })
}

/// A rig whose upstream answers 200 to anything unscripted, with [`policies`].
async fn start(idempotency_key: serde_json::Value) -> Rig {
    Rig::start(Action::respond(200, "ok"), policies(idempotency_key)).await
}

fn flaky_then_created() -> Vec<Action> {
    vec![
        Action::respond(503, "busy"),
        Action::respond(503, "busy"),
        Action::json(201, json!({"id": "ch_1"})),
    ]
}

fn keys(seen: &[Observed], header: &str) -> Vec<Option<String>> {
    seen.iter()
        .map(|o| o.header(header).map(str::to_string))
        .collect()
}

fn keyed_post(rig: &Rig, path: &str, header: &str, key: &str) -> Request<Bytes> {
    Request::post(rig.url(path))
        .header(header, key)
        .body(Bytes::from_static(b"{\"amount\": 5}"))
        .unwrap()
}

#[tokio::test]
async fn unkeyed_post_and_patch_are_sent_once_when_generate_is_false() {
    let rig = start(json!({"generate": false})).await;
    let up = rig.up();
    up.script("/charge", flaky_then_created());
    let resp = rig.post("/charge", r#"{"amount": 5}"#).await;
    assert_upstream_response(&resp, 503, 1);
    let seen = up.requests_for("/charge");
    assert_eq!(seen.len(), 1, "exactly one upstream attempt");
    assert_eq!(
        keys(&seen, "idempotency-key"),
        vec![None],
        "no key invented"
    );

    up.script("/patch", flaky_then_created());
    let resp = rig.patch("/patch", b"{}").await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(up.requests_for("/patch").len(), 1);
    assert_eq!(rig.retries("503").await, 0.0);
}

#[tokio::test]
async fn generated_key_is_kept_across_attempts_and_fresh_per_request() {
    let rig = start(json!({"generate": true})).await;
    let up = rig.up();
    up.script("/charge", flaky_then_created());
    let resp = rig.post("/charge", r#"{"amount": 5}"#).await;
    assert_upstream_response(&resp, 201, 3);
    let seen = up.requests_for("/charge");
    assert_eq!(seen.len(), 3, "three attempts");
    let first = seen[0]
        .header("idempotency-key")
        .expect("the sidecar added an Idempotency-Key")
        .to_string();
    assert!(first.len() >= 16, "a key worth the name: {first:?}");
    assert_eq!(
        keys(&seen, "idempotency-key"),
        vec![Some(first.clone()); 3],
        "one key across all attempts"
    );
    assert!(seen.iter().all(|o| o.text() == r#"{"amount": 5}"#));

    // A reset after the request went out: the keyed POST is safe to send again, same key.
    up.script(
        "/reset",
        vec![
            Action::ResetBeforeResponse,
            Action::json(201, json!({"id": "ch_2"})),
        ],
    );
    let resp = rig.post("/reset", r#"{"amount": 7}"#).await;
    assert_upstream_response(&resp, 201, 2);
    let seen = up.requests_for("/reset");
    assert_eq!(seen.len(), 2);
    let second = seen[0].header("idempotency-key").unwrap().to_string();
    assert_eq!(seen[1].header("idempotency-key"), Some(second.as_str()));
    assert_ne!(first, second, "each request gets its own key");

    // PATCH gets a key too; GET (idempotent already) does not.
    up.script("/patch", vec![Action::respond(503, "busy")]);
    let resp = rig.patch("/patch", b"{}").await;
    assert_upstream_response(&resp, 200, 2);
    let seen = up.requests_for("/patch");
    assert_eq!(seen.len(), 2);
    assert!(seen[0].header("idempotency-key").is_some());
    assert_eq!(
        seen[0].header("idempotency-key"),
        seen[1].header("idempotency-key")
    );
    assert_upstream_response(&rig.get("/read").await, 200, 1);
    assert_eq!(up.requests_for("/read")[0].header("idempotency-key"), None);

    // The app's own key is kept, not replaced by a generated one.
    up.script("/own", flaky_then_created());
    let resp = rig
        .send(keyed_post(&rig, "/own", "Idempotency-Key", "app-key-42"))
        .await;
    assert_upstream_response(&resp, 201, 3);
    assert_eq!(
        keys(&up.requests_for("/own"), "idempotency-key"),
        vec![Some("app-key-42".to_string()); 3]
    );
}

#[tokio::test]
async fn post_carrying_the_configured_key_header_is_retried_with_that_key() {
    let rig = start(json!({"header": "X-Request-Key", "generate": false})).await;
    let up = rig.up();
    up.script("/charge", flaky_then_created());
    let resp = rig
        .send(keyed_post(&rig, "/charge", "X-Request-Key", "order-7"))
        .await;
    assert_upstream_response(&resp, 201, 3);
    assert_eq!(
        keys(&up.requests_for("/charge"), "x-request-key"),
        vec![Some("order-7".to_string()); 3]
    );

    // The default header name means nothing when another one is configured.
    up.script("/other", flaky_then_created());
    let resp = rig
        .send(keyed_post(&rig, "/other", "Idempotency-Key", "order-8"))
        .await;
    assert_upstream_response(&resp, 503, 1);
    assert_eq!(up.requests_for("/other").len(), 1);
}

#[tokio::test]
async fn bodies_beyond_the_replay_buffer_are_sent_once() {
    let rig = start(json!({"generate": true})).await;
    let up = rig.up();
    // 60 KiB fits the 64 KiB replay buffer: retried, same bytes every time.
    let small = Bytes::from(vec![b's'; 60 * 1024]);
    up.script(
        "/small",
        vec![Action::respond(503, "busy"), Action::respond(201, "ok")],
    );
    let resp = rig
        .send(
            Request::post(rig.url("/small"))
                .body(small.clone())
                .unwrap(),
        )
        .await;
    assert_upstream_response(&resp, 201, 2);
    let seen = up.requests_for("/small");
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|o| o.body == small), "body replayed intact");

    // 100 KiB does not: streamed once, the 503 goes back even though the POST is keyed.
    let big = Bytes::from(vec![b'b'; 100 * 1024]);
    up.script(
        "/big",
        vec![Action::respond(503, "busy"), Action::respond(201, "ok")],
    );
    let resp = rig
        .send(Request::post(rig.url("/big")).body(big.clone()).unwrap())
        .await;
    assert_upstream_response(&resp, 503, 1);
    let seen = up.requests_for("/big");
    assert_eq!(
        seen.len(),
        1,
        "a body beyond the replay buffer is not retried"
    );
    assert_eq!(seen[0].body, big, "streamed without losing a byte");
}
