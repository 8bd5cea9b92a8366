//! The Kubernetes API calls the operator makes, as RBAC sees them.
//!
//! `operator/rbac.yaml` (used by the Helm chart, explained in `operator/RBAC.md`) grants
//! exactly these, and a test fails when the two disagree. The controller's tests also check
//! every request the controller sends to the fake API server against [`CONTROLLER`].

/// One (API group, resource, verb) permission and why it is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiCall {
    /// `""` for the core group.
    pub group: &'static str,
    /// Plural resource, with `/subresource` when it is one.
    pub resource: &'static str,
    pub verb: Verb,
    /// Cluster-wide (ClusterRole) or only in the operator's own namespace (Role).
    pub scope: Scope,
    pub why: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    OwnNamespace,
}

/// An RBAC verb (the API server's names for what a request does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

// === impl Verb ===

impl Verb {
    /// As RBAC rules and SubjectAccessReviews spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: Verb,
    scope: Scope,
    why: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        scope,
        why,
    }
}

use Scope::{Cluster, OwnNamespace};
use Verb::{Create, Get, List, Patch, Update, Watch};

/// What the controller and the leader election use.
#[rustfmt::skip]
pub const CONTROLLER: &[ApiCall] = &[
    call("attache.dev", "externalintegrations", List, Cluster, "the controller's watch (initial list)"),
    call("attache.dev", "externalintegrations", Watch, Cluster, "the controller's watch"),
    call("attache.dev", "externalintegrations/status", Patch, Cluster, "status (server-side apply on the status subresource)"),
    call("", "configmaps", List, Cluster, "caches of generated ConfigMaps and of the others (CA bundles; names taken)"),
    call("", "configmaps", Watch, Cluster, "caches of generated ConfigMaps and of the others (CA bundles; names taken)"),
    call("", "configmaps", Create, Cluster, "server-side apply that creates attache-NAME"),
    call("", "configmaps", Patch, Cluster, "server-side apply of attache-NAME"),
    call("", "secrets", List, Cluster, "caches of generated Secrets and of the others (credentials; names taken)"),
    call("", "secrets", Watch, Cluster, "caches of generated Secrets and of the others (credentials; names taken)"),
    call("", "secrets", Create, Cluster, "server-side apply that creates attache-NAME"),
    call("", "secrets", Patch, Cluster, "server-side apply of attache-NAME"),
    call("", "pods", List, Cluster, "metadata-only watch of injected pods (initial list)"),
    call("", "pods", Watch, Cluster, "metadata-only watch of injected pods"),
    call("events.k8s.io", "events", Create, Cluster, "Events on Ready transitions"),
    call("events.k8s.io", "events", Patch, Cluster, "repeated Events (series)"),
    call("coordination.k8s.io", "leases", Get, OwnNamespace, "leader election"),
    call("coordination.k8s.io", "leases", Create, OwnNamespace, "leader election (first replica)"),
    call("coordination.k8s.io", "leases", Update, OwnNamespace, "leader election (acquire, renew, release)"),
];

/// What the admission webhook uses (`crate::admission`, as of this writing); its owner keeps
/// this list in step with its code. Needs the controller already has are repeated here so the
/// list stays complete if either side changes.
#[rustfmt::skip]
pub const WEBHOOK: &[ApiCall] = &[
    call("attache.dev", "externalintegrations", List, Cluster, "cache of the integrations pods name"),
    call("attache.dev", "externalintegrations", Watch, Cluster, "cache of the integrations pods name"),
    call("", "namespaces", List, Cluster, "cache of the namespace opt-in label (metadata)"),
    call("", "namespaces", Watch, Cluster, "cache of the namespace opt-in label (metadata)"),
    call("", "secrets", Get, OwnNamespace, "the self-managed serving certificate"),
    call("", "secrets", List, OwnNamespace, "watch of the serving certificate's Secret"),
    call("", "secrets", Watch, OwnNamespace, "watch of the serving certificate's Secret"),
    call("", "secrets", Create, OwnNamespace, "the self-managed serving certificate"),
    call("", "secrets", Update, OwnNamespace, "renewing the serving certificate"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", Get, Cluster, "read the caBundle"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", List, Cluster, "watch of its configuration"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", Watch, Cluster, "watch of its configuration"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", Patch, Cluster, "keep the caBundle current"),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    const RBAC_YAML: &str = include_str!("../rbac.yaml");

    type Triple = (String, String, String, &'static str);

    fn granted() -> BTreeSet<Triple> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(RBAC_YAML).unwrap();
        let mut out = BTreeSet::new();
        for doc in docs {
            let scope = match doc["kind"].as_str() {
                Some("ClusterRole") => "cluster",
                Some("Role") => "namespace",
                other => panic!("rbac.yaml holds only ClusterRoles and Roles, not {other:?}"),
            };
            for rule in doc["rules"].as_array().unwrap() {
                let list = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .unwrap_or_else(|| panic!("rule without {k}: {rule}"))
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect()
                };
                for g in list("apiGroups") {
                    for r in list("resources") {
                        for v in list("verbs") {
                            assert!(
                                !g.contains('*') && !r.contains('*') && !v.contains('*'),
                                "wildcard in rbac.yaml: {rule}"
                            );
                            out.insert((g.clone(), r.clone(), v, scope));
                        }
                    }
                }
            }
        }
        out
    }

    fn required(calls: &[ApiCall]) -> BTreeSet<Triple> {
        calls
            .iter()
            .map(|c| {
                (
                    c.group.to_string(),
                    c.resource.to_string(),
                    c.verb.as_str().to_string(),
                    match c.scope {
                        Cluster => "cluster",
                        OwnNamespace => "namespace",
                    },
                )
            })
            .collect()
    }

    /// Every call is granted (a cluster-wide grant covers a namespaced need), and every grant
    /// is some call's, with its scope: nothing wider.
    #[test]
    fn rbac_yaml_grants_exactly_what_the_code_uses() {
        let granted = granted();
        let mut needed = required(CONTROLLER);
        needed.extend(required(WEBHOOK));
        let missing: Vec<_> = needed
            .iter()
            .filter(|(g, r, v, _)| !granted.contains(&(g.clone(), r.clone(), v.clone(), "cluster")))
            .filter(|n| !granted.contains(*n))
            .collect();
        let extra: Vec<_> = granted.difference(&needed).collect();
        assert!(missing.is_empty(), "rbac.yaml lacks {missing:?}");
        assert!(
            extra.is_empty(),
            "rbac.yaml grants more than needed: {extra:?}"
        );
    }

    #[test]
    fn the_controller_never_deletes_or_updates_what_it_generates() {
        for c in CONTROLLER {
            assert_ne!(c.verb, Verb::Delete, "{c:?}");
            assert_ne!(c.verb, Verb::DeleteCollection, "{c:?}");
            if c.resource == "configmaps" || c.resource == "secrets" {
                assert_ne!(c.verb, Verb::Update, "{c:?}: writes are server-side apply");
            }
        }
    }
}
