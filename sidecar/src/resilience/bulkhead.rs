//! The concurrency limit (bulkhead): at most `maxInFlight` requests to the third party at once.
//! The permit lives as long as the response body, so a long stream counts until it ends.

use std::{sync::Arc, time::Duration};

use attache_api::{config::ConcurrencyConfig, spec::OnLimit};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Bulkhead {
    permits: Arc<Semaphore>,
    max: u32,
    on_limit: OnLimit,
    max_wait: Duration,
}

/// The bulkhead is full (and stayed full for the queue wait, in queue mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub max_in_flight: u32,
    pub waited: Duration,
}

impl Bulkhead {
    pub fn new(cfg: &ConcurrencyConfig) -> Self {
        let max = cfg.max_in_flight.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
            on_limit: cfg.on_limit,
            max_wait: cfg.max_queue_wait.as_duration(),
        }
    }

    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Full> {
        let full = |waited| Full {
            max_in_flight: self.max,
            waited,
        };
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        match self.on_limit {
            OnLimit::Reject => Err(full(Duration::ZERO)),
            // Tokio's semaphore is fair: waiters are served first come, first served.
            OnLimit::Queue => {
                match tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => Ok(p),
                    _ => Err(full(self.max_wait)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use attache_api::KubeDuration;

    use super::*;

    fn bulkhead(max: u32, on_limit: OnLimit) -> Bulkhead {
        Bulkhead::new(&ConcurrencyConfig {
            max_in_flight: max,
            on_limit,
            max_queue_wait: KubeDuration::from_millis(500),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn rejects_beyond_max_in_flight() {
        let b = bulkhead(2, OnLimit::Reject);
        let p1 = b.acquire().await.unwrap();
        let _p2 = b.acquire().await.unwrap();
        assert!(b.acquire().await.is_err());
        drop(p1);
        assert!(b.acquire().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn queue_mode_waits_for_a_slot_up_to_the_bound() {
        let b = Arc::new(bulkhead(1, OnLimit::Queue));
        let p = b.acquire().await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire().await.map(|_| ()) });
        tokio::time::advance(Duration::from_millis(100)).await;
        drop(p);
        assert!(waiter.await.unwrap().is_ok());
        let _held = b.acquire().await.unwrap();
        let e = b.acquire().await.unwrap_err();
        assert_eq!(e.waited, Duration::from_millis(500));
    }
}
