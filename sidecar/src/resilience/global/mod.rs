//! `rateLimit.scope: global`: one exact bucket (and quota) for every pod, kept in Redis.
//!
//! - [`script`]: GCRA and the quota counter in one Lua script, on Redis's clock.
//! - [`lease`]: tokens taken in small leases and spent locally; the overshoot bound.
//! - [`backend`]: the connection, with a short timeout on every call.
//!
//! While Redis cannot be reached (down, or slower than [`backend::REDIS_TIMEOUT`]), the gate
//! uses the `shared` split instead (this pod's share of the rate, from the operator's pod
//! count) and a prober pings Redis every [`PROBE_EVERY`] until it answers; requests never wait
//! for the prober and never see a Redis error. The quota, meanwhile, is spent from this pod's
//! share of what Redis last said was left, and what was spent is charged to Redis when it is
//! back. Leaving for the fallback can let through at most one fresh local burst share per pod.

pub mod backend;
pub mod lease;
pub mod script;
pub mod tokens;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use attache_api::config::RateLimitConfig;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use self::{
    lease::{lease_size, Lease},
    script::{Bucket, GcraScript, Grant},
};
use crate::clock;

/// How often a pod in fallback asks Redis whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// The series a global limit keeps up to date.
#[derive(Clone, Default)]
pub struct GlobalGauges {
    /// `attache_rate_limit_backend`: 1 Redis, 0 the shared-split fallback.
    pub backend: Gauge,
    /// `attache_quota_remaining`.
    pub quota_remaining: Gauge,
}

/// What the global limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A token from the global bucket: go.
    Take,
    /// No token free yet: one will be in this long.
    Wait(Duration),
    /// The quota's window is used up; the next one starts in this long.
    QuotaExhausted(Duration),
    /// Redis is away: ask the `shared` split (then [`GlobalLimiter::charge_fallback`]).
    Fallback,
}

pub struct GlobalLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Option<ConnectionManager>,
    script: GcraScript,
    bucket: Bucket,
    lease_size: u32,
    /// Pods the fallback splits the quota among.
    pods: u32,
    on_redis: AtomicBool,
    probing: AtomicBool,
    lease: Mutex<Lease>,
    /// One ask to Redis at a time per pod: the others wait for its lease.
    asking: tokio::sync::Mutex<()>,
    quota: Mutex<FallbackQuota>,
    gauges: GlobalGauges,
}

/// The quota while Redis is away: this pod's share of what was left, and what it spent.
#[derive(Debug, Default)]
struct FallbackQuota {
    /// Left for this pod in the current window (None: no quota, or never heard from Redis).
    allowance: Option<u64>,
    window_ends: Option<Instant>,
    /// Spent while away, not yet charged to Redis.
    debt: u64,
    /// The whole quota's last known remainder.
    last_left: Option<u64>,
}

impl GlobalLimiter {
    /// `conn` is None when no Redis was configured: then the split is permanent.
    pub fn new(
        cfg: &RateLimitConfig,
        conn: Option<ConnectionManager>,
        gauges: GlobalGauges,
    ) -> Self {
        let global = cfg.global.as_ref();
        let burst = global.map_or(cfg.burst, |g| g.burst).max(1);
        let key = global.map_or_else(|| "attache:{local}".to_string(), |g| g.key.clone());
        let per = cfg.per.as_duration();
        let interval_us = (per.as_micros() / u128::from(cfg.requests.max(1)))
            .clamp(1, u128::from(u64::MAX)) as u64;
        let quota = global
            .and_then(|g| g.quota.as_ref())
            .map(|q| (q.requests, q.per.as_duration().as_secs().max(1)));
        gauges.backend.set(0);
        if let Some((requests, _)) = quota {
            gauges.quota_remaining.set(i64::from(requests));
        }
        Self {
            inner: Arc::new(Inner {
                on_redis: AtomicBool::new(conn.is_some()),
                conn,
                script: GcraScript::default(),
                bucket: Bucket {
                    bucket_key: format!("{key}:gcra"),
                    quota_key: format!("{key}:quota"),
                    interval_us,
                    burst,
                    quota,
                },
                lease_size: match quota {
                    // A lease unspent when its pod stops is lost to the quota: keep that small.
                    Some((requests, _)) => {
                        lease_size(cfg.requests, per, burst).min((requests / 10_000).max(1))
                    }
                    None => lease_size(cfg.requests, per, burst),
                },
                pods: cfg.pods.max(1),
                probing: AtomicBool::new(false),
                lease: Mutex::new(Lease::default()),
                asking: tokio::sync::Mutex::new(()),
                quota: Mutex::new(FallbackQuota::default()),
                gauges,
            }),
        }
    }

    pub fn lease_size(&self) -> u32 {
        self.inner.lease_size
    }

    /// Takes one token: from the lease, else from Redis, else says to fall back.
    pub async fn take(&self) -> Verdict {
        let inner = &self.inner;
        if inner.lease.lock().expect("lease lock").take(Instant::now()) {
            return Verdict::Take;
        }
        if !inner.on_redis.load(Ordering::Acquire) {
            return self.fallback_verdict();
        }
        let _turn = inner.asking.lock().await;
        // Someone else's ask may have filled the lease while we waited our turn.
        if inner.lease.lock().expect("lease lock").take(Instant::now()) {
            return Verdict::Take;
        }
        if !inner.on_redis.load(Ordering::Acquire) {
            return self.fallback_verdict();
        }
        match self.ask().await {
            Some(grant) => self.apply(grant),
            None => {
                self.fall_back();
                self.fallback_verdict()
            }
        }
    }

    /// Counts one request the fallback let through against the quota share.
    pub fn charge_fallback(&self) {
        let mut q = self.inner.quota.lock().expect("quota lock");
        if self.inner.bucket.quota.is_none() {
            return;
        }
        q.debt += 1;
        if let Some(a) = q.allowance.as_mut() {
            *a = a.saturating_sub(1);
        }
        if let Some(l) = q.last_left.as_mut() {
            *l = l.saturating_sub(1);
            self.inner.gauges.quota_remaining.set(clamp_i64(*l));
        }
    }

    /// One script call, None when Redis did not answer in time (or answered an error).
    async fn ask(&self) -> Option<Grant> {
        let inner = &self.inner;
        let mut conn = inner.conn.clone()?;
        let debt = inner.quota.lock().expect("quota lock").debt;
        let call = inner
            .script
            .ask(&mut conn, &inner.bucket, inner.lease_size, debt);
        match tokio::time::timeout(backend::REDIS_TIMEOUT, call).await {
            Ok(Ok(grant)) => {
                let mut q = inner.quota.lock().expect("quota lock");
                q.debt -= debt.min(q.debt);
                Some(grant)
            }
            Ok(Err(e)) => {
                tracing::warn!(error_kind = ?e.kind(), "global rate limit: Redis refused the call; using the shared split");
                None
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = backend::REDIS_TIMEOUT.as_millis() as u64,
                    "global rate limit: Redis did not answer in time; using the shared split"
                );
                None
            }
        }
    }

    fn apply(&self, grant: Grant) -> Verdict {
        let inner = &self.inner;
        let now = Instant::now();
        inner.gauges.backend.set(1);
        if let Some(left) = grant.quota_left {
            inner.gauges.quota_remaining.set(clamp_i64(left));
            let mut q = inner.quota.lock().expect("quota lock");
            q.last_left = Some(left);
            q.window_ends = Some(clock::after(now, grant.quota_reset));
        }
        if grant.quota_exhausted() {
            return Verdict::QuotaExhausted(grant.quota_reset);
        }
        if grant.granted == 0 {
            return Verdict::Wait(grant.wait.max(Duration::from_micros(100)));
        }
        inner
            .lease
            .lock()
            .expect("lease lock")
            .hold(grant.granted - 1, now);
        Verdict::Take
    }

    /// In fallback: the quota share decides, then the caller's shared split.
    fn fallback_verdict(&self) -> Verdict {
        let mut q = self.inner.quota.lock().expect("quota lock");
        let Some((requests, _)) = self.inner.bucket.quota else {
            return Verdict::Fallback;
        };
        let now = Instant::now();
        let pods = u64::from(self.inner.pods);
        match q.window_ends {
            // A new window began while away: this pod's share of a fresh quota.
            Some(end) if end <= now => {
                let per = Duration::from_secs(self.inner.bucket.quota.map_or(1, |(_, p)| p));
                q.window_ends = Some(clock::after(end, per));
                q.allowance = Some(u64::from(requests) / pods);
                q.last_left = Some(u64::from(requests));
            }
            Some(_) if q.allowance.is_none() => {
                q.allowance = Some(q.last_left.unwrap_or(u64::from(requests)) / pods);
            }
            Some(_) => {}
            // Never heard from Redis: the window is unknown; share the whole quota.
            None => {
                if q.allowance.is_none() {
                    q.allowance = Some(u64::from(requests) / pods);
                }
            }
        }
        match (q.allowance, q.window_ends) {
            (Some(0), Some(end)) => Verdict::QuotaExhausted(end.saturating_duration_since(now)),
            (Some(0), None) => Verdict::QuotaExhausted(Duration::from_secs(60)),
            _ => Verdict::Fallback,
        }
    }

    fn fall_back(&self) {
        let inner = &self.inner;
        inner.on_redis.store(false, Ordering::Release);
        inner.gauges.backend.set(0);
        inner.lease.lock().expect("lease lock").clear();
        inner.quota.lock().expect("quota lock").allowance = None;
        if !inner.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(probe(Arc::downgrade(inner)));
        }
    }

    /// First contact: one ping in the background, so the backend gauge says 1 before the
    /// first request (a failed ping starts the fallback and its prober). Requests meanwhile
    /// ask Redis themselves: a pod never starts on the split when Redis is there.
    pub fn start(&self) {
        let inner = &self.inner;
        if inner.conn.is_none() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(inner);
        tokio::spawn(async move {
            let answered = ping(&weak).await;
            if let (false, Some(inner)) = (answered, weak.upgrade()) {
                GlobalLimiter { inner }.fall_back();
            }
        });
    }
}

async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if ping(&inner).await {
            return;
        }
        if inner.strong_count() == 0 {
            return;
        }
    }
}

/// True when the prober's work is done (Redis answered, or the integration is gone).
async fn ping(inner: &Weak<Inner>) -> bool {
    let Some(i) = inner.upgrade() else {
        return true;
    };
    let Some(mut conn) = i.conn.clone() else {
        return true;
    };
    let pong = tokio::time::timeout(
        backend::REDIS_TIMEOUT,
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    if matches!(pong, Ok(Ok(_))) {
        i.on_redis.store(true, Ordering::Release);
        i.gauges.backend.set(1);
        i.probing.store(false, Ordering::Release);
        tracing::info!("global rate limit: Redis answers; using the global bucket");
        true
    } else {
        false
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use attache_api::{
        config::{GlobalLimitConfig, QuotaConfig},
        spec::{OnLimit, RateLimitScope},
        KubeDuration,
    };

    use super::*;

    fn config(quota: Option<u32>, pods: u32) -> RateLimitConfig {
        RateLimitConfig {
            requests: 50,
            per: KubeDuration::from_secs(1),
            burst: 5,
            scope: RateLimitScope::Global,
            on_limit: OnLimit::Reject,
            max_queue_wait: KubeDuration::from_secs(1),
            pods,
            global: Some(GlobalLimitConfig {
                burst: 10,
                key: "attache:{t}".into(),
                quota: quota.map(|requests| QuotaConfig {
                    requests,
                    per: KubeDuration::from_secs(86_400),
                }),
                redis: None,
            }),
        }
    }

    #[tokio::test]
    async fn without_redis_the_split_decides_and_the_backend_says_fallback() {
        let gauges = GlobalGauges::default();
        let l = GlobalLimiter::new(&config(None, 2), None, gauges.clone());
        assert_eq!(l.take().await, Verdict::Fallback);
        assert_eq!(gauges.backend.get(), 0);
        assert_eq!(l.lease_size(), 2);
    }

    #[tokio::test]
    async fn in_fallback_each_pod_spends_its_share_of_the_quota_then_refuses() {
        let gauges = GlobalGauges::default();
        let l = GlobalLimiter::new(&config(Some(4), 2), None, gauges.clone());
        assert_eq!(gauges.quota_remaining.get(), 4);
        for _ in 0..2 {
            assert_eq!(l.take().await, Verdict::Fallback);
            l.charge_fallback();
        }
        assert!(matches!(l.take().await, Verdict::QuotaExhausted(_)));
        // A quota forces leases of one token: a pod that stops loses nothing it leased.
        assert_eq!(l.lease_size(), 1);
    }
}
