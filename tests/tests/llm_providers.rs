//! LLM APIs through the real sidecar (README, "Calling LLM APIs"): an HTTPS upstream imitating
//! OpenAI and Anthropic (JSON answers and server-sent events with usage in the final event,
//! their limit headers). Tokens are counted exactly, the token budget holds across requests,
//! streams are never cut by `timeouts.request` (only by `timeouts.idle`) nor retried after
//! their first byte, and every form of limit header holds the integration.

use std::time::{Duration, Instant, SystemTime};

use attache_tests::resilience_harness::{assert_gap_at_least, assert_sidecar_error, Rig};
use attache_tests::Action;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

fn openai(extra: Value) -> Value {
    let mut p = json!({"llm": {"provider": "openai"}});
    merge(&mut p, extra);
    p
}

fn anthropic(extra: Value) -> Value {
    let mut p = json!({"llm": {"provider": "anthropic"}});
    merge(&mut p, extra);
    p
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        for (k, v) in b {
            match (a.get_mut(&k), v) {
                (Some(Value::Object(x)), Value::Object(y)) => x.extend(y),
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
}

async fn tokens(rig: &Rig, model: &str, kind: &str) -> f64 {
    rig.metric(
        "attache_llm_tokens_total",
        &[("model", model), ("kind", kind)],
    )
    .await
}

/// Server-sent events, each `data:` line given as JSON, sent `every` apart.
fn sse(events: &[Value], every: Duration) -> Action {
    Action::events(
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let delay = if i == 0 { Duration::ZERO } else { every };
                (delay, format!("data: {e}\n\n"))
            })
            .collect(),
    )
}

/// A streamed POST through the sidecar: the status, each chunk with its arrival time, and
/// how the body ended (`Err` with the error's text if it was cut).
async fn stream_post(
    rig: &Rig,
    path: &str,
    body: &str,
    stop_after: Option<usize>,
) -> (u16, Vec<(Instant, Bytes)>, Result<(), String>) {
    let addr = rig.sidecar.addr(0);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    loop {
        if stop_after.is_some_and(|n| chunks.len() >= n) {
            return (status, chunks, Ok(())); // the app walks away: the body is dropped
        }
        match body.frame().await {
            None => return (status, chunks, Ok(())),
            Some(Err(e)) => return (status, chunks, Err(e.to_string())),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    chunks.push((Instant::now(), data));
                }
            }
        }
    }
}

#[tokio::test]
async fn tokens_are_counted_exactly_from_json_and_from_streams() {
    let rig = Rig::start(Action::respond(404, "unscripted"), openai(json!({}))).await;
    let up = rig.up();
    up.script(
        "/v1/chat/completions",
        vec![
            Action::json(
                200,
                json!({"model": "gpt-4o", "choices": [],
                    "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}}),
            ),
            sse(
                &[
                    json!({"model": "gpt-4o", "choices": [{"delta": {"content": "Hi"}}]}),
                    json!({"model": "gpt-4o", "choices": [],
                        "usage": {"prompt_tokens": 7, "completion_tokens": 3}}),
                ],
                Duration::from_millis(20),
            ),
        ],
    );
    let resp = rig
        .post("/v1/chat/completions", r#"{"model":"gpt-4o"}"#)
        .await;
    assert_eq!(resp.status, 200);
    let (status, chunks, end) = stream_post(
        &rig,
        "/v1/chat/completions",
        r#"{"model":"gpt-4o","stream":true}"#,
        None,
    )
    .await;
    assert_eq!((status, end), (200, Ok(())));
    let text: Vec<u8> = chunks.iter().flat_map(|(_, c)| c.to_vec()).collect();
    assert!(
        String::from_utf8_lossy(&text).contains("\"completion_tokens\":3"),
        "the stream reaches the app unchanged"
    );
    assert_eq!(tokens(&rig, "gpt-4o", "input").await, 26.0);
    assert_eq!(tokens(&rig, "gpt-4o", "output").await, 13.0);
}

#[tokio::test]
async fn anthropic_streams_count_input_from_the_start_and_the_last_output() {
    let rig = Rig::start(Action::respond(404, "unscripted"), anthropic(json!({}))).await;
    let events = [
        json!({"type": "message_start", "message": {"model": "claude-x",
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        json!({"type": "content_block_delta", "delta": {"text": "Hello"}}),
        json!({"type": "message_delta", "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ];
    rig.up().script(
        "/v1/messages",
        vec![sse(&events, Duration::from_millis(10))],
    );
    let (status, _, end) = stream_post(&rig, "/v1/messages", "{}", None).await;
    assert_eq!((status, end), (200, Ok(())));
    assert_eq!(tokens(&rig, "claude-x", "input").await, 25.0);
    assert_eq!(tokens(&rig, "claude-x", "output").await, 15.0);

    // The app walks away after the first event: what arrived (the input) is still counted.
    rig.up().script(
        "/v1/messages",
        vec![sse(&events, Duration::from_millis(500))],
    );
    let (_, chunks, _) = stream_post(&rig, "/v1/messages", "{}", Some(1)).await;
    assert_eq!(chunks.len(), 1);
    let counted = async {
        while tokens(&rig, "claude-x", "input").await < 50.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), counted)
        .await
        .expect("the aborted stream's input tokens are counted");
    assert_eq!(tokens(&rig, "claude-x", "output").await, 16.0);
}

#[tokio::test]
async fn the_token_budget_settles_real_usage_and_refuses_when_spent() {
    // 6000 tokens a minute (100 a second). The first request is estimated small (max_tokens
    // 100) but uses 5,900: the settlement takes the difference, so the next one is refused.
    let policies = openai(json!({
        "llm": {"tokensPerMinute": 6000},
        "rateLimit": {"requests": 1000, "onLimit": "reject"},
    }));
    let rig = Rig::start(Action::respond(404, "unscripted"), policies).await;
    let usage = |input: u64, output: u64| {
        Action::json(
            200,
            json!({"model": "gpt-4o", "usage": {"prompt_tokens": input, "completion_tokens": output}}),
        )
    };
    rig.up()
        .script("/v1/chat/completions", vec![usage(900, 5000), usage(1, 1)]);
    let body = r#"{"model":"gpt-4o","max_tokens":100}"#;
    assert_eq!(rig.post("/v1/chat/completions", body).await.status, 200);
    let refused = rig.post("/v1/chat/completions", body).await;
    assert_sidecar_error(&refused, 429, "token_limited");
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&wait),
        "about 1 s of refill is missing, got Retry-After {wait}"
    );
    assert_eq!(rig.up().requests_for("/v1/chat/completions").len(), 1);
    assert_eq!(rig.rate_limited("rejected").await, 1.0);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(rig.post("/v1/chat/completions", body).await.status, 200);
    assert_eq!(tokens(&rig, "gpt-4o", "output").await, 5001.0);
}

#[tokio::test]
async fn a_long_stream_outlives_the_request_timeout_and_a_silent_one_is_cut_by_idle() {
    let policies = openai(json!({
        "timeouts": {"perTry": "1s", "request": "1s", "idle": "1500ms"},
        "retry": {"maxAttempts": 3, "retryOn": ["reset", "5xx"]},
    }));
    let rig = Rig::start(Action::respond(404, "unscripted"), policies).await;
    let ticks: Vec<Value> = (0..7).map(|i| json!({"tick": i})).collect();
    rig.up()
        .script("/live", vec![sse(&ticks, Duration::from_millis(500))]);
    let started = Instant::now();
    let (status, chunks, end) = stream_post(&rig, "/live", "{}", None).await;
    assert_eq!((status, end), (200, Ok(())));
    assert_eq!(chunks.len(), 7, "a 3 s stream is whole despite request: 1s");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_gap_at_least(
        chunks[0].0,
        chunks[6].0,
        Duration::from_millis(2900),
        "chunks pass through as they come, not buffered",
    );

    // Silent after the first event: cut after `idle`, and never sent again (the app has
    // bytes of it already).
    rig.up().script(
        "/silent",
        vec![Action::events(vec![
            (Duration::ZERO, "data: {\"tick\":0}\n\n".into()),
            (Duration::from_secs(10), "data: {\"tick\":1}\n\n".into()),
        ])],
    );
    let started = Instant::now();
    let (status, chunks, end) = stream_post(&rig, "/silent", "{}", None).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(chunks.len(), 1);
    assert!(end.is_err(), "the silent stream is cut, not ended cleanly");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "cut after timeouts.idle, took {took:?}"
    );
    assert_eq!(
        rig.up().requests_for("/silent").len(),
        1,
        "no retry after the first byte"
    );
    assert_eq!(rig.attempts("idle_timeout").await, 1.0);
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_is_not_retried() {
    let policies = openai(json!({"retry": {"maxAttempts": 3, "retryOn": ["reset"]}}));
    let rig = Rig::start(Action::respond(404, "unscripted"), policies).await;
    rig.up().script(
        "/cut",
        vec![Action::ResetAfterHeaders, Action::respond(200, "again")],
    );
    let (status, _, end) = stream_post(&rig, "/cut", "{}", None).await;
    assert_eq!(status, 200);
    assert!(end.is_err(), "the app sees the cut");
    assert_eq!(rig.up().requests_for("/cut").len(), 1);
}

/// The gap between two attempts (or two requests) at the upstream.
fn gap(rig: &Rig, key: &str) -> Duration {
    let seen = rig.up().requests_for(key);
    assert_eq!(seen.len(), 2, "{key}: two requests");
    seen[1].at - seen[0].at
}

#[tokio::test]
async fn every_form_of_limit_header_holds_the_integration() {
    let queue = json!({
        "rateLimit": {"requests": 1000, "onLimit": "queue", "maxQueueWait": "10s"},
        "retry": {"maxRetryAfter": "1500ms"},
    });
    // OpenAI: tokens used up, reset as a Go duration; bounded by maxRetryAfter (1.5 s, not 6 min).
    let rig = Rig::start(Action::respond(200, "{}"), openai(queue.clone())).await;
    rig.up().script(
        "/o",
        vec![
            Action::respond(200, "{}")
                .with_header("x-ratelimit-remaining-requests", "99")
                .with_header("x-ratelimit-remaining-tokens", "0")
                .with_header("x-ratelimit-reset-tokens", "6m0s"),
            Action::respond(200, "{}"),
        ],
    );
    rig.post("/o", "{}").await;
    rig.post("/o", "{}").await;
    let g = gap(&rig, "/o");
    assert!(
        g >= Duration::from_millis(1400) && g < Duration::from_secs(4),
        "held for maxRetryAfter: {g:?}"
    );
    assert_eq!(
        rig.metric("attache_llm_ratelimit_remaining", &[("kind", "requests")])
            .await,
        99.0
    );

    // Anthropic: an RFC 3339 reset about 1 s ahead.
    let rig = Rig::start(Action::respond(200, "{}"), anthropic(queue.clone())).await;
    let reset = jiff::Timestamp::try_from(SystemTime::now() + Duration::from_millis(1200))
        .unwrap()
        .to_string();
    rig.up().script(
        "/a",
        vec![
            Action::respond(200, "{}")
                .with_header("anthropic-ratelimit-requests-remaining", "0")
                .with_header("anthropic-ratelimit-requests-reset", &reset),
            Action::respond(200, "{}"),
        ],
    );
    rig.post("/a", "{}").await;
    rig.post("/a", "{}").await;
    let g = gap(&rig, "/a");
    assert!(
        g >= Duration::from_millis(900) && g < Duration::from_secs(3),
        "held until the reset: {g:?}"
    );

    // retry-after-ms is preferred over Retry-After for the next attempt.
    rig.up().script(
        "/ms",
        vec![
            Action::respond(429, "slow down")
                .with_header("retry-after-ms", "300")
                .with_header("retry-after", "1"),
            Action::respond(200, "{}"),
        ],
    );
    let resp = rig.get("/ms").await;
    assert_eq!(resp.status, 200);
    let g = gap(&rig, "/ms");
    assert!(
        g >= Duration::from_millis(280) && g < Duration::from_millis(900),
        "retry after 300 ms, not 1 s: {g:?}"
    );
}
