use attache_api::KubeDuration;
use rand::{rngs::StdRng, SeedableRng};

use super::*;

fn cfg(retry_on: &[RetryOn]) -> RetryConfig {
    RetryConfig {
        max_attempts: 3,
        backoff_base: KubeDuration::from_millis(100),
        backoff_max: KubeDuration::from_secs(10),
        retry_on: retry_on.to_vec(),
        respect_retry_after: true,
        max_retry_after: KubeDuration::from_secs(30),
        idempotency_header: "Idempotency-Key".into(),
        generate_idempotency_key: false,
        budget_ratio: 0.2,
        budget_min_per_second: 10,
        replay_buffer_bytes: 65536,
    }
}

/// The default `retryOn` (README, "Configuration reference").
fn defaults() -> RetryConfig {
    cfg(&[
        RetryOn::ConnectFailure,
        RetryOn::Reset,
        RetryOn::Timeout,
        RetryOn::Status(429),
        RetryOn::Status(502),
        RetryOn::Status(503),
        RetryOn::Status(504),
    ])
}

fn status(code: u16) -> AttemptOutcome {
    AttemptOutcome::Status(StatusCode::from_u16(code).unwrap())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// What a case expects of the decision after its last attempt.
#[derive(Debug)]
enum Expect {
    /// A retry for this reason, after exactly this delay.
    RetryAfter(RetryReason, Duration),
    /// A retry for this reason, after a backoff delay within the jitter range.
    RetryWithin(RetryReason, Duration),
    Done(Option<Stopped>),
}

/// One row: the request, the attempt's outcome and the situation around it.
struct Case {
    rule: &'static str,
    cfg: RetryConfig,
    resend_safe: bool,
    /// Attempts already sent, the one being judged included.
    attempts: u32,
    outcome: AttemptOutcome,
    retry_after: Option<Duration>,
    replayable: bool,
    /// Time left until the request's deadline.
    time_left: Duration,
    /// The budget's `(ratio, minPerSecond)`.
    budget: (f64, u32),
    expect: Expect,
}

impl Case {
    fn new(rule: &'static str, outcome: AttemptOutcome, expect: Expect) -> Self {
        Case {
            rule,
            cfg: defaults(),
            resend_safe: true,
            attempts: 1,
            outcome,
            retry_after: None,
            replayable: true,
            time_left: secs(30),
            budget: (0.2, 10),
            expect,
        }
    }
}

fn table() -> Vec<Case> {
    use Expect::*;
    use RetryReason as R;
    let c = Case::new;
    let first_backoff = Duration::from_millis(100);
    vec![
        // 1. retryOn decides what is retried at all.
        c(
            "listed status",
            status(503),
            RetryWithin(R::Status(StatusCode::SERVICE_UNAVAILABLE), first_backoff),
        ),
        c("unlisted status", status(500), Done(None)),
        c("success", status(200), Done(None)),
        c("client error", status(404), Done(None)),
        c(
            "connect failure",
            AttemptOutcome::ConnectFailure,
            RetryWithin(R::ConnectFailure, first_backoff),
        ),
        c(
            "reset",
            AttemptOutcome::Reset,
            RetryWithin(R::Reset, first_backoff),
        ),
        c(
            "per-try timeout",
            AttemptOutcome::Timeout,
            RetryWithin(R::Timeout, first_backoff),
        ),
        c(
            "a refused TLS handshake is never retried",
            AttemptOutcome::TlsFailure,
            Done(None),
        ),
        Case {
            cfg: cfg(&[RetryOn::Any5xx]),
            ..c(
                "5xx lists every server error",
                status(500),
                RetryWithin(R::Status(StatusCode::INTERNAL_SERVER_ERROR), first_backoff),
            )
        },
        Case {
            cfg: cfg(&[RetryOn::Any5xx]),
            ..c("5xx does not list 429", status(429), Done(None))
        },
        Case {
            cfg: cfg(&[RetryOn::Status(503)]),
            ..c(
                "an unlisted transport failure",
                AttemptOutcome::Reset,
                Done(None),
            )
        },
        // 2. maxAttempts counts every attempt, the first included.
        Case {
            attempts: 2,
            ..c(
                "second of three",
                status(503),
                RetryWithin(
                    R::Status(StatusCode::SERVICE_UNAVAILABLE),
                    secs(0) + first_backoff * 2,
                ),
            )
        },
        Case {
            attempts: 3,
            ..c("all attempts used", status(503), Done(None))
        },
        Case {
            cfg: RetryConfig {
                max_attempts: 1,
                ..defaults()
            },
            ..c("maxAttempts 1 disables retries", status(503), Done(None))
        },
        Case {
            cfg: RetryConfig {
                max_attempts: 0,
                ..defaults()
            },
            ..c(
                "maxAttempts 0 means one attempt",
                AttemptOutcome::ConnectFailure,
                Done(None),
            )
        },
        // 3. A sent request is resent only when idempotent or keyed; an unsent one always.
        Case {
            resend_safe: false,
            ..c(
                "unkeyed POST, 503",
                status(503),
                Done(Some(Stopped::NotIdempotent)),
            )
        },
        Case {
            resend_safe: false,
            ..c(
                "unkeyed POST, reset after send",
                AttemptOutcome::Reset,
                Done(Some(Stopped::NotIdempotent)),
            )
        },
        Case {
            resend_safe: false,
            ..c(
                "unkeyed POST, per-try timeout",
                AttemptOutcome::Timeout,
                Done(Some(Stopped::NotIdempotent)),
            )
        },
        Case {
            resend_safe: false,
            ..c(
                "unkeyed POST never sent",
                AttemptOutcome::ConnectFailure,
                RetryWithin(R::ConnectFailure, first_backoff),
            )
        },
        Case {
            resend_safe: false,
            ..c(
                "unkeyed POST, unlisted 500: nothing to say",
                status(500),
                Done(None),
            )
        },
        Case {
            resend_safe: false,
            attempts: 3,
            ..c("unkeyed POST, all attempts used", status(503), Done(None))
        },
        // 4. A body beyond the replay buffer went out once.
        Case {
            replayable: false,
            ..c(
                "streamed body",
                status(503),
                Done(Some(Stopped::BodyNotReplayable)),
            )
        },
        Case {
            replayable: false,
            ..c(
                "streamed body, even unsent",
                AttemptOutcome::ConnectFailure,
                Done(Some(Stopped::BodyNotReplayable)),
            )
        },
        // 5. Retry-After sets the delay, up to maxRetryAfter; else backoff.
        Case {
            retry_after: Some(secs(2)),
            ..c(
                "Retry-After",
                status(429),
                RetryAfter(R::Status(StatusCode::TOO_MANY_REQUESTS), secs(2)),
            )
        },
        Case {
            retry_after: Some(secs(30)),
            time_left: secs(60),
            ..c(
                "Retry-After at the cap",
                status(503),
                RetryAfter(R::Status(StatusCode::SERVICE_UNAVAILABLE), secs(30)),
            )
        },
        Case {
            retry_after: Some(secs(31)),
            time_left: secs(60),
            ..c(
                "Retry-After past maxRetryAfter",
                status(429),
                Done(Some(Stopped::RetryAfter)),
            )
        },
        Case {
            cfg: RetryConfig {
                respect_retry_after: false,
                ..defaults()
            },
            retry_after: Some(secs(99)),
            ..c(
                "respectRetryAfter false",
                status(429),
                RetryWithin(R::Status(StatusCode::TOO_MANY_REQUESTS), first_backoff),
            )
        },
        // 6. No retry whose delay ends past the request's deadline.
        Case {
            retry_after: Some(secs(2)),
            time_left: secs(1),
            ..c(
                "Retry-After past the deadline",
                status(429),
                Done(Some(Stopped::Deadline)),
            )
        },
        Case {
            cfg: RetryConfig {
                backoff_base: KubeDuration::from_secs(5),
                backoff_max: KubeDuration::from_secs(5),
                ..defaults()
            },
            time_left: Duration::ZERO,
            ..c(
                "no time left",
                AttemptOutcome::Reset,
                Done(Some(Stopped::Deadline)),
            )
        },
        // 7. The budget: ratio × recent requests + minPerSecond × 10 s.
        Case {
            budget: (0.0, 0),
            ..c("budget spent", status(503), Done(Some(Stopped::Budget)))
        },
        Case {
            budget: (1.0, 0),
            ..c(
                "this request's own deposit pays for one retry",
                status(503),
                RetryWithin(R::Status(StatusCode::SERVICE_UNAVAILABLE), first_backoff),
            )
        },
        Case {
            budget: (0.0, 0),
            resend_safe: false,
            ..c(
                "rules before the budget decide first",
                status(503),
                Done(Some(Stopped::NotIdempotent)),
            )
        },
    ]
}

#[tokio::test(start_paused = true)]
async fn every_rule_of_the_retry_paragraph() {
    for (seed, case) in (7u64..).zip(table()) {
        let budget = RetryBudget::new(case.budget.0, case.budget.1);
        let deadline = Instant::now() + case.time_left;
        let mut r = Retrying::start(&case.cfg, &budget, case.resend_safe, deadline);
        for _ in 0..case.attempts {
            r.sending();
        }
        let rng = || StdRng::seed_from_u64(seed);
        let next = r.after(case.outcome, case.retry_after, case.replayable, rng);
        let rule = case.rule;
        match (case.expect, next) {
            (Expect::Done(want), Next::Done(got)) => assert_eq!(got, want, "{rule}"),
            (Expect::RetryAfter(reason, d), Next::Retry { reason: r2, delay }) => {
                assert_eq!((r2, delay), (reason, d), "{rule}");
            }
            (Expect::RetryWithin(reason, max), Next::Retry { reason: r2, delay }) => {
                assert_eq!(r2, reason, "{rule}");
                assert!(
                    delay <= max,
                    "{rule}: {delay:?} above the jitter range {max:?}"
                );
            }
            (want, got) => panic!("{rule}: expected {want:?}, got {got:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_retried_to_the_end_counts_its_attempts_and_reasons() {
    let cfg = defaults();
    let budget = RetryBudget::new(0.2, 10);
    let mut r = Retrying::start(&cfg, &budget, true, Instant::now() + secs(30));
    let rng = || StdRng::seed_from_u64(1);
    assert_eq!(r.sending(), None, "the first attempt is no retry");
    let Next::Retry { delay, .. } = r.after(status(503), None, true, rng) else {
        panic!("503 is retried");
    };
    tokio::time::advance(delay).await;
    assert_eq!(
        r.sending(),
        Some(RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE)),
        "the retry is counted when it is sent"
    );
    assert!(matches!(
        r.after(AttemptOutcome::Reset, None, true, rng),
        Next::Retry {
            reason: RetryReason::Reset,
            ..
        }
    ));
    assert_eq!(r.sending(), Some(RetryReason::Reset));
    assert_eq!(r.attempts(), 3);
    assert_eq!(
        r.after(status(503), None, true, rng),
        Next::Done(None),
        "maxAttempts reached: nothing stopped early"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_follows_the_clock() {
    let cfg = defaults();
    let budget = RetryBudget::new(0.2, 10);
    let mut r = Retrying::start(&cfg, &budget, true, Instant::now() + secs(10));
    let rng = || StdRng::seed_from_u64(3);
    r.sending();
    assert!(matches!(
        r.after(status(503), Some(secs(5)), true, rng),
        Next::Retry { .. }
    ));
    tokio::time::advance(secs(6)).await;
    r.sending();
    assert_eq!(
        r.after(status(503), Some(secs(5)), true, rng),
        Next::Done(Some(Stopped::Deadline)),
        "4 s left: a 5 s wait would overrun the request timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_share_the_integrations_budget() {
    let cfg = defaults();
    // No reserve, half of the requests: two requests pay for one retry.
    let budget = RetryBudget::new(0.5, 0);
    let deadline = Instant::now() + secs(30);
    let rng = || StdRng::seed_from_u64(5);
    let mut a = Retrying::start(&cfg, &budget, true, deadline);
    let mut b = Retrying::start(&cfg, &budget, true, deadline);
    a.sending();
    b.sending();
    assert!(matches!(
        a.after(status(502), None, true, rng),
        Next::Retry { .. }
    ));
    assert_eq!(
        b.after(status(502), None, true, rng),
        Next::Done(Some(Stopped::Budget))
    );
}

#[test]
fn labels_are_borrowed_not_built() {
    assert_eq!(RetryReason::ConnectFailure.label(), "connect-failure");
    assert_eq!(RetryReason::Reset.label(), "reset");
    assert_eq!(RetryReason::Timeout.label(), "timeout");
    assert_eq!(
        RetryReason::Status(StatusCode::SERVICE_UNAVAILABLE).label(),
        "503"
    );
    let stops = [
        (Stopped::NotIdempotent, "not_idempotent"),
        (Stopped::BodyNotReplayable, "body_not_replayable"),
        (Stopped::RetryAfter, "retry_after"),
        (Stopped::Deadline, "deadline"),
        (Stopped::Budget, "budget"),
        (Stopped::RateLimit, "rate_limit"),
        (Stopped::CircuitOpen, "circuit_open"),
    ];
    for (s, text) in stops {
        assert_eq!(s.as_str(), text);
    }
}

#[test]
fn never_sent_is_retried_even_when_not_replay_safe() {
    let c = cfg(&[RetryOn::ConnectFailure]);
    assert_eq!(
        retry_reason(&c, AttemptOutcome::ConnectFailure, false),
        Some(RetryReason::ConnectFailure)
    );
    assert_eq!(retry_reason(&c, AttemptOutcome::TlsFailure, true), None);
}

#[test]
fn sent_failures_need_a_safe_request() {
    let c = cfg(&[RetryOn::Reset, RetryOn::Timeout, RetryOn::Status(503)]);
    let s503 = status(503);
    assert_eq!(retry_reason(&c, s503, false), None);
    assert!(retry_reason(&c, s503, true).is_some());
    assert_eq!(retry_reason(&c, AttemptOutcome::Reset, false), None);
    assert_eq!(
        retry_reason(&c, AttemptOutcome::Timeout, true),
        Some(RetryReason::Timeout)
    );
    assert_eq!(
        retry_reason(&c, status(502), true),
        None,
        "502 is not listed"
    );
}

#[test]
fn idempotent_methods_and_keys() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ] {
        assert!(safe_to_resend(&m, false), "{m}");
    }
    assert!(!safe_to_resend(&Method::POST, false));
    assert!(!safe_to_resend(&Method::PATCH, false));
    assert!(safe_to_resend(&Method::POST, true));
}

#[test]
fn retry_after_is_capped() {
    let c = cfg(&[]);
    assert_eq!(
        retry_after_decision(&c, Some(secs(1))),
        RetryAfterDecision::Wait(secs(1))
    );
    assert_eq!(
        retry_after_decision(&c, Some(secs(31))),
        RetryAfterDecision::GiveUp
    );
    assert_eq!(retry_after_decision(&c, None), RetryAfterDecision::Backoff);
    let mut ignore = cfg(&[]);
    ignore.respect_retry_after = false;
    assert_eq!(
        retry_after_decision(&ignore, Some(secs(99))),
        RetryAfterDecision::Backoff
    );
}
