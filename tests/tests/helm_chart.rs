//! The Helm chart, rendered by a real `helm` (installed by scripts/install-helm.sh when
//! missing): it lints, renders with defaults and with every optional feature, ships the same
//! CRD as crds/, grants exactly the RBAC of operator/rbac.yaml, and wires the operator's
//! flags to the names the RBAC and the webhook use.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A helm binary: PATH, then .tools/bin, else installed there once.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(out) = Command::new("helm").arg("version").output() {
            if out.status.success() {
                return PathBuf::from("helm");
            }
        }
        let local = root().join(".tools/bin/helm");
        if !local.exists() {
            let status = Command::new("bash")
                .arg(root().join("scripts/install-helm.sh"))
                .status()
                .expect("run scripts/install-helm.sh");
            assert!(status.success(), "installing helm failed");
        }
        local
    })
}

fn template(release: &str, sets: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(root().join("charts/attache"))
        .args(["--namespace", "attache-system"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("helm output is YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn operator_args(docs: &[Value]) -> Vec<String> {
    one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect()
}

fn arg(args: &[String], flag: &str) -> String {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{flag}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

#[test]
fn chart_lints() {
    let out = Command::new(helm())
        .args(["lint", "--strict"])
        .arg(root().join("charts/attache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn chart_crds_are_the_checked_in_crds() {
    let name = "externalintegrations.attache.dev.yaml";
    let top = std::fs::read(root().join("crds").join(name)).unwrap();
    let chart = std::fs::read(root().join("charts/attache/crds").join(name)).unwrap();
    assert!(
        top == chart,
        "charts/attache/crds/{name} differs from crds/{name}: cp crds/{name} charts/attache/crds/"
    );
}

#[test]
fn defaults_render_the_operator_with_probes_and_a_locked_down_pod() {
    let docs = template("attache", &[]);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    ] {
        one(&docs, kind);
    }
    assert!(find(&docs, "Certificate").is_empty());
    assert!(find(&docs, "ServiceMonitor").is_empty());
    let dep = one(&docs, "Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(pod["topologySpreadConstraints"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));

    let hook = one(&docs, "MutatingWebhookConfiguration");
    for w in hook["webhooks"].as_array().unwrap() {
        assert_eq!(w["sideEffects"], "None");
        assert_eq!(w["clientConfig"]["service"]["path"], "/mutate");
        assert_eq!(w["reinvocationPolicy"], "IfNeeded");
        let excluded = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .expect("namespace exclusion");
        let values: Vec<&str> = excluded["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(values.contains(&"kube-system") && values.contains(&"attache-system"));
    }
    // The operator's flags name exactly what the chart created.
    let args = operator_args(&docs);
    assert_eq!(
        arg(&args, "--webhook-configuration"),
        hook["metadata"]["name"]
    );
    let svc = one(&docs, "Service");
    assert_eq!(arg(&args, "--webhook-service"), svc["metadata"]["name"]);
}

#[test]
fn every_optional_feature_renders() {
    let docs = template(
        "attache",
        &[
            "webhook.certManager.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "operator.replicas=3",
        ],
    );
    let cert = one(&docs, "Certificate");
    one(&docs, "Issuer");
    one(&docs, "ServiceMonitor");
    let args = operator_args(&docs);
    assert_eq!(arg(&args, "--webhook-cert-dir"), "/etc/attache/webhook-tls");
    assert_eq!(
        cert["spec"]["secretName"],
        one(&docs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
    );
    let hook = one(&docs, "MutatingWebhookConfiguration");
    assert!(
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            .as_str()
            .is_some_and(|a| a.starts_with("attache-system/"))
    );
}

#[test]
fn values_outside_the_schema_are_refused() {
    let out = Command::new(helm())
        .args(["template", "attache"])
        .arg(root().join("charts/attache"))
        .args(["--set", "webhook.failurePolicy=Sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "values.schema.json must refuse it");
}

/// Rules as comparable strings, resourceNames left out (they are templated).
fn rules(role: &Value) -> Vec<String> {
    let mut out: Vec<String> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let list = |k: &str| {
                let mut v: Vec<String> = r[k]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                v.sort();
                v.join(",")
            };
            format!(
                "groups={} resources={} verbs={} named={}",
                list("apiGroups"),
                list("resources"),
                list("verbs"),
                r.get("resourceNames").is_some()
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rendered_rbac_is_exactly_the_documented_list() {
    let documented: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(root().join("operator/rbac.yaml")).unwrap(),
    )
    .unwrap();
    let docs = template("attache", &[]);
    for kind in ["ClusterRole", "Role"] {
        let want = documented.iter().find(|d| d["kind"] == kind).unwrap();
        assert_eq!(rules(one(&docs, kind)), rules(want), "{kind} rules differ");
    }
    // Named rules name what the operator is told to use.
    let args = operator_args(&docs);
    let role = one(&docs, "Role");
    let names: Vec<&str> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["resourceNames"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&arg(&args, "--lease-name").as_str()),
        "{names:?}"
    );
    assert!(
        names.contains(&arg(&args, "--webhook-secret").as_str()),
        "{names:?}"
    );
    // Nothing wider than that: no wildcards, no delete, no escalation.
    for d in &docs {
        for r in d["rules"].as_array().into_iter().flatten() {
            let text = r.to_string();
            assert!(!text.contains('*'), "wildcard in {text}");
            for verb in [
                "delete",
                "deletecollection",
                "escalate",
                "bind",
                "impersonate",
            ] {
                assert!(!text.contains(&format!("\"{verb}\"")), "{verb} in {text}");
            }
        }
    }
}
