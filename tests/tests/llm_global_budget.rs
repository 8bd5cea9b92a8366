//! An LLM token budget with `rateLimit.scope: global`: two real sidecar processes share one
//! token bucket in a real `redis-server`, so what one pod's answer used is charged for both;
//! the same two pods with `scope: pod` (the control) each have a whole budget. Skipped with a
//! message when redis-server is missing, unless ATTACHE_TEST_TOOLS=required.

use std::time::Duration;

use attache_tests::{
    assert_sidecar_error_for, client::post_json, xint, Action, LocalSetup, RedisServer, Sidecar,
    Upstream,
};
use serde_json::{json, Value};

fn spec(upstream: &Upstream, scope: &str) -> Value {
    json!({
        "upstream": {"url": upstream.url(), "allowInsecure": true},
        "retry": {"maxAttempts": 1},
        "rateLimit": {"requests": 1000, "scope": scope, "onLimit": "reject"},
        "llm": {"provider": "openai", "tokensPerMinute": 6000},
    })
}

/// POSTs a small chat request (estimate ~100 tokens) to integration `index` of `sidecar`.
async fn chat(sidecar: &Sidecar, index: usize) -> attache_tests::Response {
    post_json(
        &format!("{}/v1/chat/completions", sidecar.url(index)),
        &json!({"model": "m", "max_tokens": 100}),
    )
    .await
    .expect("the sidecar answers")
}

#[tokio::test]
async fn a_global_token_budget_is_one_bucket_for_every_pod() {
    let Some(redis) = RedisServer::start("llm global token budget").await else {
        return;
    };
    // Every answer says it used 5,900 tokens: most of the 6,000 a minute.
    let up = Upstream::builder()
        .default_action(Action::json(
            200,
            json!({"model": "m", "usage": {"prompt_tokens": 900, "completion_tokens": 5000}}),
        ))
        .start()
        .await;
    let mut setup = LocalSetup::new();
    // Sorted by name: `global` is integration 0, `pod` integration 1.
    setup.manifest(&[
        xint("global", spec(&up, "global")),
        xint("pod", spec(&up, "pod")),
    ]);
    let args = ["--redis-url", &redis.url(), "--log-level", "warn"];
    let a = setup.start_with(&args).await;
    let b = setup.start_with(&args).await;

    // Pod A's answer used 5,900 tokens of the shared minute: pod B is refused.
    assert_eq!(chat(&a, 0).await.status, 200);
    let refused = async {
        for _ in 0..50 {
            let resp = chat(&b, 0).await;
            if resp.status == 429 {
                return resp;
            }
            // The settlement reaches Redis in the background, within milliseconds.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("pod B was never refused: the budget is not shared");
    };
    let resp = tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .expect("in time");
    assert_sidecar_error_for(&resp, 429, "token_limited", "global");
    assert!(resp.header("retry-after").is_some());

    // The control: with scope pod each sidecar has its own 6,000.
    assert_eq!(chat(&a, 1).await.status, 200);
    assert_eq!(chat(&b, 1).await.status, 200, "pod B's own budget is whole");
    assert_eq!(chat(&a, 1).await.status, 429, "pod A's own budget is spent");
}
