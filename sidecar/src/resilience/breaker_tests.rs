use attache_api::KubeDuration;

use super::*;

#[tokio::test(start_paused = true)]
async fn gauge_follows_every_transition() {
    let g = Gauge::default();
    let b = Breaker::new(
        &CircuitBreakerConfig {
            trip: BreakerMode::ConsecutiveFailures { failures: 1 },
            open_duration: KubeDuration::from_secs(1),
            max_open_duration: KubeDuration::from_secs(1),
            half_open_requests: 1,
        },
        g.clone(),
    );
    assert_eq!(g.get(), 0);
    fail(&b);
    assert_eq!(g.get(), 2);
    tokio::time::advance(Duration::from_secs(1)).await;
    let p = b.admit().unwrap();
    assert_eq!(g.get(), 1);
    p.record(false);
    assert_eq!(g.get(), 0);
}

fn consecutive(n: u32, open_s: u64, max_s: u64, probes: u32) -> Breaker {
    Breaker::new(
        &CircuitBreakerConfig {
            trip: BreakerMode::ConsecutiveFailures { failures: n },
            open_duration: KubeDuration::from_secs(open_s),
            max_open_duration: KubeDuration::from_secs(max_s),
            half_open_requests: probes,
        },
        Gauge::default(),
    )
}

fn fail(b: &Breaker) -> Option<CircuitState> {
    let a = b.admit().expect("admitted");
    a.record(true)
}

fn ok(b: &Breaker) -> Option<CircuitState> {
    let a = b.admit().expect("admitted");
    a.record(false)
}

#[tokio::test(start_paused = true)]
async fn trips_after_n_consecutive_failures_and_successes_reset_the_count() {
    let b = consecutive(3, 30, 300, 1);
    fail(&b);
    fail(&b);
    ok(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(fail(&b), Some(CircuitState::Open));
    let r = b.admit().unwrap_err();
    assert_eq!(r.retry_after, Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.admit().unwrap_err().retry_after, Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_closes_or_reopens_for_longer() {
    let b = consecutive(1, 10, 35, 1);
    fail(&b);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    let probe = b.admit().unwrap();
    assert_eq!(probe.kind(), Admit::Probe);
    assert!(b.admit().is_err(), "only one probe at a time");
    assert_eq!(probe.record(true), Some(CircuitState::Open));
    // Second trip: 20 s.
    assert_eq!(b.open_for(), Some(Duration::from_secs(20)));
    tokio::time::advance(Duration::from_secs(20)).await;
    let probe = b.admit().unwrap();
    probe.record(true);
    // Third trip: 40 s capped at 35 s.
    assert_eq!(b.open_for(), Some(Duration::from_secs(35)));
    tokio::time::advance(Duration::from_secs(35)).await;
    let probe = b.admit().unwrap();
    assert_eq!(probe.record(false), Some(CircuitState::Closed));
    assert_eq!(b.admit().map(|t| t.kind()), Ok(Admit::Closed));
    // Closing reset the growth: the next trip is back to 10 s.
    fail(&b);
    assert_eq!(b.open_for(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn several_probes_must_all_succeed() {
    let b = consecutive(1, 1, 10, 3);
    fail(&b);
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut probes: Vec<_> = (0..3).map(|_| b.admit().unwrap()).collect();
    assert!(b.admit().is_err());
    let last = probes.pop().unwrap();
    for p in probes {
        assert_eq!(p.record(false), None);
    }
    assert_eq!(last.record(false), Some(CircuitState::Closed));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_mode_needs_minimum_requests_and_percent() {
    let b = Breaker::new(
        &CircuitBreakerConfig {
            trip: BreakerMode::FailureRate {
                percent: 50,
                window: KubeDuration::from_secs(10),
                minimum_requests: 10,
            },
            open_duration: KubeDuration::from_secs(5),
            max_open_duration: KubeDuration::from_secs(60),
            half_open_requests: 1,
        },
        Gauge::default(),
    );
    // 4 failures of 4: below the minimum, stays closed.
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    for _ in 0..5 {
        ok(&b);
    }
    // 4 of 9 failed; the 10th request fails: 5 of 10 = 50 % → open.
    assert_eq!(fail(&b), Some(CircuitState::Open));
}

#[tokio::test(start_paused = true)]
async fn failure_rate_forgets_old_failures() {
    let b = Breaker::new(
        &CircuitBreakerConfig {
            trip: BreakerMode::FailureRate {
                percent: 50,
                window: KubeDuration::from_secs(10),
                minimum_requests: 4,
            },
            open_duration: KubeDuration::from_secs(5),
            max_open_duration: KubeDuration::from_secs(60),
            half_open_requests: 1,
        },
        Gauge::default(),
    );
    for _ in 0..3 {
        fail(&b);
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    // The old failures left the window: 1 failure of 4 is 25 %.
    fail(&b);
    for _ in 0..3 {
        ok(&b);
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_lets_another_go() {
    let b = consecutive(1, 1, 10, 1);
    fail(&b);
    tokio::time::advance(Duration::from_secs(1)).await;
    let p = b.admit().unwrap();
    assert!(b.admit().is_err());
    drop(p);
    assert_eq!(b.admit().map(|t| t.kind()), Ok(Admit::Probe));
}

#[tokio::test(start_paused = true)]
async fn a_closed_ticket_dropped_unrecorded_changes_nothing() {
    let b = consecutive(1, 1, 10, 1);
    drop(b.admit().unwrap());
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(fail(&b), Some(CircuitState::Open));
}
