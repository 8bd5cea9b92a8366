//! Admission latency of the running webhook: 10,000 AdmissionReviews over HTTPS, measured at
//! the client, the way the API server calls it (one kept-alive TLS connection).
//!
//! Not part of the normal run (it is a measurement, and wants a release build):
//!
//! ```text
//! cargo test -p attache-operator --release --test admission_latency -- --ignored --nocapture
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use attache_operator::admission::{
    certs::CertPolicy, review::review, AdmissionResult, InjectorSettings, StaticView,
};

mod admission_support;
use admission_support::*;

const REQUESTS: usize = 10_000;
const WARMUP: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what}: n={} p50={:.0}us p90={:.0}us p99={:.0}us max={:.0}us ({:.0} req/s)",
        samples.len(),
        us(percentile(&samples, 0.50)),
        us(percentile(&samples, 0.90)),
        us(percentile(&samples, 0.99)),
        us(*samples.last().unwrap()),
        samples.len() as f64 / elapsed.as_secs_f64(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --release -- --ignored --nocapture"]
async fn admission_latency_over_https() {
    let material = material_at(SystemTime::now(), &CertPolicy::default());
    let certs = serving(&material);
    let view = Arc::new(
        StaticView::default()
            .with_namespace("shop", [])
            .with_integrations("shop", ["openai", "stripe", "twilio"]),
    );
    let settings = InjectorSettings::default();
    let body = serde_json::to_vec(&review_value("shop")).unwrap();
    println!(
        "AdmissionReview body: {} bytes (a Deployment's pod, 3 containers, 3 integrations)",
        body.len()
    );

    // The pure decision alone, for reference.
    let started = Instant::now();
    let mut pure = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let r = review(&body, view.as_ref(), &settings);
        pure.push(t.elapsed());
        assert_eq!(r.result, AdmissionResult::Injected);
    }
    report("review() in process", pure, started.elapsed());

    let server = start(view, certs, settings).await;
    let (mut client, _) = connect_h1(server.addr, &material.ca_bundle).await;
    for _ in 0..WARMUP {
        let (status, _) = send(&mut client, post_mutate(body.clone())).await;
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let t = Instant::now();
        let (status, bytes) = send(&mut client, post_mutate(body.clone())).await;
        samples.push(t.elapsed());
        assert_eq!(status, 200);
        assert!(!bytes.is_empty());
    }
    report(
        "POST /mutate over HTTPS (HTTP/1.1, one connection)",
        samples,
        started.elapsed(),
    );
    assert_eq!(
        server.metrics.count(AdmissionResult::Injected) as usize,
        REQUESTS + WARMUP
    );
}
