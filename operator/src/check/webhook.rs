//! The admission webhook: its configuration and caBundle, the serving certificate, and
//! whether the API server gets an answer from it.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    core::v1::{Pod, Secret},
};
use kube::{api::PostParams, Api};
use serde_json::json;
use x509_parser::prelude::{FromDer, Pem, X509Certificate};

use super::{get_opt, install::Ctx, Installation, Line};
use crate::admission::certs::{inspect, service_dns_names};

/// Warn when the serving certificate expires sooner than this.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// The integration the probe pod names: one that cannot exist (names are DNS subdomains, and
/// this one has an upper-case letter), so the webhook's answer is always a denial naming it.
const PROBE_INTEGRATION: &str = "attache-check-Probe";

pub struct ConfigurationCheck {
    pub line: Line,
    /// The caBundle every webhook entry shares, when it is usable.
    pub ca_bundle: Option<Vec<u8>>,
}

/// The MutatingWebhookConfiguration exists, every entry calls the operator's Service and
/// trusts the same, current CA.
pub async fn configuration(ctx: &Ctx, inst: &Installation) -> ConfigurationCheck {
    let subject = format!(
        "MutatingWebhookConfiguration {}",
        inst.webhook_configuration
    );
    let fail = |detail: String| ConfigurationCheck {
        line: Line::fail(subject.clone(), detail),
        ca_bundle: None,
    };
    let api: Api<MutatingWebhookConfiguration> = Api::all(ctx.client.clone());
    let config = match get_opt(&api, &inst.webhook_configuration, ctx.timeout).await {
        Ok(Some(c)) => c,
        Ok(None) => return fail("not found: re-install the chart".into()),
        Err(e) => return fail(format!("cannot read it: {e}")),
    };
    let webhooks = config.webhooks.unwrap_or_default();
    if webhooks.is_empty() {
        return fail("has no webhooks".into());
    }
    let mut bundle: Option<Vec<u8>> = None;
    for w in &webhooks {
        match &w.client_config.service {
            Some(s) if s.name == inst.webhook_service && s.namespace == inst.namespace => {}
            _ => {
                return fail(format!(
                    "webhook {} does not call Service {}/{}",
                    w.name, inst.namespace, inst.webhook_service
                ))
            }
        }
        let Some(b) = w
            .client_config
            .ca_bundle
            .as_ref()
            .filter(|b| !b.0.is_empty())
        else {
            return fail(format!(
                "webhook {} has no caBundle yet: the operator writes it at start (or cert-manager's CA injector)",
                w.name
            ));
        };
        match &bundle {
            None => bundle = Some(b.0.clone()),
            Some(first) if *first != b.0 => {
                return fail(format!(
                    "webhook {} trusts another caBundle than the others",
                    w.name
                ))
            }
            Some(_) => {}
        }
    }
    let bundle = bundle.unwrap_or_default();
    let cas = match inspect(&bundle) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return fail("the caBundle holds no certificate".into()),
        Err(e) => return fail(format!("the caBundle is unreadable: {e}")),
    };
    let now = SystemTime::now();
    let Some(latest) = cas.iter().map(|c| c.not_after).max() else {
        return fail("the caBundle holds no certificate".into());
    };
    if latest <= now {
        return fail(format!(
            "every CA of the caBundle expired (last on {})",
            date(latest)
        ));
    }
    ConfigurationCheck {
        line: Line::ok(
            subject,
            format!(
                "{} webhooks call Service {}/{}; caBundle of {} CA(s), valid until {}",
                webhooks.len(),
                inst.namespace,
                inst.webhook_service,
                cas.len(),
                date(latest)
            ),
        ),
        ca_bundle: Some(bundle),
    }
}

/// The serving certificate in the webhook's Secret: current, for the Service's name, signed
/// by a CA of the caBundle.
pub async fn certificate(ctx: &Ctx, inst: &Installation, ca_bundle: Option<&[u8]>) -> Line {
    let subject = format!(
        "webhook certificate (Secret {}/{})",
        inst.namespace, inst.webhook_secret
    );
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &inst.namespace);
    let secret = match get_opt(&api, &inst.webhook_secret, ctx.timeout).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Line::fail(
                subject,
                "not found: the operator issues it at start (or cert-manager does)",
            )
        }
        Err(e) => return Line::fail(subject, format!("cannot read it: {e}")),
    };
    let Some(pem) = secret.data.as_ref().and_then(|d| d.get("tls.crt")) else {
        return Line::fail(subject, "has no tls.crt");
    };
    let leaf = match inspect(&pem.0).map(|c| c.into_iter().next()) {
        Ok(Some(l)) => l,
        Ok(None) => return Line::fail(subject, "tls.crt holds no certificate"),
        Err(e) => return Line::fail(subject, format!("tls.crt is unreadable: {e}")),
    };
    let name = format!("{}.{}.svc", inst.webhook_service, inst.namespace);
    let now = SystemTime::now();
    if leaf.not_after <= now {
        return Line::fail(
            subject,
            format!(
                "expired on {}: the API server refuses the webhook's TLS",
                date(leaf.not_after)
            ),
        );
    }
    if leaf.not_before > now {
        return Line::fail(
            subject,
            format!("not valid before {}", date(leaf.not_before)),
        );
    }
    let wanted = service_dns_names(&inst.webhook_service, &inst.namespace);
    if !leaf.dns_names.iter().any(|n| wanted.contains(n)) {
        return Line::fail(
            subject,
            format!(
                "not issued for {name} (names: {})",
                leaf.dns_names.join(", ")
            ),
        );
    }
    if let Some(bundle) = ca_bundle {
        if !signed_by_any(&pem.0, bundle) {
            return Line::fail(
                subject,
                "not signed by any CA of the webhook configuration's caBundle: the API server cannot trust it",
            );
        }
    }
    let left = leaf.not_after.duration_since(now).unwrap_or_default();
    let detail = format!(
        "for {name}, valid until {} ({} days left)",
        date(leaf.not_after),
        left.as_secs() / 86_400
    );
    if left < EXPIRY_WARNING {
        Line::warn(subject, format!("{detail}: renew it soon"))
    } else {
        Line::ok(subject, format!("{detail}, signed by the caBundle"))
    }
}

/// Whether the first certificate of `leaf_pem` is signed by a CA of `bundle_pem`.
fn signed_by_any(leaf_pem: &[u8], bundle_pem: &[u8]) -> bool {
    let ders = |pem: &[u8]| -> Vec<Vec<u8>> {
        Pem::iter_from_buffer(pem)
            .filter_map(Result::ok)
            .filter(|p| p.label == "CERTIFICATE")
            .map(|p| p.contents)
            .collect()
    };
    let Some(leaf_der) = ders(leaf_pem).into_iter().next() else {
        return false;
    };
    let Ok((_, leaf)) = X509Certificate::from_der(&leaf_der) else {
        return false;
    };
    ders(bundle_pem).iter().any(|ca_der| {
        X509Certificate::from_der(ca_der)
            .is_ok_and(|(_, ca)| leaf.verify_signature(Some(ca.public_key())).is_ok())
    })
}

/// Asks the API server to create (dry run) a pod that requests injection of an integration
/// that cannot exist: the webhook, if the API server reaches it, denies it by name. Any other
/// outcome means the API server did not get its answer.
pub async fn answers(ctx: &Ctx, inst: &Installation) -> Line {
    let subject = "webhook answers";
    // `default` exists everywhere and is not the operator's namespace (never sent).
    let namespace = "default";
    let pod: Pod = match serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "attache-check-",
            "annotations": {
                "attache.dev/inject": "true",
                "attache.dev/integrations": PROBE_INTEGRATION,
            },
        },
        "spec": {"containers": [{"name": "probe", "image": "attache-check.invalid/probe"}]},
    })) {
        Ok(p) => p,
        Err(e) => return Line::fail(subject, format!("cannot build the probe pod: {e}")),
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        dry_run: true,
        field_manager: Some("attache-operator-check".into()),
    };
    let how = format!("a dry-run pod in {namespace} asking for integration {PROBE_INTEGRATION:?}");
    match tokio::time::timeout(ctx.timeout, api.create(&params, &pod)).await {
        Err(_) => Line::fail(subject, format!("{how}: no answer within {:?}", ctx.timeout)),
        Ok(Err(kube::Error::Api(e))) if e.message.contains(PROBE_INTEGRATION) => Line::ok(
            subject,
            format!(
                "{how} was refused by the webhook through Service {}/{}, as it should be",
                inst.namespace, inst.webhook_service
            ),
        ),
        Ok(Err(kube::Error::Api(e))) if e.code == 403 && !e.message.contains("webhook") => {
            Line::warn(
                subject,
                format!("cannot tell: not allowed to create pods in {namespace} ({})", e.message),
            )
        }
        Ok(Err(e)) => Line::fail(subject, format!("{how}: the API server said: {e}")),
        Ok(Ok(_)) => Line::fail(
            subject,
            format!(
                "{how} was admitted without the webhook's answer: the API server cannot reach it (failurePolicy Ignore hid the error; see the kube-apiserver log or kubectl get endpoints -n {} {})",
                inst.namespace, inst.webhook_service
            ),
        ),
    }
}

/// `YYYY-MM-DD` (UTC).
fn date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
    {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        None => format!("{secs} s after 1970"),
    }
}
