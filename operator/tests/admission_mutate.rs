//! The webhook's answer to AdmissionReviews shaped like the API server's, with the returned
//! JSON patch applied to the request's pod (as the API server does) and the result checked.

use attache_operator::admission::{review::review, AdmissionResult, InjectorSettings, StaticView};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

mod admission_support;
use admission_support::{admission_review, deployment_pod};

fn view() -> StaticView {
    StaticView::default()
        .with_namespace("shop", [])
        .with_namespace("auto", [("attache.dev/inject", "enabled")])
        .with_integrations("shop", ["twilio", "stripe", "openai"])
        .with_integrations("auto", ["stripe"])
}

struct Answer {
    response: Value,
    result: AdmissionResult,
    /// The request's pod with the returned patch applied, if there was one.
    patched: Option<Value>,
}

fn admit(request: Value, settings: &InjectorSettings) -> Answer {
    let body = serde_json::to_vec(&request).unwrap();
    let reviewed = review(&body, &view(), settings);
    assert_eq!(
        reviewed.status,
        200,
        "{}",
        String::from_utf8_lossy(&reviewed.body)
    );
    let answer: Value = serde_json::from_slice(&reviewed.body).unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    let response = answer["response"].clone();
    assert_eq!(
        response["uid"], request["request"]["uid"],
        "the uid must be echoed"
    );
    let patched = response.get("patch").and_then(Value::as_str).map(|b64| {
        assert_eq!(response["patchType"], "JSONPatch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut pod = request["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod it was made for");
        pod
    });
    Answer {
        response,
        result: reviewed.result,
        patched,
    }
}

fn env_of(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn settings() -> InjectorSettings {
    InjectorSettings {
        image: "ghcr.io/attache-dev/attache:test".into(),
        operator_namespace: Some("attache-system".into()),
        ..InjectorSettings::default()
    }
}

#[test]
fn a_deployments_pod_gets_a_native_sidecar_and_every_app_container_its_urls() {
    let a = admit(
        admission_review(deployment_pod(), "shop", "CREATE"),
        &settings(),
    );
    assert_eq!(a.result, AdmissionResult::Injected);
    assert_eq!(a.response["allowed"], true);
    let patched = a.patched.expect("a patch");
    // Still no name: the API server generates it after admission.
    assert!(patched["metadata"].get("name").is_none());
    let pod: Pod = serde_json::from_value(patched.clone()).unwrap();
    let spec = pod.spec.as_ref().unwrap();

    // The sidecar: first init container, restartPolicy Always, probes on /readyz.
    let inits = spec.init_containers.as_ref().unwrap();
    assert_eq!(inits.len(), 2);
    let sidecar = &inits[0];
    assert_eq!(sidecar.name, "attache-sidecar");
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        sidecar.image.as_deref(),
        Some("ghcr.io/attache-dev/attache:test")
    );
    assert_eq!(
        sidecar.args.as_deref().unwrap(),
        [
            "run",
            "--config-dir",
            "/etc/attache/integrations",
            "--first-port",
            "15001",
            "--proxy-addr",
            "127.0.0.1:15080",
            "--admin-addr",
            "0.0.0.0:15090"
        ]
    );
    for probe in [&sidecar.startup_probe, &sidecar.readiness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some("/readyz"));
        assert_eq!(serde_json::to_value(&get.port).unwrap(), json!(15090));
    }
    let port = &sidecar.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.container_port),
        (Some("attache-admin"), 15090)
    );
    let sc = sidecar.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_string()][..])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let res = serde_json::to_value(sidecar.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        res,
        json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}})
    );

    // One read-only projected volume per integration, mounted only into the sidecar.
    let names = ["openai", "stripe", "twilio"];
    let mounts = sidecar.volume_mounts.as_ref().unwrap();
    for (m, n) in mounts.iter().zip(names) {
        assert_eq!(m.name, format!("attache-{n}"));
        assert_eq!(m.mount_path, format!("/etc/attache/integrations/{n}"));
        assert_eq!(m.read_only, Some(true));
    }
    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        [
            "config",
            "kube-api-access-x7k2p",
            "attache-openai",
            "attache-stripe",
            "attache-twilio",
            "attache-no-api-token"
        ]
    );
    // The sidecar never calls the Kubernetes API: an empty volume over the token's path keeps
    // the ServiceAccount admission plugin from mounting the pod's token into it.
    let token_mount = &mounts[names.len()];
    assert_eq!(token_mount.name, "attache-no-api-token");
    assert_eq!(
        token_mount.mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(token_mount.read_only, Some(true));
    assert_eq!(
        serde_json::to_value(&volumes[5]).unwrap()["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "1Ki"})
    );
    let stripe = serde_json::to_value(&volumes[3]).unwrap();
    assert_eq!(
        stripe["projected"]["sources"],
        json!([{"configMap": {"name": "attache-stripe"}}, {"secret": {"name": "attache-stripe"}}])
    );
    for c in inits.iter().skip(1).chain(&spec.containers) {
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| !m.name.starts_with("attache-")),
            "{} must not see the credentials",
            c.name
        );
    }

    // Env: ports from 15001 over the sorted names, in the init container and both app
    // containers, ahead of their own env; a variable the app set itself is kept.
    let urls = [
        ("ATTACHE_OPENAI_URL", "http://127.0.0.1:15001"),
        ("ATTACHE_STRIPE_URL", "http://127.0.0.1:15002"),
        ("ATTACHE_TWILIO_URL", "http://127.0.0.1:15003"),
    ];
    let with_proxy: Vec<(String, String)> = urls
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("ATTACHE_PROXY_URL".into(), "http://127.0.0.1:15080".into())])
        .collect();
    assert_eq!(env_of(&inits[1]), with_proxy, "init container");
    assert_eq!(env_of(&spec.containers[1]), with_proxy, "worker");
    let app = env_of(&spec.containers[0]);
    assert_eq!(&app[..3], &with_proxy[..3]);
    assert_eq!(
        &app[3..],
        [
            ("LOG_LEVEL".to_string(), "info".to_string()),
            ("ATTACHE_PROXY_URL".into(), "http://127.0.0.1:9999".into())
        ],
        "the app's own env follows, its ATTACHE_PROXY_URL untouched"
    );
    assert!(env_of(sidecar).iter().all(|(k, _)| !k.ends_with("_URL")));

    // Labels and annotations: the controller's contract, Prometheus, and what was there.
    let meta = &pod.metadata;
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["attache.dev/injected"], "true");
    assert_eq!(labels["app"], "checkout");
    let ann = meta.annotations.as_ref().unwrap();
    assert_eq!(
        ann["attache.dev/injected-integrations"],
        "openai,stripe,twilio"
    );
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "15090");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(
        ann["kubectl.kubernetes.io/restartedAt"],
        "2026-11-01T10:00:00Z"
    );
    assert!(!ann.contains_key("kubectl.kubernetes.io/default-container"));
    // The app containers themselves are otherwise untouched.
    assert_eq!(
        patched["spec"]["containers"][0]["ports"],
        deployment_pod()["spec"]["containers"][0]["ports"]
    );
}

#[test]
fn injecting_the_injected_pod_again_changes_nothing() {
    let first = admit(
        admission_review(deployment_pod(), "shop", "CREATE"),
        &settings(),
    );
    let injected = first.patched.unwrap();
    let again = admit(admission_review(injected, "shop", "CREATE"), &settings());
    assert_eq!(again.result, AdmissionResult::AlreadyInjected);
    assert_eq!(again.response["allowed"], true);
    assert!(again.patched.is_none());
}

#[test]
fn old_clusters_get_a_regular_container_placed_first() {
    let old = InjectorSettings {
        native_sidecars: false,
        ..settings()
    };
    let a = admit(admission_review(deployment_pod(), "shop", "CREATE"), &old);
    let pod: Pod = serde_json::from_value(a.patched.unwrap()).unwrap();
    let spec = pod.spec.unwrap();
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["attache-sidecar", "app", "worker"]);
    assert_eq!(spec.containers[0].restart_policy, None);
    assert!(spec.containers[0].startup_probe.is_some());
    let inits = spec.init_containers.unwrap();
    assert_eq!(inits.len(), 1, "no sidecar among the init containers");
    assert_eq!(env_of(&inits[0])[0].0, "ATTACHE_OPENAI_URL");
    // The env vars landed in the app containers despite the shifted indices.
    assert_eq!(env_of(&spec.containers[1])[0].0, "ATTACHE_OPENAI_URL");
    assert_eq!(env_of(&spec.containers[2])[0].0, "ATTACHE_OPENAI_URL");
    assert!(env_of(&spec.containers[0])
        .iter()
        .all(|(k, _)| !k.ends_with("_URL")));
    // kubectl logs/exec keep defaulting to the app.
    let ann = pod.metadata.annotations.unwrap();
    assert_eq!(ann["kubectl.kubernetes.io/default-container"], "app");
}

#[test]
fn the_pod_can_ask_for_the_regular_form_and_other_resources() {
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"] = json!({
        "attache.dev/inject": "true",
        "attache.dev/integrations": "stripe",
        "attache.dev/native-sidecar": "false",
        "attache.dev/sidecar-cpu-request": "50m",
        "attache.dev/sidecar-memory-limit": "256Mi",
        "attache.dev/sidecar-image": "registry.local/attache:dev",
        "attache.dev/sidecar-log-level": "debug",
        "attache.dev/access-log": "json",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080"
    });
    let a = admit(admission_review(pod, "shop", "CREATE"), &settings());
    let pod: Pod = serde_json::from_value(a.patched.unwrap()).unwrap();
    let sidecar = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(sidecar.name, "attache-sidecar");
    assert_eq!(sidecar.image.as_deref(), Some("registry.local/attache:dev"));
    let res = serde_json::to_value(sidecar.resources.as_ref().unwrap()).unwrap();
    assert_eq!(
        res,
        json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}})
    );
    assert_eq!(
        env_of(sidecar),
        [
            ("ATTACHE_LOG_LEVEL".to_string(), "debug".to_string()),
            ("ATTACHE_ACCESS_LOG".to_string(), "json".to_string())
        ]
    );
    let ann = pod.metadata.annotations.unwrap();
    assert_eq!(ann["attache.dev/injected-integrations"], "stripe");
    // The app's own scrape target stays.
    assert_eq!(ann["prometheus.io/port"], "8080");
    assert!(!ann.contains_key("prometheus.io/path"));
    let app_env = env_of(&pod.spec.unwrap().containers[1]);
    assert_eq!(
        app_env[0],
        ("ATTACHE_STRIPE_URL".into(), "http://127.0.0.1:15001".into())
    );
}

#[test]
fn a_bare_pod_without_labels_annotations_volumes_or_env_gets_them_created() {
    // Opted in by its namespace's label: no annotations at all.
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "namespace": "auto"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    });
    let a = admit(admission_review(pod, "auto", "CREATE"), &settings());
    assert_eq!(a.result, AdmissionResult::Injected);
    let patched = a.patched.unwrap();
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"attache.dev/injected": "true"})
    );
    assert_eq!(
        patched["metadata"]["annotations"]["attache.dev/injected-integrations"],
        "stripe"
    );
    assert_eq!(patched["spec"]["volumes"][0]["name"], "attache-stripe");
    assert_eq!(
        patched["spec"]["initContainers"][0]["name"],
        "attache-sidecar"
    );
    assert_eq!(
        patched["spec"]["containers"][0]["env"],
        json!([
            {"name": "ATTACHE_STRIPE_URL", "value": "http://127.0.0.1:15001"},
            {"name": "ATTACHE_PROXY_URL", "value": "http://127.0.0.1:15080"}
        ])
    );
}

#[test]
fn a_pod_naming_missing_integrations_is_denied_with_their_names() {
    let mut pod = deployment_pod();
    pod["metadata"]["annotations"]["attache.dev/integrations"] = json!("stripe,paypal,adyen");
    let a = admit(admission_review(pod, "shop", "CREATE"), &settings());
    assert_eq!(a.result, AdmissionResult::Denied);
    assert_eq!(a.response["allowed"], false);
    assert!(a.patched.is_none());
    let status = &a.response["status"];
    assert_eq!(status["code"], 403);
    assert_eq!(
        status["message"],
        "Attaché sidecar injection: annotation attache.dev/integrations names ExternalIntegrations \
         \"adyen\", \"paypal\" that namespace shop does not have (it has \"openai\", \"stripe\", \"twilio\")"
    );
}

#[test]
fn namespace_opt_in_pod_opt_out_and_protected_namespaces() {
    let mut plain = deployment_pod();
    plain["metadata"]["annotations"] = json!({});
    // Namespace "shop" is not labelled: nothing.
    let a = admit(
        admission_review(plain.clone(), "shop", "CREATE"),
        &settings(),
    );
    assert_eq!(
        (a.result, a.patched.is_none()),
        (AdmissionResult::Skipped, true)
    );
    // Namespace "auto" is labelled: injected.
    let a = admit(admission_review(plain, "auto", "CREATE"), &settings());
    assert_eq!(a.result, AdmissionResult::Injected);
    // The pod opts out in a labelled namespace.
    let mut out = deployment_pod();
    out["metadata"]["annotations"]["attache.dev/inject"] = json!("false");
    let a = admit(admission_review(out, "auto", "CREATE"), &settings());
    assert_eq!(
        (a.result, a.patched.is_none()),
        (AdmissionResult::Skipped, true)
    );
    // Never in kube-system or the operator's namespace, even when asked.
    for ns in ["kube-system", "attache-system"] {
        let a = admit(
            admission_review(deployment_pod(), ns, "CREATE"),
            &settings(),
        );
        assert_eq!(
            (a.result, a.patched.is_none()),
            (AdmissionResult::Skipped, true),
            "{ns}"
        );
        assert_eq!(a.response["allowed"], true);
    }
}

#[test]
fn only_creates_are_mutated_and_garbage_is_a_400() {
    let a = admit(
        admission_review(deployment_pod(), "shop", "UPDATE"),
        &settings(),
    );
    assert_eq!(
        (a.result, a.patched.is_none()),
        (AdmissionResult::Skipped, true)
    );
    let r = review(b"{not json", &view(), &settings());
    assert_eq!((r.status, r.result), (400, AdmissionResult::Error));
    let r = review(
        br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
        &view(),
        &settings(),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn caches_not_yet_synced_answer_503_so_the_failure_policy_applies() {
    struct Cold;
    impl attache_operator::admission::ClusterView for Cold {
        fn is_ready(&self) -> bool {
            false
        }
        fn namespace_labels(&self, _: &str) -> std::collections::BTreeMap<String, String> {
            Default::default()
        }
        fn integrations(&self, _: &str) -> std::collections::BTreeSet<String> {
            Default::default()
        }
    }
    let body = serde_json::to_vec(&admission_review(deployment_pod(), "shop", "CREATE")).unwrap();
    let r = review(&body, &Cold, &settings());
    assert_eq!((r.status, r.result), (503, AdmissionResult::Error));
}

/// The label and annotation are a contract with the controller, which counts the pods of each
/// integration by them: its reader must see exactly the injected integrations.
#[test]
fn the_controller_counts_the_injected_pod_under_its_integrations() {
    use attache_operator::{contract, controller::pods};
    assert_eq!(
        pods::INJECTED_SELECTOR,
        format!("{}=true", contract::INJECTED_LABEL)
    );
    let a = admit(
        admission_review(deployment_pod(), "shop", "CREATE"),
        &settings(),
    );
    let pod: Pod = serde_json::from_value(a.patched.unwrap()).unwrap();
    assert_eq!(
        pods::integrations_of(&pod.metadata),
        ["openai", "stripe", "twilio"]
    );
    assert_eq!(
        pod.metadata.labels.unwrap()[contract::INJECTED_LABEL],
        "true"
    );
}
