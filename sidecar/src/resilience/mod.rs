//! Resilience policies, one instance per integration: circuit breaker, rate gate (limit +
//! provider backpressure), bulkhead, retry budget; plus what the request path uses to decide
//! retries: the `Retrying` state machine and its rules (`retry`), backoff, Retry-After, the
//! replay buffer.
//!
//! Policy state (breaker, limiter, budget) survives a reload that leaves the policy config
//! unchanged, so rotating a credential does not reset an open circuit or refill a rate limit.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod global;
pub mod ratelimit;
pub mod replay;
pub mod retry;
pub mod retry_after;

use attache_api::{
    config::{CircuitBreakerConfig, ConcurrencyConfig, RateLimitConfig, RetryConfig},
    SidecarConfig,
};

use prometheus_client::metrics::gauge::Gauge;

use self::{breaker::Breaker, budget::RetryBudget, bulkhead::Bulkhead, ratelimit::RateGate};

/// The stateful policies of one integration.
pub struct Policies {
    pub breaker: Breaker,
    pub gate: RateGate,
    pub bulkhead: Bulkhead,
    pub budget: RetryBudget,
    config: PolicyConfig,
}

/// The parts of a config the policies were built from.
#[derive(Clone, PartialEq)]
struct PolicyConfig {
    retry: RetryConfig,
    breaker: CircuitBreakerConfig,
    rate_limit: Option<RateLimitConfig>,
    concurrency: ConcurrencyConfig,
}

impl Policies {
    /// `circuit_gauge` is the integration's `attache_circuit_state` series.
    pub fn new(cfg: &SidecarConfig, circuit_gauge: Gauge) -> Self {
        let config = PolicyConfig::of(cfg);
        Self {
            breaker: Breaker::new(&cfg.circuit_breaker, circuit_gauge),
            gate: RateGate::new(
                cfg.rate_limit.as_ref(),
                cfg.concurrency.max_queue_wait.as_duration(),
            ),
            bulkhead: Bulkhead::new(&cfg.concurrency),
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_second),
            config,
        }
    }

    /// Makes the rate gate a `scope: global` one (see [`global`]).
    pub fn with_global(mut self, limiter: global::GlobalLimiter) -> Self {
        self.gate = self.gate.with_global(limiter);
        self
    }

    /// True when `cfg` would build the same policies (so their state can be kept).
    pub fn built_from(&self, cfg: &SidecarConfig) -> bool {
        self.config == PolicyConfig::of(cfg)
    }
}

impl PolicyConfig {
    fn of(cfg: &SidecarConfig) -> Self {
        Self {
            retry: cfg.retry.clone(),
            breaker: cfg.circuit_breaker.clone(),
            rate_limit: cfg.rate_limit.clone(),
            concurrency: cfg.concurrency.clone(),
        }
    }
}
