//! Tokens taken from Redis in small batches (leases) and spent locally, so that most requests
//! pay no Redis round trip.
//!
//! A lease is sized to about 50 ms of the whole integration's rate, at most a quarter of the
//! burst, at least one token. Every token is granted by the one GCRA in Redis before a pod
//! spends it, so from a fresh bucket the integration never sends more than
//! `burst + rate × t`. Over a window that starts mid-run, tokens leased before it and spent
//! inside it can add at most `P × (L − 1)` (P pods, L the lease size): that is the overshoot
//! bound. A lease unspent after [`LEASE_TTL`] is dropped (the bucket is not refunded: that
//! errs on the side of sending less).

use std::time::Duration;

use tokio::time::Instant;

/// Leased tokens older than this are dropped, so an idle pod cannot save tokens for later.
pub const LEASE_TTL: Duration = Duration::from_millis(250);

/// The lease size for `requests` per `per` with a bucket of `burst`.
pub fn lease_size(requests: u32, per: Duration, burst: u32) -> u32 {
    let per_50ms = (f64::from(requests) * 0.05 / per.as_secs_f64()).floor();
    let by_rate = if per_50ms >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        per_50ms as u32
    };
    by_rate.min(burst / 4).max(1)
}

/// The tokens this pod holds.
#[derive(Debug, Default)]
pub struct Lease {
    tokens: u32,
    expires: Option<Instant>,
}

impl Lease {
    /// Spends one held token, if any is left and fresh.
    pub fn take(&mut self, now: Instant) -> bool {
        match self.expires {
            Some(e) if e > now && self.tokens > 0 => {
                self.tokens -= 1;
                true
            }
            _ => {
                self.tokens = 0;
                false
            }
        }
    }

    /// Holds `tokens` more (what a grant gave beyond the one spent at once).
    pub fn hold(&mut self, tokens: u32, now: Instant) {
        self.tokens = tokens;
        self.expires = Some(now + LEASE_TTL);
    }

    /// Drops every held token (the backend changed).
    pub fn clear(&mut self) {
        self.tokens = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_about_50ms_of_rate_capped_by_a_quarter_of_the_burst() {
        let s = Duration::from_secs(1);
        assert_eq!(lease_size(50, s, 10), 2);
        assert_eq!(lease_size(1000, s, 1000), 50);
        assert_eq!(lease_size(1000, s, 40), 10);
        assert_eq!(lease_size(10, s, 10), 1);
        assert_eq!(lease_size(1, Duration::from_secs(3600), 1), 1);
        assert_eq!(
            lease_size(u32::MAX, Duration::from_millis(1), u32::MAX),
            u32::MAX / 4
        );
    }

    #[tokio::test(start_paused = true)]
    async fn held_tokens_are_spent_once_and_expire() {
        let mut l = Lease::default();
        let now = Instant::now();
        assert!(!l.take(now));
        l.hold(2, now);
        assert!(l.take(now));
        assert!(l.take(now));
        assert!(!l.take(now));
        l.hold(3, now);
        assert!(!l.take(now + LEASE_TTL));
    }
}
