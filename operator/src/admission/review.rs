//! One AdmissionReview (admission.k8s.io/v1) in, one out: the webhook without its transport.

use super::{
    metrics::AdmissionResult,
    mutate::{mutate, Decision, PodContext},
    settings::InjectorSettings,
    view::ClusterView,
};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    DynamicObject,
};
use serde_json::Value;

/// The answer to one `POST /mutate`.
#[derive(Debug)]
pub struct Reviewed {
    /// 200 for every AdmissionReview answered (allowed, patched or denied); 400 for a body that
    /// is not one, 503 before the caches are synced (the API server applies the webhook's
    /// `failurePolicy` to both).
    pub status: u16,
    pub body: Vec<u8>,
    pub result: AdmissionResult,
}

/// Answers an AdmissionReview body.
pub fn review(body: &[u8], view: &dyn ClusterView, settings: &InjectorSettings) -> Reviewed {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("not an AdmissionReview of a Pod: {e}")),
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return bad_request("the AdmissionReview has no request".into()),
    };
    let response = AdmissionResponse::from(&request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let (Some(pod), Operation::Create, true) = (&request.object, &request.operation, is_pod) else {
        // Only pod CREATEs are ours; anything else the configuration sends through is allowed.
        return answer(response, AdmissionResult::Skipped);
    };
    if !view.is_ready() {
        return Reviewed {
            status: 503,
            body: b"the injector's caches are not synced yet".to_vec(),
            result: AdmissionResult::Error,
        };
    }
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    let labels = view.namespace_labels(namespace);
    let integrations = view.integrations(namespace);
    let with_webhooks = view.integrations_with_webhooks(namespace);
    let ctx = PodContext {
        namespace,
        namespace_labels: &labels,
        integrations: &integrations,
        with_webhooks: &with_webhooks,
    };
    let pod_name = pod_display_name(pod);
    match mutate(pod, &ctx, settings) {
        Decision::NotSelected(why) => {
            tracing::debug!(namespace, pod = %pod_name, reason = %why, "not injected");
            answer(response, AdmissionResult::Skipped)
        }
        Decision::AlreadyInjected => {
            tracing::debug!(namespace, pod = %pod_name, "already injected");
            answer(response, AdmissionResult::AlreadyInjected)
        }
        Decision::Deny(message) => {
            tracing::info!(namespace, pod = %pod_name, %message, "denied");
            let mut denied = response.deny(format!("Attaché sidecar injection: {message}"));
            denied.result.code = 403;
            denied.result.reason = "Forbidden".into();
            answer(denied, AdmissionResult::Denied)
        }
        Decision::Patch(injection) => {
            tracing::info!(
                namespace,
                pod = %pod_name,
                integrations = %injection.integrations.join(","),
                native_sidecar = injection.native_sidecar,
                "injected"
            );
            match response.with_patch(injection.patch) {
                Ok(patched) => answer(patched, AdmissionResult::Injected),
                Err(e) => Reviewed {
                    status: 500,
                    body: format!("cannot serialize the patch: {e}").into_bytes(),
                    result: AdmissionResult::Error,
                },
            }
        }
    }
}

/// `web-7d9f` or, for a pod the API server has not named yet, `web-7d9f-*`.
pub fn pod_display_name(pod: &Pod) -> String {
    match (&pod.metadata.name, &pod.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => "<unnamed>".into(),
    }
}

fn answer(response: AdmissionResponse, result: AdmissionResult) -> Reviewed {
    let review: AdmissionReview<DynamicObject> = response.into_review();
    match serde_json::to_value(&review).and_then(|v| serde_json::to_vec(&base64_patch(v))) {
        Ok(body) => Reviewed {
            status: 200,
            body,
            result,
        },
        Err(e) => Reviewed {
            status: 500,
            body: format!("cannot serialize the AdmissionReview: {e}").into_bytes(),
            result: AdmissionResult::Error,
        },
    }
}

/// kube-core serializes `response.patch` (Go `[]byte`) as an array of numbers; the API
/// server's documented form, and a third of the size, is a base64 string.
fn base64_patch(mut review: Value) -> Value {
    let bytes: Option<Vec<u8>> = match review.pointer("/response/patch") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        _ => None,
    };
    if let (Some(bytes), Some(patch)) = (bytes, review.pointer_mut("/response/patch")) {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    review
}

/// The body is not an AdmissionReview we can read: HTTP 400, and the API server applies the
/// webhook's `failurePolicy`.
fn bad_request(message: String) -> Reviewed {
    tracing::warn!(%message, "unreadable admission request");
    Reviewed {
        status: 400,
        body: message.into_bytes(),
        result: AdmissionResult::Error,
    }
}
