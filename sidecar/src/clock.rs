//! Instants computed from durations that come from outside (headers, manifests, token
//! responses): never an overflow, whatever the value.
//!
//! `Instant + Duration` panics when the sum does not fit, and the release profile aborts on
//! panic, so one absurd header could stop every integration of the pod. Everything that adds
//! an external duration to a clock goes through [`after`].

use std::time::Duration;

/// Longer than any wait the sidecar would honour, short enough to add to any clock reading:
/// a duration past it means "practically never" and is treated as this.
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `now + d`, with `d` clamped to [`FAR_FUTURE`]; generic over std's and tokio's `Instant`.
pub fn after<I>(now: I, d: Duration) -> I
where
    I: Copy + CheckedAdd,
{
    now.checked_add_duration(d.min(FAR_FUTURE))
        // Unreachable on real clocks (monotonic time starts near boot); keep the clamp.
        .unwrap_or(now)
}

/// The `checked_add` of std's and tokio's `Instant`.
pub trait CheckedAdd: Sized {
    fn checked_add_duration(self, d: Duration) -> Option<Self>;
}

impl CheckedAdd for std::time::Instant {
    fn checked_add_duration(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl CheckedAdd for tokio::time::Instant {
    fn checked_add_duration(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

impl CheckedAdd for std::time::SystemTime {
    fn checked_add_duration(self, d: Duration) -> Option<Self> {
        self.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_clamped_not_overflowed() {
        let now = std::time::Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let t = tokio::time::Instant::now();
        assert_eq!(after(t, Duration::MAX), t + FAR_FUTURE);
        let s = std::time::SystemTime::UNIX_EPOCH;
        assert_eq!(after(s, Duration::MAX), s + FAR_FUTURE);
    }
}
