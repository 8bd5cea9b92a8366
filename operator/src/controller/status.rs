//! The integration's status after a reconciliation: pure functions of what happened.
//!
//! `Ready` is `True` with reason `Reconciled` when the generated ConfigMap and Secret match
//! the spec and the referenced Secrets; otherwise `False` with the reason of the
//! [`Error`](super::Error) (`SecretNotFound`, `KeyNotFound`, `CertificateInvalid`, ...) and a
//! message naming the field, object and key. When rendering fails the generated objects keep
//! their last good content, so `clientCertificateNotAfter` keeps describing what the pods use.

use attache_api::{spec::Condition, ExternalIntegration, ExternalIntegrationStatus};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::{json, Value};

use super::Error;

pub const READY: &str = "Ready";
pub const RECONCILED: &str = "Reconciled";

/// What a reconciliation did, as far as the status is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The generated objects are up to date.
    Applied {
        /// `notAfter` of the client certificate now in the generated Secret, Unix seconds.
        client_certificate_not_after: Option<i64>,
    },
    /// The user has to fix something; the generated objects were left as they were.
    Failed(&'a Error),
}

/// What the status reports besides the outcome.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// `metadata.generation` of the integration that was reconciled.
    pub generation: Option<i64>,
    /// Live pods using the integration.
    pub pods: u32,
    /// `attache-NAME`, for messages.
    pub generated_name: &'a str,
    pub now: Timestamp,
}

/// A change of the `Ready` condition, worth a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// The status to write after a reconciliation.
pub fn next_status(
    previous: Option<&ExternalIntegrationStatus>,
    outcome: Outcome<'_>,
    observed: &Observed<'_>,
) -> ExternalIntegrationStatus {
    let previous_ready = previous.and_then(ready_condition);
    let (status, reason, message) = match outcome {
        Outcome::Applied { .. } => (
            "True",
            RECONCILED.to_string(),
            format!(
                "ConfigMap and Secret {} are up to date",
                observed.generated_name
            ),
        ),
        Outcome::Failed(e) => (
            "False",
            e.reason().unwrap_or("ReconcileFailed").to_string(),
            format!(
                "{e}; ConfigMap and Secret {} were left as they were",
                observed.generated_name
            ),
        ),
    };
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status && c.last_transition_time.is_some() => {
            c.last_transition_time.clone()
        }
        _ => Some(rfc3339(observed.now.as_second())),
    };
    let client_certificate_not_after = match outcome {
        Outcome::Applied {
            client_certificate_not_after,
        } => client_certificate_not_after.map(rfc3339),
        Outcome::Failed(_) => previous.and_then(|p| p.client_certificate_not_after.clone()),
    };
    let mut conditions: Vec<Condition> = previous
        .map(|p| p.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != READY)
        .collect();
    conditions.insert(
        0,
        Condition {
            type_: READY.into(),
            status: status.into(),
            reason: Some(reason),
            message: Some(message),
            last_transition_time,
            observed_generation: observed.generation,
        },
    );
    ExternalIntegrationStatus {
        observed_generation: observed.generation,
        conditions,
        pods: Some(observed.pods),
        client_certificate_not_after,
    }
}

/// The `Ready` change between two statuses, if its status or reason changed.
pub fn transition(
    previous: Option<&ExternalIntegrationStatus>,
    next: &ExternalIntegrationStatus,
) -> Option<Transition> {
    let new = ready_condition(next)?;
    let old = previous.and_then(ready_condition);
    if old.is_some_and(|o| o.status == new.status && o.reason == new.reason) {
        return None;
    }
    Some(Transition {
        ready: new.status == "True",
        reason: new.reason.clone().unwrap_or_default(),
        message: new.message.clone().unwrap_or_default(),
    })
}

/// The body of a server-side apply on the status subresource of integration
/// `namespace/name` that makes its status `status`. Under the operator's field manager, a field
/// it applied before and leaves out now (`clientCertificateNotAfter` once the certificate is
/// gone) is removed by the API server.
pub fn apply_patch(namespace: &str, name: &str, status: &ExternalIntegrationStatus) -> Value {
    json!({
        "apiVersion": ExternalIntegration::api_version(&()),
        "kind": ExternalIntegration::kind(&()),
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    })
}

pub fn ready_condition(status: &ExternalIntegrationStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == READY)
}

/// Unix seconds as an RFC 3339 UTC timestamp, `2027-03-01T00:00:00Z`.
pub fn rfc3339(unix_seconds: i64) -> String {
    match Timestamp::from_second(unix_seconds) {
        Ok(t) => t.to_string(),
        // Outside jiff's range (years -9999..=9999): clamp rather than fail the status.
        Err(_) if unix_seconds < 0 => "0001-01-01T00:00:00Z".into(),
        Err(_) => "9999-12-31T23:59:59Z".into(),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
