//! Shared by the controller tests: the fake API server and helpers to drive the operator.

#![allow(dead_code)]

pub mod fake_api;

use std::time::Duration;

use attache_operator::{
    controller::{self, pods::DampingSettings},
    metrics::Metrics,
    run::stopped,
};
use base64::Engine;
pub use fake_api::*;
use serde_json::{json, Value};
use tokio::{sync::watch, task::JoinHandle};

/// The controller with test timings: no debounce, quick retries, a 1 s scale-down window.
pub fn fast_settings() -> controller::Settings {
    controller::Settings {
        debounce: Duration::ZERO,
        retry_base: Duration::from_millis(50),
        retry_user_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        damping: DampingSettings {
            scale_down_window: Duration::from_secs(1),
            min_interval: Duration::from_millis(100),
        },
        instance: "test".into(),
        ..controller::Settings::default()
    }
}

/// The controller running against a fake API server, as client `operator`.
pub struct Operator {
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Operator {
    pub fn start(fake: &FakeApi) -> Self {
        Self::start_with(fake, fast_settings())
    }

    pub fn start_with(fake: &FakeApi, settings: controller::Settings) -> Self {
        let metrics = Metrics::new();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(controller::run(
            fake.client("operator"),
            settings,
            metrics.controller().clone(),
            stopped(rx),
        ));
        Self {
            metrics,
            stop,
            task,
        }
    }

    /// Graceful shutdown; fails the test if it takes more than 5 s.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("controller stops within 5 s")
            .expect("controller task");
    }

    /// `attache_operator_reconciliations_total{result}`.
    pub fn reconciliations(&self, result: &str) -> u64 {
        self.metrics
            .controller()
            .reconciliations
            .get_or_create(&attache_operator::metrics::ResultLabel::new(result))
            .get()
    }
}

/// Polls `f` every 20 ms until it returns `Some`; panics after 10 s naming `what`.
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Objects ===

pub fn xint(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// A spec sending `api-key` of Secret `secret` as `Authorization: Bearer ...`.
pub fn api_key_spec(url: &str, secret: &str) -> Value {
    json!({
        "upstream": {"url": url},
        "auth": {"apiKey": {"header": "Authorization", "prefix": "Bearer ",
                             "secretKeyRef": {"name": secret, "key": "api-key"}}},
    })
}

pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(b64.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

/// An injected pod, as the webhook labels and annotates it.
pub fn injected_pod(namespace: &str, name: &str, integrations: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"attache.dev/injected": "true", "app": "shop"},
            "annotations": {"attache.dev/injected-integrations": integrations},
        },
        "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
    })
}

/// A key of a Secret as stored (base64-decoded).
pub fn secret_value(secret: &Value, key: &str) -> Option<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(secret["data"][key].as_str()?).ok()?;
    String::from_utf8(bytes).ok()
}

/// (status, reason, message) of the Ready condition.
pub fn ready(xint: &Value) -> Option<(String, String, String)> {
    let c = xint["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.to_string(),
        c["reason"].as_str()?.to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    ))
}

/// The sidecar config in a generated ConfigMap.
pub fn config(cm: &Value) -> Value {
    serde_json::from_str(cm["data"]["config.json"].as_str().expect("config.json")).expect("JSON")
}

// === A user (kubectl) acting on the fake, recorded as client `user` ===

pub struct User {
    client: kube::Client,
}

impl User {
    pub fn new(fake: &FakeApi) -> Self {
        Self {
            client: fake.client("user"),
        }
    }

    fn api(&self, res: Res, namespace: &str) -> kube::Api<kube::api::DynamicObject> {
        let ar = kube::api::ApiResource {
            group: res.group.into(),
            version: res.version.into(),
            api_version: res.api_version(),
            kind: res.kind.into(),
            plural: res.plural.into(),
        };
        kube::Api::namespaced_with(self.client.clone(), namespace, &ar)
    }

    pub async fn create(&self, res: Res, obj: Value) -> Value {
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_string();
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        let created = self
            .api(res, &ns)
            .create(&Default::default(), &obj)
            .await
            .expect("create");
        serde_json::to_value(created).unwrap()
    }

    pub async fn merge(&self, res: Res, namespace: &str, name: &str, patch: Value) -> Value {
        let patched = self
            .api(res, namespace)
            .patch(name, &Default::default(), &kube::api::Patch::Merge(patch))
            .await
            .expect("merge patch");
        serde_json::to_value(patched).unwrap()
    }

    pub async fn delete(&self, res: Res, namespace: &str, name: &str) {
        self.api(res, namespace)
            .delete(name, &Default::default())
            .await
            .expect("delete");
    }
}

/// The (group, resource, verb) permissions a recorded request needs.
pub fn permissions(r: &Recorded) -> Vec<(String, String, &'static str)> {
    let Some(res) = r.res else {
        return Vec::new();
    };
    let resource = if r.path.ends_with("/status") {
        format!("{}/status", res.plural)
    } else {
        res.plural.to_string()
    };
    let named = {
        let segments: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        let i = segments.iter().position(|s| *s == res.plural).unwrap_or(0);
        segments.len() > i + 1
    };
    let verbs: Vec<&'static str> = match r.method.as_str() {
        "GET" if r.watch => vec!["watch"],
        "GET" if named => vec!["get"],
        "GET" => vec!["list"],
        "POST" => vec!["create"],
        "PUT" => vec!["update"],
        "PATCH" if r.created => vec!["create", "patch"],
        "PATCH" => vec!["patch"],
        "DELETE" => vec!["delete"],
        _ => vec!["unknown"],
    };
    verbs
        .into_iter()
        .map(|v| (res.group.to_string(), resource.clone(), v))
        .collect()
}

/// Fails when `client` made a request that `attache_operator::rbac::CONTROLLER` does not list.
pub fn assert_within_rbac(fake: &FakeApi, client: &str) {
    for r in fake.requests(Some(client)) {
        for (group, resource, verb) in permissions(&r) {
            assert!(
                attache_operator::rbac::CONTROLLER
                    .iter()
                    .any(|c| c.group == group && c.resource == resource && c.verb.as_str() == verb),
                "{} {}: needs {verb} on {group}/{resource}, which rbac::CONTROLLER does not list",
                r.method,
                r.path
            );
        }
    }
}
