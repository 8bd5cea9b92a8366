//! The operator's Prometheus metrics: one registry per process, served on `/metrics` by every
//! replica (see [`crate::run`]).
//!
//! [`Metrics`] is cheap to clone and shared by the controller, the leader elector and the
//! admission webhook. The controller's families are created here; another component adds its
//! own with [`Metrics::registry_mut`]:
//!
//! ```
//! use prometheus_client::metrics::{counter::Counter, family::Family};
//! # use attache_operator::metrics::{Metrics, ResultLabel};
//! let metrics = Metrics::new();
//! let admissions = Family::<ResultLabel, Counter>::default();
//! metrics.registry_mut().register(
//!     "attache_webhook_admissions",
//!     "Admission reviews answered, by result",
//!     admissions.clone(),
//! );
//! admissions.get_or_create(&ResultLabel::new("allowed")).inc();
//! assert!(metrics.encode().unwrap().contains("attache_webhook_admissions_total{result=\"allowed\"} 1"));
//! ```

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process's registry and the controller's metric families.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    controller: ControllerMetrics,
}

/// What the controller and the leader elector record.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// `attache_operator_reconciliations_total{result}`: `success` or an error's metric label.
    pub reconciliations: Family<ResultLabel, Counter>,
    /// `attache_operator_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `attache_operator_leader`: 1 while this replica holds the Lease (or election is off).
    pub leader: Gauge,
}

/// A `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let controller = ControllerMetrics {
            reconciliations: Family::default(),
            // 1 ms .. ~16 s.
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            leader: Gauge::default(),
        };
        registry.register(
            "attache_operator_reconciliations",
            "Reconciliations of ExternalIntegrations, by result (success or the error kind)",
            controller.reconciliations.clone(),
        );
        registry.register(
            "attache_operator_reconcile_duration_seconds",
            "Time spent reconciling one ExternalIntegration",
            controller.reconcile_duration.clone(),
        );
        registry.register(
            "attache_operator_leader",
            "1 while this replica runs the controller (holds the leader Lease)",
            controller.leader.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                controller,
            }),
        }
    }

    pub fn controller(&self) -> &ControllerMetrics {
        &self.inner.controller
    }

    /// The registry, to add a component's families. Hold the guard only while registering.
    pub fn registry_mut(&self) -> MutexGuard<'_, Registry> {
        // A panic while registering cannot leave the registry half-updated in a way that
        // matters for encoding, so a poisoned lock is still usable.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything registered, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry_mut())?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

// === impl ControllerMetrics ===

impl ControllerMetrics {
    /// Records one finished reconciliation.
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciliations
            .get_or_create(&ResultLabel::new(result))
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }
}

// === impl ResultLabel ===

impl ResultLabel {
    pub fn new(result: impl Into<String>) -> Self {
        Self {
            result: result.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_design() {
        let m = Metrics::new();
        m.controller()
            .reconciled("success", Duration::from_millis(3));
        m.controller()
            .reconciled("secret_not_found", Duration::from_millis(1));
        m.controller().leader.set(1);
        let text = m.encode().unwrap();
        assert!(text.contains("attache_operator_reconciliations_total{result=\"success\"} 1"));
        assert!(
            text.contains("attache_operator_reconciliations_total{result=\"secret_not_found\"} 1")
        );
        assert!(text.contains("attache_operator_reconcile_duration_seconds_count 2"));
        assert!(text.contains("attache_operator_leader 1"));
    }

    #[test]
    fn clones_share_the_registry() {
        let m = Metrics::new();
        let c = m.clone();
        let g = Gauge::<i64>::default();
        c.registry_mut()
            .register("attache_test_gauge", "test", g.clone());
        g.set(7);
        assert!(m.encode().unwrap().contains("attache_test_gauge 7"));
    }
}
