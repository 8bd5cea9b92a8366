//! The generated Secrets and ConfigMaps as the controller remembers them: per namespace and
//! name, a [`Seen`] (controller reference and digest) instead of the object.
//!
//! Kept from the watch on the objects labelled as the operator's, which also triggers their
//! integrations. A reflector store would keep each object whole (metadata, label and data
//! maps): about 1.9 KB per object, 38 MB at 10,000 integrations, against about 0.35 KB here.

use std::{
    collections::HashMap,
    marker::PhantomData,
    sync::{Arc, RwLock},
};

use kube::runtime::watcher;
use tokio::sync::watch;

use super::desired::{GeneratedKind, Seen};
use crate::relisted::Relisted;

/// The remembered objects of kind `K`, shared by the watch that keeps them and the
/// reconciliations that read them.
pub struct OwnedCache<K> {
    inner: Arc<Inner>,
    kind: PhantomData<fn() -> K>,
}

struct Inner {
    /// namespace → name → what was seen.
    index: RwLock<Relisted<HashMap<String, HashMap<String, Seen>>>>,
    /// Becomes true when the first listing completed.
    listed: watch::Sender<bool>,
}

impl<K> Clone for OwnedCache<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> Default for OwnedCache<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                index: RwLock::default(),
                listed: watch::Sender::new(false),
            }),
            kind: PhantomData,
        }
    }
}

// === impl OwnedCache ===

impl<K: GeneratedKind> OwnedCache<K> {
    /// Applies one event of the watch on the generated objects of kind `K`.
    pub fn apply_watcher_event(&self, event: &watcher::Event<K>) {
        let listed = {
            let mut state = self.inner.index.write().unwrap_or_else(|p| p.into_inner());
            state.apply(
                event,
                |index, obj| {
                    if let Some((namespace, name)) = id(obj) {
                        index
                            .entry(namespace.to_string())
                            .or_default()
                            .insert(name.to_string(), Seen::of(obj));
                    }
                },
                |index, obj| {
                    let Some((namespace, name)) = id(obj) else {
                        return;
                    };
                    if let Some(names) = index.get_mut(namespace) {
                        names.remove(name);
                        if names.is_empty() {
                            index.remove(namespace);
                        }
                    }
                },
            );
            state.listed
        };
        if listed {
            self.inner
                .listed
                .send_if_modified(|l| !std::mem::replace(l, true));
        }
    }

    /// What was last seen of the object `name` in `namespace`, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Seen> {
        let state = self.inner.index.read().unwrap_or_else(|p| p.into_inner());
        state.live.get(namespace)?.get(name).cloned()
    }

    /// Resolves once the first listing completed (before it, absent means unknown).
    pub async fn wait_until_ready(&self) {
        let mut listed = self.inner.listed.subscribe();
        // Fails only if the sender is dropped, which it is not while `self` lives.
        let _ = listed.wait_for(|l| *l).await;
    }
}

fn id<K: kube::Resource>(obj: &K) -> Option<(&str, &str)> {
    let meta = obj.meta();
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use futures::FutureExt;
    use k8s_openapi::{api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::ObjectMeta};
    use watcher::Event;

    use super::*;

    fn config_map(name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("payments".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("config.json".into(), value.into())])),
            ..Default::default()
        }
    }

    #[test]
    fn remembers_digests_forgets_deletions_and_is_ready_after_the_first_listing() {
        let cache = OwnedCache::<ConfigMap>::default();
        assert!(cache.wait_until_ready().now_or_never().is_none());
        cache.apply_watcher_event(&Event::Init);
        cache.apply_watcher_event(&Event::InitApply(config_map("attache-a", "1")));
        assert!(cache.wait_until_ready().now_or_never().is_none());
        assert_eq!(
            cache.get("payments", "attache-a"),
            None,
            "listing in progress"
        );
        cache.apply_watcher_event(&Event::InitDone);
        assert!(cache.wait_until_ready().now_or_never().is_some());

        let seen = cache.get("payments", "attache-a").expect("listed");
        assert!(seen.up_to_date(&config_map("attache-a", "1")));
        assert!(!seen.up_to_date(&config_map("attache-a", "2")));
        cache.apply_watcher_event(&Event::Apply(config_map("attache-a", "2")));
        assert!(cache
            .get("payments", "attache-a")
            .expect("changed")
            .up_to_date(&config_map("attache-a", "2")));
        assert_eq!(cache.get("other", "attache-a"), None);

        cache.apply_watcher_event(&Event::Delete(config_map("attache-a", "2")));
        assert_eq!(cache.get("payments", "attache-a"), None);
        assert!(cache.inner.index.read().unwrap().live.is_empty());
    }
}
