//! `attache-operator check` (the built binary, with the admin's kubeconfig) on the healthy
//! installation, then on three broken ones: RBAC missing, webhook certificate expired, CRD
//! missing. Runs last: it breaks the installation.

use std::{process::Command, time::Duration};

use k8s_openapi::{
    api::core::v1::{Pod, Secret},
    api::rbac::v1::ClusterRoleBinding,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ByteString,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::json;

use crate::cluster::{apply_all, Cluster, MANAGER, NAMESPACE};

/// Runs `attache-operator check`; its exit code and stdout.
fn check(c: &Cluster) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .args(["check", "--namespace", NAMESPACE])
        .env_clear()
        .env("KUBECONFIG", &c.admin_kubeconfig)
        .output()
        .expect("run attache-operator check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", indent(&stdout));
    assert!(stderr.trim().is_empty(), "check wrote to stderr: {stderr}");
    (out.status.code().unwrap_or(-1), stdout)
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The line of `subject` (a prefix), which must carry `mark`.
fn line_of<'a>(out: &'a str, mark: &str, subject: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(mark) && l[mark.len()..].trim_start().starts_with(subject))
        .unwrap_or_else(|| panic!("no {mark} line for {subject:?} in:\n{out}"))
}

/// There is no kubelet: the pod the leader would run in is created and marked Ready, as a
/// kubelet would once its /readyz answers.
async fn stand_in_for_the_kubelet(c: &Cluster) {
    let leader = crate::cluster::eventually("a leader", Duration::from_secs(30), async || {
        c.leaders().await.first().copied()
    })
    .await;
    let name = &c.replicas[leader].name;
    let pods: Api<Pod> = Api::namespaced(c.admin.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "operator", "image": "attache-operator:e2e"}]},
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create the leader's pod: {e}"),
    }
    let status = json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

pub async fn check_reports_healthy_and_broken_installs(c: &mut Cluster) {
    stand_in_for_the_kubelet(c).await;

    // Healthy: every line ok but native sidecars (1.20 has none), exit 0.
    let (code, out) = check(c);
    assert_eq!(code, 0, "a healthy install failed the check:\n{out}");
    for subject in [
        "CRD externalintegrations.attache.dev",
        "RBAC of system:serviceaccount:attache-system:attache",
        "operator (Lease attache-system/attache)",
        "MutatingWebhookConfiguration attache",
        "webhook certificate (Secret attache-system/attache-webhook-tls)",
        "webhook answers",
        "ExternalIntegrations",
    ] {
        line_of(&out, "[ok]", subject);
    }
    line_of(&out, "[warn]", "native sidecars");

    // RBAC missing: the ClusterRoleBinding deleted.
    let binding = c
        .chart
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("the chart's ClusterRoleBinding")
        .clone();
    let name = binding["metadata"]["name"].as_str().unwrap().to_string();
    let bindings: Api<ClusterRoleBinding> = Api::all(c.admin.clone());
    bindings
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let (code, out) = check(c);
    assert_eq!(code, 1, "{out}");
    let rbac = line_of(&out, "[FAIL]", "RBAC of");
    assert!(
        rbac.contains("list attache.dev/externalintegrations"),
        "the missing permissions are not named: {rbac}"
    );
    apply_all(&c.admin, &[binding]).await.unwrap();

    // Webhook certificate expired: the replicas stopped (they would issue a new one at once),
    // the Secret's certificate replaced by one that expired yesterday.
    for r in &mut c.replicas {
        r.sigterm();
        r.wait_exit(Duration::from_secs(10)).await;
    }
    let secrets: Api<Secret> = Api::namespaced(c.admin.clone(), NAMESPACE);
    let expired = expired_certificate();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "attache-webhook-tls", "namespace": NAMESPACE},
        "data": {"tls.crt": ByteString(expired.into_bytes())},
    });
    secrets
        .patch(
            "attache-webhook-tls",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
    let (code, out) = check(c);
    assert_eq!(code, 1, "{out}");
    let cert = line_of(&out, "[FAIL]", "webhook certificate");
    assert!(cert.contains("expired on"), "{cert}");

    // CRD missing.
    let crds: Api<CustomResourceDefinition> = Api::all(c.admin.clone());
    crds.delete("externalintegrations.attache.dev", &DeleteParams::default())
        .await
        .unwrap();
    crate::cluster::eventually("the CRD to be gone", Duration::from_secs(60), async || {
        crds.get_opt("externalintegrations.attache.dev")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let (code, out) = check(c);
    assert_eq!(code, 1, "{out}");
    let crd = line_of(&out, "[FAIL]", "CRD externalintegrations.attache.dev");
    assert!(crd.contains("not installed"), "{crd}");
}

/// A certificate for the webhook's name whose validity ended a day ago.
fn expired_certificate() -> String {
    let mut params =
        rcgen::CertificateParams::new(vec!["attache.attache-system.svc".to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}
