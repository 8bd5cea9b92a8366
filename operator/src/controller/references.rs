//! Which integrations reference each Secret and ConfigMap: the reverse lookup the watches on
//! those objects use to trigger exactly the integrations a change must re-render.
//!
//! Kept from the integrations' own watch events. Testing every cached integration on every
//! Secret event instead cost O(integrations) per event: with 10,000 integrations, creating
//! their 10,000 Secrets was 10⁸ tests and about a quarter of the operator's CPU.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, RwLock},
};

use attache_api::{render::referenced_objects, ExternalIntegration};
use kube::runtime::{reflector::ObjectRef, watcher};

use super::secret_source::RefKind;
use crate::relisted::Relisted;

/// The reverse index, shared by the watches that read it and the watch that keeps it.
#[derive(Clone, Default)]
pub struct ReferenceIndex {
    inner: Arc<RwLock<Relisted<Index>>>,
}

/// An object an integration can name: namespace, kind, name.
type Target = (String, RefKind, String);

#[derive(Default)]
struct Index {
    /// Each referenced object's integrations (by name, in the object's namespace).
    users: HashMap<Target, BTreeSet<String>>,
    /// Each integration's references (namespace, name), to undo them on a change or delete.
    references: HashMap<(String, String), Vec<(RefKind, String)>>,
}

// === impl ReferenceIndex ===

impl ReferenceIndex {
    /// Applies one event of the watch on every ExternalIntegration.
    pub fn apply_watcher_event(&self, event: &watcher::Event<ExternalIntegration>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        state.apply(event, Index::set, |index, x| {
            if let Some(id) = id(x) {
                index.remove(&id);
            }
        });
    }

    /// The integrations in `namespace` whose spec names the `kind` object `name`.
    pub fn users(
        &self,
        kind: RefKind,
        namespace: &str,
        name: &str,
    ) -> Vec<ObjectRef<ExternalIntegration>> {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state
            .live
            .users
            .get(&(namespace.to_string(), kind, name.to_string()))
            .into_iter()
            .flatten()
            .map(|user| ObjectRef::new(user).within(namespace))
            .collect()
    }
}

// === impl Index ===

impl Index {
    /// Records `x`'s references in place of what it referenced before.
    fn set(&mut self, x: &ExternalIntegration) {
        let Some(id) = id(x) else { return };
        self.remove(&id);
        let (secrets, config_maps) = referenced_objects(&x.spec);
        let mut references: Vec<(RefKind, String)> = secrets
            .into_iter()
            .map(|s| (RefKind::Secret, s))
            .chain(config_maps.into_iter().map(|c| (RefKind::ConfigMap, c)))
            .collect();
        references.sort_unstable_by(|a, b| (a.0 as u8, &a.1).cmp(&(b.0 as u8, &b.1)));
        references.dedup();
        for (kind, object) in &references {
            self.users
                .entry((id.0.clone(), *kind, object.clone()))
                .or_default()
                .insert(id.1.clone());
        }
        if !references.is_empty() {
            self.references.insert(id, references);
        }
    }

    fn remove(&mut self, id: &(String, String)) {
        let Some(references) = self.references.remove(id) else {
            return;
        };
        for (kind, object) in references {
            let target = (id.0.clone(), kind, object);
            if let Some(users) = self.users.get_mut(&target) {
                users.remove(&id.1);
                if users.is_empty() {
                    self.users.remove(&target);
                }
            }
        }
    }
}

/// An integration's namespace and name.
fn id(x: &ExternalIntegration) -> Option<(String, String)> {
    Some((x.metadata.namespace.clone()?, x.metadata.name.clone()?))
}

#[cfg(test)]
mod tests {
    use watcher::Event;

    use super::*;
    use crate::controller::fixtures::xint;

    fn names(found: Vec<ObjectRef<ExternalIntegration>>) -> Vec<String> {
        let mut names: Vec<String> = found
            .into_iter()
            .map(|r| format!("{}/{}", r.namespace.unwrap_or_default(), r.name))
            .collect();
        names.sort();
        names
    }

    /// Integration `namespace/name` using the API key of Secret `secret`.
    fn with_key(namespace: &str, name: &str, secret: &str) -> ExternalIntegration {
        xint(name, namespace, secret)
    }

    #[test]
    fn finds_exactly_the_users_of_an_object_in_its_namespace() {
        let index = ReferenceIndex::default();
        for x in [
            with_key("payments", "a", "stripe-key"),
            with_key("payments", "b", "stripe-key"),
            with_key("payments", "c", "other-key"),
            with_key("shipping", "d", "stripe-key"),
        ] {
            index.apply_watcher_event(&Event::Apply(x));
        }
        assert_eq!(
            names(index.users(RefKind::Secret, "payments", "stripe-key")),
            ["payments/a", "payments/b"]
        );
        assert!(index
            .users(RefKind::ConfigMap, "payments", "stripe-key")
            .is_empty());
        assert!(index
            .users(RefKind::Secret, "billing", "stripe-key")
            .is_empty());
    }

    #[test]
    fn a_changed_reference_moves_and_a_delete_forgets() {
        let index = ReferenceIndex::default();
        index.apply_watcher_event(&Event::Apply(with_key("p", "a", "old-key")));
        index.apply_watcher_event(&Event::Apply(with_key("p", "a", "new-key")));
        assert!(index.users(RefKind::Secret, "p", "old-key").is_empty());
        assert_eq!(names(index.users(RefKind::Secret, "p", "new-key")), ["p/a"]);
        index.apply_watcher_event(&Event::Delete(with_key("p", "a", "new-key")));
        assert!(index.users(RefKind::Secret, "p", "new-key").is_empty());
        let state = index.inner.read().unwrap();
        assert!(state.live.users.is_empty() && state.live.references.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_completes() {
        let index = ReferenceIndex::default();
        index.apply_watcher_event(&Event::Apply(with_key("p", "gone", "k")));
        index.apply_watcher_event(&Event::Init);
        index.apply_watcher_event(&Event::InitApply(with_key("p", "kept", "k")));
        // Until the listing completes, the old index answers.
        assert_eq!(names(index.users(RefKind::Secret, "p", "k")), ["p/gone"]);
        index.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(index.users(RefKind::Secret, "p", "k")), ["p/kept"]);
    }
}
