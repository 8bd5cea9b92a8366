//! The injection decision: a pure function of the pod, its namespace, the namespace's
//! ExternalIntegrations and the injector settings.
//!
//! Rules (README, "Your first integration"), in the order they are applied:
//! 1. `kube-system` and the operator's namespace are never injected.
//! 2. A pod that already carries the sidecar (or the `attache.dev/injected` label) is left
//!    alone: injecting twice is a no-op.
//! 3. `attache.dev/inject: "false"` opts out; `"true"` opts in; otherwise the namespace label
//!    `attache.dev/inject=enabled` decides.
//! 4. `attache.dev/integrations` names the integrations; each must exist in the namespace, or
//!    the pod is denied with a message naming every missing one. Without it, all of the
//!    namespace's integrations.
//! 5. The patch: env vars into every app container (init and regular), one projected volume
//!    per integration, the sidecar (native or first regular container), the injected label
//!    and annotations.
//!
//! A pod that asked for injection by annotation and cannot get it (no integration in its
//! namespace, host networking, conflicting ports) is denied: it would otherwise start without
//! the sidecar it relies on. A pod selected only by its namespace's label is skipped instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

use json_patch::{jsonptr::Token, Patch};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{json, Value};

use super::{
    patch::{tokens, PatchBuilder},
    settings::InjectorSettings,
    sidecar::{no_token_volume, parse_inject_flag, Planned, SidecarSpec, NO_TOKEN_VOLUME},
    ADMIN_PORT, ANNOTATION_INJECT, ANNOTATION_INTEGRATIONS, FIRST_PORT, KUBE_SYSTEM,
    LABEL_NAMESPACE_INJECT, MAX_INTEGRATIONS, NAMESPACE_INJECT_ENABLED, PROXY_PORT,
    SIDECAR_CONTAINER,
};
use crate::contract::{INJECTED_INTEGRATIONS_ANNOTATION, INJECTED_LABEL, PROXY_URL_ENV};

/// Annotations that tell Prometheus where the sidecar's metrics are; set only when the pod has
/// none of them (an app that publishes its own scrape target keeps it).
const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
const PROMETHEUS_PORT: &str = "prometheus.io/port";
const PROMETHEUS_PATH: &str = "prometheus.io/path";
/// `kubectl logs/exec` pick this container when none is named; kept on the app when the
/// sidecar becomes the first regular container.
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The pod's surroundings: which namespace, its labels, its ExternalIntegrations (names).
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    /// The namespace of the admission request (the pod's `metadata.namespace` is often unset on
    /// CREATE).
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub integrations: &'a BTreeSet<String>,
    /// Those of `integrations` that have `spec.webhooks`.
    pub with_webhooks: &'a BTreeSet<String>,
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Leave the pod as it is, for this reason.
    NotSelected(Skip),
    /// The pod carries the sidecar already: no patch.
    AlreadyInjected,
    /// Inject: apply this patch.
    Patch(Injection),
    /// Refuse the pod, telling its author why.
    Deny(String),
}

/// A successful injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Patch,
    /// The integrations the pod gets, sorted.
    pub integrations: Vec<String>,
    /// Whether the sidecar is a native sidecar (init container) or a regular container.
    pub native_sidecar: bool,
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `kube-system` or the operator's own namespace.
    ProtectedNamespace(String),
    /// Neither the pod nor its namespace asked for injection.
    NotOptedIn,
    /// `attache.dev/inject: "false"`.
    OptedOut,
    /// Selected by the namespace label, but the namespace has no ExternalIntegration.
    NoIntegrations,
    /// Selected by the namespace label, but the pod uses the node's network, where the
    /// sidecar's fixed localhost ports would collide.
    HostNetwork,
}

// === impl Skip ===

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::ProtectedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            Skip::NotOptedIn => write!(
                f,
                "neither the annotation {ANNOTATION_INJECT}: \"true\" nor the namespace label {LABEL_NAMESPACE_INJECT}={NAMESPACE_INJECT_ENABLED}"
            ),
            Skip::OptedOut => write!(f, "opted out with {ANNOTATION_INJECT}: \"false\""),
            Skip::NoIntegrations => write!(f, "the namespace has no ExternalIntegration"),
            Skip::HostNetwork => write!(f, "the pod uses the host's network"),
        }
    }
}

/// Decides what to do with `pod` and, to inject, builds the JSON patch.
pub fn mutate(pod: &Pod, ctx: &PodContext<'_>, settings: &InjectorSettings) -> Decision {
    if ctx.namespace == KUBE_SYSTEM || settings.operator_namespace.as_deref() == Some(ctx.namespace)
    {
        return Decision::NotSelected(Skip::ProtectedNamespace(ctx.namespace.to_string()));
    }
    let Some(spec) = &pod.spec else {
        return Decision::Deny("the pod has no spec".into());
    };
    if is_injected(pod, spec) {
        return Decision::AlreadyInjected;
    }
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);

    let explicit = match annotations.get(ANNOTATION_INJECT) {
        None => false,
        Some(v) => match parse_inject_flag(v) {
            Some(true) => true,
            Some(false) => return Decision::NotSelected(Skip::OptedOut),
            None => {
                return Decision::Deny(format!(
                    "annotation {ANNOTATION_INJECT}: {v:?} is not \"true\" or \"false\""
                ))
            }
        },
    };
    let namespace_opted_in = ctx
        .namespace_labels
        .get(LABEL_NAMESPACE_INJECT)
        .is_some_and(|v| v == NAMESPACE_INJECT_ENABLED);
    if !explicit && !namespace_opted_in {
        return Decision::NotSelected(Skip::NotOptedIn);
    }

    let names = match select_integrations(annotations.get(ANNOTATION_INTEGRATIONS), ctx) {
        Ok(names) => names,
        Err(message) => return Decision::Deny(message),
    };
    if names.is_empty() {
        return if explicit {
            Decision::Deny(format!(
                "the pod asks for the Attaché sidecar ({ANNOTATION_INJECT}: \"true\") but namespace {} has no ExternalIntegration",
                ctx.namespace
            ))
        } else {
            Decision::NotSelected(Skip::NoIntegrations)
        };
    }
    if spec.host_network == Some(true) {
        return if explicit {
            Decision::Deny(
                "the Attaché sidecar cannot serve a pod with hostNetwork: true (its localhost ports would be the node's)".into(),
            )
        } else {
            Decision::NotSelected(Skip::HostNetwork)
        };
    }

    let planned = Planned::plan(&names);
    let webhooks = names.iter().any(|n| ctx.with_webhooks.contains(n));
    let sidecar = match SidecarSpec::resolve(settings, annotations) {
        Ok(s) => s,
        Err(errors) => return Decision::Deny(errors.join("; ")),
    };
    let problems = conflicts(spec, &planned);
    if !problems.is_empty() {
        return Decision::Deny(problems.join("; "));
    }

    Decision::Patch(Injection {
        patch: build_patch(pod, spec, annotations, &planned, &sidecar, webhooks),
        integrations: names,
        native_sidecar: sidecar.native,
    })
}

/// A pod is injected when it carries the label or a container of the sidecar's name.
pub fn is_injected(pod: &Pod, spec: &PodSpec) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECTED_LABEL))
        .is_some_and(|v| v == "true");
    labelled
        || all_containers(spec)
            .chain(spec.containers.iter())
            .any(|c| c.name == SIDECAR_CONTAINER)
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers.iter().flatten()
}

/// The pod's integrations, sorted: those its annotation names, or all of the namespace's.
fn select_integrations(
    annotation: Option<&String>,
    ctx: &PodContext<'_>,
) -> Result<Vec<String>, String> {
    let Some(list) = annotation else {
        let all: Vec<String> = ctx.integrations.iter().cloned().collect();
        return check_count(all);
    };
    let named: BTreeSet<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if named.is_empty() {
        return Err(format!(
            "annotation {ANNOTATION_INTEGRATIONS} names no integration: list ExternalIntegrations of namespace {} (e.g. \"stripe,twilio\") or remove it",
            ctx.namespace
        ));
    }
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !ctx.integrations.contains(*n))
        .collect();
    if !missing.is_empty() {
        let list = |names: &mut dyn Iterator<Item = &String>| {
            names
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = if missing.len() == 1 {
            "ExternalIntegration"
        } else {
            "ExternalIntegrations"
        };
        let present = if ctx.integrations.is_empty() {
            "it has none".to_string()
        } else {
            format!("it has {}", list(&mut ctx.integrations.iter()))
        };
        return Err(format!(
            "annotation {ANNOTATION_INTEGRATIONS} names {what} {} that namespace {} does not have ({present})",
            list(&mut missing.into_iter()),
            ctx.namespace,
        ));
    }
    check_count(named.into_iter().collect())
}

fn check_count(names: Vec<String>) -> Result<Vec<String>, String> {
    if names.len() > MAX_INTEGRATIONS {
        return Err(format!(
            "the pod would use {} integrations; one sidecar serves at most {MAX_INTEGRATIONS} (name fewer in {ANNOTATION_INTEGRATIONS})",
            names.len()
        ));
    }
    Ok(names)
}

/// Problems that would make the injected pod fail at run time: ports the app already uses,
/// names that are taken, integrations whose env var names collide.
fn conflicts(spec: &PodSpec, planned: &[Planned]) -> Vec<String> {
    let mut problems = Vec::new();
    let last = FIRST_PORT + planned.len() as u16 - 1;
    let ours = |port: i32| {
        (i32::from(FIRST_PORT)..=i32::from(last)).contains(&port)
            || port == i32::from(PROXY_PORT)
            || port == i32::from(ADMIN_PORT)
    };
    for c in all_containers(spec).chain(spec.containers.iter()) {
        for p in c.ports.iter().flatten() {
            if ours(p.container_port) {
                problems.push(format!(
                    "container {} declares port {}, which the Attaché sidecar listens on (ports {FIRST_PORT}-{last}, {PROXY_PORT}, {ADMIN_PORT})",
                    c.name, p.container_port
                ));
            }
        }
    }
    let volumes: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    if volumes.contains(NO_TOKEN_VOLUME) {
        problems.push(format!(
            "the pod already has a volume named {NO_TOKEN_VOLUME}, which the Attaché sidecar needs"
        ));
    }
    for p in planned {
        if volumes.contains(p.volume_name.as_str()) {
            problems.push(format!(
                "the pod already has a volume named {}, which the Attaché sidecar needs for integration {}",
                p.volume_name, p.name
            ));
        }
    }
    let mut env_names: BTreeMap<&str, &str> = BTreeMap::new();
    for p in planned {
        if let Some(other) = env_names.insert(&p.env_name, &p.name) {
            problems.push(format!(
                "integrations {other} and {} would both be {}: name only one of them in {ANNOTATION_INTEGRATIONS}",
                p.name, p.env_name
            ));
        }
    }
    problems
}

fn build_patch(
    pod: &Pod,
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    planned: &[Planned],
    sidecar: &SidecarSpec,
    webhooks: bool,
) -> Patch {
    let mut b = PatchBuilder::default();
    let mut env: Vec<(String, String)> = planned
        .iter()
        .map(|p| (p.env_name.clone(), p.url()))
        .collect();
    env.push((
        PROXY_URL_ENV.into(),
        format!("http://127.0.0.1:{PROXY_PORT}"),
    ));

    // Env vars first: inserting the sidecar shifts the indices of the containers after it.
    // Prepended, so the app's own env can refer to them as $(ATTACHE_X_URL); a name the
    // container already defines is the author's choice and is kept.
    for (field, list) in [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ] {
        for (i, c) in list.iter().enumerate() {
            let existing: BTreeSet<&str> =
                c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            let values: Vec<Value> = env
                .iter()
                .filter(|(name, _)| !existing.contains(name.as_str()))
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            let path = [
                Token::new("spec"),
                Token::new(field),
                Token::from(i),
                Token::new("env"),
            ];
            b.prepend(&path, c.env.is_some(), values);
        }
    }

    b.append(
        &tokens(&["spec", "volumes"]),
        spec.volumes.is_some(),
        planned
            .iter()
            .map(Planned::volume)
            .chain([no_token_volume()])
            .collect(),
    );

    // The sidecar goes first either way: as the first init container it starts before the
    // other init containers (which get the env vars too); as the first regular container it
    // is started first.
    let container = sidecar.container(planned, webhooks);
    if sidecar.native {
        b.prepend(
            &tokens(&["spec", "initContainers"]),
            spec.init_containers.is_some(),
            vec![container],
        );
    } else {
        b.prepend(&tokens(&["spec", "containers"]), true, vec![container]);
    }

    b.put_entries(
        &tokens(&["metadata", "labels"]),
        pod.metadata.labels.is_some(),
        vec![(INJECTED_LABEL.into(), "true".into())],
    );
    let mut entries = vec![(
        INJECTED_INTEGRATIONS_ANNOTATION.to_string(),
        planned
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    )];
    let scrape_keys = [PROMETHEUS_SCRAPE, PROMETHEUS_PORT, PROMETHEUS_PATH];
    if !scrape_keys.iter().any(|k| annotations.contains_key(*k)) {
        entries.extend([
            (PROMETHEUS_SCRAPE.into(), "true".into()),
            (PROMETHEUS_PORT.into(), ADMIN_PORT.to_string()),
            (PROMETHEUS_PATH.into(), "/metrics".into()),
        ]);
    }
    if !sidecar.native && !annotations.contains_key(DEFAULT_CONTAINER) {
        if let Some(app) = spec.containers.first() {
            entries.push((DEFAULT_CONTAINER.into(), app.name.clone()));
        }
    }
    b.put_entries(
        &tokens(&["metadata", "annotations"]),
        pod.metadata.annotations.is_some(),
        entries,
    );
    b.build()
}

#[cfg(test)]
#[path = "mutate_tests.rs"]
mod tests;
