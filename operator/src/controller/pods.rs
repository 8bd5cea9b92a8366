//! Counting the pods that use each integration: `status.pods`, and the divisor of a
//! `rateLimit.scope: shared` limit.
//!
//! # The contract with the injection webhook
//!
//! An injected pod carries the label `attache.dev/injected: "true"` and the annotation
//! `attache.dev/injected-integrations: "a,b"`, the integrations of its namespace it uses. The
//! operator watches only the metadata of pods with that label (no specs, no statuses), and
//! counts, per (namespace, integration), the pods that are not being deleted. A pod that has
//! completed but not been deleted still counts: metadata carries no phase, and counting it
//! errs on the safe side (smaller shares).
//!
//! # Damping: how a count becomes a divisor
//!
//! The shared limit is divided by the *divisor*, and changing it rewrites the generated
//! ConfigMap of every pod using the integration, so it must follow the pods without storming
//! during rollouts. The rule ([`Damper`]):
//!
//! 1. **Increases apply at once.** The divisor is never below the live count, so the per-pod
//!    shares never add up to more than the account's quota for longer than it takes the new
//!    config to reach the pods.
//! 2. **Decreases wait.** The divisor is the largest count seen over the last
//!    [`DampingSettings::scale_down_window`] (20 s by default): a rolling update's surge (up one,
//!    down one, ...) keeps the divisor at its peak, and shares grow only once the count has been
//!    lower for the whole window. A re-render is scheduled for the moment the window has passed.
//! 3. **Re-renders are rate-limited per integration.** A count change triggers a
//!    reconciliation at most once per [`DampingSettings::min_interval`] (1 s by default) for a
//!    given integration; changes inside the interval are coalesced into one reconciliation at
//!    its end, which reads the count of that moment.
//!
//! `status.pods` reports the live count; the rendered config carries the divisor
//! (`rateLimit.pods`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use attache_api::ExternalIntegration;
use futures::{Stream, StreamExt};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::{
    core::PartialObjectMeta,
    runtime::{
        reflector::ObjectRef,
        watcher::{self, Event},
        WatchStreamExt,
    },
    Api, Client,
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::contract::INJECTED_INTEGRATIONS_ANNOTATION;

/// The watch's label selector: [`crate::contract::INJECTED_LABEL`] is `true`.
pub const INJECTED_SELECTOR: &str = "attache.dev/injected=true";

/// An integration, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub namespace: String,
    pub integration: String,
}

/// What a reconciliation needs to know about an integration's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodShare {
    /// Live pods using it: `status.pods`.
    pub pods: u32,
    /// What a shared rate limit is divided by (damped, at least 1).
    pub divisor: u32,
}

/// Tunables of the [`Damper`].
#[derive(Debug, Clone, Copy)]
pub struct DampingSettings {
    pub scale_down_window: Duration,
    pub min_interval: Duration,
}

impl Default for DampingSettings {
    fn default() -> Self {
        Self {
            scale_down_window: Duration::from_secs(20),
            min_interval: Duration::from_secs(1),
        }
    }
}

/// The integrations an injected pod uses; none when it is being deleted.
pub fn integrations_of(meta: &ObjectMeta) -> Vec<String> {
    if meta.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(list) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECTED_INTEGRATIONS_ANNOTATION))
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
}

// === PodCounts: pod events → counts ===

/// Live pods per integration, maintained from watch events.
#[derive(Debug, Default)]
pub struct PodCounts {
    /// (namespace, pod name) → integrations it uses.
    pods: HashMap<(String, String), Vec<String>>,
    counts: HashMap<Key, u32>,
    /// Pods of a (re)list in progress.
    relist: Option<HashMap<(String, String), Vec<String>>>,
}

impl PodCounts {
    /// Applies one watch event; returns the integrations whose count changed, with the new
    /// count.
    pub fn apply(&mut self, event: Event<PartialObjectMeta<Pod>>) -> Vec<(Key, u32)> {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                if let (Some(relist), Some(id)) = (self.relist.as_mut(), pod_id(&pod.metadata)) {
                    let uses = integrations_of(&pod.metadata);
                    if !uses.is_empty() {
                        relist.insert(id, uses);
                    }
                }
                Vec::new()
            }
            Event::InitDone => {
                let pods = self.relist.take().unwrap_or_default();
                self.replace(pods)
            }
            Event::Apply(pod) => {
                let Some(id) = pod_id(&pod.metadata) else {
                    return Vec::new();
                };
                let uses = integrations_of(&pod.metadata);
                let old = if uses.is_empty() {
                    self.pods.remove(&id)
                } else {
                    self.pods.insert(id.clone(), uses.clone())
                };
                self.adjust(&id.0, old.unwrap_or_default(), uses)
            }
            Event::Delete(pod) => {
                let Some(id) = pod_id(&pod.metadata) else {
                    return Vec::new();
                };
                let old = self.pods.remove(&id).unwrap_or_default();
                self.adjust(&id.0, old, Vec::new())
            }
        }
    }

    /// Live pods using the integration.
    pub fn count(&self, key: &Key) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// One pod went from using `old` to using `new` (both sorted, deduplicated).
    fn adjust(&mut self, namespace: &str, old: Vec<String>, new: Vec<String>) -> Vec<(Key, u32)> {
        let mut changed = Vec::new();
        for name in old.iter().filter(|n| !new.contains(n)) {
            let key = Key {
                namespace: namespace.into(),
                integration: name.clone(),
            };
            let count = match self.counts.get_mut(&key) {
                Some(c) if *c > 1 => {
                    *c -= 1;
                    *c
                }
                _ => {
                    self.counts.remove(&key);
                    0
                }
            };
            changed.push((key, count));
        }
        for name in new.iter().filter(|n| !old.contains(n)) {
            let key = Key {
                namespace: namespace.into(),
                integration: name.clone(),
            };
            let c = self.counts.entry(key.clone()).or_default();
            *c += 1;
            changed.push((key, *c));
        }
        changed.sort();
        changed
    }

    fn replace(&mut self, pods: HashMap<(String, String), Vec<String>>) -> Vec<(Key, u32)> {
        let mut counts: HashMap<Key, u32> = HashMap::new();
        for ((namespace, _), uses) in &pods {
            for integration in uses {
                *counts
                    .entry(Key {
                        namespace: namespace.clone(),
                        integration: integration.clone(),
                    })
                    .or_default() += 1;
            }
        }
        let mut changed: Vec<(Key, u32)> = counts
            .iter()
            .filter(|(k, c)| self.counts.get(*k) != Some(*c))
            .map(|(k, c)| (k.clone(), *c))
            .chain(
                self.counts
                    .keys()
                    .filter(|k| !counts.contains_key(*k))
                    .map(|k| (k.clone(), 0)),
            )
            .collect();
        changed.sort();
        self.pods = pods;
        self.counts = counts;
        changed
    }
}

fn pod_id(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

// === Damper: counts → divisors and reconciliation triggers ===

/// Turns count changes into divisors and rate-limited triggers (the rule is in the module
/// documentation). Pure: time is passed in.
#[derive(Debug)]
pub struct Damper {
    settings: DampingSettings,
    keys: HashMap<Key, KeyState>,
}

#[derive(Debug, Default)]
struct KeyState {
    current: u32,
    /// (until, count): `count` was live until `until`; kept for one window.
    history: VecDeque<(Instant, u32)>,
    last_trigger: Option<Instant>,
    /// A count change waiting for its rate-limit slot.
    change_due: Option<Instant>,
    /// When the scale-down window of the last decrease has passed.
    expiry_due: Option<Instant>,
}

impl Damper {
    pub fn new(settings: DampingSettings) -> Self {
        Self {
            settings,
            keys: HashMap::new(),
        }
    }

    /// Records that `key` now has `count` live pods.
    pub fn observe(&mut self, key: Key, count: u32, now: Instant) {
        let s = self.settings;
        let state = self.keys.entry(key).or_default();
        if state.current == count {
            return;
        }
        let decreased = count < state.current;
        state.history.push_back((now, state.current));
        state.current = count;
        state.prune(now, s.scale_down_window);
        let slot = match state.last_trigger {
            Some(last) => (last + s.min_interval).max(now),
            None => now,
        };
        state.change_due = Some(state.change_due.map_or(slot, |d| d.min(slot)));
        if decreased {
            state.expiry_due = Some(now + s.scale_down_window);
        }
    }

    /// The live count and the damped divisor of `key` at `now`.
    pub fn share(&self, key: &Key, now: Instant) -> PodShare {
        let Some(state) = self.keys.get(key) else {
            return PodShare {
                pods: 0,
                divisor: 1,
            };
        };
        let held = state
            .history
            .iter()
            .filter(|(until, _)| {
                now.saturating_duration_since(*until) < self.settings.scale_down_window
            })
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        PodShare {
            pods: state.current,
            divisor: state.current.max(held).max(1),
        }
    }

    /// The earliest pending trigger.
    pub fn next_due(&self) -> Option<Instant> {
        self.keys
            .values()
            .flat_map(|s| [s.change_due, s.expiry_due])
            .flatten()
            .min()
    }

    /// The integrations to reconcile now; their triggers are consumed.
    pub fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let window = self.settings.scale_down_window;
        let mut due = Vec::new();
        for (key, state) in &mut self.keys {
            let change = state.change_due.is_some_and(|d| d <= now);
            let expiry = state.expiry_due.is_some_and(|d| d <= now);
            if change {
                state.change_due = None;
            }
            if expiry {
                state.expiry_due = None;
            }
            if change || expiry {
                state.last_trigger = Some(now);
                due.push(key.clone());
            }
            state.prune(now, window);
        }
        // Forget integrations with no pods and nothing pending (deleted, or scaled to zero
        // long ago); the rate limit starts afresh for them.
        self.keys.retain(|_, s| {
            s.current > 0
                || !s.history.is_empty()
                || s.change_due.is_some()
                || s.expiry_due.is_some()
        });
        due.sort();
        due
    }
}

impl KeyState {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .history
            .front()
            .is_some_and(|(until, _)| now.saturating_duration_since(*until) >= window)
        {
            self.history.pop_front();
        }
    }
}

// === PodTracker: the watch, shared with reconciliations ===

/// The pod counts of the cluster, kept current by [`PodTracker::run`].
#[derive(Clone)]
pub struct PodTracker {
    state: Arc<Mutex<TrackerState>>,
    ready: watch::Receiver<bool>,
    ready_tx: Arc<watch::Sender<bool>>,
}

struct TrackerState {
    counts: PodCounts,
    damper: Damper,
}

impl PodTracker {
    pub fn new(settings: DampingSettings) -> Self {
        let (ready_tx, ready) = watch::channel(false);
        Self {
            state: Arc::new(Mutex::new(TrackerState {
                counts: PodCounts::default(),
                damper: Damper::new(settings),
            })),
            ready,
            ready_tx: Arc::new(ready_tx),
        }
    }

    /// The count and divisor for one integration, now.
    pub fn share(&self, namespace: &str, integration: &str) -> PodShare {
        let key = Key {
            namespace: namespace.into(),
            integration: integration.into(),
        };
        self.lock().damper.share(&key, Instant::now())
    }

    /// Resolves once the first list of pods has been counted: before that, a shared limit
    /// would be divided by too small a number.
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.clone();
        // Err only if the sender is gone, and `self` holds it.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Feeds pod events into the counts and sends the integrations to reconcile on
    /// `triggers`. Runs until the event stream ends or `triggers` is closed.
    pub async fn run(
        self,
        events: impl Stream<Item = Result<Event<PartialObjectMeta<Pod>>, watcher::Error>> + Send,
        triggers: mpsc::UnboundedSender<ObjectRef<ExternalIntegration>>,
    ) {
        let mut events = std::pin::pin!(events);
        loop {
            let next_due = self.lock().damper.next_due();
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => self.observe(event),
                    Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    None => return,
                },
                () = sleep_until(next_due) => {
                    let due = self.lock().damper.take_due(Instant::now());
                    for key in due {
                        let obj = ObjectRef::new(&key.integration).within(&key.namespace);
                        if triggers.send(obj).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn observe(&self, event: Event<PartialObjectMeta<Pod>>) {
        let init_done = matches!(event, Event::InitDone);
        let now = Instant::now();
        let mut state = self.lock();
        for (key, count) in state.counts.apply(event) {
            tracing::debug!(namespace = %key.namespace, integration = %key.integration, count, "pods changed");
            state.damper.observe(key, count, now);
        }
        if init_done {
            self.ready_tx.send_replace(true);
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // Every update leaves the state consistent before it can panic, so a poisoned lock is
        // still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The metadata-only watch of injected pods in all namespaces.
pub fn watch_injected_pods(
    client: Client,
) -> impl Stream<Item = Result<Event<PartialObjectMeta<Pod>>, watcher::Error>> + Send {
    // `Api<PartialObjectMeta<_>>` makes metadata-only requests: no specs or statuses travel.
    let api: Api<PartialObjectMeta<Pod>> = Api::all(client);
    watcher::watcher(api, watcher::Config::default().labels(INJECTED_SELECTOR)).default_backoff()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "pods_tests.rs"]
mod tests;
