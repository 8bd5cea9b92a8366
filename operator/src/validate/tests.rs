use serde_json::json;

use super::*;
use crate::manifests::parse_documents;

fn inputs(text: &str) -> Inputs {
    Inputs {
        documents: parse_documents("m.yaml", text).unwrap(),
        errors: vec![],
    }
}

const GOOD: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: stripe, namespace: payments}
spec:
  upstream: {url: "https://api.stripe.com"}
  auth: {apiKey: {prefix: "Bearer ", secretKeyRef: {name: stripe-key, key: api-key}}}
"#;

#[test]
fn a_good_manifest_comes_back_typed() {
    let report = check_inputs(&inputs(GOOD));
    assert!(report.is_valid());
    let (checked, xint) = report.integrations().next().unwrap();
    assert_eq!(
        checked.subject(),
        "m.yaml: ExternalIntegration payments/stripe"
    );
    assert_eq!(xint.spec.upstream.url, "https://api.stripe.com");
    assert!(report.problems().is_empty());
}

#[test]
fn other_kinds_are_skipped_but_impostors_are_not() {
    let text = format!(
        "{GOOD}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app}}\n\
         ---\napiVersion: attache.dev/v1alpha1\nkind: ExternalIntegrations\nmetadata: {{name: x}}\n\
         ---\n- just\n- a list\n"
    );
    let report = check_inputs(&inputs(&text));
    assert_eq!(report.skipped, 1);
    assert_eq!(
        report.problems(),
        [
            "m.yaml (document 3): ExternalIntegrations x: kind: \"ExternalIntegrations\" is not a \
             kind of attache.dev: did you mean ExternalIntegration?",
            "m.yaml (document 4): document without a kind: kind: not a Kubernetes object: \
             expected a mapping with apiVersion and kind",
        ]
    );
}

#[test]
fn each_problem_names_file_resource_and_field() {
    let text = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: twilio}
spec:
  upstream: {url: "https://api.twilio.com"}
  retry: {maxAttempts: 0, backof: {base: 1s}}
"#;
    assert_eq!(
        check_inputs(&inputs(text)).problems(),
        [
            "m.yaml: ExternalIntegration twilio: spec.retry.backof: unknown field (known fields: \
             backoff, budget, idempotencyKey, maxAttempts, maxRetryAfter, respectRetryAfter, retryOn)",
            "m.yaml: ExternalIntegration twilio: spec.retry.maxAttempts: must be at least 1 (is 0)",
        ]
    );
}

#[test]
fn semantic_rules_run_once_the_shape_is_right() {
    let doc = json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {"name": "bank"},
        "spec": {
            "upstream": {"url": "http://bank.example"},
            "retry": {"backoff": {"base": "20s", "max": "10s"}}
        }
    });
    let fields: Vec<_> = check_document(&doc)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["spec.upstream.url", "spec.retry.backoff.base"]);
}

#[test]
fn version_metadata_and_schema_are_reported_together() {
    let doc = json!({
        "apiVersion": "attache.dev/v1",
        "kind": "ExternalIntegration",
        "metadata": {"name": "Bad_Name"},
        "spec": {"upstream": {}}
    });
    let fields: Vec<_> = check_document(&doc)
        .unwrap_err()
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(fields, ["apiVersion", "metadata.name", "spec.upstream.url"]);
}

#[test]
fn status_and_nulls_are_accepted_as_the_api_server_does() {
    let doc = json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {"name": "x", "labels": {"team": "payments"}},
        "spec": {
            "upstream": {"url": "https://x.example", "allowInsecure": null},
            "auth": {"oauth2ClientCredentials": {
                "tokenUrl": "https://x.example/token", "clientId": "c",
                "clientSecretRef": {"name": "s", "key": "k"}, "scopes": null
            }}
        },
        "status": {"pods": 3}
    });
    let xint = check_document(&doc).unwrap();
    assert_eq!(xint.metadata.name.as_deref(), Some("x"));
    assert_eq!(xint.status.and_then(|s| s.pods), Some(3));
}

#[test]
fn resources_print_like_kubectl_names_them() {
    let r = |ns: Option<&str>, name: Option<&str>| Resource {
        kind: Some(KIND.into()),
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
    };
    assert_eq!(
        r(Some("a"), Some("b")).to_string(),
        "ExternalIntegration a/b"
    );
    assert_eq!(r(None, Some("b")).to_string(), "ExternalIntegration b");
    assert_eq!(
        r(None, None).to_string(),
        "ExternalIntegration without a name"
    );
}
