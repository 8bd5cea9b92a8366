//! The controller against the real API server: every example reconciles with its Secrets, and
//! an integration's life (edit, Secret rotation, Secret deleted, invalid spec, deletion).

use std::{collections::BTreeMap, time::Duration};

use attache_api::ExternalIntegration;
use attache_tests::pki::TestCa;
use k8s_openapi::api::{
    core::v1::{ConfigMap, Secret},
    events::v1::Event,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};

use crate::cluster::{apply_all, eventually, root, Cluster, MANAGER, NAMESPACE, RELEASE};

pub const WAIT: Duration = Duration::from_secs(30);

/// The operator's ServiceAccount, as the audit log names it.
pub fn operator_user() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{RELEASE}")
}

/// The operator's requests that change something (every verb but get, list and watch), from
/// the audit log, in the order it logged them: `operator_writes(c)[mark..]` is what came after
/// an earlier `operator_writes(c).len()`.
pub fn operator_writes(c: &Cluster) -> Vec<Value> {
    c.audit_events(&operator_user())
        .into_iter()
        .filter(|e| !matches!(e["verb"].as_str(), Some("get" | "list" | "watch")))
        .collect()
}

/// `VERB URI` of audit events, for failure messages.
pub fn describe(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e["verb"], e["requestURI"]))
        .collect()
}

/// Whether an audit event is a patch of `resource` (not a subresource) named `name`.
pub fn patches(e: &Value, resource: &str, name: &str) -> bool {
    e["verb"] == "patch"
        && e["objectRef"]["resource"] == resource
        && e["objectRef"]["name"] == name
        && e["objectRef"]["subresource"].is_null()
}

/// `attache_operator_reconciliations_total{result}`, summed over the replicas' /metrics.
pub async fn reconciliations(c: &Cluster, result: &str) -> u64 {
    let name = format!("attache_operator_reconciliations_total{{result=\"{result}\"}}");
    let mut n = 0;
    for r in &c.replicas {
        if let Some((200, body)) = crate::http::get(r.metrics, "/metrics").await {
            n += crate::http::sample(&body, &name).unwrap_or(0.0) as u64;
        }
    }
    n
}

/// A Secret's key, as text.
pub fn secret_text(s: &Secret, key: &str) -> Option<String> {
    let v = s.data.as_ref()?.get(key)?;
    Some(String::from_utf8_lossy(&v.0).into_owned())
}

/// `(status, reason, message)` of the Ready condition.
pub fn ready(x: &ExternalIntegration) -> Option<(String, String, String)> {
    let c = x
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

/// Waits until the integration is Ready with `status` and `reason` at its current generation.
pub async fn wait_ready(
    api: &Api<ExternalIntegration>,
    name: &str,
    status: &str,
    reason: &str,
) -> ExternalIntegration {
    eventually(
        &format!("{name} to be Ready={status} ({reason})"),
        WAIT,
        async || {
            let x = api.get(name).await.ok()?;
            let (s, r, _) = ready(&x)?;
            let observed = x.status.as_ref()?.observed_generation;
            (s == status && r == reason && observed == x.metadata.generation).then_some(x)
        },
    )
    .await
}

/// The Secrets and ConfigMaps an integration's spec refers to, filled with working values: keys,
/// basic credentials, a CA bundle and a matching client certificate.
pub fn referenced_objects(namespace: &str, spec: &Value, ca: &TestCa) -> Vec<Value> {
    let mut out = Vec::new();
    let secret = |name: &str, data: Vec<(&str, String)>, type_: &str| {
        let data: serde_json::Map<String, Value> = data
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
               "metadata": {"name": name, "namespace": namespace}, "stringData": data})
    };
    let auth = &spec["auth"];
    for method in ["apiKey", "bearer", "queryParam"] {
        if let Some(r) = auth[method]["secretKeyRef"].as_object() {
            let (n, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
            out.push(secret(n, vec![(k, format!("key-for-{n}"))], "Opaque"));
        }
    }
    if let Some(n) = auth["basic"]["secretRef"]["name"].as_str() {
        out.push(secret(
            n,
            vec![("username", "user".into()), ("password", "pass".into())],
            "Opaque",
        ));
    }
    if let Some(r) = auth["oauth2ClientCredentials"]["clientSecretRef"].as_object() {
        let (n, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
        out.push(secret(n, vec![(k, "client-secret".into())], "Opaque"));
    }
    let tls = &spec["tls"];
    if let Some(r) = tls["caBundleRef"].as_object() {
        let n = r["name"].as_str().unwrap();
        let k = r.get("key").and_then(Value::as_str).unwrap_or("ca.crt");
        if r.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
            out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": n, "namespace": namespace}, "data": {k: ca.cert_pem}}));
        } else {
            out.push(secret(n, vec![(k, ca.cert_pem.clone())], "Opaque"));
        }
    }
    if let Some(n) = tls["clientCertificate"]["secretName"].as_str() {
        let pair = ca.client_cert("e2e-client");
        out.push(secret(
            n,
            vec![("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)],
            "kubernetes.io/tls",
        ));
    }
    out
}

/// The ExternalIntegrations of `examples/*.yaml`.
fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for d in docs
            .into_iter()
            .filter(|d| d["kind"] == "ExternalIntegration")
        {
            out.push((f.file_name().unwrap().to_string_lossy().into_owned(), d));
        }
    }
    out
}

async fn events_for(c: &Cluster, namespace: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(c.admin.clone(), namespace);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    x: &ExternalIntegration,
) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.kind == "ExternalIntegration"
            && Some(&o.uid) == x.metadata.uid.as_ref()
            && o.controller == Some(true)
    })
}

pub async fn every_example_reconciles(c: &mut Cluster) {
    let ca = TestCa::new("e2e-example-ca");
    let examples = examples();
    assert!(
        examples.len() >= 4,
        "examples/: only {} integrations",
        examples.len()
    );
    for (file, doc) in &examples {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = doc["metadata"]["name"].as_str().unwrap();
        c.create_namespace(ns, &[]).await.unwrap();
        let mut objects = referenced_objects(ns, &doc["spec"], &ca);
        objects.push(doc.clone());
        apply_all(&c.admin, &objects)
            .await
            .unwrap_or_else(|e| panic!("{file}: apply: {e:#}"));
        let api: Api<ExternalIntegration> = Api::namespaced(c.admin.clone(), ns);
        let x = wait_ready(&api, name, "True", "Reconciled").await;

        let gen = format!("attache-{name}");
        let cm = Api::<ConfigMap>::namespaced(c.admin.clone(), ns)
            .get(&gen)
            .await
            .unwrap();
        let secret = Api::<Secret>::namespaced(c.admin.clone(), ns)
            .get(&gen)
            .await
            .unwrap();
        assert!(
            owned_by(&cm.metadata, &x),
            "{file}: ConfigMap {gen} not owned by the integration"
        );
        assert!(
            owned_by(&secret.metadata, &x),
            "{file}: Secret {gen} not owned by the integration"
        );
        let config: Value =
            serde_json::from_str(&cm.data.as_ref().unwrap()["config.json"]).unwrap();
        assert_eq!(config["name"], name, "{file}: config.json");
        let url = url::Url::parse(doc["spec"]["upstream"]["url"].as_str().unwrap()).unwrap();
        let upstream = &config["upstream"];
        assert_eq!(upstream["host"], url.host_str().unwrap(), "{file}");
        assert_eq!(
            upstream["port"],
            url.port_or_known_default().unwrap(),
            "{file}"
        );
        assert_eq!(
            upstream["basePath"],
            url.path().trim_end_matches('/'),
            "{file}"
        );
        let config_text = &cm.data.as_ref().unwrap()["config.json"];
        assert!(
            !config_text.contains("key-for-") && !config_text.contains("client-secret\""),
            "{file}: a credential leaked into the ConfigMap"
        );
        eventually(&format!("{file}: a Reconciled Event"), WAIT, async || {
            let events = events_for(c, ns, name).await;
            events.iter().any(|(r, _)| r == "Reconciled").then_some(())
        })
        .await;
        println!(
            "  {file}: {ns}/{name} Ready, ConfigMap and Secret {gen} owned ({} Secret keys)",
            secret.data.as_ref().map_or(0, |d| d.len())
        );
    }
}

/// Edit → regenerate, Secret rotation, Secret deleted, invalid spec, deletion → garbage
/// collection, on one integration.
pub async fn integration_lifecycle(c: &mut Cluster) {
    let ns = "e2e-lifecycle";
    c.create_namespace(ns, &[]).await.unwrap();
    let xints: Api<ExternalIntegration> = Api::namespaced(c.admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.admin.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), ns);
    let key_secret = |v: &str| -> Secret {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pay-key", "namespace": ns}, "stringData": {"api-key": v}}))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &key_secret("sk_one"))
        .await
        .unwrap();
    let spec = json!({"upstream": {"url": "https://pay.example.com"},
        "auth": {"apiKey": {"secretKeyRef": {"name": "pay-key", "key": "api-key"}}},
        "timeouts": {"request": "10s"}});
    let xint = json!({"apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
        "metadata": {"name": "pay", "namespace": ns}, "spec": spec});
    apply_all(&c.admin, std::slice::from_ref(&xint))
        .await
        .unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    let secret_value = async |want: &str| {
        eventually(&format!("attache-pay to hold {want}"), WAIT, async || {
            let s = secrets.get("attache-pay").await.ok()?;
            s.data?
                .values()
                .any(|v| String::from_utf8_lossy(&v.0).contains(want))
                .then_some(())
        })
        .await
    };
    secret_value("sk_one").await;

    // Edit → the ConfigMap follows.
    let t = std::time::Instant::now();
    let mut edited = xint.clone();
    edited["spec"]["timeouts"]["request"] = json!("17s");
    apply_all(&c.admin, &[edited]).await.unwrap();
    eventually("the ConfigMap to follow the edit", WAIT, async || {
        let cm = cms.get("attache-pay").await.ok()?;
        cm.data?.get("config.json")?.contains("17s").then_some(())
    })
    .await;
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    println!(
        "  edit regenerated the ConfigMap in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Rotation of the referenced Secret → the generated Secret follows.
    let t = std::time::Instant::now();
    secrets
        .patch(
            "pay-key",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(key_secret("sk_two")),
        )
        .await
        .unwrap();
    secret_value("sk_two").await;
    println!(
        "  rotation reached the generated Secret in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // The referenced Secret deleted → Ready=False/SecretNotFound, an Event, objects kept.
    secrets
        .delete("pay-key", &DeleteParams::default())
        .await
        .unwrap();
    let x = wait_ready(&xints, "pay", "False", "SecretNotFound").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(
        message.contains("pay-key"),
        "message does not name the Secret: {message}"
    );
    // The Event follows the status write; it may be a moment behind.
    eventually("a SecretNotFound Event", WAIT, async || {
        let events = events_for(c, ns, "pay").await;
        events
            .iter()
            .any(|(r, _)| r == "SecretNotFound")
            .then_some(())
    })
    .await;
    assert!(
        cms.get("attache-pay").await.is_ok(),
        "ConfigMap removed on a missing Secret"
    );
    secret_value("sk_two").await;
    secrets
        .create(&PostParams::default(), &key_secret("sk_three"))
        .await
        .unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    secret_value("sk_three").await;

    // An invalid spec that 1.20 lets through (its CEL rules are not enforced before 1.25): the
    // operator's own validation names the field; the generated objects stay.
    let mut invalid = xint.clone();
    invalid["spec"]["timeouts"]["request"] = json!("0s");
    apply_all(&c.admin, &[invalid]).await.unwrap();
    let x = wait_ready(&xints, "pay", "False", "InvalidSpec").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(
        message.contains("spec.timeouts.request"),
        "InvalidSpec does not name the field: {message}"
    );
    assert!(cms.get("attache-pay").await.unwrap().data.unwrap()["config.json"].contains("17s"));
    apply_all(&c.admin, std::slice::from_ref(&xint))
        .await
        .unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;

    // Deleted → the garbage collector removes what the operator generated.
    xints.delete("pay", &DeleteParams::default()).await.unwrap();
    eventually("attache-pay to be garbage-collected", WAIT, async || {
        (cms.get_opt("attache-pay").await.ok()?.is_none()
            && secrets.get_opt("attache-pay").await.ok()?.is_none())
        .then_some(())
    })
    .await;
    // The collected objects' events reach the controller after their owner is gone: that is
    // no warning.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for r in &c.replicas {
        let out = r.proc.output();
        assert!(
            !out.contains("not found in local store"),
            "{}: a warning about the deleted integration:\n{out}",
            r.name
        );
    }
}
