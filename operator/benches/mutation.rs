//! The webhook's mutation, without I/O: a Deployment-shaped pod with two app containers, an
//! init container, existing env and volumes, three integrations.

use std::{
    collections::{BTreeMap, BTreeSet},
    hint::black_box,
};

use attache_operator::admission::{mutate, Decision, InjectorSettings, PodContext};
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

criterion_group!(benches, mutation);
criterion_main!(benches);
