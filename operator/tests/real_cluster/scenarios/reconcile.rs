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
/// basic credentials, a webhook signing secret, a CA bundle and a matching client certificate.
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
    if let Some(r) = spec["webhooks"]["verify"]["secretKeyRef"].as_object() {
        let (n, k) = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
        // Standard Webhooks secrets are `whsec_` + base64; the others take any text.
        let signing = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLWUyZQ==".to_string();
        out.push(secret(n, vec![(k, signing)], "Opaque"));
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
/// The object's current resourceVersion (it changes on every write).
async fn resource_version<K>(api: &Api<K>, name: &str) -> Option<String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e}"))
        .meta()
        .resource_version
        .clone()
}

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

/// The Events about `name` in `namespace`.
pub async fn events(c: &Cluster, namespace: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(c.admin.clone(), namespace);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Whether an Event is of `type_` and `reason`, its note containing `note`.
pub fn is_event(e: &Event, type_: &str, reason: &str, note: &str) -> bool {
    e.type_.as_deref() == Some(type_)
        && e.reason.as_deref() == Some(reason)
        && e.note.as_deref().unwrap_or_default().contains(note)
}

/// Whether `meta` has exactly one owner reference, the integration as its controller.
fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    x: &ExternalIntegration,
) -> bool {
    matches!(meta.owner_references.as_deref(), Some([o])
        if o.api_version == "attache.dev/v1alpha1"
            && o.kind == "ExternalIntegration"
            && Some(&o.name) == x.metadata.name.as_ref()
            && Some(&o.uid) == x.metadata.uid.as_ref()
            && o.controller == Some(true)
            && o.block_owner_deletion.is_none())
}

/// What the generated Secret must hold for `spec`, taken from the referenced `objects`: the
/// files of its auth method, the CA bundle, the client pair, and nothing else.
fn expected_files(spec: &Value, objects: &[Value]) -> BTreeMap<String, String> {
    let get = |kind: &str, name: &str, key: &str| -> String {
        let field = if kind == "Secret" {
            "stringData"
        } else {
            "data"
        };
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .and_then(|o| o[field][key].as_str())
            .unwrap_or_else(|| panic!("no key {key} in the referenced {kind} {name}"))
            .to_string()
    };
    let str_of = |v: &Value| v.as_str().unwrap().to_string();
    let mut out = BTreeMap::new();
    let auth = &spec["auth"];
    for method in ["apiKey", "bearer", "queryParam"] {
        if let Some(r) = auth[method]["secretKeyRef"].as_object() {
            let v = get("Secret", &str_of(&r["name"]), &str_of(&r["key"]));
            out.insert("auth-credential".into(), v.trim().to_string());
        }
    }
    if let Some(n) = auth["basic"]["secretRef"]["name"].as_str() {
        out.insert("auth-username".into(), get("Secret", n, "username"));
        out.insert("auth-password".into(), get("Secret", n, "password"));
    }
    if let Some(r) = auth["oauth2ClientCredentials"]["clientSecretRef"].as_object() {
        let v = get("Secret", &str_of(&r["name"]), &str_of(&r["key"]));
        out.insert("oauth2-client-secret".into(), v.trim().to_string());
    }
    if let Some(r) = spec["webhooks"]["verify"]["secretKeyRef"].as_object() {
        // One secret per line, as the sidecar reads them.
        let v = get("Secret", &str_of(&r["name"]), &str_of(&r["key"]));
        let lines: Vec<&str> = v.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        out.insert("webhook-secrets".into(), lines.join("\n") + "\n");
    }
    let tls = &spec["tls"];
    if let Some(r) = tls["caBundleRef"].as_object() {
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or("Secret");
        let key = r.get("key").and_then(Value::as_str).unwrap_or("ca.crt");
        out.insert("ca.crt".into(), get(kind, &str_of(&r["name"]), key));
    }
    if let Some(n) = tls["clientCertificate"]["secretName"].as_str() {
        out.insert("tls.crt".into(), get("Secret", n, "tls.crt"));
        out.insert("tls.key".into(), get("Secret", n, "tls.key"));
    }
    out
}

pub async fn every_example_reconciles(c: &mut Cluster) {
    let ca = TestCa::new("e2e-example-ca");
    let examples = examples();
    assert!(
        examples.len() >= 4,
        "examples/: only {} integrations",
        examples.len()
    );
    let successes = reconciliations(c, "success").await;
    for (file, doc) in &examples {
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = doc["metadata"]["name"].as_str().unwrap();
        c.create_namespace(ns, &[]).await.unwrap();
        let mut objects = referenced_objects(ns, &doc["spec"], &ca);
        let files = expected_files(&doc["spec"], &objects);
        objects.push(doc.clone());
        apply_all(&c.admin, &objects)
            .await
            .unwrap_or_else(|e| panic!("{file}: apply: {e:#}"));
        let api: Api<ExternalIntegration> = Api::namespaced(c.admin.clone(), ns);
        let x = wait_ready(&api, name, "True", "Reconciled").await;

        // The status: observed at this generation, naming the generated objects, no pods yet,
        // a client certificate's expiry only where there is one.
        let gen = format!("attache-{name}");
        let status = x.status.as_ref().unwrap();
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            condition.observed_generation, x.metadata.generation,
            "{file}: the Ready condition's observedGeneration"
        );
        let message = condition.message.as_deref().unwrap_or_default();
        assert!(message.contains(&gen), "{file}: Ready message: {message}");
        assert_eq!(status.pods, Some(0), "{file}: status.pods");
        assert_eq!(
            status.client_certificate_not_after.is_some(),
            doc["spec"]["tls"]["clientCertificate"].is_object(),
            "{file}: status.clientCertificateNotAfter {:?}",
            status.client_certificate_not_after
        );

        // The generated objects: named, labelled, controlled by the integration, server-side
        // applied under the operator's field manager.
        let cm = Api::<ConfigMap>::namespaced(c.admin.clone(), ns)
            .get(&gen)
            .await
            .unwrap();
        let secret = Api::<Secret>::namespaced(c.admin.clone(), ns)
            .get(&gen)
            .await
            .unwrap();
        let labels = BTreeMap::from([
            (
                "app.kubernetes.io/managed-by".to_string(),
                "attache-operator".to_string(),
            ),
            ("attache.dev/integration".to_string(), name.to_string()),
        ]);
        for (kind, meta) in [("ConfigMap", &cm.metadata), ("Secret", &secret.metadata)] {
            assert_eq!(
                meta.labels.as_ref(),
                Some(&labels),
                "{file}: {kind} {gen} labels"
            );
            assert!(
                owned_by(meta, &x),
                "{file}: {kind} {gen} not controlled by the integration (alone): {:?}",
                meta.owner_references
            );
            assert!(
                meta.managed_fields.iter().flatten().any(|m| {
                    m.manager.as_deref() == Some("attache-operator")
                        && m.operation.as_deref() == Some("Apply")
                }),
                "{file}: {kind} {gen} not server-side applied by attache-operator"
            );
        }
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
        let auth = &doc["spec"]["auth"];
        let method = [
            "apiKey",
            "bearer",
            "basic",
            "queryParam",
            "oauth2ClientCredentials",
        ]
        .into_iter()
        .find(|m| auth.get(m).is_some())
        .unwrap_or("none");
        // (The config's tag for oauth2ClientCredentials is oAuth2ClientCredentials.)
        let auth_type = config["auth"]["type"].as_str().unwrap_or_default();
        assert!(
            auth_type.eq_ignore_ascii_case(method),
            "{file}: config.json auth type {auth_type} for spec.auth.{method}"
        );
        if method == "apiKey" {
            let k = &auth["apiKey"];
            assert_eq!(
                config["auth"],
                json!({"type": "apiKey",
                       "header": k["header"].as_str().unwrap_or("Authorization"),
                       "prefix": k["prefix"].as_str().unwrap_or("")}),
                "{file}: config.json auth"
            );
        }
        let config_text = &cm.data.as_ref().unwrap()["config.json"];
        assert!(
            !config_text.contains("key-for-") && !config_text.contains("client-secret\""),
            "{file}: a credential leaked into the ConfigMap"
        );
        // The Secret: exactly the material the integration needs, as referenced.
        assert_eq!(
            secret.type_.as_deref(),
            Some("Opaque"),
            "{file}: Secret type"
        );
        let data: BTreeMap<String, String> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        assert_eq!(data, files, "{file}: the data of Secret {gen}");

        eventually(
            &format!("{file}: a Normal Reconciled Event"),
            WAIT,
            async || {
                let events = events(c, ns, name).await;
                events
                    .iter()
                    .any(|e| {
                        is_event(e, "Normal", "Reconciled", "")
                            && e.reporting_controller.as_deref() == Some("attache-operator")
                    })
                    .then_some(())
            },
        )
        .await;

        // The operator's writes here (audit log): server-side applies under its field manager
        // (the Secret first, so a config never names secret files that are not there yet), the
        // status through its subresource, Events; nothing else.
        let of_this = |e: &Value, resource: &str| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["name"] == gen
        };
        let writes = eventually(
            &format!("{file}: the operator's writes in the audit log"),
            WAIT,
            async || {
                let w: Vec<Value> = operator_writes(c)
                    .into_iter()
                    .filter(|e| e["objectRef"]["namespace"] == ns)
                    .collect();
                let status_written = w.iter().any(|e| {
                    e["objectRef"]["resource"] == "externalintegrations"
                        && e["objectRef"]["name"] == name
                });
                let cm_written = w.iter().any(|e| of_this(e, "configmaps"));
                (status_written && cm_written).then_some(w)
            },
        )
        .await;
        for e in &writes {
            let uri = e["requestURI"].as_str().unwrap_or_default();
            let (verb, r) = (e["verb"].as_str().unwrap_or_default(), &e["objectRef"]);
            let generated = r["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("attache-"));
            match (r["resource"].as_str(), r["subresource"].as_str()) {
                (Some("configmaps" | "secrets"), None) if generated => {
                    assert_eq!(verb, "patch", "{file}: {uri}");
                    assert!(
                        uri.contains("fieldManager=attache-operator") && uri.contains("force=true"),
                        "{file}: not a forced apply by attache-operator: {uri}"
                    );
                }
                (Some("externalintegrations"), Some("status")) => {
                    assert_eq!(verb, "patch", "{file}: {uri}")
                }
                (Some("events"), _) => {}
                _ => panic!("{file}: unexpected write {verb} {uri}"),
            }
        }
        let first = |resource: &str| {
            writes
                .iter()
                .filter(|e| of_this(e, resource))
                .filter_map(|e| e["requestReceivedTimestamp"].as_str())
                .min()
                .map(str::to_string)
        };
        let (first_secret, first_cm) = (first("secrets"), first("configmaps"));
        assert!(
            first_secret.is_some() && first_secret < first_cm,
            "{file}: the Secret ({first_secret:?}) applied after the ConfigMap ({first_cm:?})"
        );
        println!(
            "  {file}: {ns}/{name} Ready, ConfigMap and Secret {gen} owned ({} Secret keys, {} writes)",
            data.len(),
            writes.len()
        );
    }
    let now = reconciliations(c, "success").await;
    assert!(
        now >= successes + examples.len() as u64,
        "attache_operator_reconciliations_total{{result=\"success\"}} went from {successes} to {now}"
    );
}

/// Edit → regenerate, Secret rotation, Secret deleted, invalid spec, deletion → garbage
/// collection, on one integration (a second one in the namespace must stay out of it).
pub async fn integration_lifecycle(c: &mut Cluster) {
    let ns = "e2e-lifecycle";
    c.create_namespace(ns, &[]).await.unwrap();
    let xints: Api<ExternalIntegration> = Api::namespaced(c.admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(c.admin.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), ns);
    let key_secret = |name: &str, v: &str| -> Secret {
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns}, "stringData": {"api-key": v}}))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &key_secret("pay-key", "sk_one"))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &key_secret("mail-key", "mk_one"))
        .await
        .unwrap();
    let spec = json!({"upstream": {"url": "https://pay.example.com"},
        "auth": {"apiKey": {"secretKeyRef": {"name": "pay-key", "key": "api-key"}}},
        "timeouts": {"request": "10s"}});
    let xint = json!({"apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
        "metadata": {"name": "pay", "namespace": ns}, "spec": spec});
    let mail = json!({"apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
        "metadata": {"name": "mail", "namespace": ns},
        "spec": {"upstream": {"url": "https://mail.example.com"},
                 "auth": {"apiKey": {"secretKeyRef": {"name": "mail-key", "key": "api-key"}}}}});
    apply_all(&c.admin, &[xint.clone(), mail]).await.unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    wait_ready(&xints, "mail", "True", "Reconciled").await;
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
    eventually(
        "the first apply of attache-pay in the audit log",
        WAIT,
        async || {
            let w = operator_writes(c);
            (w.iter().any(|e| patches(e, "secrets", "attache-pay"))
                && w.iter().any(|e| patches(e, "configmaps", "attache-pay")))
            .then_some(())
        },
    )
    .await;

    // Edit → the ConfigMap follows, the new generation is observed; the Secret, unchanged, is
    // not written.
    let mark = operator_writes(c).len();
    let generation = xints.get("pay").await.unwrap().metadata.generation.unwrap();
    let secret_rv = resource_version(&secrets, "attache-pay").await;
    let t = std::time::Instant::now();
    let mut edited = xint.clone();
    edited["spec"]["upstream"]["url"] = json!("https://eu.pay.example.com/v1");
    edited["spec"]["timeouts"]["request"] = json!("17s");
    apply_all(&c.admin, &[edited]).await.unwrap();
    eventually("the ConfigMap to follow the edit", WAIT, async || {
        let cm = cms.get("attache-pay").await.ok()?;
        cm.data?.get("config.json")?.contains("17s").then_some(())
    })
    .await;
    let x = wait_ready(&xints, "pay", "True", "Reconciled").await;
    println!(
        "  edit regenerated the ConfigMap in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let moved = Some(generation + 1);
    assert_eq!(
        x.metadata.generation, moved,
        "the edit moves the generation"
    );
    let status = x.status.as_ref().unwrap();
    assert_eq!(
        status.observed_generation, moved,
        "status.observedGeneration"
    );
    let condition = status.conditions.iter().find(|c| c.type_ == "Ready");
    assert_eq!(
        condition.and_then(|c| c.observed_generation),
        moved,
        "the Ready condition's observedGeneration"
    );
    let config: Value =
        serde_json::from_str(&cms.get("attache-pay").await.unwrap().data.unwrap()["config.json"])
            .unwrap();
    assert_eq!(config["upstream"]["host"], "eu.pay.example.com");
    assert_eq!(config["upstream"]["basePath"], "/v1");
    assert_eq!(config["timeouts"]["request"], "17s");
    let after = eventually("the ConfigMap's apply in the audit log", WAIT, async || {
        let w = operator_writes(c).split_off(mark);
        w.iter()
            .any(|e| patches(e, "configmaps", "attache-pay"))
            .then_some(w)
    })
    .await;
    assert!(
        !after.iter().any(|e| patches(e, "secrets", "attache-pay")),
        "the unchanged Secret was written on an edit: {:#?}",
        describe(&after)
    );
    assert_eq!(resource_version(&secrets, "attache-pay").await, secret_rv);

    // Rotation of the referenced Secret → the generated Secret follows; the integration is not
    // touched, the ConfigMap (no secret in it) and the other integration are not written.
    let mark = operator_writes(c).len();
    let generation = xints.get("pay").await.unwrap().metadata.generation;
    let t = std::time::Instant::now();
    secrets
        .patch(
            "pay-key",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(key_secret("pay-key", "sk_two")),
        )
        .await
        .unwrap();
    secret_value("sk_two").await;
    println!(
        "  rotation reached the generated Secret in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        xints.get("pay").await.unwrap().metadata.generation,
        generation
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = operator_writes(c).split_off(mark);
    assert!(
        after.iter().any(|e| patches(e, "secrets", "attache-pay")),
        "the rotation's apply is not in the audit log: {:#?}",
        describe(&after)
    );
    assert!(
        !after
            .iter()
            .any(|e| patches(e, "configmaps", "attache-pay")),
        "the ConfigMap was rewritten on a rotation: {:#?}",
        describe(&after)
    );
    let mail_writes: Vec<Value> = after
        .into_iter()
        .filter(|e| {
            let n = e["objectRef"]["name"].as_str().unwrap_or_default();
            n == "mail" || n == "attache-mail" || n.starts_with("mail.")
        })
        .collect();
    assert!(
        mail_writes.is_empty(),
        "the other integration was written on pay-key's rotation: {:#?}",
        describe(&mail_writes)
    );

    // The referenced Secret deleted → Ready=False/SecretNotFound, an Event, retries with
    // backoff, the generated objects kept as they were.
    let cm_rv = resource_version(&cms, "attache-pay").await;
    let secret_rv = resource_version(&secrets, "attache-pay").await;
    let failures = reconciliations(c, "secret_not_found").await;
    secrets
        .delete("pay-key", &DeleteParams::default())
        .await
        .unwrap();
    let x = wait_ready(&xints, "pay", "False", "SecretNotFound").await;
    let (_, _, message) = ready(&x).unwrap();
    assert!(
        message.contains("spec.auth.apiKey.secretKeyRef")
            && message.contains("Secret \"pay-key\" not found"),
        "message does not name the field and the Secret: {message}"
    );
    // The Event follows the status write; it may be a moment behind.
    eventually(
        "a Warning SecretNotFound Event naming pay-key",
        WAIT,
        async || {
            let events = events(c, ns, "pay").await;
            events
                .iter()
                .any(|e| is_event(e, "Warning", "SecretNotFound", "pay-key"))
                .then_some(())
        },
    )
    .await;
    let t = std::time::Instant::now();
    eventually("a retry of the failed reconciliation", WAIT, async || {
        (reconciliations(c, "secret_not_found").await >= failures + 2).then_some(())
    })
    .await;
    println!(
        "  SecretNotFound reconciled again {:.1} s after the status said so",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        resource_version(&cms, "attache-pay").await,
        cm_rv,
        "ConfigMap written on a missing Secret"
    );
    assert_eq!(
        resource_version(&secrets, "attache-pay").await,
        secret_rv,
        "Secret written on a missing Secret"
    );
    secret_value("sk_two").await;
    secrets
        .create(&PostParams::default(), &key_secret("pay-key", "sk_three"))
        .await
        .unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    secret_value("sk_three").await;
    // Ready again with the same message within six minutes: one Event, its series counting 2.
    let series_event = eventually(
        "the second Ready=True counted in the first Reconciled Event's series",
        WAIT,
        async || {
            let events = events(c, ns, "pay").await;
            let reconciled: Vec<&Event> = events
                .iter()
                .filter(|e| is_event(e, "Normal", "Reconciled", "up to date"))
                .collect();
            match reconciled.as_slice() {
                [one] if one.series.as_ref().is_some_and(|s| s.count == 2) => {
                    one.metadata.name.clone()
                }
                _ => None,
            }
        },
    )
    .await;

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
    // That Event deleted meanwhile: the next Ready=True (a repeat within the window) cannot
    // count in its series and publishes a new Event instead.
    let event_api: Api<Event> = Api::namespaced(c.admin.clone(), ns);
    event_api
        .delete(&series_event, &DeleteParams::default())
        .await
        .unwrap();
    apply_all(&c.admin, std::slice::from_ref(&xint))
        .await
        .unwrap();
    wait_ready(&xints, "pay", "True", "Reconciled").await;
    eventually(
        "a new Reconciled Event after the series' Event was deleted",
        WAIT,
        async || {
            events(c, ns, "pay")
                .await
                .iter()
                .any(|e| {
                    is_event(e, "Normal", "Reconciled", "up to date")
                        && e.metadata.name.as_deref() != Some(series_event.as_str())
                })
                .then_some(())
        },
    )
    .await;

    // Deleted → the garbage collector removes what the operator generated; the operator
    // neither re-creates it nor deletes anything itself, and the user's Secret stays as it is.
    let key_rv = resource_version(&secrets, "pay-key").await;
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
    assert!(
        cms.get_opt("attache-pay").await.unwrap().is_none()
            && secrets.get_opt("attache-pay").await.unwrap().is_none(),
        "re-created for a deleted integration"
    );
    assert_eq!(
        secrets
            .get("pay-key")
            .await
            .unwrap()
            .metadata
            .resource_version,
        key_rv,
        "the referenced Secret changed"
    );
    let all_writes = operator_writes(c);
    let deletes: Vec<Value> = all_writes
        .iter()
        .filter(|e| matches!(e["verb"].as_str(), Some("delete" | "deletecollection")))
        .cloned()
        .collect();
    assert!(
        deletes.is_empty(),
        "the operator deleted: {:#?}",
        describe(&deletes)
    );
    let to_user_secrets: Vec<Value> = all_writes
        .into_iter()
        .filter(|e| e["objectRef"]["namespace"] == ns)
        .filter(|e| {
            matches!(
                e["objectRef"]["name"].as_str(),
                Some("pay-key" | "mail-key")
            )
        })
        .collect();
    assert!(
        to_user_secrets.is_empty(),
        "the operator wrote the user's Secrets: {:#?}",
        describe(&to_user_secrets)
    );
}
