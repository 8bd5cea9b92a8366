//! The webhook's mutation, without I/O: a Deployment-shaped pod with two app containers, an
//! init container, existing env and volumes, three integrations.

use std::{
    collections::{BTreeMap, BTreeSet},
    hint::black_box,
};

use attache_operator::admission::{
    mutate, review::review, Decision, InjectorSettings, PodContext, StaticView,
};
use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::Pod;

fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "checkout-7d9f8c6b5-",
            "labels": {"app": "checkout", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"attache.dev/inject": "true", "attache.dev/integrations": "stripe,twilio,openai"}
        },
        "spec": {
            "initContainers": [{"name": "migrate", "image": "checkout:1.4", "command": ["migrate"]}],
            "containers": [
                {"name": "app", "image": "checkout:1.4",
                 "env": [{"name": "MODE", "value": "prod"}, {"name": "PORT", "value": "8080"}],
                 "ports": [{"containerPort": 8080}],
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/checkout"}]},
                {"name": "worker", "image": "checkout:1.4", "args": ["worker"]}
            ],
            "volumes": [{"name": "config", "configMap": {"name": "checkout"}}]
        }
    }))
    .expect("fixture is a Pod")
}

fn mutation(c: &mut Criterion) {
    let pod = pod();
    let labels = BTreeMap::new();
    let integrations: BTreeSet<String> = ["openai", "stripe", "twilio"]
        .into_iter()
        .map(String::from)
        .collect();
    let ctx = PodContext {
        namespace: "shop",
        namespace_labels: &labels,
        integrations: &integrations,
        with_webhooks: &BTreeSet::new(),
    };
    let settings = InjectorSettings::default();
    assert!(matches!(mutate(&pod, &ctx, &settings), Decision::Patch(_)));
    c.bench_function("webhook mutation: deployment pod, 3 integrations", |b| {
        b.iter(|| black_box(mutate(black_box(&pod), &ctx, &settings)))
    });
}

/// A whole admission as the webhook answers it, minus TLS and HTTP: the AdmissionReview body
/// of the operator scale benchmark's pod (one integration named) read, a namespace of 100
/// integrations looked up, the patch made, the answer written.
fn whole_review(c: &mut Criterion) {
    let names: Vec<String> = (0..100).map(|i| format!("api-{i}")).collect();
    let view = StaticView::default()
        .with_namespace("scale-7", [])
        .with_integrations("scale-7", names.iter().map(String::as_str));
    let body = serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "scale-7", "operation": "CREATE",
            "userInfo": {"username": "scale", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "pod-1", "namespace": "scale-7",
                    "annotations": {"attache.dev/inject": "true", "attache.dev/integrations": "api-42"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}},
            "oldObject": null, "dryRun": false
        }
    }))
    .expect("serializable");
    let settings = InjectorSettings::default();
    let answered = review(&body, &view, &settings);
    assert_eq!(
        answered.status,
        200,
        "{}",
        String::from_utf8_lossy(&answered.body)
    );
    c.bench_function(
        "webhook review: AdmissionReview in, answer out, 100 integrations in the namespace",
        |b| b.iter(|| black_box(review(black_box(&body), &view, &settings))),
    );
}

criterion_group!(benches, mutation, whole_review);
criterion_main!(benches);
