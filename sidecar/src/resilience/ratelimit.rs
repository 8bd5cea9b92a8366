//! The integration's rate limit and the provider's backpressure, in one admission gate.
//!
//! - The limit itself is GCRA (`governor`), at this pod's share of the integration's rate.
//! - A provider that says it is throttling (429/503 with `Retry-After`, or
//!   `X-RateLimit-Remaining: 0`) *holds* the gate until the time it gave, so one response
//!   pauses the whole integration instead of every request learning it separately.
//! - When the gate is shut, requests either queue (FIFO, up to `maxQueueWait`) or are rejected
//!   at once with the time to wait.
//!
//! - `scope: global` asks the Redis bucket first ([`super::global`]); the local GCRA is then
//!   only the `shared` split used while Redis is away.
//!
//! governor's clock is driven from tokio's clock so paused-time tests control it.

use std::{
    num::NonZeroU32,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use attache_api::{config::RateLimitConfig, spec::OnLimit};
use governor::{
    clock::Clock, middleware::NoOpMiddleware, state::InMemoryState, state::NotKeyed, Quota,
};
use tokio::time::Instant;

use super::{
    global::{GlobalLimiter, Verdict},
    queue_wait,
};
use crate::{clock, metrics::LabelValue};

type Gcra =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// governor's clock, read from tokio (so `tokio::time::pause` applies).
#[derive(Clone, Copy, Default, Debug)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// Why a request could not be admitted, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// `Rejected` (onLimit: reject) or `TimedOut` (queued past maxQueueWait).
    pub action: RateLimitAction,
    pub cause: LimitCause,
}

/// What the gate did with a request it could not admit at once (the `action` label of
/// `attache_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitAction {
    /// Waited in line, then admitted.
    Queued,
    /// Refused at once (`onLimit: reject`).
    Rejected,
    /// Waited in line past `maxQueueWait` (or the request's deadline), then refused.
    TimedOut,
}

impl LabelValue for RateLimitAction {
    fn label(&self) -> &str {
        match self {
            RateLimitAction::Queued => "queued",
            RateLimitAction::Rejected => "rejected",
            RateLimitAction::TimedOut => "timed_out",
        }
    }
}

/// Which limit shut the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitCause {
    /// The integration's own `rateLimit`.
    RateLimit,
    /// A hold the provider asked for (Retry-After, X-RateLimit-*).
    Provider,
    /// `rateLimit.quota` is used up until its next window.
    Quota,
}

/// How a request got through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Immediately,
    AfterQueueing(Duration),
}

pub struct RateGate {
    gcra: Option<Gcra>,
    /// `scope: global`: the Redis bucket, asked before `gcra` (then the fallback split).
    global: Option<GlobalLimiter>,
    on_limit: OnLimit,
    max_wait: Duration,
    hold_until: Mutex<Option<Instant>>,
    /// FIFO: tokio's mutex queues waiters in arrival order.
    queue: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
}

impl RateGate {
    /// `limit: None` means no rate limit, only provider holds (which then queue up to
    /// `max_wait`).
    pub fn new(limit: Option<&RateLimitConfig>, default_wait: Duration) -> Self {
        let gcra = limit.and_then(|l| {
            let quota = Quota::with_period(l.pod_interval())?
                .allow_burst(NonZeroU32::new(l.burst.max(1)).expect("burst >= 1"));
            Some(Gcra::direct_with_clock(quota, TokioClock))
        });
        Self {
            gcra,
            global: None,
            on_limit: limit.map_or(OnLimit::Queue, |l| l.on_limit),
            max_wait: limit.map_or(default_wait, |l| l.max_queue_wait.as_duration()),
            hold_until: Mutex::new(None),
            queue: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
        }
    }

    /// Makes this a `scope: global` gate: the Redis bucket decides while Redis answers.
    pub fn with_global(mut self, global: GlobalLimiter) -> Self {
        global.start();
        self.global = Some(global);
        self
    }

    /// Pauses the whole integration for `d` (provider backpressure). Returns true if this
    /// extended the current hold.
    pub fn hold_for(&self, d: Duration) -> bool {
        let until = clock::after(Instant::now(), d);
        let mut h = self.hold_until.lock().expect("hold lock");
        match *h {
            Some(cur) if cur >= until => false,
            _ => {
                *h = Some(until);
                true
            }
        }
    }

    fn hold_remaining(&self, now: Instant) -> Option<Duration> {
        let h = self.hold_until.lock().expect("hold lock");
        h.filter(|u| *u > now).map(|u| u - now)
    }

    /// Time until the limiter would admit one more request, or None if it admitted it now;
    /// `Err` refuses outright (the quota is used up) with the time to come back.
    async fn try_take(&self) -> Result<Option<Duration>, Limited> {
        if let Some(global) = &self.global {
            match global.take().await {
                Verdict::Take => return Ok(None),
                Verdict::Wait(wait) => return Ok(Some(wait)),
                Verdict::QuotaExhausted(retry_after) => {
                    return Err(Limited {
                        retry_after,
                        action: RateLimitAction::Rejected,
                        cause: LimitCause::Quota,
                    })
                }
                Verdict::Fallback => {
                    let wait = self.try_take_local();
                    if wait.is_none() {
                        global.charge_fallback();
                    }
                    return Ok(wait);
                }
            }
        }
        Ok(self.try_take_local())
    }

    /// This pod's own GCRA (its share, for `shared` and the global fallback).
    fn try_take_local(&self) -> Option<Duration> {
        let gcra = self.gcra.as_ref()?;
        match gcra.check() {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(TokioClock.now())),
        }
    }

    /// Waits for (or refuses) permission to send one attempt, never past `request_deadline`
    /// (a wait that cannot end in time is refused at once, with the time to come back).
    pub async fn acquire(&self, request_deadline: Instant) -> Result<Admitted, Limited> {
        let now = Instant::now();
        if self.queued.load(Ordering::Acquire) == 0 && self.hold_remaining(now).is_none() {
            match self.try_take().await? {
                None => return Ok(Admitted::Immediately),
                Some(wait) if self.on_limit == OnLimit::Reject => {
                    return Err(Limited {
                        retry_after: wait,
                        action: RateLimitAction::Rejected,
                        cause: LimitCause::RateLimit,
                    })
                }
                Some(_) => {}
            }
        } else if self.on_limit == OnLimit::Reject {
            if let Some(hold) = self.hold_remaining(now) {
                return Err(Limited {
                    retry_after: hold,
                    action: RateLimitAction::Rejected,
                    cause: LimitCause::Provider,
                });
            }
            if let Some(wait) = self.try_take().await? {
                return Err(Limited {
                    retry_after: wait,
                    action: RateLimitAction::Rejected,
                    cause: LimitCause::RateLimit,
                });
            }
            return Ok(Admitted::Immediately);
        }
        self.queue_for_turn(now, request_deadline).await
    }

    async fn queue_for_turn(
        &self,
        started: Instant,
        request_deadline: Instant,
    ) -> Result<Admitted, Limited> {
        let deadline = queue_wait::give_up_at(started, self.max_wait, request_deadline);
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _dequeue = Dequeue(&self.queued);
        let timed_out = |cause, retry_after| Limited {
            retry_after,
            action: RateLimitAction::TimedOut,
            cause,
        };
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.queue.lock()).await else {
            return Err(timed_out(
                LimitCause::RateLimit,
                self.max_wait.max(Duration::from_secs(1)),
            ));
        };
        loop {
            let now = Instant::now();
            if let Some(hold) = self.hold_remaining(now) {
                if hold > deadline.saturating_duration_since(now) {
                    return Err(timed_out(LimitCause::Provider, hold));
                }
                tokio::time::sleep(hold).await;
                continue;
            }
            match self.try_take().await? {
                None => return Ok(Admitted::AfterQueueing(started.elapsed())),
                Some(wait) if wait > deadline.saturating_duration_since(now) => {
                    return Err(timed_out(LimitCause::RateLimit, wait));
                }
                Some(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

struct Dequeue<'a>(&'a AtomicUsize);

impl Drop for Dequeue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
