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
    pub verb: &'static str,
    /// Cluster-wide (ClusterRole) or only in the operator's own namespace (Role).
    pub scope: Scope,
    pub why: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    OwnNamespace,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
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

/// What the controller and the leader election use.
#[rustfmt::skip]
pub const CONTROLLER: &[ApiCall] = &[
    call("attache.dev", "externalintegrations", "list", Cluster, "the controller's watch (initial list)"),
    call("attache.dev", "externalintegrations", "watch", Cluster, "the controller's watch"),
    call("attache.dev", "externalintegrations/status", "patch", Cluster, "status (merge patch on the status subresource)"),
    call("", "configmaps", "list", Cluster, "caches of generated ConfigMaps and of the others (CA bundles; names taken)"),
    call("", "configmaps", "watch", Cluster, "caches of generated ConfigMaps and of the others (CA bundles; names taken)"),
    call("", "configmaps", "create", Cluster, "server-side apply that creates attache-NAME"),
    call("", "configmaps", "patch", Cluster, "server-side apply of attache-NAME"),
    call("", "secrets", "list", Cluster, "caches of generated Secrets and of the others (credentials; names taken)"),
    call("", "secrets", "watch", Cluster, "caches of generated Secrets and of the others (credentials; names taken)"),
    call("", "secrets", "create", Cluster, "server-side apply that creates attache-NAME"),
    call("", "secrets", "patch", Cluster, "server-side apply of attache-NAME"),
    call("", "pods", "list", Cluster, "metadata-only watch of injected pods (initial list)"),
    call("", "pods", "watch", Cluster, "metadata-only watch of injected pods"),
    call("events.k8s.io", "events", "create", Cluster, "Events on Ready transitions"),
    call("events.k8s.io", "events", "patch", Cluster, "repeated Events (series)"),
    call("coordination.k8s.io", "leases", "get", OwnNamespace, "leader election"),
    call("coordination.k8s.io", "leases", "create", OwnNamespace, "leader election (first replica)"),
    call("coordination.k8s.io", "leases", "update", OwnNamespace, "leader election (acquire, renew, release)"),
];

/// What the admission webhook uses (`crate::admission`, as of this writing); its owner keeps
/// this list in step with its code. Needs the controller already has are repeated here so the
/// list stays complete if either side changes.
#[rustfmt::skip]
pub const WEBHOOK: &[ApiCall] = &[
    call("attache.dev", "externalintegrations", "list", Cluster, "cache of the integrations pods name"),
    call("attache.dev", "externalintegrations", "watch", Cluster, "cache of the integrations pods name"),
    call("", "namespaces", "list", Cluster, "cache of the namespace opt-in label (metadata)"),
    call("", "namespaces", "watch", Cluster, "cache of the namespace opt-in label (metadata)"),
    call("", "secrets", "get", OwnNamespace, "the self-managed serving certificate"),
    call("", "secrets", "list", OwnNamespace, "watch of the serving certificate's Secret"),
    call("", "secrets", "watch", OwnNamespace, "watch of the serving certificate's Secret"),
    call("", "secrets", "create", OwnNamespace, "the self-managed serving certificate"),
    call("", "secrets", "update", OwnNamespace, "renewing the serving certificate"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "get", Cluster, "read the caBundle"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "list", Cluster, "watch of its configuration"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "watch", Cluster, "watch of its configuration"),
    call("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "patch", Cluster, "keep the caBundle current"),
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
                    c.verb.to_string(),
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
            assert_ne!(c.verb, "delete", "{c:?}");
            assert_ne!(c.verb, "deletecollection", "{c:?}");
            if c.resource == "configmaps" || c.resource == "secrets" {
                assert_ne!(c.verb, "update", "{c:?}: writes are server-side apply");
            }
        }
    }
}
