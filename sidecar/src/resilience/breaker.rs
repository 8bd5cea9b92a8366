//! The circuit breaker: a small state machine per integration.
//!
//! ```text
//! Closed ──(N consecutive failures | failure rate ≥ p% over window)──► Open
//! Open ──(open duration elapsed)──► HalfOpen (up to halfOpenRequests probes)
//! HalfOpen ──(all probes succeed)──► Closed      HalfOpen ──(a probe fails)──► Open (longer)
//! ```
//! The open duration doubles on each trip that follows a half-open failure, up to
//! `maxOpenDuration`, and resets once the circuit closes. Failures are 5xx responses, connect
//! errors, resets and timeouts; 429 is the provider pacing us, not failing.

use std::{sync::Mutex, time::Duration};

use attache_api::config::{BreakerMode, CircuitBreakerConfig};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::clock;

/// Gauge values of `attache_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// What the breaker decided for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Normal traffic.
    Closed,
    /// A half-open probe: its outcome decides the circuit.
    Probe,
}

/// The attempt may not go out; retry after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub retry_after: Duration,
}

/// One admitted attempt: admission and verdict owned together.
#[must_use = "an admitted attempt records its outcome (dropping the ticket frees a probe)"]
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    kind: Admit,
}

// === impl Ticket ===

impl std::fmt::Debug for Ticket<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("kind", &self.kind).finish()
    }
}

impl Ticket<'_> {
    /// Normal traffic or a half-open probe.
    pub fn kind(&self) -> Admit {
        self.kind
    }

    /// Records the attempt's outcome; returns the new state if it changed.
    pub fn record(self, failed: bool) -> Option<CircuitState> {
        let (breaker, kind) = (self.breaker, self.kind);
        // Recorded: nothing left for `drop` to do (and no call to it on the hot path).
        std::mem::forget(self);
        breaker.record(kind, failed)
    }
}

impl Drop for Ticket<'_> {
    /// Unrecorded: the attempt never went out (or was cancelled); free its probe slot.
    fn drop(&mut self) {
        if self.kind == Admit::Probe {
            self.breaker.release_probe();
        }
    }
}

pub struct Breaker {
    mode: BreakerMode,
    open_duration: Duration,
    max_open_duration: Duration,
    half_open_requests: u32,
    state: Mutex<State>,
    /// `attache_circuit_state`, set on every transition (Open → HalfOpen happens lazily, on
    /// the first call after the open duration).
    gauge: Gauge,
    opened: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
enum State {
    Closed {
        consecutive: u32,
        window: Box<RateWindow>,
        /// Trips since the circuit last closed after a successful probe.
        trips: u32,
    },
    Open {
        until: Instant,
        trips: u32,
    },
    HalfOpen {
        in_flight: u32,
        succeeded: u32,
        trips: u32,
    },
}

impl Breaker {
    pub fn new(cfg: &CircuitBreakerConfig, gauge: Gauge) -> Self {
        let window = window_len(&cfg.trip);
        Self {
            mode: cfg.trip.clone(),
            open_duration: cfg.open_duration.as_duration(),
            max_open_duration: cfg.max_open_duration.as_duration(),
            half_open_requests: cfg.half_open_requests.max(1),
            state: Mutex::new(State::Closed {
                consecutive: 0,
                window: Box::new(RateWindow::new(window)),
                trips: 0,
            }),
            gauge,
            opened: Default::default(),
        }
    }

    /// How many times the circuit has opened (for reports and logs).
    pub fn times_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn state(&self) -> CircuitState {
        let mut s = self.state.lock().expect("breaker lock");
        self.advance(&mut s, Instant::now());
        match *s {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// When open: how long until it half-opens. A cheap check before queueing anywhere.
    pub fn open_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut s = self.state.lock().expect("breaker lock");
        self.advance(&mut s, now);
        match *s {
            State::Open { until, .. } => Some(until.saturating_duration_since(now)),
            _ => None,
        }
    }

    /// Asks to send one attempt. The ticket records the attempt's outcome; a ticket dropped
    /// unrecorded (the attempt was never sent, or was cancelled) frees its probe slot, so no
    /// caller can leave the breaker waiting for a verdict that never comes.
    pub fn admit(&self) -> Result<Ticket<'_>, Rejected> {
        self.admit_kind().map(|kind| Ticket {
            breaker: self,
            kind,
        })
    }

    fn admit_kind(&self) -> Result<Admit, Rejected> {
        let now = Instant::now();
        let mut s = self.state.lock().expect("breaker lock");
        self.advance(&mut s, now);
        match &mut *s {
            State::Closed { .. } => Ok(Admit::Closed),
            State::Open { until, .. } => Err(Rejected {
                retry_after: until.saturating_duration_since(now),
            }),
            State::HalfOpen {
                in_flight,
                succeeded,
                ..
            } => {
                if *in_flight + *succeeded < self.half_open_requests {
                    *in_flight += 1;
                    Ok(Admit::Probe)
                } else {
                    // Probes are out; others wait for their verdict.
                    Err(Rejected {
                        retry_after: Duration::from_secs(1),
                    })
                }
            }
        }
    }

    /// Records the outcome of an admitted attempt; returns the new state if it changed.
    fn record(&self, admit: Admit, failed: bool) -> Option<CircuitState> {
        let now = Instant::now();
        let mut s = self.state.lock().expect("breaker lock");
        self.advance(&mut s, now);
        match (&mut *s, admit) {
            (
                State::Closed {
                    consecutive,
                    window,
                    trips,
                },
                Admit::Closed,
            ) => {
                window.record(now, failed);
                if failed {
                    *consecutive += 1;
                } else {
                    *consecutive = 0;
                }
                let trip = match &self.mode {
                    BreakerMode::ConsecutiveFailures { failures } => *consecutive >= *failures,
                    BreakerMode::FailureRate {
                        percent,
                        minimum_requests,
                        ..
                    } => {
                        let (total, failures) = window.totals(now);
                        total >= u64::from(*minimum_requests)
                            && failures * 100 >= u64::from(*percent) * total
                    }
                };
                if trip {
                    let trips = *trips + 1;
                    return Some(self.open(&mut s, now, trips));
                }
                None
            }
            (
                State::HalfOpen {
                    in_flight,
                    succeeded,
                    trips,
                },
                Admit::Probe,
            ) => {
                *in_flight = in_flight.saturating_sub(1);
                if failed {
                    let trips = *trips + 1;
                    return Some(self.open(&mut s, now, trips));
                }
                *succeeded += 1;
                if *succeeded >= self.half_open_requests {
                    *s = State::Closed {
                        consecutive: 0,
                        window: Box::new(RateWindow::new(window_len(&self.mode))),
                        trips: 0,
                    };
                    self.gauge.set(CircuitState::Closed as i64);
                    return Some(CircuitState::Closed);
                }
                None
            }
            // Outcomes of attempts admitted under an earlier state change nothing.
            _ => None,
        }
    }

    /// Trips the circuit (for the `trips`-th time since it last closed).
    fn open(&self, s: &mut State, now: Instant, trips: u32) -> CircuitState {
        *s = State::Open {
            until: clock::after(now, self.open_duration_for(trips)),
            trips,
        };
        self.gauge.set(CircuitState::Open as i64);
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CircuitState::Open
    }

    /// A probe that never produced an outcome (cancelled): let another probe go.
    fn release_probe(&self) {
        let mut s = self.state.lock().expect("breaker lock");
        if let State::HalfOpen { in_flight, .. } = &mut *s {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// `openDuration · 2^(trips-1)`, capped by `maxOpenDuration`.
    fn open_duration_for(&self, trips: u32) -> Duration {
        let factor = 1u32 << trips.saturating_sub(1).min(20);
        self.open_duration
            .saturating_mul(factor)
            .min(self.max_open_duration)
    }

    fn advance(&self, s: &mut State, now: Instant) {
        if let State::Open { until, trips } = *s {
            if now >= until {
                *s = State::HalfOpen {
                    in_flight: 0,
                    succeeded: 0,
                    trips,
                };
                self.gauge.set(CircuitState::HalfOpen as i64);
            }
        }
    }
}

/// The failure-rate window (a nominal one in consecutive mode, where it is unused).
fn window_len(mode: &BreakerMode) -> Duration {
    match mode {
        BreakerMode::FailureRate { window, .. } => window.as_duration(),
        BreakerMode::ConsecutiveFailures { .. } => Duration::from_secs(1),
    }
}

/// Success/failure counts in ten buckets across the failure-rate window.
#[derive(Debug)]
struct RateWindow {
    bucket_len: Duration,
    start: Instant,
    buckets: [(u64, u64, u64); 10], // (bucket index, total, failures)
}

impl RateWindow {
    fn new(window: Duration) -> Self {
        Self {
            bucket_len: (window / 10).max(Duration::from_millis(1)),
            start: Instant::now(),
            buckets: [(u64::MAX, 0, 0); 10],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / self.bucket_len.as_nanos()) as u64
    }

    fn record(&mut self, now: Instant, failed: bool) {
        let i = self.index(now);
        let b = &mut self.buckets[(i % 10) as usize];
        if b.0 != i {
            *b = (i, 0, 0);
        }
        b.1 += 1;
        b.2 += u64::from(failed);
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let i = self.index(now);
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && i.saturating_sub(b.0) < 10)
            .fold((0, 0), |(t, f), b| (t + b.1, f + b.2))
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
