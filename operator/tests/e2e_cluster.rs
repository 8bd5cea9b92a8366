//! Opt-in end-to-end test against a real cluster: installs the CRD, runs the controller
//! in-process against the cluster, and checks a full reconcile (create, rotation, missing
//! Secret, garbage collection through owner references).
//!
//! ```sh
//! ATTACHE_E2E_KUBECONFIG=~/.kube/config \
//!   cargo test -p attache-operator --test e2e_cluster -- --ignored --nocapture
//! ```
//!
//! It creates a namespace `attache-e2e-<random>` and deletes it at the end; the CRD stays
//! installed. Needs cluster-admin-like rights (CRDs, namespaces).

use std::time::Duration;

use attache_api::ExternalIntegration;
use attache_operator::{controller, crd, metrics::Metrics, run::stopped};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client, Config,
};
use serde_json::json;

const ENV: &str = "ATTACHE_E2E_KUBECONFIG";
const MANAGER: &str = "attache-e2e";

async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn ready(x: &ExternalIntegration) -> Option<(String, String, String)> {
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

#[tokio::test]
#[ignore = "needs a cluster: set ATTACHE_E2E_KUBECONFIG and run with --ignored"]
async fn full_reconcile_in_a_real_cluster() {
    let Ok(path) = std::env::var(ENV) else {
        println!("{ENV} is not set: skipping the real-cluster test");
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    let client = Client::try_from(config).expect("client");
    let apply = PatchParams::apply(MANAGER).force();

    // The CRD, as `attache-operator crd` prints it.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd::crd().metadata.name.clone().unwrap();
    crds.patch(&name, &apply, &Patch::Apply(crd::crd()))
        .await
        .expect("install the CRD");
    poll("the CRD to be established", || async {
        let c = crds.get(&name).await.ok()?;
        c.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;

    let ns = format!("attache-e2e-{}", uuid::Uuid::new_v4().simple());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            &ns,
            &apply,
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
        )
        .await
        .expect("namespace");

    let metrics = Metrics::new();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(controller::run(
        client.clone(),
        controller::Settings {
            debounce: Duration::ZERO,
            ..controller::Settings::default()
        },
        metrics.controller().clone(),
        stopped(stop_rx),
    ));

    let result = scenario(&client, &ns, &apply).await;

    stop.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

async fn scenario(
    client: &Client,
    ns: &str,
    apply: &PatchParams,
) -> Result<(), Box<dyn std::any::Any + Send>> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(async {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let xints: Api<ExternalIntegration> = Api::namespaced(client.clone(), ns);
        let key = |v: &str| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "stripe-key"},
                   "stringData": {"api-key": v}})
        };
        secrets
            .patch("stripe-key", apply, &Patch::Apply(key("sk_e2e_1")))
            .await
            .expect("Secret");
        xints
            .patch(
                "stripe",
                apply,
                &Patch::Apply(json!({
                    "apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
                    "metadata": {"name": "stripe"},
                    "spec": {"upstream": {"url": "https://api.stripe.com"},
                             "auth": {"apiKey": {"secretKeyRef": {"name": "stripe-key", "key": "api-key"}}}},
                })),
            )
            .await
            .expect("ExternalIntegration");

        let x = poll("Ready=True", || async {
            let x = xints.get("stripe").await.ok()?;
            (ready(&x)?.0 == "True").then_some(x)
        })
        .await;
        let status = x.status.clone().unwrap();
        assert_eq!(status.observed_generation, x.metadata.generation);
        assert_eq!(status.pods, Some(0));
        let uid = x.metadata.uid.clone().unwrap();
        let cm = config_maps.get("attache-stripe").await.expect("ConfigMap");
        let s = secrets.get("attache-stripe").await.expect("Secret");
        for meta in [&cm.metadata, &s.metadata] {
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.uid, uid);
            assert_eq!(owner.controller, Some(true));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                "attache-operator"
            );
        }
        let credential = |s: &Secret| {
            s.data
                .as_ref()
                .and_then(|d| d.get("auth-credential"))
                .map(|v| String::from_utf8_lossy(&v.0).to_string())
        };
        assert_eq!(credential(&s).as_deref(), Some("sk_e2e_1"));

        // Rotation reaches the generated Secret.
        secrets
            .patch("stripe-key", apply, &Patch::Apply(key("sk_e2e_2")))
            .await
            .expect("rotate");
        poll("the rotated credential", || async {
            let s = secrets.get("attache-stripe").await.ok()?;
            (credential(&s)? == "sk_e2e_2").then_some(())
        })
        .await;

        // A missing Secret: Ready=False, generated objects kept.
        secrets
            .delete("stripe-key", &DeleteParams::default())
            .await
            .expect("delete the Secret");
        let x = poll("Ready=False SecretNotFound", || async {
            let x = xints.get("stripe").await.ok()?;
            (ready(&x)?.1 == "SecretNotFound").then_some(x)
        })
        .await;
        assert!(ready(&x).unwrap().2.contains("stripe-key"));
        let kept = secrets.get("attache-stripe").await.expect("kept");
        assert_eq!(credential(&kept).as_deref(), Some("sk_e2e_2"));

        // Deleting the integration lets the garbage collector remove what was generated.
        xints
            .delete("stripe", &DeleteParams::background())
            .await
            .expect("delete the integration");
        poll("garbage collection", || async {
            config_maps
                .get_opt("attache-stripe")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    })
    .catch_unwind()
    .await
}
