//! `attache-operator inject`: the webhook's mutation applied offline, to manifests (its
//! command line is [`crate::cli::inject`]).
//!
//! Pods and the pod templates of workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, CronJob; also inside a `List`) are mutated exactly as the
//! webhook would mutate the pods they create; every other document passes through unchanged.
//! The command acts as if the namespace were labelled `attache.dev/inject=enabled`: every pod
//! is injected unless it opts out with `attache.dev/inject: "false"`. Its integrations are
//! those of the `-i` files in the workload's namespace (a document or integration without a
//! namespace matches any).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::{
    admission::{
        mutate, Decision, InjectorSettings, PodContext, Skip, LABEL_NAMESPACE_INJECT,
        NAMESPACE_INJECT_ENABLED,
    },
    manifests::{Document, Inputs},
};

/// An integration known to the command: its namespace (if the manifest says) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KnownIntegration {
    pub namespace: Option<String>,
    pub name: String,
    /// It has `spec.webhooks` (the pod gets the container port `attache-webhooks`).
    pub webhooks: bool,
}

/// The documents, mutated, and one line per pod or template about what happened.
#[derive(Debug, Default)]
pub struct Injected {
    pub documents: Vec<Value>,
    pub notes: Vec<String>,
}

/// Where a pod spec sits in a document of some kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodSite {
    /// The document is a Pod.
    Pod,
    /// The document has a pod template at this JSON pointer.
    Template(&'static str),
}

/// Mutates every document of `inputs`. Fails, with one line per problem (naming the file,
/// the object and each missing integration), if any pod cannot be injected.
pub fn inject(
    inputs: &Inputs,
    integrations: &[KnownIntegration],
    settings: &InjectorSettings,
) -> Result<Injected, Vec<String>> {
    let mut out = Injected::default();
    let mut errors = Vec::new();
    for doc in &inputs.documents {
        let origin = inputs.origin(doc);
        let mut value = doc.value.clone();
        let mut notes = Vec::new();
        match inject_object(&mut value, None, integrations, settings, &mut notes) {
            Ok(()) => {
                out.notes
                    .extend(notes.into_iter().map(|n| format!("{origin}: {n}")));
                out.documents.push(value);
            }
            Err(e) => errors.push(format!("{origin}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The integrations of the `-i` inputs: ExternalIntegration documents (validated elsewhere).
pub fn known_integrations(docs: &[Document]) -> Vec<KnownIntegration> {
    docs.iter()
        .filter(|d| d.kind() == Some(crate::validate::KIND))
        .filter_map(|d| {
            let meta = d.value.get("metadata")?;
            Some(KnownIntegration {
                webhooks: d
                    .value
                    .pointer("/spec/webhooks")
                    .is_some_and(|w| !w.is_null()),
                name: meta.get("name")?.as_str()?.to_string(),
                namespace: meta
                    .get("namespace")
                    .and_then(Value::as_str)
                    .map(String::from),
            })
        })
        .collect()
}

fn inject_object(
    value: &mut Value,
    list_namespace: Option<&str>,
    integrations: &[KnownIntegration],
    settings: &InjectorSettings,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(list_namespace)
        .map(String::from);
    let subject = subject(value, &kind);
    if kind == "List" {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(item, namespace.as_deref(), integrations, settings, notes)?;
            }
        }
        return Ok(());
    }
    let Some(site) = pod_site(&api_version, &kind) else {
        return Ok(());
    };
    let ns_integrations: BTreeSet<String> = integrations
        .iter()
        .filter(|i| match (&namespace, &i.namespace) {
            (Some(doc), Some(int)) => doc == int,
            _ => true,
        })
        .map(|i| i.name.clone())
        .collect();
    let with_webhooks: BTreeSet<String> = integrations
        .iter()
        .filter(|i| i.webhooks && ns_integrations.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    let ns_name = namespace
        .clone()
        .or_else(|| single_namespace(integrations))
        .unwrap_or_else(|| "default".into());

    let pod_value = match site {
        PodSite::Pod => value.clone(),
        PodSite::Template(pointer) => {
            let template = value
                .pointer(pointer)
                .ok_or_else(|| format!("{subject}: no pod template at {pointer}"))?;
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
                "spec": template.get("spec").cloned().unwrap_or(Value::Null),
            })
        }
    };
    let mut pod_value = pod_value;
    if !pod_value.get("metadata").is_some_and(Value::is_object) {
        pod_value["metadata"] = json!({});
    }
    let pod: Pod = serde_json::from_value(pod_value.clone())
        .map_err(|e| format!("{subject}: not a valid pod spec: {e}"))?;
    let labels: BTreeMap<String, String> = [(
        LABEL_NAMESPACE_INJECT.to_string(),
        NAMESPACE_INJECT_ENABLED.to_string(),
    )]
    .into();
    let ctx = PodContext {
        namespace: &ns_name,
        namespace_labels: &labels,
        integrations: &ns_integrations,
        with_webhooks: &with_webhooks,
    };
    match mutate(&pod, &ctx, settings) {
        Decision::Patch(injection) => {
            json_patch::patch(&mut pod_value, &injection.patch)
                .map_err(|e| format!("{subject}: the patch does not apply: {e}"))?;
            match site {
                PodSite::Pod => *value = pod_value,
                PodSite::Template(pointer) => {
                    if let Some(template) = value.pointer_mut(pointer) {
                        template["metadata"] = pod_value["metadata"].take();
                        template["spec"] = pod_value["spec"].take();
                    }
                }
            }
            notes.push(format!(
                "{subject}: injected ({}; {})",
                injection.integrations.join(", "),
                if injection.native_sidecar {
                    "native sidecar"
                } else {
                    "regular container"
                }
            ));
            Ok(())
        }
        Decision::AlreadyInjected => {
            notes.push(format!("{subject}: already injected, unchanged"));
            Ok(())
        }
        Decision::NotSelected(Skip::NoIntegrations) => Err(format!(
            "{subject}: no ExternalIntegration of namespace {ns_name} among the -i inputs"
        )),
        Decision::NotSelected(why) => {
            notes.push(format!("{subject}: not injected: {why}"));
            Ok(())
        }
        Decision::Deny(message) => Err(format!("{subject}: {message}")),
    }
}

/// Where the pod spec of a kind lives; `None` for kinds without one.
fn pod_site(api_version: &str, kind: &str) -> Option<PodSite> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(PodSite::Pod),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(PodSite::Template("/spec/template")),
        ("batch", "CronJob") => Some(PodSite::Template("/spec/jobTemplate/spec/template")),
        _ => None,
    }
}

/// `Deployment shop/web`.
fn subject(value: &Value, kind: &str) -> String {
    let s = |p: &str| value.pointer(p).and_then(Value::as_str);
    let name = s("/metadata/name")
        .or(s("/metadata/generateName"))
        .unwrap_or("<unnamed>");
    match s("/metadata/namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The namespace of the integrations when they all name the same one.
fn single_namespace(integrations: &[KnownIntegration]) -> Option<String> {
    let set: BTreeSet<&str> = integrations
        .iter()
        .filter_map(|i| i.namespace.as_deref())
        .collect();
    match set.len() {
        1 => set.into_iter().next().map(String::from),
        _ => None,
    }
}

/// The documents as multi-document YAML.
pub fn to_yaml(documents: &[Value]) -> Result<String, String> {
    let mut yaml = serde_saphyr::to_string_multiple(documents).map_err(|e| e.to_string())?;
    if !yaml.is_empty() && !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    Ok(yaml)
}

#[cfg(test)]
mod tests;
