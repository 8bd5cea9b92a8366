use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

use super::*;

#[test]
fn the_names_come_from_the_deployments_arguments() {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "payments-attache"},
        "spec": {
            "selector": {},
            "template": {"spec": {
                "serviceAccountName": "payments-attache",
                "containers": [
                    {"name": "other", "args": ["--lease-name=wrong"]},
                    {"name": "operator", "args": [
                        "run",
                        "--lease-name=payments-attache",
                        "--webhook-service=payments-attache",
                        "--webhook-configuration=payments-attache-inject",
                        "--webhook-secret=payments-attache-webhook-tls",
                    ]},
                ],
            }},
        },
    }))
    .unwrap();
    assert_eq!(
        Installation::from_deployment("pay", &d),
        Installation {
            namespace: "pay".into(),
            deployment: "payments-attache".into(),
            service_account: "payments-attache".into(),
            lease: "payments-attache".into(),
            webhook_service: "payments-attache".into(),
            webhook_configuration: "payments-attache-inject".into(),
            webhook_secret: "payments-attache-webhook-tls".into(),
        }
    );
}

#[test]
fn a_failure_fails_the_report_and_a_warning_does_not() {
    let mut r = Report::default();
    r.push(Line::ok("a", "fine"));
    r.push(Line::warn("b", "old cluster"));
    assert_eq!(r.failed(), 0);
    r.push(Line::fail("c", "broken"));
    assert_eq!(r.failed(), 1);
    let mut out = Vec::new();
    r.print(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("[FAIL] c: broken"), "{text}");
    assert!(text.contains("1 ok, 1 warnings, 1 failed"), "{text}");
}
