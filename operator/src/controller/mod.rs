//! The controller: ExternalIntegrations in, ConfigMaps and Secrets `attache-NAME` out.
//!
//! - [`desired`], [`status`]: pure functions computing what to write.
//! - [`secret_source`]: the referenced Secrets/ConfigMaps as the renderer reads them.
//! - [`references`]: which integrations reference a Secret or ConfigMap (the watches' triggers).
//! - [`owned`]: the generated objects as remembered: controller and digest, not the object.
//! - [`pods`]: counting the pods that use each integration, damped for shared rate limits.
//! - [`reconcile`](mod@reconcile): the thin I/O shell of one reconciliation.
//! - [`events`]: the Events on Ready transitions, repeats counted as series.
//! - [`run`]: the kube-runtime `Controller` and its watches.
//!
//! # Watches
//!
//! | watch | selector | triggers |
//! |---|---|---|
//! | ExternalIntegrations | all | the integration itself |
//! | generated ConfigMaps, Secrets | `app.kubernetes.io/managed-by=attache-operator` | their controller (owner reference) |
//! | other Secrets, ConfigMaps | `managed-by!=attache-operator` (and no Helm release Secrets) | exactly the integrations that reference them |
//! | pods (metadata only) | `attache.dev/injected=true` | the integrations whose pod count changed, damped |
//!
//! The integrations and the other Secrets and ConfigMaps feed reflector stores, the generated
//! objects an [`OwnedCache`] and the pod watch feeds counts: reconciliations read Secrets,
//! generated objects and pod counts from memory, write only what changed, and the
//! steady state makes no API calls at all. A generated name already taken by an object the
//! operator does not control is refused (`NameTaken`), seen in the same caches.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use attache_api::ExternalIntegration;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    runtime::{
        controller::{self, Action},
        reflector::{self, ObjectRef, Store},
        watcher, Controller, WatchStreamExt,
    },
    Api, Client, Resource,
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::{contract, metrics::ControllerMetrics};

pub mod desired;
mod error;
pub mod events;
pub mod owned;
pub mod pods;
pub mod reconcile;
pub mod references;
pub mod secret_source;
pub mod status;

#[cfg(test)]
mod fixtures;

pub use error::{ApiVerb, Error};

use events::EventPublisher;
use owned::OwnedCache;
use pods::{DampingSettings, PodTracker};
use references::ReferenceIndex;
use secret_source::RefKind;

/// Label selector of the generated objects: [`contract::MANAGED_BY_LABEL`] is
/// [`contract::MANAGED_BY`].
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=attache-operator";
/// Label selector of everything else (the objects integrations may reference).
pub const NOT_OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by!=attache-operator";
/// Helm keeps whole releases in Secrets of this type; no integration references them, and
/// caching them would cost a lot of memory.
pub const SECRET_FIELD_SELECTOR: &str = "type!=helm.sh/release.v1";
/// Stripped from cached objects: for a `kubectl apply`-ed Secret it holds the secret values
/// again, and nothing here reads it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How the controller behaves; the defaults are production values.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Reconciliations running at once.
    pub concurrency: u16,
    /// Triggers for one integration arriving within this time make one reconciliation.
    pub debounce: Duration,
    /// Periodic re-check of an integration that reconciled fine (drift the watches missed).
    pub resync: Duration,
    /// First retry of a failed API call; doubles per failure.
    pub retry_base: Duration,
    /// First retry of a failure the user has to fix (the watches usually trigger earlier).
    pub retry_user_base: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    pub damping: DampingSettings,
    /// `reportingInstance` of Events: the replica's identity.
    pub instance: String,
    /// Redis of `rateLimit.scope: global`, and whether it answers.
    pub global: crate::global::GlobalLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            debounce: Duration::from_millis(200),
            resync: Duration::from_secs(10 * 60),
            retry_base: Duration::from_secs(1),
            retry_user_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(5 * 60),
            damping: DampingSettings::default(),
            instance: contract::MANAGED_BY.into(),
            global: Default::default(),
        }
    }
}

/// The caches reconciliations read from.
#[derive(Clone)]
pub struct Stores {
    pub referenced_secrets: Store<Secret>,
    pub referenced_config_maps: Store<ConfigMap>,
    pub owned_secrets: OwnedCache<Secret>,
    pub owned_config_maps: OwnedCache<ConfigMap>,
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub pods: PodTracker,
    pub events: EventPublisher,
    pub metrics: ControllerMetrics,
    pub settings: Settings,
    /// Consecutive failures per integration, for the backoff.
    failures: Mutex<HashMap<ObjectRef<ExternalIntegration>, u32>>,
}

// === impl Context ===

impl Context {
    async fn wait_ready(&self) {
        // `wait_until_ready` fails only when the writer is dropped, which ends the controller.
        let _ = self.stores.referenced_secrets.wait_until_ready().await;
        let _ = self.stores.referenced_config_maps.wait_until_ready().await;
        self.stores.owned_secrets.wait_until_ready().await;
        self.stores.owned_config_maps.wait_until_ready().await;
        self.pods.wait_ready().await;
    }

    fn forget_failures(&self, obj: &ObjectRef<ExternalIntegration>) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(obj);
    }

    fn count_failure(&self, obj: ObjectRef<ExternalIntegration>) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(obj).or_default();
        *n = n.saturating_add(1);
        *n
    }
}

/// Requeues a failed integration with exponential backoff: from `retry_base` for API
/// failures, from `retry_user_base` for what the user has to fix, up to `retry_max`.
pub fn error_policy(xint: Arc<ExternalIntegration>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.count_failure(ObjectRef::from_obj(&*xint));
    let base = if error.waits_for_user() {
        ctx.settings.retry_user_base
    } else {
        ctx.settings.retry_base
    };
    let delay = backoff(base, ctx.settings.retry_max, failures);
    tracing::warn!(
        namespace = xint.metadata.namespace.as_deref().unwrap_or_default(),
        name = xint.metadata.name.as_deref().unwrap_or_default(),
        error = %error,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// `base * 2^(failures-1)`, capped.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(20);
    base.saturating_mul(factor).min(max)
}

/// Runs the controller until `shutdown` resolves (then finishes the reconciliations in
/// flight) or the future is dropped (then stops at once: leadership was lost).
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: ControllerMetrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let (referenced_secrets, referenced_secrets_events) = reflect(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default()
            .labels(NOT_OWNED_SELECTOR)
            .fields(SECRET_FIELD_SELECTOR),
    );
    let (referenced_config_maps, referenced_config_maps_events) = reflect(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(NOT_OWNED_SELECTOR),
    );
    let (owned_secrets, owned_secrets_events) = remember(Api::<Secret>::all(client.clone()));
    let (owned_config_maps, owned_config_maps_events) =
        remember(Api::<ConfigMap>::all(client.clone()));

    let pods = PodTracker::new(settings.damping);
    let (pod_triggers, pod_trigger_rx) = mpsc::unbounded_channel();
    let pod_watch = pods
        .clone()
        .run(pods::watch_injected_pods(client.clone()), pod_triggers);

    let config = controller::Config::default()
        .concurrency(settings.concurrency)
        .debounce(settings.debounce);
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: Stores {
            referenced_secrets,
            referenced_config_maps,
            owned_secrets,
            owned_config_maps,
        },
        pods,
        events: EventPublisher::new(
            client.clone(),
            contract::MANAGED_BY.into(),
            settings.instance.clone(),
        ),
        metrics,
        settings,
        failures: Mutex::default(),
    });

    // The integrations' own watch and store, slimmed like the others (`Controller::new` would
    // cache them whole).
    let (integrations, integration_writer) = reflector::store();
    let references = ReferenceIndex::default();
    let index = references.clone();
    let integration_events = watcher(
        Api::<ExternalIntegration>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(slim)
    .reflect(integration_writer)
    .inspect(move |event| {
        if let Ok(event) = event {
            index.apply_watcher_event(event);
        }
    })
    .applied_objects();
    let controller = Controller::for_stream(integration_events, integrations.clone());
    let first_list = integrations;
    let secret_users = references.clone();
    let config_map_users = references;
    let reconciling = controller
        .owns_stream(owned_secrets_events)
        .owns_stream(owned_config_maps_events)
        .watches_stream(referenced_secrets_events, move |s: Secret| {
            users(&secret_users, RefKind::Secret, &s)
        })
        .watches_stream(referenced_config_maps_events, move |c: ConfigMap| {
            users(&config_map_users, RefKind::ConfigMap, &c)
        })
        .reconcile_on(futures::stream::unfold(pod_trigger_rx, |mut rx| async {
            rx.recv().await.map(|obj| (obj, rx))
        }))
        .with_config(config)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(%obj, "reconciled"),
                // Reconcile errors were logged by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // A generated object or a pod changed after its integration was deleted (the
                // garbage collector removing them does that): nothing to do, nothing wrong.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(%obj, "integration already deleted")
                }
                Err(e) => tracing::warn!(error = %e, "controller"),
            }
        });
    tracing::info!("controller started");
    tokio::select! {
        () = reconciling => {}
        () = pod_watch => tracing::warn!("pod watch ended"),
        () = stopped_before_first_list(shutdown, &first_list) => {
            tracing::info!("stopped before the first list of integrations: nothing to finish");
        }
    }
    tracing::info!("controller stopped");
}

/// Resolves when shutdown comes before the first list of integrations completed. kube's
/// graceful shutdown stops the watches and then waits for the queued reconciliations, which
/// wait for that first list: a shutdown right after winning the Lease would never end (the
/// drain timed out, the Lease was not released, the successor waited for it to expire).
/// Before the first list nothing was reconciled, so there is nothing to finish.
async fn stopped_before_first_list(
    shutdown: impl Future<Output = ()>,
    integrations: &Store<ExternalIntegration>,
) {
    shutdown.await;
    if integrations.wait_until_ready().now_or_never().is_some() {
        // Listed: the graceful shutdown finishes what is in flight.
        std::future::pending::<()>().await;
    }
}

/// The integrations to reconcile when `obj` (a Secret or ConfigMap they may reference)
/// changed.
fn users<K: Resource>(
    references: &ReferenceIndex,
    kind: RefKind,
    obj: &K,
) -> Vec<ObjectRef<ExternalIntegration>> {
    let meta = obj.meta();
    let (Some(namespace), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    references.users(kind, namespace, name)
}

/// A watch feeding a store, and the stream of changed objects for the controller's triggers.
/// Cached objects lose their managed fields and last-applied annotation (memory, and the
/// latter can hold secret values).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    (store, events)
}

/// The watch on the generated objects of kind `K`: it keeps their [`OwnedCache`] and yields
/// the changed objects, whose owner references trigger their integrations.
fn remember<K>(
    api: Api<K>,
) -> (
    OwnedCache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: desired::GeneratedKind + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let cache = OwnedCache::default();
    let keeper = cache.clone();
    let events = watcher(api, watcher::Config::default().labels(OWNED_SELECTOR))
        .default_backoff()
        .inspect(move |event| {
            if let Ok(event) = event {
                keeper.apply_watcher_event(event);
            }
        })
        .touched_objects();
    (cache, events)
}

/// Drops what no reader of a cache needs from a watched object: its managed fields (most of an
/// object's memory once the API server has several field managers for it: at 10,000
/// integrations they were most of the operator's RSS) and the last-applied annotation.
pub(crate) fn slim<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_made_of_the_contract_label() {
        let (label, value) = (contract::MANAGED_BY_LABEL, contract::MANAGED_BY);
        assert_eq!(OWNED_SELECTOR, format!("{label}={value}"));
        assert_eq!(NOT_OWNED_SELECTOR, format!("{label}!={value}"));
    }

    #[tokio::test]
    async fn a_shutdown_before_the_first_list_stops_at_once_and_after_it_waits() {
        let (store, mut writer) = reflector::store::<ExternalIntegration>();
        // Not listed yet: the shutdown ends the controller.
        tokio::time::timeout(
            Duration::from_secs(1),
            stopped_before_first_list(async {}, &store),
        )
        .await
        .expect("stopped at once");
        // Listed: kube's graceful shutdown decides, this never resolves.
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(stopped_before_first_list(async {}, &store)
            .now_or_never()
            .is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings::default();
        let b = |n| backoff(s.retry_base, s.retry_max, n);
        assert_eq!(b(1), Duration::from_secs(1));
        assert_eq!(b(2), Duration::from_secs(2));
        assert_eq!(b(5), Duration::from_secs(16));
        assert_eq!(b(30), Duration::from_secs(300));
        assert_eq!(b(u32::MAX), Duration::from_secs(300));
    }
}
