//! What the webhook knows about the cluster: each namespace's labels and ExternalIntegrations.
//!
//! Admissions read these from memory. [`KubeView`] keeps them with two watches (integrations,
//! namespace metadata); [`StaticView`] holds fixed data, for tests and the offline `inject`
//! command.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
};

use attache_api::ExternalIntegration;
use futures::{future, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{Api, PartialObjectMeta},
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Client, ResourceExt,
};

use crate::relisted::Relisted;

/// The cluster as the webhook sees it.
pub trait ClusterView: Send + Sync {
    /// Whether the caches hold a full listing; before that, admissions are answered with an
    /// error (the API server then applies the webhook's `failurePolicy`).
    fn is_ready(&self) -> bool;
    /// The namespace's labels; empty for a namespace the cache does not know.
    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String>;
    /// The names of the namespace's ExternalIntegrations.
    fn integrations(&self, namespace: &str) -> BTreeSet<String>;
    /// The names of the namespace's ExternalIntegrations that have `spec.webhooks` (their
    /// pods expose the container port `attache-webhooks`).
    fn integrations_with_webhooks(&self, namespace: &str) -> BTreeSet<String> {
        let _ = namespace;
        BTreeSet::new()
    }
}

/// Fixed data.
#[derive(Debug, Clone, Default)]
pub struct StaticView {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub integrations: BTreeMap<String, BTreeSet<String>>,
}

/// The webhook's caches, kept by watches.
#[derive(Clone)]
pub struct KubeView {
    integrations: IntegrationIndex,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: Arc<AtomicBool>,
}

/// Each namespace's integrations by name, with whether each has `spec.webhooks`: all an
/// admission needs of them. An admission reads its namespace's entry; a cache of whole objects
/// had to be tested object by object (at 10,000 integrations that scan was most of an
/// admission's time) and held every object a second time on the leader.
#[derive(Clone, Default)]
pub struct IntegrationIndex {
    inner: Arc<RwLock<Relisted<ByNamespace>>>,
}

type ByNamespace = HashMap<String, BTreeMap<String, bool>>;

// === impl StaticView ===

impl StaticView {
    pub fn with_namespace<'a>(
        mut self,
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        self.namespaces.insert(
            name.into(),
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    pub fn with_integrations<'a>(
        mut self,
        namespace: &str,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        self.integrations
            .entry(namespace.into())
            .or_default()
            .extend(names.into_iter().map(String::from));
        self
    }
}

impl ClusterView for StaticView {
    fn is_ready(&self) -> bool {
        true
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces.get(namespace).cloned().unwrap_or_default()
    }

    fn integrations(&self, namespace: &str) -> BTreeSet<String> {
        self.integrations
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }
}

// === impl KubeView ===

impl KubeView {
    /// Starts watching ExternalIntegrations and namespaces (metadata only) in all namespaces.
    /// The returned future drives the watches and must be spawned; it runs until dropped.
    /// Needs RBAC: list/watch `externalintegrations.attache.dev` and `namespaces`.
    pub fn watch(client: Client) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let integrations = IntegrationIndex::default();
        let (namespaces, ns_writer) = reflector::store();
        let index = integrations.clone();
        let int_stream = watcher(
            Api::<ExternalIntegration>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .for_each(move |r| {
            match r {
                Ok(event) => index.apply_watcher_event(&event),
                Err(e) => tracing::warn!(error = %e, "watching ExternalIntegrations"),
            }
            future::ready(())
        });
        let ns_stream = reflector::reflector(
            ns_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects()
        .for_each(|r| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "watching namespaces");
            }
            future::ready(())
        });
        let driver = async move {
            future::join(int_stream, ns_stream).await;
        };
        (Self::new(integrations, namespaces), driver)
    }

    /// A view over an index and a store someone else keeps. It reports ready once both have
    /// had their first listing.
    pub fn new(
        integrations: IntegrationIndex,
        namespaces: Store<PartialObjectMeta<Namespace>>,
    ) -> Self {
        Self {
            integrations,
            namespaces,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }

    fn stores_ready(&self) -> bool {
        self.integrations.listed()
            && matches!(
                self.namespaces.wait_until_ready().now_or_never(),
                Some(Ok(()))
            )
    }
}

impl ClusterView for KubeView {
    fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.stores_ready();
        if ready {
            self.ready.store(true, Ordering::Release);
            tracing::info!("admission caches synced");
        }
        ready
    }

    fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces
            .get(&ObjectRef::new(namespace))
            .map(|n| n.labels().clone())
            .unwrap_or_default()
    }

    fn integrations(&self, namespace: &str) -> BTreeSet<String> {
        self.integrations.names(namespace, |_| true)
    }

    fn integrations_with_webhooks(&self, namespace: &str) -> BTreeSet<String> {
        self.integrations.names(namespace, |webhooks| webhooks)
    }
}

// === impl IntegrationIndex ===

impl IntegrationIndex {
    /// Applies one event of a watch on every ExternalIntegration.
    pub fn apply_watcher_event(&self, event: &watcher::Event<ExternalIntegration>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        state.apply(event, insert, remove);
    }

    fn listed(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).listed
    }

    /// The names in `namespace` whose has-webhooks flag passes `keep`.
    fn names(&self, namespace: &str, keep: impl Fn(bool) -> bool) -> BTreeSet<String> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state
            .live
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|(_, webhooks)| keep(**webhooks))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn len(&self) -> usize {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state.live.values().map(BTreeMap::len).sum()
    }
}

fn remove(index: &mut ByNamespace, x: &ExternalIntegration) {
    let (Some(ns), Some(name)) = (x.metadata.namespace.as_deref(), x.metadata.name.as_deref())
    else {
        return;
    };
    if let Some(names) = index.get_mut(ns) {
        names.remove(name);
        if names.is_empty() {
            index.remove(ns);
        }
    }
}

fn insert(index: &mut ByNamespace, x: &ExternalIntegration) {
    let (Some(ns), Some(name)) = (x.metadata.namespace.as_deref(), x.metadata.name.as_deref())
    else {
        return;
    };
    index
        .entry(ns.to_string())
        .or_default()
        .insert(name.to_string(), x.spec.webhooks.is_some());
}

impl std::fmt::Debug for KubeView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeView")
            .field("integrations", &self.integrations.len())
            .field("namespaces", &self.namespaces.len())
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::{core::PartialObjectMetaExt, runtime::watcher::Event};
    use serde_json::json;

    use super::*;

    fn integration(ns: &str, name: &str) -> ExternalIntegration {
        serde_json::from_value(json!({
            "apiVersion": "attache.dev/v1alpha1",
            "kind": "ExternalIntegration",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"upstream": {"url": "https://api.example.com"}},
        }))
        .unwrap()
    }

    fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
        .into_response_partial()
    }

    #[test]
    fn answers_from_the_caches_once_both_have_listed() {
        let integrations = IntegrationIndex::default();
        let iw = integrations.clone();
        let (namespaces, mut nw) = reflector::store();
        let view = KubeView::new(integrations, namespaces);
        assert!(!view.is_ready());

        iw.apply_watcher_event(&Event::Init);
        for i in [
            integration("shop", "stripe"),
            integration("shop", "twilio"),
            integration("other", "openai"),
        ] {
            iw.apply_watcher_event(&Event::InitApply(i));
        }
        iw.apply_watcher_event(&Event::InitDone);
        assert!(!view.is_ready(), "namespaces not listed yet");
        nw.apply_watcher_event(&Event::Init);
        nw.apply_watcher_event(&Event::InitApply(namespace(
            "shop",
            &[("attache.dev/inject", "enabled")],
        )));
        nw.apply_watcher_event(&Event::InitDone);
        assert!(view.is_ready());

        assert_eq!(
            view.integrations("shop").into_iter().collect::<Vec<_>>(),
            ["stripe", "twilio"]
        );
        assert!(view.integrations("nowhere").is_empty());
        assert_eq!(
            view.namespace_labels("shop")
                .get("attache.dev/inject")
                .map(String::as_str),
            Some("enabled")
        );
        assert!(view.namespace_labels("other").is_empty());

        // Later watch events show up at the next admission.
        iw.apply_watcher_event(&Event::Delete(integration("shop", "twilio")));
        assert_eq!(view.integrations("shop").len(), 1);

        // A relist replaces everything once complete; until then the last listing answers.
        iw.apply_watcher_event(&Event::Init);
        let mut hooked = integration("other", "github");
        hooked.spec.webhooks =
            serde_json::from_value(json!({"forwardTo": "http://127.0.0.1:8080/events",
            "verify": {"provider": "stripe", "secretKeyRef": {"name": "gh", "key": "secret"}}}))
            .unwrap();
        iw.apply_watcher_event(&Event::InitApply(hooked));
        assert_eq!(view.integrations("shop").len(), 1);
        iw.apply_watcher_event(&Event::InitDone);
        assert!(view.integrations("shop").is_empty());
        assert_eq!(
            view.integrations_with_webhooks("other")
                .into_iter()
                .collect::<Vec<_>>(),
            ["github"]
        );
        assert!(view.is_ready());
    }
}
