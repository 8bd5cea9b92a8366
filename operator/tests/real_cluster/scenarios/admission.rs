//! The mutating webhook, called by the real API server through the chart's own
//! MutatingWebhookConfiguration (its caBundle kept by the operator), and pod counting.

use std::time::Duration;

use attache_api::ExternalIntegration;
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Pod},
};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    Api,
};
use serde_json::{json, Value};

use crate::cluster::{apply_all, eventually, Cluster};

const WAIT: Duration = Duration::from_secs(30);
const SIDECAR: &str = "attache-sidecar";

fn integration(ns: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({"upstream": {"url": format!("https://{name}.example.com")}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn pod(name: &str, annotations: Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
    .unwrap()
}

fn has_sidecar(p: &Pod) -> bool {
    let spec = p.spec.as_ref().unwrap();
    spec.containers.iter().any(|c| c.name == SIDECAR)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == SIDECAR)
}

fn app_env(p: &Pod, name: &str) -> Option<String> {
    let app = p
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "app")?;
    app.env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// Waits until the webhook answers through the API server: its caBundle is in place and the
/// Service name resolves to the replica on :443.
async fn wait_webhook(c: &Cluster, pods: &Api<Pod>) {
    let mut n = 0;
    eventually("the webhook to inject a probe pod", WAIT, async || {
        n += 1;
        let name = format!("probe-{n}");
        let created = pods
            .create(
                &PostParams::default(),
                &pod(&name, json!({"attache.dev/inject": "true"})),
            )
            .await
            .ok()?;
        let _ = pods.delete(&name, &DeleteParams::default()).await;
        has_sidecar(&created).then_some(())
    })
    .await;
    let _ = c;
}

pub async fn webhook_injects_through_the_chart_configuration(c: &mut Cluster) {
    // A namespace opting in by annotation only, and one labelled for injection.
    let plain = "e2e-annotated";
    let labelled = "e2e-labelled";
    c.create_namespace(plain, &[]).await.unwrap();
    c.create_namespace(labelled, &[("attache.dev/inject", "enabled")])
        .await
        .unwrap();
    apply_all(
        &c.admin,
        &[
            integration(plain, "stripe", json!({})),
            integration(plain, "twilio", json!({})),
            integration(labelled, "openai", json!({})),
        ],
    )
    .await
    .unwrap();
    let plain_pods: Api<Pod> = Api::namespaced(c.admin.clone(), plain);
    let labelled_pods: Api<Pod> = Api::namespaced(c.admin.clone(), labelled);
    wait_webhook(c, &plain_pods).await;
    let pp = PostParams::default();

    // Annotated pod, naming one integration of two.
    let p = plain_pods
        .create(
            &pp,
            &pod(
                "annotated",
                json!({"attache.dev/inject": "true", "attache.dev/integrations": "twilio"}),
            ),
        )
        .await
        .unwrap();
    assert!(has_sidecar(&p), "annotated pod not injected: {:?}", p.spec);
    assert_eq!(
        app_env(&p, "ATTACHE_TWILIO_URL").as_deref(),
        Some("http://127.0.0.1:15001")
    );
    assert_eq!(app_env(&p, "ATTACHE_STRIPE_URL"), None);
    assert_eq!(
        app_env(&p, "ATTACHE_PROXY_URL").as_deref(),
        Some("http://127.0.0.1:15080")
    );
    let spec = p.spec.as_ref().unwrap();
    assert!(
        spec.init_containers
            .iter()
            .flatten()
            .all(|c| c.name != SIDECAR),
        "a 1.20 server got a native sidecar (init container)"
    );
    let sidecar = spec.containers.iter().find(|c| c.name == SIDECAR).unwrap();
    assert!(
        sidecar.volume_mounts.iter().flatten().all(|m| m.mount_path
            != "/var/run/secrets/kubernetes.io/serviceaccount"
            || m.name.starts_with("attache-")),
        "the sidecar got the pod's ServiceAccount token: {:?}",
        sidecar.volume_mounts
    );

    // A pod without the annotation in the plain namespace is left alone.
    let p = plain_pods
        .create(&pp, &pod("not-annotated", json!({})))
        .await
        .unwrap();
    assert!(!has_sidecar(&p));

    // The labelled namespace: injected without an annotation; opt-out respected.
    let p = labelled_pods
        .create(&pp, &pod("by-namespace", json!({})))
        .await
        .unwrap();
    assert!(has_sidecar(&p), "pod in a labelled namespace not injected");
    assert_eq!(
        app_env(&p, "ATTACHE_OPENAI_URL").as_deref(),
        Some("http://127.0.0.1:15001")
    );
    let p = labelled_pods
        .create(
            &pp,
            &pod("opted-out", json!({"attache.dev/inject": "false"})),
        )
        .await
        .unwrap();
    assert!(!has_sidecar(&p), "opt-out ignored");

    // Unknown integration: denied, naming it.
    let err = plain_pods
        .create(
            &pp,
            &pod(
                "unknown",
                json!({"attache.dev/inject": "true", "attache.dev/integrations": "nosuch"}),
            ),
        )
        .await
        .expect_err("a pod naming an unknown integration was admitted");
    let text = err.to_string();
    assert!(
        text.contains("nosuch"),
        "denial does not name the integration: {text}"
    );

    // Deployment → ReplicaSet → Pod (the controller manager creates it; admission injects it).
    let deployments: Api<Deployment> = Api::namespaced(c.admin.clone(), plain);
    let d: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"attache.dev/inject": "true"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/web:1"}]}}}}))
    .unwrap();
    deployments.create(&pp, &d).await.unwrap();
    let p = eventually("the Deployment's pod", WAIT, async || {
        let list = plain_pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    assert!(has_sidecar(&p), "the Deployment's pod was not injected");
    assert_eq!(
        app_env(&p, "ATTACHE_STRIPE_URL").as_deref(),
        Some("http://127.0.0.1:15001")
    );
    assert_eq!(
        app_env(&p, "ATTACHE_TWILIO_URL").as_deref(),
        Some("http://127.0.0.1:15002")
    );
}

pub async fn pods_counted_and_shared_rate_split(c: &mut Cluster) {
    let ns = "e2e-pods";
    c.create_namespace(ns, &[]).await.unwrap();
    apply_all(
        &c.admin,
        &[integration(
            ns,
            "shared",
            json!({
        "rateLimit": {"requests": 100, "per": "1s", "burst": 40, "scope": "shared"}}),
        )],
    )
    .await
    .unwrap();
    let xints: Api<ExternalIntegration> = Api::namespaced(c.admin.clone(), ns);
    let cms: Api<ConfigMap> = Api::namespaced(c.admin.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(c.admin.clone(), ns);
    wait_webhook(c, &pods).await;
    let expect = async |n: u32| {
        eventually(
            &format!("status.pods = {n} and the shared limit split {n} ways"),
            WAIT,
            async || {
                let x = xints.get("shared").await.ok()?;
                let counted = x.status.as_ref()?.pods;
                let cm = cms.get("attache-shared").await.ok()?;
                let config: Value = serde_json::from_str(cm.data?.get("config.json")?).ok()?;
                let rl = &config["rateLimit"];
                (counted == Some(n)
                    && rl["pods"] == json!(n.max(1))
                    && rl["burst"] == json!((40 / n.max(1)).max(1)))
                .then_some(())
            },
        )
        .await
    };
    expect(0).await;
    let pp = PostParams::default();
    for i in 0..2 {
        let p = pods
            .create(
                &pp,
                &pod(&format!("user-{i}"), json!({"attache.dev/inject": "true"})),
            )
            .await
            .unwrap();
        assert!(has_sidecar(&p));
    }
    expect(2).await;
    // No kubelet: deleting a Pending pod with grace 0 removes it at once.
    pods.delete(
        "user-0",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    expect(1).await;
}

/// `attache-operator inject --kubernetes-version auto` asks this server its version and writes
/// what it accepts: on 1.20 a regular sidecar container (native sidecars would be refused).
pub async fn inject_writes_for_the_clusters_version(c: &mut Cluster) {
    let dir = c.dir.path().join("inject");
    std::fs::create_dir_all(&dir).unwrap();
    let ns = "e2e-inject";
    c.create_namespace(ns, &[]).await.unwrap();
    let deployment = dir.join("deployment.yaml");
    std::fs::write(
        &deployment,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: app, image: registry.example/app:1}}]\n"
        ),
    )
    .unwrap();
    let xint = dir.join("stripe.yaml");
    std::fs::write(
        &xint,
        serde_json::to_string(&integration(ns, "stripe", json!({}))).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .arg("inject")
        .arg("-f")
        .arg(&deployment)
        .arg("-i")
        .arg(&xint)
        .args(["--kubernetes-version", "auto"])
        .env_clear()
        .env("KUBECONFIG", &c.admin_kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    println!("  inject said: {}", stderr.trim().replace('\n', " / "));
    assert!(
        stderr.contains("read from the current kubeconfig's API server")
            && stderr.contains("regular container"),
        "{stderr}"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
        .expect("inject prints YAML");
    // What kubectl apply would send, as a server-side dry run: the server must accept it.
    let dep: Deployment = serde_json::from_value(docs[0].clone()).unwrap();
    let api: Api<Deployment> = Api::namespaced(c.admin.clone(), ns);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = api
        .create(&params, &dep)
        .await
        .unwrap_or_else(|e| panic!("the 1.20 server refused inject's output: {e}"));
    let spec = created.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.containers[0].name, SIDECAR, "regular sidecar, first");
}
