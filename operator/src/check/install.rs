//! The installation itself: the CRD, the Deployment, the RBAC it was granted, the leader, the
//! cluster's sidecar support and every integration's readiness.

use std::time::Duration;

use attache_api::ExternalIntegration;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
            SubjectAccessReview, SubjectAccessReviewSpec,
        },
        coordination::v1::Lease,
        core::v1::Pod,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::version::Info,
    jiff::Timestamp,
};
use kube::{
    api::{ListParams, PostParams},
    Api, Client, ResourceExt,
};

use super::{get_opt, CheckArgs, Installation, Line};
use crate::{
    admission::settings::native_sidecars_supported,
    controller::status::ready_condition,
    crd,
    rbac::{self, ApiCall, Scope, Verb},
};

/// How the CRD line starts when there is no CRD (the integrations are then not listed).
pub const CRD_MISSING: &str = "not installed";

pub struct Ctx {
    pub client: Client,
    pub timeout: Duration,
}

/// Installed, and the same schema as this binary's (or its CEL-free form on servers < 1.25).
pub async fn crd(ctx: &Ctx) -> Line {
    let expected = crd::crd();
    let name = expected.name_any();
    let subject = format!("CRD {name}");
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client.clone());
    let installed = match get_opt(&api, &name, ctx.timeout).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Line::fail(
                subject,
                format!(
                    "not installed: kubectl apply --server-side -f {}",
                    crd::CRD_FILE
                ),
            )
        }
        Err(e) => return Line::fail(subject, format!("cannot read it: {e}")),
    };
    let versions = |c: &CustomResourceDefinition| -> Vec<(String, bool, bool, serde_json::Value)> {
        c.spec
            .versions
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    v.served,
                    v.storage,
                    serde_json::to_value(&v.schema).unwrap_or_default(),
                )
            })
            .collect()
    };
    let got = versions(&installed);
    if got == versions(expected) || got == versions(&crd::crd_without_cel()) {
        let names: Vec<&str> = got.iter().map(|v| v.0.as_str()).collect();
        Line::ok(
            subject,
            format!(
                "installed, matches attache-operator {} (versions {})",
                env!("CARGO_PKG_VERSION"),
                names.join(", ")
            ),
        )
    } else {
        Line::fail(
            subject,
            format!(
                "installed, but differs from attache-operator {}'s: upgrade it with kubectl apply --server-side --force-conflicts -f {}",
                env!("CARGO_PKG_VERSION"),
                crd::CRD_FILE
            ),
        )
    }
}

/// The operator's Deployment, read for the names the other checks need.
pub async fn installation(ctx: &Ctx, args: &CheckArgs) -> Result<Installation, Line> {
    let subject = format!("Deployment {}/{}", args.namespace, args.deployment);
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &args.namespace);
    match get_opt(&api, &args.deployment, ctx.timeout).await {
        Ok(Some(d)) => Ok(Installation::from_deployment(&args.namespace, &d)),
        Ok(None) => Err(Line::fail(
            subject,
            "not found: is the chart installed there? (--namespace, --deployment)",
        )),
        Err(e) => Err(Line::fail(subject, format!("cannot read it: {e}"))),
    }
}

/// Every API call the operator makes, asked of the API server for the operator's
/// ServiceAccount (SubjectAccessReview). Without the right to ask that, the current user's own
/// rights are checked instead (SelfSubjectAccessReview: right when run inside the operator's
/// pod, e.g. `kubectl exec deploy/attache -- attache-operator check`).
pub async fn rbac(ctx: &Ctx, inst: &Installation) -> Line {
    let user = format!(
        "system:serviceaccount:{}:{}",
        inst.namespace, inst.service_account
    );
    let subject = format!("RBAC of {user}");
    let mut calls: Vec<&ApiCall> = Vec::new();
    for c in rbac::CONTROLLER.iter().chain(rbac::WEBHOOK) {
        if !calls.iter().any(|k| {
            (k.group, k.resource, k.verb, k.scope) == (c.group, c.resource, c.verb, c.scope)
        }) {
            calls.push(c);
        }
    }
    let mut denied = Vec::new();
    let mut as_self = false;
    for c in &calls {
        let attrs = attributes(c, inst);
        let allowed = if as_self {
            self_review(ctx, attrs).await
        } else {
            match review(ctx, &user, &inst.namespace, attrs.clone()).await {
                Err(ReviewError::Forbidden) => {
                    as_self = true;
                    self_review(ctx, attrs).await
                }
                other => other,
            }
        };
        match allowed {
            Ok(true) => {}
            Ok(false) => denied.push(describe(c, &inst.namespace)),
            Err(e) => return Line::fail(subject, format!("cannot ask the API server: {e}")),
        }
    }
    let how = if as_self {
        " (checked as the current user: not allowed to review another user's access)"
    } else {
        ""
    };
    if denied.is_empty() {
        Line::ok(
            subject,
            format!(
                "all {} permissions the operator uses are granted{how}",
                calls.len()
            ),
        )
    } else {
        Line::fail(
            subject,
            format!(
                "{} of {} permissions missing{how}: {}; re-apply the chart (helm upgrade) or operator/rbac.yaml",
                denied.len(),
                calls.len(),
                denied.join(", ")
            ),
        )
    }
}

/// The request the operator makes. In its own namespace it reads and writes one Lease and one
/// Secret by name (the chart's Role grants get/update on those names only).
fn attributes(c: &ApiCall, inst: &Installation) -> ResourceAttributes {
    let (resource, subresource) = match c.resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (c.resource, None),
    };
    let by_name =
        matches!(c.verb, Verb::Get | Verb::Update | Verb::Patch) && c.scope == Scope::OwnNamespace;
    let name = match resource {
        "leases" if by_name => Some(inst.lease.clone()),
        "secrets" if by_name => Some(inst.webhook_secret.clone()),
        _ => None,
    };
    ResourceAttributes {
        group: Some(c.group.to_string()),
        resource: Some(resource.to_string()),
        subresource,
        verb: Some(c.verb.to_string()),
        name,
        namespace: match c.scope {
            Scope::OwnNamespace => Some(inst.namespace.clone()),
            Scope::Cluster => None,
        },
        ..ResourceAttributes::default()
    }
}

fn describe(c: &ApiCall, namespace: &str) -> String {
    let group = if c.group.is_empty() { "core" } else { c.group };
    let place = match c.scope {
        Scope::OwnNamespace => format!(" in {namespace}"),
        Scope::Cluster => String::new(),
    };
    format!("{} {group}/{}{place}", c.verb, c.resource)
}

#[derive(Debug, thiserror::Error)]
enum ReviewError {
    #[error("forbidden")]
    Forbidden,
    #[error("{0}")]
    Other(String),
}

async fn review(
    ctx: &Ctx,
    user: &str,
    namespace: &str,
    attrs: ResourceAttributes,
) -> Result<bool, ReviewError> {
    let api: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let sar = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(attrs),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    match tokio::time::timeout(ctx.timeout, api.create(&PostParams::default(), &sar)).await {
        Ok(Ok(r)) => Ok(r.status.is_some_and(|s| s.allowed)),
        Ok(Err(kube::Error::Api(e))) if e.code == 403 => Err(ReviewError::Forbidden),
        Ok(Err(e)) => Err(ReviewError::Other(e.to_string())),
        Err(_) => Err(ReviewError::Other(format!(
            "no answer within {:?}",
            ctx.timeout
        ))),
    }
}

async fn self_review(ctx: &Ctx, attrs: ResourceAttributes) -> Result<bool, ReviewError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(ctx.client.clone());
    let ssar = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attrs),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    match tokio::time::timeout(ctx.timeout, api.create(&PostParams::default(), &ssar)).await {
        Ok(Ok(r)) => Ok(r.status.is_some_and(|s| s.allowed)),
        Ok(Err(e)) => Err(ReviewError::Other(e.to_string())),
        Err(_) => Err(ReviewError::Other(format!(
            "no answer within {:?}",
            ctx.timeout
        ))),
    }
}

/// A replica holds the Lease and renews it, and its pod is Ready.
pub async fn leader(ctx: &Ctx, inst: &Installation) -> Line {
    let subject = format!("operator (Lease {}/{})", inst.namespace, inst.lease);
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &inst.namespace);
    let lease = match get_opt(&leases, &inst.lease, ctx.timeout).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return Line::fail(
                subject,
                "no Lease: no replica has ever led; see kubectl logs deploy/attache",
            )
        }
        Err(e) => return Line::fail(subject, format!("cannot read it: {e}")),
    };
    let spec = lease.spec.unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Line::fail(subject, "no replica leads (the Lease has no holder)");
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15).max(1));
    let age = spec
        .renew_time
        .map(|t| Timestamp::now().as_second() - t.0.as_second());
    let Some(age) = age else {
        return Line::fail(subject, format!("{holder} holds it but never renewed it"));
    };
    if age > duration {
        return Line::fail(
            subject,
            format!(
                "{holder} last renewed it {age} s ago (lease {duration} s): no replica is leading"
            ),
        );
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &inst.namespace);
    let ready = match get_opt(&pods, &holder, ctx.timeout).await {
        Ok(Some(p)) => p
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        Ok(None) => {
            return Line::fail(
                subject,
                format!(
                    "{holder} leads, but there is no pod of that name in {}",
                    inst.namespace
                ),
            )
        }
        Err(e) => return Line::fail(subject, format!("cannot read pod {holder}: {e}")),
    };
    if ready {
        Line::ok(
            subject,
            format!("{holder} leads (renewed {age} s ago) and its pod is Ready"),
        )
    } else {
        Line::fail(
            subject,
            format!("{holder} leads (renewed {age} s ago) but its pod is not Ready"),
        )
    }
}

/// Whether the injector can use native sidecars; a warning only, the operator falls back.
pub fn native_sidecars(version: &Info) -> Line {
    let subject = "native sidecars";
    if native_sidecars_supported(version) {
        Line::ok(
            subject,
            format!(
                "supported (Kubernetes {}.{}): the sidecar starts before the app and stops after it",
                version.major, version.minor
            ),
        )
    } else {
        Line::warn(
            subject,
            format!(
                "not available on Kubernetes {} (1.29+): the sidecar is injected as the first regular container; the app may start before it is ready",
                version.git_version
            ),
        )
    }
}

/// One line for all Ready integrations, one per integration that is not.
pub async fn integrations(ctx: &Ctx) -> Vec<Line> {
    let subject = "ExternalIntegrations";
    let api: Api<ExternalIntegration> = Api::all(ctx.client.clone());
    let list = match tokio::time::timeout(ctx.timeout, api.list(&ListParams::default())).await {
        Ok(Ok(l)) => l.items,
        Ok(Err(e)) => return vec![Line::fail(subject, format!("cannot list them: {e}"))],
        Err(_) => {
            return vec![Line::fail(
                subject,
                format!("no answer within {:?}", ctx.timeout),
            )]
        }
    };
    let total = list.len();
    let mut lines = Vec::new();
    for x in &list {
        let who = format!(
            "ExternalIntegration {}/{}",
            x.namespace().unwrap_or_default(),
            x.name_any()
        );
        let status = x.status.as_ref();
        let ready = status.and_then(ready_condition);
        let observed = status.and_then(|s| s.observed_generation);
        match ready {
            Some(c) if c.status == "True" && observed == x.metadata.generation => {}
            Some(c) if c.status == "True" => lines.push(Line::warn(
                who,
                "Ready for an older generation: the latest edit is not reconciled yet",
            )),
            Some(c) => lines.push(Line::fail(
                who,
                format!(
                    "Ready={} {}: {}",
                    c.status,
                    c.reason.as_deref().unwrap_or(""),
                    c.message.as_deref().unwrap_or("")
                ),
            )),
            None => lines.push(Line::fail(
                who,
                "no Ready condition: the operator has not reconciled it",
            )),
        }
    }
    let not_ready = lines.len();
    lines.insert(
        0,
        Line::ok(subject, format!("{} of {total} Ready", total - not_ready)),
    );
    lines
}
