//! How long a request may wait its turn at a gate (the rate gate, the token budget).

use std::time::Duration;

use tokio::time::Instant;

use crate::clock;

/// Margin kept before the request's own deadline.
const BEFORE_REQUEST_DEADLINE: Duration = Duration::from_millis(5);

/// When a wait that started at `started` must give up: after `max_wait`, and a hair before
/// the request's own deadline, so the answer is the gate's refusal (with Retry-After) rather
/// than the request timeout firing at the same instant.
pub fn give_up_at(started: Instant, max_wait: Duration, request_deadline: Instant) -> Instant {
    clock::after(started, max_wait).min(
        request_deadline
            .checked_sub(BEFORE_REQUEST_DEADLINE)
            .unwrap_or(started),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_of_max_wait_and_just_before_the_request_deadline() {
        let t = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(give_up_at(t, s(1), t + s(10)), t + s(1));
        assert_eq!(
            give_up_at(t, s(10), t + s(1)),
            t + s(1) - BEFORE_REQUEST_DEADLINE
        );
        // A request at its deadline already: a moment in the past, so waiting ends at once.
        assert_eq!(give_up_at(t, s(10), t), t - BEFORE_REQUEST_DEADLINE);
        assert_eq!(
            give_up_at(t, Duration::MAX, t + s(60)),
            t + s(60) - BEFORE_REQUEST_DEADLINE
        );
    }
}
