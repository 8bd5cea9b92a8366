//! Retry budget: retries may add at most `ratio` of recent requests plus `minPerSecond`, so a
//! failing third party sees at most (1 + ratio)× normal traffic, never maxAttempts×.
//!
//! Counts live in one-second buckets over a ten-second window.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

const WINDOW_SECS: u64 = 10;

pub struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    start: Instant,
    buckets: Mutex<[Bucket; WINDOW_SECS as usize]>,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    second: u64,
    requests: u32,
    retries: u32,
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        Self {
            ratio,
            min_per_second,
            start: Instant::now(),
            buckets: Mutex::new([Bucket::default(); WINDOW_SECS as usize]),
        }
    }

    fn second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.start)
            .as_secs()
    }

    /// Records an original request (not a retry).
    pub fn deposit(&self) {
        let now = self.second();
        let mut b = self.buckets.lock().expect("budget lock");
        current(&mut b, now).requests += 1;
    }

    /// Takes one retry from the budget; false when retries would exceed it.
    pub fn try_withdraw(&self) -> bool {
        let now = self.second();
        let mut b = self.buckets.lock().expect("budget lock");
        let (mut requests, mut retries) = (0u64, 0u64);
        for bucket in b.iter() {
            if now.saturating_sub(bucket.second) < WINDOW_SECS {
                requests += u64::from(bucket.requests);
                retries += u64::from(bucket.retries);
            }
        }
        let allowed =
            self.ratio * requests as f64 + f64::from(self.min_per_second) * WINDOW_SECS as f64;
        if (retries as f64) < allowed {
            current(&mut b, now).retries += 1;
            true
        } else {
            false
        }
    }

    /// The window over which the budget is computed.
    pub const fn window() -> Duration {
        Duration::from_secs(WINDOW_SECS)
    }
}

fn current(b: &mut [Bucket; WINDOW_SECS as usize], now: u64) -> &mut Bucket {
    let slot = &mut b[(now % WINDOW_SECS) as usize];
    if slot.second != now {
        *slot = Bucket {
            second: now,
            ..Bucket::default()
        };
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_by_ratio_plus_reserve() {
        let budget = RetryBudget::new(0.2, 1);
        for _ in 0..100 {
            budget.deposit();
        }
        let granted = (0..1000).filter(|_| budget.try_withdraw()).count();
        // 0.2 × 100 requests + 1/s × 10 s reserve.
        assert_eq!(granted, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_refills_as_the_window_moves() {
        let budget = RetryBudget::new(0.0, 1);
        let first = (0..100).filter(|_| budget.try_withdraw()).count();
        assert_eq!(first, 10);
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(budget.try_withdraw(), "old retries left the window");
    }
}
