use super::*;
use crate::manifests::parse_documents;

fn inputs(yaml: &str) -> Inputs {
    Inputs {
        documents: parse_documents("in.yaml", yaml).unwrap(),
        errors: Vec::new(),
    }
}

fn known(ns: Option<&str>, name: &str) -> KnownIntegration {
    KnownIntegration {
        namespace: ns.map(String::from),
        name: name.into(),
        webhooks: false,
    }
}

const CRONJOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: shop}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: job:1}]
"#;

#[test]
fn finds_the_pod_spec_of_each_workload_kind() {
    assert_eq!(pod_site("v1", "Pod"), Some(PodSite::Pod));
    assert_eq!(
        pod_site("apps/v1", "Deployment"),
        Some(PodSite::Template("/spec/template"))
    );
    assert_eq!(
        pod_site("batch/v1", "Job"),
        Some(PodSite::Template("/spec/template"))
    );
    assert_eq!(
        pod_site("batch/v1", "CronJob"),
        Some(PodSite::Template("/spec/jobTemplate/spec/template"))
    );
    assert_eq!(pod_site("v1", "ConfigMap"), None);
    // A custom resource that happens to be called Job is not touched.
    assert_eq!(pod_site("example.com/v1", "Job"), None);
}

#[test]
fn injects_a_cronjob_template_in_its_namespace_only() {
    let ints = [
        known(Some("shop"), "stripe"),
        known(Some("other"), "twilio"),
    ];
    let out = inject(&inputs(CRONJOB), &ints, &InjectorSettings::default()).unwrap();
    let t = &out.documents[0]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(t["metadata"]["labels"]["attache.dev/injected"], "true");
    assert_eq!(
        t["metadata"]["annotations"]["attache.dev/injected-integrations"],
        "stripe"
    );
    assert_eq!(t["spec"]["initContainers"][0]["name"], "attache-sidecar");
    assert_eq!(t["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert!(out.notes[0].contains("CronJob shop/nightly: injected (stripe; native sidecar)"));
}

#[test]
fn fails_naming_the_object_and_the_missing_integration() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: shop
  annotations: {attache.dev/integrations: "stripe,ghost"}
spec: {containers: [{name: app}]}
"#;
    let errs = inject(
        &inputs(yaml),
        &[known(None, "stripe")],
        &InjectorSettings::default(),
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("in.yaml: Pod shop/p: "), "{}", errs[0]);
    assert!(errs[0].contains("\"ghost\""), "{}", errs[0]);
}

#[test]
fn other_kinds_lists_and_opted_out_pods() {
    let yaml = r#"
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {a: b}}
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web}
    spec:
      template:
        metadata: {annotations: {attache.dev/inject: "false"}}
        spec: {containers: [{name: app}]}
  - apiVersion: apps/v1
    kind: StatefulSet
    metadata: {name: db}
    spec: {template: {spec: {containers: [{name: db}]}}}
"#;
    let input = inputs(yaml);
    let out = inject(
        &input,
        &[known(None, "stripe")],
        &InjectorSettings::default(),
    )
    .unwrap();
    let items = &out.documents[0]["items"];
    assert_eq!(items[0], input.documents[0].value["items"][0]);
    assert_eq!(items[1], input.documents[0].value["items"][1]);
    assert_eq!(
        items[2]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "attache-sidecar"
    );
    assert!(out
        .notes
        .iter()
        .any(|n| n.contains("Deployment web: not injected: opted out")));
}

#[test]
fn a_namespace_without_integrations_is_an_error() {
    let errs = inject(
        &inputs(CRONJOB),
        &[known(Some("other"), "x")],
        &InjectorSettings::default(),
    )
    .unwrap_err();
    assert!(
        errs[0].contains("no ExternalIntegration of namespace shop"),
        "{}",
        errs[0]
    );
}

#[test]
fn an_integration_with_webhooks_gives_the_sidecar_its_webhook_port() {
    let mut with_webhooks = known(Some("shop"), "stripe");
    with_webhooks.webhooks = true;
    let out = inject(
        &inputs(CRONJOB),
        &[with_webhooks],
        &InjectorSettings::default(),
    )
    .unwrap();
    let sidecar =
        &out.documents[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0];
    let ports = sidecar["ports"].as_array().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "attache-webhooks" && p["containerPort"] == 15100),
        "{ports:?}"
    );
    let plain = inject(
        &inputs(CRONJOB),
        &[known(Some("shop"), "stripe")],
        &InjectorSettings::default(),
    )
    .unwrap();
    let text = plain.documents[0].to_string();
    assert!(!text.contains("attache-webhooks"), "{text}");
}

#[test]
fn known_integrations_notice_webhooks() {
    let docs = inputs(
        r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: stripe, namespace: shop}
spec:
  upstream: {url: "https://api.stripe.com"}
  webhooks:
    forwardTo: http://127.0.0.1:8080/events
    verify: {provider: stripe, secretKeyRef: {name: s, key: k}}
"#,
    );
    let known = known_integrations(&docs.documents);
    assert!(known[0].webhooks, "{known:?}");
}
