//! Objects for the controller's unit tests.

use std::collections::BTreeMap;

use attache_api::ExternalIntegration;
use k8s_openapi::{
    api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::ObjectMeta, ByteString,
};
use serde_json::json;

/// An integration as the API server returns it (uid, generation), using API key `api-key`
/// of Secret `secret`.
pub fn xint(name: &str, namespace: &str, secret: &str) -> ExternalIntegration {
    xint_with(
        name,
        namespace,
        json!({
            "upstream": {"url": "https://api.stripe.com"},
            "auth": {"apiKey": {"secretKeyRef": {"name": secret, "key": "api-key"}}}
        }),
    )
}

pub fn xint_with(name: &str, namespace: &str, spec: serde_json::Value) -> ExternalIntegration {
    serde_json::from_value(json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": format!("uid-{namespace}-{name}"),
            "generation": 3,
        },
        "spec": spec,
    }))
    .expect("valid ExternalIntegration")
}

/// A Secret holding `api-key`.
pub fn api_key_secret(name: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("payments".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "api-key".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}
