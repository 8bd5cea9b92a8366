//! `attache_webhook_admissions_total{result}` and `attache_webhook_admission_duration_seconds`.
//!
//! The webhook owns its counter; whoever owns the operator's `/metrics` registry adds it with
//! [`AdmissionMetrics::register`].

use std::fmt::Write as _;

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// How an admission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdmissionResult {
    /// The pod got the sidecar.
    Injected,
    /// Not selected (no opt-in, opted out, protected namespace, not a pod CREATE).
    Skipped,
    /// The pod had the sidecar already.
    AlreadyInjected,
    /// Refused, e.g. a missing integration.
    Denied,
    /// The request could not be answered (unreadable body, caches not synced yet).
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Labels {
    result: AdmissionResult,
}

/// The webhook's counters; clones share them.
#[derive(Debug, Clone)]
pub struct AdmissionMetrics {
    admissions: Family<Labels, Counter>,
    /// From the request head to the answer (body read, review, patch built): the operator's
    /// part of the API server's webhook call, in buckets fine enough for a 2 ms target.
    duration: Histogram,
}

impl Default for AdmissionMetrics {
    fn default() -> Self {
        Self {
            admissions: Family::default(),
            // 50 µs .. ~0.8 s.
            duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
        }
    }
}

// === impl AdmissionResult ===

impl AdmissionResult {
    pub const ALL: [AdmissionResult; 5] = [
        AdmissionResult::Injected,
        AdmissionResult::Skipped,
        AdmissionResult::AlreadyInjected,
        AdmissionResult::Denied,
        AdmissionResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AdmissionResult::Injected => "injected",
            AdmissionResult::Skipped => "skipped",
            AdmissionResult::AlreadyInjected => "already_injected",
            AdmissionResult::Denied => "denied",
            AdmissionResult::Error => "error",
        }
    }
}

impl EncodeLabelValue for AdmissionResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

// === impl AdmissionMetrics ===

impl AdmissionMetrics {
    /// Adds `attache_webhook_admissions_total` to `registry` (every result starts at 0, so a
    /// rate() over it works from the first scrape).
    pub fn register(&self, registry: &mut Registry) {
        for result in AdmissionResult::ALL {
            let _ = self.admissions.get_or_create(&Labels { result });
        }
        registry.register(
            "attache_webhook_admissions",
            "Pod admissions handled by the sidecar injector, by result",
            self.admissions.clone(),
        );
        registry.register(
            "attache_webhook_admission_duration_seconds",
            "Time to answer one admission review, from the request head to the answer",
            self.duration.clone(),
        );
    }

    pub fn observe_duration(&self, elapsed: std::time::Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn record(&self, result: AdmissionResult) {
        self.admissions.get_or_create(&Labels { result }).inc();
    }

    pub fn count(&self, result: AdmissionResult) -> u64 {
        self.admissions.get_or_create(&Labels { result }).get()
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;

    #[test]
    fn exports_admissions_total_by_result() {
        let m = AdmissionMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.record(AdmissionResult::Injected);
        m.record(AdmissionResult::Injected);
        m.record(AdmissionResult::Denied);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("attache_webhook_admissions_total{result=\"injected\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("attache_webhook_admissions_total{result=\"denied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("attache_webhook_admissions_total{result=\"already_injected\"} 0"),
            "{text}"
        );
        assert_eq!(m.count(AdmissionResult::Injected), 2);
        m.observe_duration(std::time::Duration::from_micros(70));
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("attache_webhook_admission_duration_seconds_bucket{le=\"0.0001\"} 1"),
            "{text}"
        );
    }
}
