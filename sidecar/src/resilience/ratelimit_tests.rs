use attache_api::{spec::RateLimitScope, KubeDuration};

use super::*;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn gate(requests: u32, per_ms: u64, burst: u32, on_limit: OnLimit, wait_ms: u64) -> RateGate {
    RateGate::new(
        Some(&RateLimitConfig {
            requests,
            per: KubeDuration::from_millis(per_ms),
            burst,
            scope: RateLimitScope::Pod,
            on_limit,
            max_queue_wait: KubeDuration::from_millis(wait_ms),
            pods: 1,
            global: None,
        }),
        Duration::from_secs(5),
    )
}

#[tokio::test(start_paused = true)]
async fn burst_then_reject_with_retry_after() {
    let g = gate(10, 1000, 3, OnLimit::Reject, 0);
    for _ in 0..3 {
        assert_eq!(g.acquire(far()).await, Ok(Admitted::Immediately));
    }
    let limited = g.acquire(far()).await.unwrap_err();
    assert_eq!(limited.action, RateLimitAction::Rejected);
    assert_eq!(limited.retry_after, Duration::from_millis(100));
    tokio::time::advance(Duration::from_millis(100)).await;
    assert_eq!(g.acquire(far()).await, Ok(Admitted::Immediately));
}

#[tokio::test(start_paused = true)]
async fn queue_mode_waits_in_order_and_bounds_the_wait() {
    let g = std::sync::Arc::new(gate(10, 1000, 1, OnLimit::Queue, 250));
    assert_eq!(g.acquire(far()).await, Ok(Admitted::Immediately));
    let start = Instant::now();
    let mut handles = Vec::new();
    for i in 0..4 {
        let g = g.clone();
        handles.push(tokio::spawn(async move {
            let r = g.acquire(far()).await;
            (i, r, start.elapsed())
        }));
        tokio::task::yield_now().await;
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    // One every 100 ms: the first two fit in 250 ms, in arrival order; the rest time out.
    assert_eq!(
        results[0].1,
        Ok(Admitted::AfterQueueing(Duration::from_millis(100)))
    );
    assert_eq!(
        results[1].1,
        Ok(Admitted::AfterQueueing(Duration::from_millis(200)))
    );
    for (_, r, _) in &results[2..] {
        assert_eq!(r.unwrap_err().action, RateLimitAction::TimedOut);
    }
}

#[tokio::test(start_paused = true)]
async fn provider_hold_pauses_everyone_even_without_a_limit() {
    let g = RateGate::new(None, Duration::from_secs(5));
    assert_eq!(g.acquire(far()).await, Ok(Admitted::Immediately));
    assert!(g.hold_for(Duration::from_secs(2)));
    assert!(
        !g.hold_for(Duration::from_secs(1)),
        "a shorter hold does not shorten it"
    );
    let start = Instant::now();
    assert!(matches!(
        g.acquire(far()).await,
        Ok(Admitted::AfterQueueing(_))
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    // A hold longer than the queue wait is refused at once with the hold's remaining time.
    g.hold_for(Duration::from_secs(10));
    let l = g.acquire(far()).await.unwrap_err();
    assert_eq!(
        (l.action, l.cause),
        (RateLimitAction::TimedOut, LimitCause::Provider)
    );
    assert_eq!(l.retry_after, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn reject_mode_rejects_during_a_hold() {
    let g = gate(100, 1000, 10, OnLimit::Reject, 0);
    g.hold_for(Duration::from_secs(3));
    let l = g.acquire(far()).await.unwrap_err();
    assert_eq!(
        (l.action, l.cause),
        (RateLimitAction::Rejected, LimitCause::Provider)
    );
    assert_eq!(l.retry_after, Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn shared_share_slows_the_pod() {
    // 100/s shared by 4 pods: one every 40 ms here.
    let g = RateGate::new(
        Some(&RateLimitConfig {
            requests: 100,
            per: KubeDuration::from_secs(1),
            burst: 1,
            scope: RateLimitScope::Shared,
            on_limit: OnLimit::Reject,
            max_queue_wait: KubeDuration::from_secs(1),
            pods: 4,
            global: None,
        }),
        Duration::from_secs(5),
    );
    g.acquire(far()).await.unwrap();
    assert_eq!(
        g.acquire(far()).await.unwrap_err().retry_after,
        Duration::from_millis(40)
    );
}

#[tokio::test(start_paused = true)]
async fn a_hold_longer_than_the_request_may_wait_is_refused_at_once() {
    let g = RateGate::new(None, Duration::from_secs(5));
    g.hold_for(Duration::from_secs(3));
    let start = Instant::now();
    let l = g.acquire(start + Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(
        (l.action, l.cause),
        (RateLimitAction::TimedOut, LimitCause::Provider)
    );
    assert_eq!(l.retry_after, Duration::from_secs(3));
    assert_eq!(start.elapsed(), Duration::ZERO, "no pointless wait");
}
