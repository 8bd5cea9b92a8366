//! The selection rules and denials; the patch itself is checked by applying it, in
//! `operator/tests/admission_mutate.rs`.

use serde_json::json;

use super::*;

fn pod(annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "web-", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]},
    }))
    .unwrap()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn decide(pod: &Pod, ns: &str, labels: &[(&str, &str)], integrations: &[&str]) -> Decision {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let integrations = names(integrations);
    let settings = InjectorSettings {
        operator_namespace: Some("attache-system".into()),
        ..InjectorSettings::default()
    };
    mutate(
        pod,
        &PodContext {
            namespace: ns,
            namespace_labels: &labels,
            integrations: &integrations,
            with_webhooks: &BTreeSet::new(),
        },
        &settings,
    )
}

fn denial(d: Decision) -> String {
    match d {
        Decision::Deny(m) => m,
        other => panic!("expected a denial, got {other:?}"),
    }
}

const NS_ON: (&str, &str) = ("attache.dev/inject", "enabled");

#[test]
fn pods_opt_in_by_annotation_or_by_namespace_label() {
    let annotated = pod(json!({"attache.dev/inject": "true"}));
    let plain = pod(json!({}));
    assert!(matches!(
        decide(&annotated, "shop", &[], &["stripe"]),
        Decision::Patch(_)
    ));
    assert!(matches!(
        decide(&plain, "shop", &[NS_ON], &["stripe"]),
        Decision::Patch(_)
    ));
    assert_eq!(
        decide(&plain, "shop", &[], &["stripe"]),
        Decision::NotSelected(Skip::NotOptedIn)
    );
    // Any other value of the namespace label does not opt in.
    assert_eq!(
        decide(
            &plain,
            "shop",
            &[("attache.dev/inject", "disabled")],
            &["stripe"]
        ),
        Decision::NotSelected(Skip::NotOptedIn)
    );
}

#[test]
fn the_pod_annotation_false_wins_over_the_namespace_label() {
    let out = pod(json!({"attache.dev/inject": "false"}));
    assert_eq!(
        decide(&out, "shop", &[NS_ON], &["stripe"]),
        Decision::NotSelected(Skip::OptedOut)
    );
}

#[test]
fn kube_system_and_the_operator_namespace_are_never_injected() {
    let annotated = pod(json!({"attache.dev/inject": "true"}));
    for ns in ["kube-system", "attache-system"] {
        assert_eq!(
            decide(&annotated, ns, &[NS_ON], &["stripe"]),
            Decision::NotSelected(Skip::ProtectedNamespace(ns.into()))
        );
    }
}

#[test]
fn a_denial_names_every_missing_integration_and_what_exists() {
    let p = pod(json!({
        "attache.dev/inject": "true",
        "attache.dev/integrations": "stripe, twillio,openai ,",
    }));
    let msg = denial(decide(&p, "shop", &[], &["stripe", "twilio"]));
    assert_eq!(
        msg,
        "annotation attache.dev/integrations names ExternalIntegrations \"openai\", \"twillio\" \
         that namespace shop does not have (it has \"stripe\", \"twilio\")"
    );
    let one = pod(json!({"attache.dev/integrations": "nope"}));
    let msg = denial(decide(&one, "shop", &[NS_ON], &[]));
    assert!(msg.contains("ExternalIntegration \"nope\""), "{msg}");
    assert!(msg.contains("it has none"), "{msg}");
}

#[test]
fn missing_integrations_deny_even_when_only_the_namespace_opted_in() {
    let p = pod(json!({"attache.dev/integrations": "ghost"}));
    assert!(matches!(
        decide(&p, "shop", &[NS_ON], &["stripe"]),
        Decision::Deny(_)
    ));
}

#[test]
fn nothing_to_serve_denies_an_explicit_request_and_skips_a_namespace_wide_one() {
    let annotated = pod(json!({"attache.dev/inject": "true"}));
    let msg = denial(decide(&annotated, "shop", &[], &[]));
    assert!(
        msg.contains("namespace shop has no ExternalIntegration"),
        "{msg}"
    );
    assert_eq!(
        decide(&pod(json!({})), "shop", &[NS_ON], &[]),
        Decision::NotSelected(Skip::NoIntegrations)
    );
    let empty_list = pod(json!({"attache.dev/inject": "true", "attache.dev/integrations": " , "}));
    assert!(denial(decide(&empty_list, "shop", &[], &["a"])).contains("names no integration"));
}

#[test]
fn an_unreadable_inject_annotation_is_denied_not_guessed() {
    let p = pod(json!({"attache.dev/inject": "yes"}));
    let msg = denial(decide(&p, "shop", &[NS_ON], &["stripe"]));
    assert!(msg.contains("attache.dev/inject: \"yes\""), "{msg}");
    // Case does not matter.
    let p = pod(json!({"attache.dev/inject": "True"}));
    assert!(matches!(
        decide(&p, "shop", &[], &["stripe"]),
        Decision::Patch(_)
    ));
}

#[test]
fn the_annotation_limits_the_pod_to_the_integrations_it_names() {
    let p = pod(json!({"attache.dev/inject": "true", "attache.dev/integrations": "twilio"}));
    let Decision::Patch(inj) = decide(&p, "shop", &[], &["stripe", "twilio"]) else {
        panic!()
    };
    assert_eq!(inj.integrations, ["twilio"]);
}

#[test]
fn host_network_and_port_conflicts_are_explained() {
    let mut p = pod(json!({"attache.dev/inject": "true"}));
    if let Some(spec) = p.spec.as_mut() {
        spec.host_network = Some(true);
    }
    assert!(denial(decide(&p, "shop", &[], &["a"])).contains("hostNetwork"));
    assert_eq!(
        decide(&pod_with_host_network(), "shop", &[NS_ON], &["a"]),
        Decision::NotSelected(Skip::HostNetwork)
    );

    let p: Pod = serde_json::from_value(json!({
        "metadata": {"annotations": {"attache.dev/inject": "true"}},
        "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 15090}]}]},
    }))
    .unwrap();
    let msg = denial(decide(&p, "shop", &[], &["a"]));
    assert!(msg.contains("container app declares port 15090"), "{msg}");
}

fn pod_with_host_network() -> Pod {
    serde_json::from_value(json!({
        "metadata": {},
        "spec": {"hostNetwork": true, "containers": [{"name": "app"}]},
    }))
    .unwrap()
}

#[test]
fn integrations_whose_env_names_collide_are_refused() {
    let p = pod(json!({"attache.dev/inject": "true"}));
    let msg = denial(decide(&p, "shop", &[], &["a-b", "a.b"]));
    assert!(msg.contains("ATTACHE_A_B_URL"), "{msg}");
}

#[test]
fn a_pod_with_the_label_or_the_container_is_already_injected() {
    let labelled: Pod = serde_json::from_value(json!({
        "metadata": {"labels": {"attache.dev/injected": "true"}},
        "spec": {"containers": [{"name": "app"}]},
    }))
    .unwrap();
    assert_eq!(
        decide(&labelled, "shop", &[NS_ON], &["a"]),
        Decision::AlreadyInjected
    );
    let by_hand: Pod = serde_json::from_value(json!({
        "metadata": {},
        "spec": {"containers": [{"name": "app"}, {"name": "attache-sidecar"}]},
    }))
    .unwrap();
    assert_eq!(
        decide(&by_hand, "shop", &[NS_ON], &["a"]),
        Decision::AlreadyInjected
    );
}

#[test]
fn bad_override_annotations_are_denied_by_name() {
    let p = pod(json!({
        "attache.dev/inject": "true",
        "attache.dev/sidecar-memory-limit": "lots",
    }));
    let msg = denial(decide(&p, "shop", &[], &["a"]));
    assert!(
        msg.starts_with("annotation attache.dev/sidecar-memory-limit: "),
        "{msg}"
    );
}

#[test]
fn the_webhook_port_is_declared_only_when_an_integration_has_webhooks() {
    let annotated = pod(json!({"attache.dev/inject": "true"}));
    let integrations = names(&["github", "stripe"]);
    let settings = InjectorSettings::default();
    let patch_text = |with: &[&str]| {
        let with_webhooks = names(with);
        let ctx = PodContext {
            namespace: "shop",
            namespace_labels: &BTreeMap::new(),
            integrations: &integrations,
            with_webhooks: &with_webhooks,
        };
        match mutate(&annotated, &ctx, &settings) {
            Decision::Patch(i) => serde_json::to_string(&i.patch).unwrap(),
            other => panic!("not injected: {other:?}"),
        }
    };
    let with = patch_text(&["stripe"]);
    assert!(
        with.contains(r#"{"containerPort":15100,"name":"attache-webhooks","protocol":"TCP"}"#),
        "{with}"
    );
    assert!(!patch_text(&[]).contains("attache-webhooks"));
}
