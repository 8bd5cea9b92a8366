//! Resilience policies, one instance per integration: circuit breaker, rate gate (limit +
//! provider backpressure), bulkhead, retry budget; plus what the request path uses to decide
//! retries: the `Retrying` state machine and its rules (`retry`), backoff, Retry-After, the
//! replay buffer; the token budget of an LLM integration (`tokens`).
//!
//! Policy state (breaker, limiter, budget) survives a reload that leaves the policy config
//! unchanged, so rotating a credential does not reset an open circuit or refill a rate limit.

pub mod backoff;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod global;
pub mod queue_wait;
pub mod ratelimit;
pub mod replay;
pub mod retry;
pub mod retry_after;
pub mod tokens;

use attache_api::{
    config::{
        CircuitBreakerConfig, ConcurrencyConfig, LlmConfig, RateLimitConfig, RetryConfig,
        UpstreamConfig,
    },
    SidecarConfig,
};

use prometheus_client::metrics::gauge::Gauge;

use self::{
    breaker::Breaker, budget::RetryBudget, bulkhead::Bulkhead, ratelimit::RateGate,
    tokens::TokenBudget,
};
use std::sync::Arc;

/// The stateful policies of one integration.
pub struct Policies {
    /// The primary endpoint's breaker (its state is `attache_circuit_state`).
    pub breaker: Breaker,
    /// One breaker per `upstream.failover` endpoint, in order.
    pub failover_breakers: Vec<Breaker>,
    pub gate: RateGate,
    pub bulkhead: Bulkhead,
    pub budget: RetryBudget,
    /// `llm.tokensPerMinute`, if set.
    pub tokens: Option<Arc<TokenBudget>>,
    /// `spec.cache`, if set: kept across reloads like the other state.
    pub cache: Option<Arc<crate::cache::HttpCache>>,
    config: PolicyConfig,
}

/// The parts of a config the policies were built from.
#[derive(Clone, PartialEq)]
struct PolicyConfig {
    retry: RetryConfig,
    breaker: CircuitBreakerConfig,
    rate_limit: Option<RateLimitConfig>,
    concurrency: ConcurrencyConfig,
    llm: Option<LlmConfig>,
    failover: Vec<UpstreamConfig>,
    cache: Option<attache_api::config::CacheConfig>,
}

impl Policies {
    /// `circuit_gauge` is the integration's `attache_circuit_state` series.
    pub fn new(cfg: &SidecarConfig, circuit_gauge: Gauge) -> Self {
        let config = PolicyConfig::of(cfg);
        Self {
            breaker: Breaker::new(&cfg.circuit_breaker, circuit_gauge),
            failover_breakers: cfg
                .upstream
                .failover
                .iter()
                .map(|_| Breaker::new(&cfg.circuit_breaker, Gauge::default()))
                .collect(),
            gate: RateGate::new(
                cfg.rate_limit.as_ref(),
                cfg.concurrency.max_queue_wait.as_duration(),
            ),
            bulkhead: Bulkhead::new(&cfg.concurrency),
            budget: RetryBudget::new(cfg.retry.budget_ratio, cfg.retry.budget_min_per_second),
            tokens: cfg.llm.as_ref().and_then(TokenBudget::new),
            cache: cfg.cache.as_ref().map(crate::cache::HttpCache::new),
            config,
        }
    }

    /// The breaker of endpoint `i` (0: the primary, then the failover endpoints).
    pub fn breaker_of(&self, i: usize) -> &Breaker {
        match i {
            0 => &self.breaker,
            i => &self.failover_breakers[i - 1],
        }
    }

    /// Endpoints: the primary and the failover ones.
    pub fn endpoints(&self) -> usize {
        1 + self.failover_breakers.len()
    }

    /// Fail fast only when every endpoint's circuit is open: the soonest half-open.
    pub fn all_open_for(&self) -> Option<std::time::Duration> {
        let mut soonest = self.breaker.open_for()?;
        for b in &self.failover_breakers {
            soonest = soonest.min(b.open_for()?);
        }
        Some(soonest)
    }

    /// Makes the LLM token budget the integration's one in Redis (`scope: global`).
    pub fn with_global_tokens(mut self, remote: global::tokens::RedisTokens) -> Self {
        self.tokens = self.tokens.map(|t| t.with_redis(remote));
        self
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
            llm: cfg.llm.clone(),
            failover: cfg.upstream.failover.clone(),
            cache: cfg.cache.clone(),
        }
    }
}
