//! The rendered sidecar config (`DIR/NAME/config.json`): any JSON that deserialises must build
//! the integration's policies (breaker, rate gate, bulkhead, budget) without a panic, whatever
//! the durations and counts say.
#![no_main]
#![forbid(unsafe_code)]

use attache_api::SidecarConfig;
use libfuzzer_sys::fuzz_target;
use prometheus_client::metrics::gauge::Gauge;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = serde_json::from_slice::<SidecarConfig>(data) else {
        return;
    };
    if let Some(rl) = &cfg.rate_limit {
        let _ = rl.pod_interval();
    }
    let policies = attache_sidecar::resilience::Policies::new(&cfg, Gauge::default());
    let _ = policies.breaker.open_for();
    let _ = policies.budget.try_withdraw();
    let _ = policies
        .gate
        .hold_for(cfg.retry.max_retry_after.as_duration());
});
