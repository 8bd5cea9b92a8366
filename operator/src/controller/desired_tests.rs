use std::collections::BTreeMap;

use attache_api::{config::files, render, RenderOptions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::*;
use crate::controller::{
    fixtures::{api_key_secret, xint, xint_with},
    secret_source::Snapshot,
};

fn rendered(xint: &ExternalIntegration, pods: u32) -> Rendered {
    let source = Snapshot::from_objects([api_key_secret("stripe-key", "sk_live_1\n")], []);
    render(xint, &source, RenderOptions { pods_sharing: pods }).unwrap()
}

#[test]
fn config_map_and_secret_are_owned_labelled_and_named() {
    let x = xint("stripe", "payments", "stripe-key");
    let d = desired(&x, &rendered(&x, 1)).unwrap();
    for meta in [&d.config_map.metadata, &d.secret.metadata] {
        assert_eq!(meta.name.as_deref(), Some("attache-stripe"));
        assert_eq!(meta.namespace.as_deref(), Some("payments"));
        assert_eq!(
            meta.labels.as_ref().unwrap(),
            &BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "attache-operator".to_string()
                ),
                ("attache.dev/integration".to_string(), "stripe".to_string()),
            ])
        );
        assert_eq!(
            meta.owner_references.as_deref().unwrap(),
            &[OwnerReference {
                api_version: "attache.dev/v1alpha1".into(),
                kind: "ExternalIntegration".into(),
                name: "stripe".into(),
                uid: "uid-payments-stripe".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]
        );
    }
}

#[test]
fn config_map_has_no_secret_and_secret_has_exactly_the_credential() {
    let x = xint("stripe", "payments", "stripe-key");
    let d = desired(&x, &rendered(&x, 1)).unwrap();
    let data = d.config_map.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["config.json"]);
    assert!(!data["config.json"].contains("sk_live_1"));
    assert_eq!(d.secret.type_.as_deref(), Some("Opaque"));
    let secret = d.secret.data.as_ref().unwrap();
    assert_eq!(secret.keys().collect::<Vec<_>>(), [files::AUTH_CREDENTIAL]);
    // Trimmed, as the renderer resolves it.
    assert_eq!(secret[files::AUTH_CREDENTIAL].0, b"sk_live_1");
}

#[test]
fn shared_rate_limit_is_divided_by_the_pods() {
    let x = xint_with(
        "stripe",
        "payments",
        json!({
            "upstream": {"url": "https://api.stripe.com"},
            "rateLimit": {"requests": 100, "burst": 40, "scope": "shared"}
        }),
    );
    let config = |pods| {
        let d = desired(&x, &rendered(&x, pods)).unwrap();
        let text = d.config_map.data.unwrap()["config.json"].clone();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["rateLimit"].clone()
    };
    assert_eq!(config(1)["pods"], 1);
    assert_eq!(config(4)["pods"], 4);
    assert_eq!(config(4)["burst"], 10);
}

#[test]
fn desired_is_deterministic() {
    let x = xint("stripe", "payments", "stripe-key");
    assert_eq!(
        desired(&x, &rendered(&x, 2)).unwrap(),
        desired(&x, &rendered(&x, 2)).unwrap()
    );
}

#[test]
fn names_must_fit() {
    assert_eq!(generated_name("a").unwrap(), "attache-a");
    let long = "a".repeat(MAX_NAME_LEN - contract::GENERATED_NAME_PREFIX.len());
    assert!(generated_name(&long).is_ok());
    let err = generated_name(&format!("{long}b")).unwrap_err();
    assert_eq!(err.reason(), Some("InvalidName"));
}

#[test]
fn an_integration_without_uid_cannot_own() {
    let mut x = xint("stripe", "payments", "stripe-key");
    let r = rendered(&x, 1);
    x.metadata.uid = None;
    assert!(matches!(
        desired(&x, &r),
        Err(Error::MissingMetadata("metadata.uid"))
    ));
}

#[test]
fn ownership_follows_the_controller_reference() {
    let x = xint("stripe", "payments", "stripe-key");
    let ours = Seen::of(&desired(&x, &rendered(&x, 1)).unwrap().config_map);
    assert_eq!(ownership(None, "uid-payments-stripe"), Ownership::Absent);
    assert_eq!(
        ownership(Some(&ours), "uid-payments-stripe"),
        Ownership::Ours
    );
    // A namesake integration that was deleted and recreated has a new uid.
    assert!(matches!(
        ownership(Some(&ours), "uid-new"),
        Ownership::Foreign(m) if m.contains("uid-payments-stripe")
    ));
    // Only the controller reference counts.
    let mut shared = ConfigMap::default();
    shared.metadata.owner_references = Some(vec![OwnerReference {
        controller: None,
        ..owner_reference(&x).unwrap()
    }]);
    for foreign in [ConfigMap::default(), shared] {
        assert_eq!(
            ownership(Some(&Seen::of(&foreign)), "uid-payments-stripe"),
            Ownership::Foreign("it has no controller".into())
        );
    }
}

#[test]
fn up_to_date_compares_what_the_operator_sets() {
    let x = xint("stripe", "payments", "stripe-key");
    let d = desired(&x, &rendered(&x, 1)).unwrap();
    // As stored: extra metadata, labels and owners added by others do not matter.
    let mut stored = d.clone();
    stored.config_map.metadata.resource_version = Some("42".into());
    stored
        .config_map
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "payments".into());
    stored
        .config_map
        .metadata
        .owner_references
        .as_mut()
        .unwrap()
        .push(OwnerReference {
            controller: None,
            uid: "u2".into(),
            ..owner_reference(&x).unwrap()
        });
    stored.secret.metadata.uid = Some("u".into());
    assert!(Seen::of(&stored.config_map).up_to_date(&d.config_map));
    assert!(Seen::of(&stored.secret).up_to_date(&d.secret));

    // A rotated credential, a re-divided limit, a removed or changed label, another type,
    // binary data, another controller: out of date.
    let other = desired(
        &x,
        &render(
            &x,
            &Snapshot::from_objects([api_key_secret("stripe-key", "sk_live_2")], []),
            RenderOptions::default(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(!Seen::of(&other.secret).up_to_date(&d.secret));
    let mut unlabelled = d.clone();
    unlabelled.config_map.metadata.labels = None;
    assert!(!Seen::of(&unlabelled.config_map).up_to_date(&d.config_map));
    let mut relabelled = d.clone();
    relabelled
        .secret
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(INTEGRATION_LABEL.into(), "twilio".into());
    assert!(!Seen::of(&relabelled.secret).up_to_date(&d.secret));
    let mut retyped = d.clone();
    retyped.secret.type_ = None;
    assert!(!Seen::of(&retyped.secret).up_to_date(&d.secret));
    let mut extra = d.clone();
    extra
        .secret
        .data
        .as_mut()
        .unwrap()
        .insert("stale".into(), ByteString(b"x".to_vec()));
    assert!(!Seen::of(&extra.secret).up_to_date(&d.secret));
    let mut binary = d.clone();
    binary.config_map.binary_data =
        Some(BTreeMap::from([("blob".into(), ByteString(b"x".to_vec()))]));
    assert!(!Seen::of(&binary.config_map).up_to_date(&d.config_map));
    let mut edited = d.clone();
    edited
        .config_map
        .data
        .as_mut()
        .unwrap()
        .values_mut()
        .for_each(|v| v.push(' '));
    assert!(!Seen::of(&edited.config_map).up_to_date(&d.config_map));
    let mut recreated = x.clone();
    recreated.metadata.uid = Some("uid-new".into());
    let newer = desired(&recreated, &rendered(&recreated, 1)).unwrap();
    assert!(!Seen::of(&d.config_map).up_to_date(&newer.config_map));
}

#[test]
fn what_is_remembered_of_a_generated_secret_holds_no_secret_value() {
    let x = xint("stripe", "payments", "stripe-key");
    let d = desired(&x, &rendered(&x, 1)).unwrap();
    let remembered = format!("{:?}", Seen::of(&d.secret));
    for (_, v) in d.secret.data.iter().flatten() {
        let v = String::from_utf8_lossy(&v.0).to_string();
        assert!(!v.is_empty());
        assert!(!remembered.contains(&v), "a secret value is remembered");
    }
}

#[test]
fn a_global_limit_gets_the_redis_address_in_the_config_map_and_the_password_only_in_the_secret() {
    let x = xint_with(
        "metered",
        "payments",
        json!({
            "upstream": {"url": "https://api.example.com"},
            "rateLimit": {"requests": 50, "burst": 10, "scope": "global",
                          "quota": {"requests": 1000, "per": "24h"}},
        }),
    );
    let mut r = rendered(&x, 4);
    let redis = attache_api::global::RedisSettings::new(
        "rediss://redis.shared:6380",
        Some(attache_api::SecretBytes::new("hunter2-pw")),
        Some(attache_api::SecretBytes::new("-----BEGIN CERTIFICATE-----")),
    )
    .unwrap();
    attache_api::global::with_redis(&mut r, &redis);
    let d = desired(&x, &r).unwrap();
    let config = &d.config_map.data.as_ref().unwrap()["config.json"];
    assert!(config.contains("rediss://redis.shared:6380"), "{config}");
    assert!(config.contains("attache:{payments/metered}"), "{config}");
    assert!(!config.contains("hunter2-pw"));
    let data = d.secret.data.as_ref().unwrap();
    assert_eq!(data[files::REDIS_PASSWORD].0, b"hunter2-pw");
    assert!(data.contains_key(files::REDIS_CA));
    // The fallback split: this pod's share of the burst; the whole bucket for Redis.
    let rl = r.config.rate_limit.as_ref().unwrap();
    assert_eq!((rl.pods, rl.burst), (4, 2));
    assert_eq!(rl.global.as_ref().unwrap().burst, 10);
    assert!(!format!("{redis:?}").contains("hunter2-pw"));
}
