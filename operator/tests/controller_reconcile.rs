//! The controller against the in-process fake API server (tests/support/fake_api.rs): the
//! real kube client, the real kube-runtime `Controller`, watches and all; only the API server
//! is fake.
//!
//! Only what a real API server cannot do on demand is left here: injected API failures, and
//! timing (test retry and damping settings) that the chart's production settings rule out.
//! Everything else runs against a real kube-apiserver in tests/real_cluster/ (scenarios
//! `every_example_reconciles`, `integration_lifecycle` and those of `scenarios/faults.rs`).

mod support;

use std::time::Duration;

use http::Method;
use serde_json::json;
use support::*;

const NS: &str = "payments";

fn stripe() -> serde_json::Value {
    xint(
        NS,
        "stripe",
        api_key_spec("https://api.stripe.com", "stripe-key"),
    )
}

#[tokio::test]
async fn api_failures_are_retried_with_backoff() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "stripe-key", &[("api-key", "sk")]))
        .await;
    user.create(XINTS, stripe()).await;
    fake.inject_fault(
        Some("operator"),
        Method::PATCH,
        "/configmaps/attache-stripe",
        500,
        2,
    );
    let op = Operator::start(&fake);
    eventually("Ready=True after the failures", || {
        (ready(&fake.get(XINTS, NS, "stripe")?)?.0 == "True").then_some(())
    })
    .await;
    assert_eq!(op.reconciliations("api_apply"), 2);
    let failed: Vec<_> = fake
        .requests(Some("operator"))
        .into_iter()
        .filter(|r| r.status == 500)
        .collect();
    assert_eq!(failed.len(), 2);
    op.stop().await;
}

#[tokio::test]
async fn status_counts_injected_pods_and_the_shared_limit_follows_damped() {
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(SECRETS, secret(NS, "openai-key", &[("api-key", "sk")]))
        .await;
    let mut spec = api_key_spec("https://api.openai.com", "openai-key");
    spec["rateLimit"] = json!({"requests": 100, "burst": 100, "scope": "shared"});
    user.create(XINTS, xint(NS, "openai", spec)).await;
    user.create(PODS, injected_pod(NS, "shop-1", "openai,stripe"))
        .await;
    user.create(PODS, injected_pod(NS, "shop-2", "openai"))
        .await;
    // Neither counts: another namespace, and a pod the webhook did not inject.
    user.create(PODS, injected_pod("billing", "shop-1", "openai"))
        .await;
    let mut plain = injected_pod(NS, "plain", "openai");
    plain["metadata"]["labels"] = json!({"app": "shop"});
    user.create(PODS, plain).await;

    let op = Operator::start(&fake);
    let share = |fake: &FakeApi| {
        let cm = fake.get(CONFIG_MAPS, NS, "attache-openai")?;
        let c = config(&cm);
        Some((
            c["rateLimit"]["pods"].as_u64()?,
            c["rateLimit"]["burst"].as_u64()?,
        ))
    };
    eventually("pods: 2", || {
        (fake.get(XINTS, NS, "openai")?["status"]["pods"] == 2).then_some(())
    })
    .await;
    assert_eq!(share(&fake), Some((2, 50)));

    // A third pod: counted, and the share shrinks at once.
    user.create(PODS, injected_pod(NS, "shop-3", "openai"))
        .await;
    eventually("pods: 3, divided by 3", || {
        let pods = fake.get(XINTS, NS, "openai")?["status"]["pods"].as_u64()?;
        (pods == 3 && share(&fake)? == (3, 33)).then_some(())
    })
    .await;

    // Two pods go: the status says so at once, the share grows only after the window (1 s).
    user.delete(PODS, NS, "shop-3").await;
    user.delete(PODS, NS, "shop-2").await;
    let dropped = tokio::time::Instant::now();
    eventually("pods: 1", || {
        (fake.get(XINTS, NS, "openai")?["status"]["pods"] == 1).then_some(())
    })
    .await;
    assert_eq!(share(&fake), Some((3, 33)), "decreases wait for the window");
    eventually("divided by 1 after the window", || {
        (share(&fake)? == (1, 100)).then_some(())
    })
    .await;
    assert!(dropped.elapsed() >= Duration::from_millis(900));
    assert_within_rbac(&fake, "operator");
    op.stop().await;
}
