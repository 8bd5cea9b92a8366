//! Micro-benchmarks of what every request pays for, without I/O: request preparation (header
//! hygiene, upstream URI, credentials), the admission policies (breaker, rate gate, budget,
//! bulkhead) and the retry decision.

use std::{collections::BTreeMap, hint::black_box, time::Duration};

use attache_api::{
    config::{
        AuthConfig, BreakerMode, CircuitBreakerConfig, ConcurrencyConfig, RateLimitConfig,
        RetryConfig,
    },
    defaults as d,
    spec::{OnLimit, RateLimitScope},
    KubeDuration, SecretBytes,
};
use attache_sidecar::{
    credentials::Credentials,
    proxy::headers::strip_hop_by_hop,
    resilience::{
        breaker::Breaker, budget::RetryBudget, bulkhead::Bulkhead, ratelimit::RateGate,
        retry::retry_reason,
    },
    upstream::AttemptOutcome,
};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, StatusCode};
use prometheus_client::metrics::gauge::Gauge;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn request_preparation(c: &mut Criterion) {
    attache_sidecar::init_crypto();
    let rt = runtime();
    let files = BTreeMap::from([(
        "auth-credential".to_string(),
        SecretBytes::new("sk_live_0123456789abcdef"),
    )]);
    let client = {
        let _guard = rt.enter();
        attache_sidecar::upstream::UpstreamClient::new(attache_sidecar::upstream::Connector::new(
            std::sync::Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
            Duration::from_secs(1),
            None,
            false,
        ))
    };
    let creds = Credentials::from_config(
        &AuthConfig::ApiKey {
            header: "Authorization".into(),
            prefix: "Bearer ".into(),
        },
        &files,
        &client,
    )
    .expect("credentials");
    c.bench_function("prepare: hop-by-hop + uri + api key", |b| {
        b.to_async(&rt).iter(|| async {
            let req = Request::post("/v1/charges?expand=customer")
                .header("host", "127.0.0.1:15001")
                .header("content-type", "application/json")
                .header("connection", "keep-alive")
                .header("authorization", "Bearer app")
                .header("user-agent", "bench/1.0")
                .body(())
                .expect("request");
            let (mut parts, _) = req.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.uri = format!("https://api.stripe.com:443{}", parts.uri)
                .parse()
                .expect("uri");
            creds.apply(&mut parts).await.expect("applied");
            black_box(parts)
        })
    });
}

fn policies(c: &mut Criterion) {
    let rt = runtime();
    let breaker = Breaker::new(
        &CircuitBreakerConfig {
            trip: BreakerMode::ConsecutiveFailures { failures: 5 },
            open_duration: KubeDuration::from_secs(30),
            max_open_duration: KubeDuration::from_secs(300),
            half_open_requests: 1,
        },
        Gauge::default(),
    );
    c.bench_function("breaker: admit + record success", |b| {
        b.iter(|| {
            let ticket = breaker.admit().expect("closed");
            black_box(ticket.record(false))
        })
    });
    let gate = RateGate::new(
        Some(&RateLimitConfig {
            requests: 1_000_000_000,
            per: KubeDuration::from_secs(1),
            burst: 1_000_000,
            scope: RateLimitScope::Pod,
            on_limit: OnLimit::Reject,
            max_queue_wait: KubeDuration::from_secs(1),
            pods: 1,
            global: None,
        }),
        Duration::from_secs(5),
    );
    c.bench_function("rate gate: acquire (under the limit)", |b| {
        b.to_async(&rt).iter(|| async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            black_box(gate.acquire(deadline).await.expect("admitted"))
        })
    });
    let budget = RetryBudget::new(0.2, 10);
    c.bench_function("retry budget: deposit", |b| b.iter(|| budget.deposit()));
    let bulkhead = Bulkhead::new(&ConcurrencyConfig {
        max_in_flight: 100,
        on_limit: OnLimit::Reject,
        max_queue_wait: KubeDuration::from_secs(1),
    });
    c.bench_function("bulkhead: acquire + release", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bulkhead.acquire().await.expect("slot")) })
    });
    let retry = RetryConfig {
        max_attempts: 3,
        backoff_base: d::BACKOFF_BASE,
        backoff_max: d::BACKOFF_MAX,
        retry_on: d::RETRY_ON.to_vec(),
        respect_retry_after: true,
        max_retry_after: d::MAX_RETRY_AFTER,
        idempotency_header: "Idempotency-Key".into(),
        generate_idempotency_key: false,
        budget_ratio: 0.2,
        budget_min_per_second: 10,
        replay_buffer_bytes: 65536,
    };
    c.bench_function("retry decision: 503", |b| {
        b.iter(|| {
            black_box(retry_reason(
                &retry,
                AttemptOutcome::Status(StatusCode::SERVICE_UNAVAILABLE),
                true,
            ))
        })
    });
}

criterion_group!(benches, request_preparation, policies);
criterion_main!(benches);
