//! Failover to another endpoint of the same API (`upstream.failover`): which endpoint the
//! next attempt of a request goes to. The retry rules decide *whether* there is a next
//! attempt (sent vs never sent, idempotency, budget): failover only decides *where*.

use crate::{integration::Integration, resilience::retry::RetryReason};

/// The endpoint for the attempt after one to `current` that is retried for `reason`: the next
/// endpoint (wrapping around to the primary) when `current` failed to connect or answered a
/// `retryOn` status; the same one after a reset or timeout, which says nothing about the
/// endpoint being down. (An endpoint whose circuit is open is skipped when the attempt is
/// cleared, see `attempt::clear`.)
pub fn next_endpoint(ig: &Integration, current: usize, reason: RetryReason) -> usize {
    let n = ig.policies.endpoints();
    if n == 1 {
        return 0;
    }
    match reason {
        RetryReason::ConnectFailure | RetryReason::Status(_) => (current + 1) % n,
        _ => current,
    }
}
