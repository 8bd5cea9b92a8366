//! The Helm chart, rendered by a real `helm` (installed by scripts/install-helm.sh when
//! missing): it lints, renders with defaults and with every optional feature, ships the same
//! CRD as crds/, grants exactly the RBAC of operator/rbac.yaml, wires the operator's flags to
//! the names the RBAC and the webhook use, points at the images the release workflow
//! publishes, and prints install notes whose commands work.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use attache_tests::{bin_path, sidecar::TempDir};
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

/// `helm install --dry-run=client` (offline): the text of the NOTES it would print.
fn notes(sets: &[&str]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["install", "attache"])
        .arg(root().join("charts/attache"))
        .args(["--namespace", "attache-system", "--dry-run=client"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm install --dry-run=client");
    assert!(
        out.status.success(),
        "helm install --dry-run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (_, notes) = text.split_once("\nNOTES:\n").expect("helm prints NOTES");
    notes.to_string()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// `key: value` of a top-level line of a YAML file, quotes removed.
fn top_level(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no {key}:"))
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn operator_container(docs: &[Value]) -> &Value {
    &one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn operator_args(docs: &[Value]) -> Vec<String> {
    operator_container(docs)["args"]
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

/// `ghcr.io/OWNER`, OWNER from the workspace's repository URL: where the release workflow
/// pushes (it names images `ghcr.io/${{ github.repository_owner }}/attache-*`).
fn published_registry() -> String {
    let cargo = read("Cargo.toml");
    let url = cargo
        .lines()
        .find_map(|l| l.strip_prefix("repository = "))
        .expect("workspace repository URL")
        .trim_matches('"');
    let owner = url
        .strip_prefix("https://github.com/")
        .and_then(|rest| rest.split('/').next())
        .expect("a GitHub URL");
    format!("ghcr.io/{}", owner.to_lowercase())
}

#[test]
fn default_images_are_the_ones_the_release_workflow_publishes() {
    let workflow = read(".github/workflows/release.yaml");
    let version = top_level(&read("charts/attache/Chart.yaml"), "appVersion");
    let registry = published_registry();
    for image in ["attache-sidecar", "attache-operator"] {
        assert!(
            workflow.contains(&format!(
                "name=ghcr.io/${{{{ needs.check.outputs.owner }}}}/{image},push-by-digest=true"
            )),
            "the release workflow does not push {image}"
        );
    }
    let docs = template("attache", &[]);
    assert_eq!(
        operator_container(&docs)["image"],
        format!("{registry}/attache-operator:{version}")
    );
    let sidecar_image = arg(&operator_args(&docs), "--sidecar-image");
    assert_eq!(
        sidecar_image,
        format!("{registry}/attache-sidecar:{version}")
    );

    // The operator binary's own default (inject, and `run` without the chart) agrees.
    let dir = TempDir::new("chart-inject");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  namespace: payments\n  \
         annotations: {attache.dev/inject: \"true\"}\n\
         spec:\n  containers: [{name: app, image: app:1}]\n",
    )
    .unwrap();
    let out = Command::new(bin_path("attache-operator"))
        .arg("inject")
        .arg("-f")
        .arg(&pod)
        .arg("-i")
        .arg(root().join("examples/stripe.yaml"))
        .output()
        .expect("run attache-operator inject");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("image: {sidecar_image}")),
        "inject uses another default image than the chart:\n{text}"
    );
}

#[test]
fn one_registry_and_tag_move_both_images() {
    let docs = template(
        "attache",
        &[
            "image.registry=registry.example.com/platform",
            "image.tag=1.2.3-rc.1",
        ],
    );
    assert_eq!(
        operator_container(&docs)["image"],
        "registry.example.com/platform/attache-operator:1.2.3-rc.1"
    );
    assert_eq!(
        arg(&operator_args(&docs), "--sidecar-image"),
        "registry.example.com/platform/attache-sidecar:1.2.3-rc.1"
    );
    // Each image can still be named on its own.
    let docs = template(
        "attache",
        &[
            "operator.image.repository=mirror.example.com/op",
            "sidecar.image.repository=mirror.example.com/sc",
            "sidecar.image.tag=v9",
        ],
    );
    let version = top_level(&read("charts/attache/Chart.yaml"), "appVersion");
    assert_eq!(
        operator_container(&docs)["image"],
        format!("mirror.example.com/op:{version}")
    );
    assert_eq!(
        arg(&operator_args(&docs), "--sidecar-image"),
        "mirror.example.com/sc:v9"
    );
}

#[test]
fn a_single_replica_gets_no_disruption_budget() {
    // minAvailable: 1 over one pod would block every `kubectl drain` of its node.
    assert!(find(
        &template("attache", &["operator.replicas=1"]),
        "PodDisruptionBudget"
    )
    .is_empty());
    let docs = template("attache", &["operator.replicas=2"]);
    assert_eq!(one(&docs, "PodDisruptionBudget")["spec"]["minAvailable"], 1);
}

#[test]
fn kubernetes_1_25_is_the_oldest_supported() {
    let run = |version: &str| {
        Command::new(helm())
            .args(["template", "attache"])
            .arg(root().join("charts/attache"))
            .args(["--kube-version", version])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(run("1.25.0"), "1.25 has the CRD's CEL rules");
    assert!(run("v1.25.3-gke.100"));
    assert!(!run("1.24.9"), "1.24 ignores CEL rules: refused");
}

#[test]
fn sidecar_user_and_native_sidecars_are_values() {
    let args = operator_args(&template("attache", &[]));
    assert_eq!(arg(&args, "--sidecar-run-as-user"), "65532");
    assert_eq!(arg(&args, "--native-sidecars"), "auto");
    let args = operator_args(&template(
        "attache",
        &["sidecar.runAsUser=10001", "sidecar.nativeSidecars=never"],
    ));
    assert_eq!(arg(&args, "--sidecar-run-as-user"), "10001");
    assert_eq!(arg(&args, "--native-sidecars"), "never");
    let args = operator_args(&template("attache", &["sidecar.runAsUser=auto"]));
    assert_eq!(arg(&args, "--sidecar-run-as-user"), "auto");
    // OpenShift-sized UIDs stay integers.
    let args = operator_args(&template("attache", &["sidecar.runAsUser=1000680000"]));
    assert_eq!(arg(&args, "--sidecar-run-as-user"), "1000680000");
    for bad in ["sidecar.runAsUser=0", "sidecar.nativeSidecars=sometimes"] {
        let out = Command::new(helm())
            .args(["template", "attache"])
            .arg(root().join("charts/attache"))
            .args(["--set", bad])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{bad} must be refused by values.schema.json"
        );
    }
}

/// The lines of a heredoc `<<EOF ... EOF` that follows `opener` in `text`; the shell ends it
/// only at a line that is exactly `EOF`.
fn heredoc<'a>(text: &'a str, opener: &str) -> Vec<&'a str> {
    let mut rest = text.lines().skip_while(|l| !l.contains(opener)).skip(1);
    let body: Vec<&str> = rest.by_ref().take_while(|l| *l != "EOF").collect();
    assert!(
        text.lines().any(|l| l == "EOF"),
        "the heredoc after {opener:?} never ends (EOF must start its line)"
    );
    body
}

#[test]
fn notes_commands_work_as_printed() {
    let notes = notes(&[]);
    let commands: Vec<&str> = notes
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("kubectl ") || l.starts_with("helm "))
        .collect();
    let manifest: Vec<&str> = heredoc(&notes, "kubectl apply -f - <<EOF");
    assert!(
        !manifest.is_empty(),
        "NOTES apply an integration inline:\n{notes}"
    );
    // Indentation as printed is kept by the shell: the manifest must be valid YAML as it is.
    let dir = TempDir::new("chart-notes");
    let file = dir.path().join("xint.yaml");
    std::fs::write(&file, manifest.join("\n")).unwrap();
    let out = Command::new(bin_path("attache-operator"))
        .arg("validate")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("run attache-operator validate");
    assert!(
        out.status.success(),
        "the NOTES' manifest is invalid:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_saphyr::from_str(&manifest.join("\n")).unwrap();
    let namespace = doc["metadata"]["namespace"].as_str().expect("a namespace");
    let secret = &doc["spec"]["auth"]["apiKey"]["secretKeyRef"];
    // Every namespaced command uses the manifest's namespace, created first.
    let create_ns = format!("kubectl create namespace {namespace}");
    let create_pos = commands.iter().position(|c| *c == create_ns);
    assert!(create_pos.is_some(), "{create_ns} missing:\n{notes}");
    for (i, c) in commands.iter().enumerate() {
        let words: Vec<&str> = c.split_whitespace().collect();
        if let Some(ns) = words.windows(2).find(|w| w[0] == "-n").map(|w| w[1]) {
            assert_eq!(ns, namespace, "{c}");
            assert!(Some(i) > create_pos, "{c} runs before the namespace exists");
        }
    }
    let create_secret = format!(
        "kubectl -n {namespace} create secret generic {} --from-literal={}=",
        secret["name"].as_str().unwrap(),
        secret["key"].as_str().unwrap()
    );
    assert!(
        commands.iter().any(|c| c.starts_with(&create_secret)),
        "the Secret the manifest names is created ({create_secret}...):\n{notes}"
    );
    // The CRD is not upgraded by `helm upgrade`: the notes say how.
    assert!(
        commands.iter().any(|c| c.starts_with("helm show crds ")
            && c.ends_with("| kubectl apply --server-side --force-conflicts -f -")),
        "{notes}"
    );
}

#[test]
fn global_rate_limits_pass_the_redis_url_and_mount_only_the_named_keys() {
    let docs = template(
        "attache",
        &[
            "globalRateLimits.redis.url=rediss://redis.shared:6380",
            "globalRateLimits.redis.existingSecret=redis-auth",
            "globalRateLimits.redis.caKey=ca.pem",
        ],
    );
    let args = operator_args(&docs);
    assert_eq!(arg(&args, "--redis-url"), "rediss://redis.shared:6380");
    assert_eq!(
        arg(&args, "--redis-password-file"),
        "/etc/attache/redis/password"
    );
    assert_eq!(arg(&args, "--redis-ca-file"), "/etc/attache/redis/ca.crt");
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let redis = volumes
        .iter()
        .find(|v| v["name"] == "redis")
        .expect("a redis volume");
    assert_eq!(redis["secret"]["secretName"], "redis-auth");
    assert_eq!(
        redis["secret"]["items"],
        serde_json::json!([{"key": "password", "path": "password"}, {"key": "ca.pem", "path": "ca.crt"}])
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(mounts
        .iter()
        .any(|m| m["name"] == "redis" && m["mountPath"] == "/etc/attache/redis"));
    // The password never reaches a ConfigMap or an argument: only the Secret's file path.
    assert!(args.iter().all(|a| !a.contains('@')));

    // Without a URL nothing is added.
    let plain = operator_args(&template("attache", &[]));
    assert!(plain.iter().all(|a| !a.starts_with("--redis")));
}

#[test]
fn a_redis_url_with_a_password_is_refused_by_the_schema() {
    let out = Command::new(helm())
        .args(["template", "attache"])
        .arg(root().join("charts/attache"))
        .args([
            "--set",
            "globalRateLimits.redis.url=redis://:hunter2@redis:6379",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "values.schema.json must refuse it");
}

#[test]
fn alerts_and_dashboard_render_from_the_files_promtool_and_grafana_read() {
    let docs = template(
        "attache",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let rule = one(&docs, "PrometheusRule");
    let file: Value = serde_saphyr::from_str(&read("charts/attache/rules/attache.rules.yaml"))
        .expect("rules file is YAML");
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule is the rules file as it is"
    );
    let dashboard = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard");
    let json: Value = serde_json::from_str(
        dashboard["data"]["attache.json"]
            .as_str()
            .expect("attache.json"),
    )
    .expect("the dashboard is JSON");
    let row = &json["panels"][0];
    assert_eq!(row["type"], "row");
    assert_eq!(row["repeat"], "integration", "a row per integration");
    let off = template("attache", &[]);
    assert!(find(&off, "PrometheusRule").is_empty());
}
