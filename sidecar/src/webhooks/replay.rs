//! The replay cache: event ids (or signatures) seen recently, per integration.
//!
//! Bounded two ways: an entry expires `replayWindow` after it was recorded, and an
//! integration holds at most [`MAX_ENTRIES`] recorded entries, the oldest evicted first (an
//! entry is a 32-byte digest plus bookkeeping, about 100 bytes: ~6.5 MiB at the bound). It
//! lives in memory only, so a restarted sidecar starts empty; a reload keeps it (the new
//! integration takes the previous one's cache).
//!
//! An event is *claimed* while its request is being verified and forwarded, and *recorded*
//! only when the app answered 2xx. So a duplicate sent while the first is in flight is
//! refused, but the provider's retry after a failed delivery (app down, app 5xx) is let in.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::verify::ReplayKey;

/// Recorded entries kept per integration; past it the oldest is forgotten.
pub const MAX_ENTRIES: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    InFlight,
    Seen { until: Instant },
}

/// One integration's cache.
pub struct ReplayCache {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    states: HashMap<ReplayKey, State>,
    /// Recorded keys in recording order, with their expiry (a key recorded again after it
    /// expired appears twice; the older entry is skipped when popped).
    order: VecDeque<(ReplayKey, Instant)>,
}

/// The event was seen within the window, or is being delivered right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay;

/// A claimed event: dropped without [`Claim::record`], the claim is released.
pub struct Claim {
    cache: Arc<ReplayCache>,
    key: ReplayKey,
    recorded: bool,
}

impl ReplayCache {
    pub fn new() -> Arc<Self> {
        Self::with_capacity(MAX_ENTRIES)
    }

    pub fn with_capacity(max_entries: usize) -> Arc<Self> {
        Arc::new(Self {
            max_entries: max_entries.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Claims `key` at `now`, or says it is a replay.
    pub fn claim(self: &Arc<Self>, key: ReplayKey, now: Instant) -> Result<Claim, Replay> {
        let mut inner = self.lock();
        inner.expire(now);
        match inner.states.get(&key) {
            Some(State::InFlight) => return Err(Replay),
            Some(State::Seen { until }) if *until > now => return Err(Replay),
            _ => {}
        }
        inner.states.insert(key, State::InFlight);
        Ok(Claim {
            cache: self.clone(),
            key,
            recorded: false,
        })
    }

    /// Recorded entries (for tests and the bound).
    pub fn len(&self) -> usize {
        self.lock()
            .states
            .values()
            .filter(|s| matches!(s, State::Seen { .. }))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn expire(&mut self, now: Instant) {
        while let Some((key, until)) = self.order.front().copied() {
            if until > now {
                break;
            }
            self.order.pop_front();
            self.forget(key, until);
        }
    }

    /// Removes `key` if its recorded expiry is `until` (not a newer recording or a claim).
    fn forget(&mut self, key: ReplayKey, until: Instant) {
        if self.states.get(&key) == Some(&State::Seen { until }) {
            self.states.remove(&key);
        }
    }
}

impl Claim {
    /// The app took the event: refuse it for `window` from `now`.
    pub fn record(mut self, now: Instant, window: Duration) {
        self.recorded = true;
        let until = now
            .checked_add(window)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let max = self.cache.max_entries;
        let mut inner = self.cache.lock();
        inner.states.insert(self.key, State::Seen { until });
        inner.order.push_back((self.key, until));
        while inner.order.len() > max {
            if let Some((key, until)) = inner.order.pop_front() {
                inner.forget(key, until);
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.recorded {
            let mut inner = self.cache.lock();
            if inner.states.get(&self.key) == Some(&State::InFlight) {
                inner.states.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReplayKey {
        ReplayKey([n; 32])
    }

    #[test]
    fn a_recorded_event_is_a_replay_until_the_window_ends() {
        let cache = ReplayCache::new();
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        cache.claim(key(1), t0).unwrap().record(t0, window);
        assert_eq!(
            cache.claim(key(1), t0 + Duration::from_secs(59)).err(),
            Some(Replay)
        );
        assert!(cache.claim(key(1), t0 + window).is_ok(), "expired");
    }

    #[test]
    fn an_unrecorded_claim_is_released_and_a_concurrent_one_refused() {
        let cache = ReplayCache::new();
        let t0 = Instant::now();
        let first = cache.claim(key(1), t0).unwrap();
        assert_eq!(cache.claim(key(1), t0).err(), Some(Replay), "in flight");
        drop(first);
        assert!(
            cache.claim(key(1), t0).is_ok(),
            "a failed delivery may be retried"
        );
    }

    #[test]
    fn the_oldest_entry_is_evicted_at_the_bound() {
        let cache = ReplayCache::with_capacity(2);
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        for n in 1..=3 {
            cache.claim(key(n), t0).unwrap().record(t0, window);
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.claim(key(1), t0).is_ok(), "evicted");
        assert_eq!(cache.claim(key(3), t0).err(), Some(Replay));
    }
}
