//! One AdmissionReview (admission.k8s.io/v1) in, one out: the webhook without its transport.

use super::{
    metrics::AdmissionResult,
    mutate::{mutate, Decision, PodContext},
    settings::InjectorSettings,
    view::ClusterView,
};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
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
            match serde_json::to_vec(&injection.patch) {
                Ok(patch) => answer_with_patch(response, &patch),
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
    written(serde_json::to_vec(&response.into_review()), result)
}

/// The answer with `patch` (a JSON Patch, serialized) applied to the pod.
///
/// The API server's documented form of `response.patch` (Go `[]byte`) is a base64 string.
/// kube-core would serialize it as an array of numbers, one JSON value per byte: a third of
/// the size as base64, and building and writing those values was 40 % of an admission's CPU.
/// So the patch is set here, as base64, on the otherwise small review.
fn answer_with_patch(response: AdmissionResponse, patch: &[u8]) -> Reviewed {
    let body = serde_json::to_value(response.into_review()).and_then(|mut review| {
        if let Some(Value::Object(fields)) = review.get_mut("response") {
            fields.insert("patchType".into(), Value::String("JSONPatch".into()));
            fields.insert(
                "patch".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(patch)),
            );
        }
        serde_json::to_vec(&review)
    });
    written(body, AdmissionResult::Injected)
}

fn written(body: serde_json::Result<Vec<u8>>, result: AdmissionResult) -> Reviewed {
    match body {
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
