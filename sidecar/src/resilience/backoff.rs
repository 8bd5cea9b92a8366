//! Exponential backoff with full jitter: the delay before retry `n` (1-based) is uniform in
//! `[0, min(max, base · 2^(n-1))]`, so clients that failed together do not retry together.

use std::time::Duration;

use rand::Rng;

/// The ceiling of the jitter range for retry `n` (1-based).
pub fn ceiling(retry: u32, base: Duration, max: Duration) -> Duration {
    let exp = retry.saturating_sub(1).min(32);
    base.saturating_mul(1u32 << exp.min(31)).min(max)
}

/// A random delay for retry `n`.
pub fn delay(retry: u32, base: Duration, max: Duration, rng: &mut impl Rng) -> Duration {
    let ceil = ceiling(retry, base, max);
    if ceil.is_zero() {
        return ceil;
    }
    Duration::from_nanos(rng.random_range(0..=ceil.as_nanos().min(u64::MAX as u128) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let (b, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(ceiling(1, b, m), Duration::from_millis(100));
        assert_eq!(ceiling(2, b, m), Duration::from_millis(200));
        assert_eq!(ceiling(4, b, m), Duration::from_millis(800));
        assert_eq!(ceiling(5, b, m), m);
        assert_eq!(ceiling(1000, b, m), m, "no overflow on huge retry counts");
    }

    #[test]
    fn delays_stay_within_bounds_and_spread() {
        let (b, m) = (Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = rand::rng();
        for retry in 1..8 {
            let ceil = ceiling(retry, b, m);
            let samples: Vec<_> = (0..200).map(|_| delay(retry, b, m, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceil));
            // Full jitter: some delays in the lower half, some in the upper half.
            assert!(samples.iter().any(|d| *d < ceil / 2));
            assert!(samples.iter().any(|d| *d > ceil / 2));
        }
    }
}
