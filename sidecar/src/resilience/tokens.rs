//! The token budget of an LLM integration (`llm.tokensPerMinute`): a bucket of tokens that
//! refills at the budget's rate. A request is admitted against an *estimate* of what it will
//! use and, once its usage is known, *settled*: the difference between estimate and usage is
//! given back or taken (the level may go below zero, a debt later requests wait out), so the
//! budget never drifts however wrong the estimates were.
//!
//! Over budget, a request waits in line (FIFO, up to `maxQueueWait` and never past its own
//! deadline) or is refused at once, as `rateLimit.onLimit` says.
//!
//! With `rateLimit.scope: global` and Redis, the bucket is the integration's one in Redis
//! (`global::tokens`), shared by every pod; while Redis does not answer, this pod's share
//! (the local bucket) decides, as the request limit's fallback does.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use attache_api::{config::LlmConfig, spec::OnLimit};
use tokio::time::Instant;

use super::{global::tokens::RedisTokens, queue_wait};

/// Why a request was not admitted, and when enough tokens will be there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverBudget {
    pub retry_after: Duration,
    /// True when it waited in line first (`onLimit: queue`).
    pub queued: bool,
}

pub struct TokenBudget {
    /// Tokens the bucket holds when full: one minute of this pod's share.
    capacity: f64,
    /// Tokens added per second.
    rate: f64,
    level: Mutex<Level>,
    on_limit: OnLimit,
    max_wait: Duration,
    /// FIFO: tokio's mutex queues waiters in arrival order.
    queue: tokio::sync::Mutex<()>,
    /// The integration's bucket in Redis (`scope: global`), tried first.
    remote: Option<RedisTokens>,
}

struct Level {
    tokens: f64,
    at: Instant,
}

impl TokenBudget {
    /// The budget of `cfg`, or `None` when it sets no `tokensPerMinute`.
    pub fn new(cfg: &LlmConfig) -> Option<Arc<Self>> {
        let per_minute = f64::from(cfg.pod_tokens_per_minute()?);
        Some(Arc::new(Self {
            capacity: per_minute,
            rate: per_minute / 60.0,
            level: Mutex::new(Level {
                tokens: per_minute,
                at: Instant::now(),
            }),
            on_limit: cfg.on_limit,
            max_wait: cfg.max_queue_wait.as_duration(),
            queue: tokio::sync::Mutex::new(()),
            remote: None,
        }))
    }

    /// This budget, deciding in Redis first (`scope: global`).
    pub fn with_redis(mut self: Arc<Self>, remote: RedisTokens) -> Arc<Self> {
        if let Some(b) = Arc::get_mut(&mut self) {
            b.remote = Some(remote);
        }
        self
    }

    /// Admits a request estimated to use `estimate` tokens (at most the whole bucket, so a
    /// request larger than a minute's budget still goes when the bucket is full).
    pub async fn admit(
        self: &Arc<Self>,
        estimate: u64,
        request_deadline: Instant,
    ) -> Result<Charge, OverBudget> {
        let want = (estimate as f64).min(self.capacity);
        let charge = |budget: &Arc<Self>| Charge {
            budget: budget.clone(),
            charged: want,
            settled: false,
            remote: false,
        };
        let started = Instant::now();
        if let Some(remote) = &self.remote {
            match self
                .admit_remote(remote, estimate, started, request_deadline)
                .await
            {
                Ok(()) => {
                    let mut c = charge(self);
                    (c.remote, c.charged) = (true, remote.capped(estimate));
                    return Ok(c);
                }
                Err(Some(over)) => return Err(over),
                // Redis is away: this pod's share decides.
                Err(None) => {}
            }
        }
        let wait = match self.try_take(want, started) {
            None => return Ok(charge(self)),
            Some(wait) => wait,
        };
        if self.on_limit == OnLimit::Reject {
            return Err(OverBudget {
                retry_after: wait,
                queued: false,
            });
        }
        let deadline = queue_wait::give_up_at(started, self.max_wait, request_deadline);
        let timed_out = |retry_after| OverBudget {
            retry_after,
            queued: true,
        };
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.queue.lock()).await else {
            return Err(timed_out(wait));
        };
        loop {
            let now = Instant::now();
            match self.try_take(want, now) {
                None => return Ok(charge(self)),
                Some(wait) if wait > deadline.saturating_duration_since(now) => {
                    return Err(timed_out(wait))
                }
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Takes the estimate from the Redis bucket (capped at the whole integration's minute),
    /// waiting as `onLimit` says; `Err(None)` when Redis does not answer.
    async fn admit_remote(
        &self,
        remote: &RedisTokens,
        estimate: u64,
        started: Instant,
        request_deadline: Instant,
    ) -> Result<(), Option<OverBudget>> {
        let deadline = queue_wait::give_up_at(started, self.max_wait, request_deadline);
        let mut queued = false;
        loop {
            let wait = match remote.take(remote.capped(estimate)).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => wait.max(Duration::from_millis(1)),
                Err(()) => return Err(None),
            };
            let now = Instant::now();
            if self.on_limit == OnLimit::Reject || wait > deadline.saturating_duration_since(now) {
                return Err(Some(OverBudget {
                    retry_after: wait,
                    queued,
                }));
            }
            queued = true;
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `want` tokens now, or says how long until there are enough.
    fn try_take(&self, want: f64, now: Instant) -> Option<Duration> {
        let mut l = self.level.lock().expect("token budget lock");
        self.refill(&mut l, now);
        if l.tokens >= want {
            l.tokens -= want;
            return None;
        }
        let missing = want - l.tokens;
        Some(Duration::from_secs_f64(missing / self.rate).max(Duration::from_millis(1)))
    }

    fn refill(&self, l: &mut Level, now: Instant) {
        let elapsed = now.saturating_duration_since(l.at).as_secs_f64();
        l.tokens = (l.tokens + elapsed * self.rate).min(self.capacity);
        l.at = now;
    }

    /// Gives back (`delta` > 0) or takes (`delta` < 0) tokens.
    fn adjust(&self, delta: f64) {
        let mut l = self.level.lock().expect("token budget lock");
        self.refill(&mut l, Instant::now());
        l.tokens = (l.tokens + delta).min(self.capacity);
    }

    /// Tokens available now (negative: a debt), for tests and `explain`.
    pub fn available(&self) -> f64 {
        let mut l = self.level.lock().expect("token budget lock");
        self.refill(&mut l, Instant::now());
        l.tokens
    }
}

/// The tokens one admitted request holds until its usage is known. Dropped unsettled (the
/// request failed before the provider did any work), the whole estimate is given back.
pub struct Charge {
    budget: Arc<TokenBudget>,
    charged: f64,
    settled: bool,
    /// Taken from the Redis bucket: corrections go there.
    remote: bool,
}

impl Charge {
    fn correct(&self, delta: f64) {
        match (&self.budget.remote, self.remote) {
            (Some(r), true) => r.adjust(delta),
            _ => self.budget.adjust(delta),
        }
    }
}

impl Charge {
    /// Corrects the budget by the request's real usage.
    pub fn settle(mut self, used: u64) {
        self.settled = true;
        self.correct(self.charged - used as f64);
    }

    /// Keeps the estimate as the charge (usage unknown, but the provider did the work).
    pub fn keep(mut self) {
        self.settled = true;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if !self.settled {
            self.correct(self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_api::duration::KubeDuration;
    use attache_api::spec::LlmProvider;

    fn budget(per_minute: u32, on_limit: OnLimit) -> Arc<TokenBudget> {
        TokenBudget::new(&LlmConfig {
            provider: LlmProvider::Openai,
            tokens_per_minute: Some(per_minute),
            pods: 1,
            default_max_tokens: 100,
            on_limit,
            max_queue_wait: KubeDuration::from_secs(5),
        })
        .expect("a budget")
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn settling_corrects_the_estimate_both_ways() {
        let b = budget(6000, OnLimit::Reject);
        let c = b.admit(1000, far()).await.expect("admitted");
        assert_eq!(b.available(), 5000.0);
        c.settle(200);
        assert_eq!(b.available(), 5800.0, "an overestimate is given back");
        let c = b.admit(1000, far()).await.expect("admitted");
        c.settle(3000);
        assert_eq!(b.available(), 2800.0, "an underestimate is taken");
    }

    #[tokio::test(start_paused = true)]
    async fn over_budget_rejects_with_the_time_until_enough_tokens() {
        let b = budget(6000, OnLimit::Reject); // 100 tokens per second
        b.admit(5000, far()).await.expect("admitted").settle(6000);
        let refused = match b.admit(500, far()).await {
            Err(e) => e,
            Ok(_) => panic!("over budget"),
        };
        assert_eq!(refused.retry_after, Duration::from_secs(5));
        assert!(!refused.queued);
    }

    #[tokio::test(start_paused = true)]
    async fn a_debt_is_waited_out_in_line() {
        let b = budget(6000, OnLimit::Queue);
        b.admit(100, far()).await.expect("admitted").settle(6200); // 200 in debt
        let started = Instant::now();
        let c = b.admit(100, far()).await.expect("admitted after waiting");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        c.keep();
        assert!(b.available().abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_max_queue_wait_is_refused() {
        let b = budget(60, OnLimit::Queue); // 1 token per second
        b.admit(60, far()).await.expect("admitted").keep();
        let started = Instant::now();
        let refused = match b.admit(30, far()).await {
            Err(e) => e,
            Ok(_) => panic!("30 s of tokens cannot come within maxQueueWait (5 s)"),
        };
        assert!(refused.queued);
        assert!(started.elapsed() <= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsettled_charge_is_refunded_and_a_huge_estimate_fits_a_full_bucket() {
        let b = budget(600, OnLimit::Reject);
        drop(
            b.admit(1_000_000, far())
                .await
                .expect("capped at the bucket"),
        );
        assert_eq!(b.available(), 600.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_of_requests_never_drifts() {
        // Estimates of 1000, real usage of 10: after settling, only usage counts.
        let b = budget(60_000, OnLimit::Reject);
        for _ in 0..50 {
            b.admit(1000, far()).await.expect("admitted").settle(10);
        }
        assert_eq!(b.available(), 60_000.0 - 500.0);
    }
}
