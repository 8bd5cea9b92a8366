//! `attache-operator inject` through the real binary, on multi-document YAML.

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::{json, Value};

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn operator(args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_attache-operator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

const INTEGRATIONS: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: stripe, namespace: shop}
spec:
  upstream: {url: "https://api.stripe.com"}
---
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: twilio-sms, namespace: shop}
spec:
  upstream: {url: "https://api.twilio.com"}
"#;

/// An invalid integration's problems and every pod's missing integrations in one run; a pod
/// naming the invalid integration is not also told it is missing.
#[test]
fn every_problem_of_the_inputs_is_named_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let app = write(
        tmp.path(),
        "app.yaml",
        &APP.replace(
            "attache.dev/integrations: stripe",
            "attache.dev/integrations: \"stripe,x,paypal\"",
        ),
    );
    let ints = write(
        tmp.path(),
        "integrations.yaml",
        &format!(
            "{INTEGRATIONS}\n---\napiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\n\
             metadata: {{name: x, namespace: shop}}\nspec:\n  upstream: {{url: \"http://insecure.example\"}}\n"
        ),
    );
    let run = operator(&["inject", "-f", &app, "-i", &ints], None);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    let lines: Vec<&str> = run.stderr.lines().collect();
    let about = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(
        about("ExternalIntegration shop/x: spec.upstream.url"),
        1,
        "{}",
        run.stderr
    );
    assert_eq!(about("CronJob shop/settle"), 1, "{}", run.stderr);
    let cron = lines
        .iter()
        .find(|l| l.contains("CronJob shop/settle"))
        .unwrap();
    let named_missing = cron.split("that namespace").next().unwrap_or_default();
    assert!(named_missing.contains("\"paypal\""), "{cron}");
    assert!(!named_missing.contains("\"x\""), "{cron}");
    assert_eq!(lines.last(), Some(&"nothing printed: fix the inputs first"));
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: checkout, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: checkout}}
  template:
    metadata:
      labels: {app: checkout}
    spec:
      containers:
        - name: app
          image: checkout:1.4
          env: [{name: MODE, value: "live"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: checkout-config, namespace: shop}
data: {enabled: "true", port: "8080"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: settle, namespace: shop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {attache.dev/integrations: stripe}
        spec:
          restartPolicy: OnFailure
          containers: [{name: settle, image: settle:1}]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).expect("inject prints valid YAML")
}

#[test]
fn injects_workloads_and_passes_other_documents_through() {
    let tmp = tempfile::tempdir().unwrap();
    let app = write(tmp.path(), "app.yaml", APP);
    let ints = write(tmp.path(), "integrations.yaml", INTEGRATIONS);
    let run = operator(&["inject", "-f", &app, "-i", &ints], None);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = documents(&run.stdout);
    let input = documents(APP);
    assert_eq!(out.len(), 3);

    // The Deployment's template: native sidecar, both integrations, ports by sorted name.
    let t = &out[0]["spec"]["template"];
    let sidecar = &t["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "attache-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(
        t["spec"]["containers"][0]["env"],
        json!([
            {"name": "ATTACHE_STRIPE_URL", "value": "http://127.0.0.1:15001"},
            {"name": "ATTACHE_TWILIO_SMS_URL", "value": "http://127.0.0.1:15002"},
            {"name": "ATTACHE_PROXY_URL", "value": "http://127.0.0.1:15080"},
            {"name": "MODE", "value": "live"}
        ])
    );
    // String values that look like other YAML types stay strings.
    assert_eq!(
        t["metadata"]["labels"]["attache.dev/injected"],
        json!("true")
    );
    assert_eq!(
        t["metadata"]["annotations"]["prometheus.io/port"],
        json!("15090")
    );
    assert_eq!(
        t["metadata"]["annotations"]["attache.dev/injected-integrations"],
        "stripe,twilio-sms"
    );
    assert_eq!(
        t["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "attache-stripe",
            "attache-twilio-sms",
            "attache-no-api-token"
        ]
    );
    // Everything outside the template is untouched.
    assert_eq!(out[0]["spec"]["replicas"], input[0]["spec"]["replicas"]);
    assert_eq!(out[0]["spec"]["selector"], input[0]["spec"]["selector"]);

    // Other kinds pass through unchanged, string-typed data included.
    assert_eq!(out[1], input[1]);

    // The CronJob's job template, limited by its annotation.
    let job = &out[2]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(job["spec"]["initContainers"][0]["name"], "attache-sidecar");
    assert_eq!(
        job["metadata"]["annotations"]["attache.dev/injected-integrations"],
        "stripe"
    );
    assert!(
        run.stderr
            .contains("Deployment shop/checkout: injected (stripe, twilio-sms; native sidecar)"),
        "{}",
        run.stderr
    );

    // Injecting the output again changes nothing (it reads from stdin here).
    let again = operator(&["inject", "-f", "-", "-i", &ints], Some(&run.stdout));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(documents(&again.stdout), out);
    assert!(
        again.stderr.contains("already injected"),
        "{}",
        again.stderr
    );
}

#[test]
fn no_native_sidecar_puts_the_sidecar_first_among_the_containers() {
    let tmp = tempfile::tempdir().unwrap();
    let app = write(tmp.path(), "app.yaml", APP);
    let ints = write(tmp.path(), "integrations.yaml", INTEGRATIONS);
    let run = operator(
        &[
            "inject",
            "-f",
            &app,
            "-i",
            &ints,
            "--no-native-sidecar",
            "--image",
            "registry.local/attache:dev",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = documents(&run.stdout);
    let spec = &out[0]["spec"]["template"]["spec"];
    assert!(spec.get("initContainers").is_none());
    assert_eq!(spec["containers"][0]["name"], "attache-sidecar");
    assert_eq!(spec["containers"][0]["image"], "registry.local/attache:dev");
    assert!(spec["containers"][0].get("restartPolicy").is_none());
    assert_eq!(spec["containers"][1]["name"], "app");
}

#[test]
fn a_missing_integration_fails_naming_it_and_prints_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let app = write(
        tmp.path(),
        "app.yaml",
        &APP.replace(
            "attache.dev/integrations: stripe",
            "attache.dev/integrations: \"stripe,adyen,paypal\"",
        ),
    );
    let ints = write(tmp.path(), "integrations.yaml", INTEGRATIONS);
    let run = operator(&["inject", "-f", &app, "-i", &ints], None);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("CronJob shop/settle"))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    assert!(line.starts_with(&format!("{app} (document 3): ")), "{line}");
    assert!(line.contains("\"adyen\", \"paypal\""), "{line}");
}

#[test]
fn integrations_are_validated_and_required() {
    let tmp = tempfile::tempdir().unwrap();
    let app = write(tmp.path(), "app.yaml", APP);
    let bad = write(
        tmp.path(),
        "bad.yaml",
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: x, namespace: shop}\nspec:\n  upstream: {url: \"http://insecure.example\"}\n",
    );
    let run = operator(&["inject", "-f", &app, "-i", &bad], None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("ExternalIntegration shop/x"),
        "{}",
        run.stderr
    );
    let none = write(
        tmp.path(),
        "none.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let run = operator(&["inject", "-f", &app, "-i", &none], None);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("no ExternalIntegration"),
        "{}",
        run.stderr
    );
}
