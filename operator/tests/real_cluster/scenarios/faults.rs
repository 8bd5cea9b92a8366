//! What the controller refuses, reports or repairs, against the real API server: a missing
//! key, a generated name taken by someone else's object, a hand-edited generated object, and
//! client certificates that cannot be used. Each scenario has a namespace of its own.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attache_api::ExternalIntegration;
use attache_tests::pki::TestCa;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};

use super::reconcile::{events, is_event, ready, reconciliations, secret_text, wait_ready, WAIT};
use crate::cluster::{apply_all, eventually, Cluster};

/// An Opaque Secret holding `data`.
fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "namespace": namespace}, "stringData": data})
}

fn integration(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// A spec sending `api-key` of Secret `secret` as `Authorization: Bearer ...`.
fn api_key_spec(url: &str, secret: &str) -> Value {
    json!({"upstream": {"url": url},
           "auth": {"apiKey": {"header": "Authorization", "prefix": "Bearer ",
                               "secretKeyRef": {"name": secret, "key": "api-key"}}}})
}

/// A spec presenting the client certificate of Secret `bank-mtls`.
/// Integration `stripe` reading its API key from Secret `stripe-key` holding `data`.
fn stripe_with_key(ns: &str, data: &[(&str, &str)]) -> [Value; 2] {
    [
        secret(ns, "stripe-key", data),
        integration(
            ns,
            "stripe",
            api_key_spec("https://api.stripe.com", "stripe-key"),
        ),
    ]
}

fn mtls_spec() -> Value {
    json!({"upstream": {"url": "https://api.bank.example"},
           "tls": {"clientCertificate": {"secretName": "bank-mtls"}}})
}

struct Apis {
    xints: Api<ExternalIntegration>,
    secrets: Api<Secret>,
    cms: Api<ConfigMap>,
}

async fn namespace(c: &Cluster, ns: &str) -> Apis {
    c.create_namespace(ns, &[]).await.unwrap();
    Apis {
        xints: Api::namespaced(c.admin.clone(), ns),
        secrets: Api::namespaced(c.admin.clone(), ns),
        cms: Api::namespaced(c.admin.clone(), ns),
    }
}

impl Apis {
    /// Deletes the namespace's integrations (the garbage collector takes what was generated):
    /// one left `Ready=False` would fail the healthy `attache-operator check` of a later
    /// scenario.
    async fn clean_up(&self) {
        self.xints
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await
            .unwrap();
    }
}

/// Secret `name` now holds `data` (the other keys stay).
async fn set_secret(api: &Api<Secret>, name: &str, data: &[(&str, &str)]) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"stringData": data})),
    )
    .await
    .unwrap();
}

/// A key the Secret does not have: `Ready=False`/`KeyNotFound` naming it, at the observed
/// generation, and nothing generated.
pub async fn a_missing_key_is_reported_and_nothing_is_generated(c: &mut Cluster) {
    let ns = "e2e-missing-key";
    let a = namespace(c, ns).await;
    apply_all(&c.admin, &stripe_with_key(ns, &[("other", "x")]))
        .await
        .unwrap();
    let x = wait_ready(&a.xints, "stripe", "False", "KeyNotFound").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(message.contains("has no key \"api-key\""), "{message}");
    assert_eq!(x.metadata.generation, Some(1));
    assert_eq!(x.status.as_ref().unwrap().observed_generation, Some(1));
    assert!(
        a.cms.get_opt("attache-stripe").await.unwrap().is_none(),
        "a ConfigMap generated without the key"
    );
    assert!(
        a.secrets.get_opt("attache-stripe").await.unwrap().is_none(),
        "a Secret generated without the key"
    );
    println!("  Ready=False KeyNotFound: {message}");
    a.clean_up().await;
}

/// `attache-legacy` already exists and is not the integration's: `Ready=False`/`NameTaken`,
/// that ConfigMap untouched, and no generated Secret (both are checked before either is
/// written).
pub async fn someone_elses_object_with_the_generated_name_is_not_taken_over(c: &mut Cluster) {
    let ns = "e2e-name-taken";
    let a = namespace(c, ns).await;
    let foreign: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "attache-legacy", "namespace": ns},
        "data": {"config.json": "hand-written"}}))
    .unwrap();
    let foreign = a
        .cms
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    apply_all(
        &c.admin,
        &[
            secret(ns, "stripe-key", &[("api-key", "sk")]),
            integration(
                ns,
                "legacy",
                api_key_spec("https://api.stripe.com", "stripe-key"),
            ),
        ],
    )
    .await
    .unwrap();
    let x = wait_ready(&a.xints, "legacy", "False", "NameTaken").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(
        message.contains("ConfigMap \"attache-legacy\"") && message.contains("not owned"),
        "{message}"
    );
    let now = a.cms.get("attache-legacy").await.unwrap();
    assert_eq!(
        now.metadata.resource_version, foreign.metadata.resource_version,
        "someone else's ConfigMap was written"
    );
    assert_eq!(now.data, foreign.data);
    assert!(now.metadata.owner_references.is_none() && now.metadata.labels.is_none());
    assert!(
        a.secrets.get_opt("attache-legacy").await.unwrap().is_none(),
        "a half-generated integration: Secret attache-legacy"
    );
    println!("  Ready=False NameTaken: {message}");
    a.clean_up().await;
}

/// A hand edit of the generated ConfigMap (and Secret) is undone.
pub async fn drift_in_a_generated_object_is_repaired(c: &mut Cluster) {
    let ns = "e2e-drift";
    let a = namespace(c, ns).await;
    apply_all(&c.admin, &stripe_with_key(ns, &[("api-key", "sk_live_1")]))
        .await
        .unwrap();
    wait_ready(&a.xints, "stripe", "True", "Reconciled").await;
    let good = a.cms.get("attache-stripe").await.unwrap().data;
    assert!(good.as_ref().is_some_and(|d| d.contains_key("config.json")));

    let t = Instant::now();
    let edited = a
        .cms
        .patch(
            "attache-stripe",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.json": "{}"}})),
        )
        .await
        .unwrap();
    assert_eq!(edited.data.unwrap()["config.json"], "{}");
    eventually("the ConfigMap restored", WAIT, async || {
        (a.cms.get("attache-stripe").await.ok()?.data == good).then_some(())
    })
    .await;
    let cm_took = t.elapsed();

    let t = Instant::now();
    set_secret(
        &a.secrets,
        "attache-stripe",
        &[("auth-credential", "forged")],
    )
    .await;
    eventually("the Secret restored", WAIT, async || {
        let s = a.secrets.get("attache-stripe").await.ok()?;
        (secret_text(&s, "auth-credential")? == "sk_live_1").then_some(())
    })
    .await;
    println!(
        "  a hand-edited ConfigMap restored in {:.2} s, a hand-edited Secret in {:.2} s",
        cm_took.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    a.clean_up().await;
}

/// A key from another certificate, then an expired certificate: each is `Ready=False`
/// `CertificateInvalid` with a Warning Event naming the Secret and the key at fault, and the
/// pods keep the last good pair (the sidecar would refuse to start with the new one). A new
/// matching pair then goes through.
pub async fn a_mismatched_or_expired_client_pair_is_certificate_invalid_and_the_last_good_pair_stays(
    c: &mut Cluster,
) {
    let ns = "e2e-mtls-invalid";
    let a = namespace(c, ns).await;
    let ca = TestCa::new("bank test CA");
    let good = ca.client_cert("attache-client");
    apply_all(
        &c.admin,
        &[
            secret(
                ns,
                "bank-mtls",
                &[("tls.crt", &good.cert_pem), ("tls.key", &good.key_pem)],
            ),
            integration(ns, "bank", mtls_spec()),
        ],
    )
    .await
    .unwrap();
    let x = wait_ready(&a.xints, "bank", "True", "Reconciled").await;
    let not_after = x.status.unwrap().client_certificate_not_after;
    assert!(not_after.is_some(), "no clientCertificateNotAfter");
    let generated = a.secrets.get("attache-bank").await.unwrap();

    let other = ca.client_cert("attache-client");
    let expired = ca.client_cert_valid_until(
        "attache-client",
        SystemTime::now() - Duration::from_secs(86_400),
    );
    for (case, cert, key, at_fault, says) in [
        (
            "mismatched key",
            &good.cert_pem,
            &other.key_pem,
            "tls.key",
            "does not belong to the certificate",
        ),
        (
            "expired",
            &expired.cert_pem,
            &expired.key_pem,
            "tls.crt",
            "the certificate expired at",
        ),
    ] {
        let failures = reconciliations(c, "certificate_invalid").await;
        set_secret(
            &a.secrets,
            "bank-mtls",
            &[("tls.crt", cert), ("tls.key", key)],
        )
        .await;
        let x = eventually(&format!("{case}: CertificateInvalid"), WAIT, async || {
            let x = a.xints.get("bank").await.ok()?;
            let (_, reason, message) = ready(&x)?;
            (reason == "CertificateInvalid" && message.contains(says)).then_some(x)
        })
        .await;
        let (status, _, message) = ready(&x).unwrap();
        assert_eq!(status, "False", "{case}");
        assert!(
            message.contains(&format!("Secret \"bank-mtls\" key \"{at_fault}\""))
                && message.contains(says),
            "{case}: {message}"
        );
        // (The same reason again is no transition and publishes nothing, so the Event's note
        // is the first case's.)
        eventually(
            &format!("{case}: a Warning Event naming the Secret"),
            WAIT,
            async || {
                let events = events(c, ns, "bank").await;
                events
                    .iter()
                    .any(|e| is_event(e, "Warning", "CertificateInvalid", "bank-mtls"))
                    .then_some(())
            },
        )
        .await;
        let now = a.secrets.get("attache-bank").await.unwrap();
        assert_eq!(
            (now.metadata.resource_version, now.data),
            (
                generated.metadata.resource_version.clone(),
                generated.data.clone()
            ),
            "{case}: the pods keep the last good pair"
        );
        assert_eq!(
            x.status.unwrap().client_certificate_not_after,
            not_after,
            "{case}"
        );
        eventually(
            &format!("{case}: counted as certificate_invalid"),
            WAIT,
            async || (reconciliations(c, "certificate_invalid").await > failures).then_some(()),
        )
        .await;
        println!("  {case}: Ready=False CertificateInvalid: {message}");

        // The good pair back: Ready again (so the next case is a transition of its own).
        set_secret(
            &a.secrets,
            "bank-mtls",
            &[("tls.crt", &good.cert_pem), ("tls.key", &good.key_pem)],
        )
        .await;
        wait_ready(&a.xints, "bank", "True", "Reconciled").await;
    }

    // A new matching pair (a rotation) reaches the generated Secret.
    set_secret(
        &a.secrets,
        "bank-mtls",
        &[("tls.crt", &other.cert_pem), ("tls.key", &other.key_pem)],
    )
    .await;
    eventually("the rotated pair in attache-bank", WAIT, async || {
        let s = a.secrets.get("attache-bank").await.ok()?;
        (secret_text(&s, "tls.key")? == other.key_pem
            && secret_text(&s, "tls.crt")? == other.cert_pem)
            .then_some(())
    })
    .await;
    a.clean_up().await;
}

/// The client certificate's `notAfter` in the status; a broken certificate is
/// `CertificateInvalid` and the status keeps the expiry of the certificate the pods still use.
pub async fn an_mtls_integration_reports_its_client_certificate_expiry(c: &mut Cluster) {
    let ns = "e2e-mtls-expiry";
    let a = namespace(c, ns).await;
    let ca = TestCa::new("bank test CA");
    let client = ca.client_cert_valid_until(
        "attache-client",
        UNIX_EPOCH + Duration::from_secs(1_803_859_200),
    );
    apply_all(
        &c.admin,
        &[
            secret(
                ns,
                "bank-mtls",
                &[("tls.crt", &client.cert_pem), ("tls.key", &client.key_pem)],
            ),
            integration(ns, "bank", mtls_spec()),
        ],
    )
    .await
    .unwrap();
    let x = wait_ready(&a.xints, "bank", "True", "Reconciled").await;
    let not_after = x.status.unwrap().client_certificate_not_after;
    assert_eq!(not_after.as_deref(), Some("2027-03-01T00:00:00Z"));
    let s = a.secrets.get("attache-bank").await.unwrap();
    assert!(secret_text(&s, "tls.crt")
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(secret_text(&s, "tls.key").is_some());

    set_secret(&a.secrets, "bank-mtls", &[("tls.crt", "not a cert")]).await;
    let x = wait_ready(&a.xints, "bank", "False", "CertificateInvalid").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(message.contains("bank-mtls"), "{message}");
    assert_eq!(x.status.unwrap().client_certificate_not_after, not_after);
    let now = a.secrets.get("attache-bank").await.unwrap();
    assert_eq!(
        (now.metadata.resource_version, now.data),
        (s.metadata.resource_version, s.data),
        "the pods keep the last good pair"
    );
    println!(
        "  clientCertificateNotAfter {}, kept through CertificateInvalid: {message}",
        not_after.unwrap()
    );
    a.clean_up().await;
}
