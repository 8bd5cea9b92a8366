//! The generated ConfigMap and Secret `attache-NAME`, computed from a rendered integration.
//!
//! Pure: [`desired`] builds the objects the operator server-side applies, [`ownership`] decides
//! whether an existing object may be written, and [`config_map_up_to_date`] /
//! [`secret_up_to_date`] let a reconciliation skip an apply that would change nothing.

use std::collections::BTreeMap;

use attache_api::{ExternalIntegration, Rendered};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    ByteString,
};
use kube::Resource;

use super::Error;
use crate::contract::{self, INTEGRATION_LABEL, MANAGED_BY, MANAGED_BY_LABEL};

/// Longest name of a ConfigMap or Secret (a DNS subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// What the operator applies for one integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub secret: Secret,
}

/// Whether an existing `attache-NAME` object may be written for an integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No such object: applying creates it.
    Absent,
    /// Controlled by this very integration (same uid).
    Ours,
    /// Someone else's object (or one left by a deleted integration of the same name, which the
    /// garbage collector is about to remove); described for the status message.
    Foreign(String),
}

/// `attache-NAME`, if it is a valid object name.
pub fn generated_name(integration: &str) -> Result<String, Error> {
    let name = contract::generated_name(integration);
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong {
            name,
            max: MAX_NAME_LEN,
        });
    }
    Ok(name)
}

/// The ConfigMap (config, no secret values) and the Secret (exactly the material the
/// integration needs), both controlled by the integration and labelled as the operator's.
pub fn desired(xint: &ExternalIntegration, rendered: &Rendered) -> Result<Desired, Error> {
    let metadata = metadata(xint)?;
    let config_map = ConfigMap {
        metadata: metadata.clone(),
        data: Some(rendered.config_map_data()),
        ..ConfigMap::default()
    };
    let data: BTreeMap<String, ByteString> = rendered
        .files
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.expose().to_vec())))
        .collect();
    let secret = Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    };
    Ok(Desired { config_map, secret })
}

/// The owner reference the generated objects carry: the integration as their controller, so
/// deleting it lets the garbage collector remove them (the operator itself never deletes).
///
/// `blockOwnerDeletion` is left unset: setting it requires `update` on
/// `externalintegrations/finalizers` where the OwnerReferencesPermissionEnforcement admission
/// plugin runs, and foreground deletion of an integration has nothing to wait for.
pub fn owner_reference(xint: &ExternalIntegration) -> Result<OwnerReference, Error> {
    if xint.metadata.name.is_none() {
        return Err(Error::MissingMetadata("metadata.name"));
    }
    xint.controller_owner_ref(&())
        .ok_or(Error::MissingMetadata("metadata.uid"))
}

fn metadata(xint: &ExternalIntegration) -> Result<ObjectMeta, Error> {
    let name = xint
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingMetadata("metadata.name"))?;
    let namespace = xint
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    Ok(ObjectMeta {
        name: Some(generated_name(name)?),
        namespace: Some(namespace),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            (INTEGRATION_LABEL.to_string(), name.to_string()),
        ])),
        owner_references: Some(vec![owner_reference(xint)?]),
        ..ObjectMeta::default()
    })
}

/// Whether `existing` (the object named `attache-NAME`, if any) belongs to the integration
/// with uid `owner_uid`: only its controller owner reference counts.
pub fn ownership(existing: Option<&ObjectMeta>, owner_uid: &str) -> Ownership {
    let Some(meta) = existing else {
        return Ownership::Absent;
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(r) if r.uid == owner_uid => Ownership::Ours,
        Some(r) => Ownership::Foreign(format!(
            "it is controlled by {} {} (uid {})",
            r.kind, r.name, r.uid
        )),
        None => Ownership::Foreign("it has no controller".into()),
    }
}

/// The key under which a cached generated object keeps the digest of its data instead of
/// the data (see [`digest_config_map`]); not a valid ConfigMap or Secret key, so no real
/// entry can collide with it.
pub const DATA_DIGEST_KEY: &str = "attache.dev/data-sha256";

/// The generated ConfigMap as the operator caches it: its data replaced by one digest. The
/// cache only serves to skip applies that would change nothing, and a digest tells that as
/// well as the data would; at 10,000 integrations the rendered configs were a large part of
/// the operator's memory.
pub fn digest_config_map(cm: &mut ConfigMap) {
    let digest = config_map_data_digest(cm);
    cm.data = Some(BTreeMap::from([(DATA_DIGEST_KEY.to_string(), digest)]));
}

/// The generated Secret as the operator caches it: its data replaced by one digest (see
/// [`digest_config_map`]).
pub fn digest_secret(secret: &mut Secret) {
    let digest = secret_data_digest(secret);
    secret.data = Some(BTreeMap::from([(
        DATA_DIGEST_KEY.to_string(),
        ByteString(digest.into_bytes()),
    )]));
    secret.string_data = None;
}

/// Whether applying `desired` over `cached` (as [`digest_config_map`] left it) would change
/// nothing the operator sets.
pub fn config_map_up_to_date(cached: &ConfigMap, desired: &ConfigMap) -> bool {
    let stored = cached.data.as_ref().and_then(|d| d.get(DATA_DIGEST_KEY));
    meta_up_to_date(&cached.metadata, &desired.metadata)
        && stored.is_some_and(|d| *d == config_map_data_digest(desired))
        && cached.binary_data.is_none()
}

/// Whether applying `desired` over `cached` (as [`digest_secret`] left it) would change
/// nothing the operator sets.
pub fn secret_up_to_date(cached: &Secret, desired: &Secret) -> bool {
    let stored = cached.data.as_ref().and_then(|d| d.get(DATA_DIGEST_KEY));
    meta_up_to_date(&cached.metadata, &desired.metadata)
        && cached.type_ == desired.type_
        && stored.is_some_and(|d| d.0 == secret_data_digest(desired).into_bytes())
}

fn config_map_data_digest(cm: &ConfigMap) -> String {
    let entries = cm.data.iter().flatten();
    data_digest(entries.map(|(k, v)| (k.as_str(), v.as_bytes())))
}

fn secret_data_digest(secret: &Secret) -> String {
    let entries = secret.data.iter().flatten();
    data_digest(entries.map(|(k, v)| (k.as_str(), v.0.as_slice())))
}

/// SHA-256 over the entries in key order, each length-prefixed (no two maps share a digest).
fn data_digest<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in entries {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn meta_up_to_date(existing: &ObjectMeta, desired: &ObjectMeta) -> bool {
    let labels_present = desired.labels.iter().flatten().all(|(k, v)| {
        existing
            .labels
            .as_ref()
            .and_then(|l| l.get(k))
            .is_some_and(|e| e == v)
    });
    let owners_present = desired
        .owner_references
        .iter()
        .flatten()
        .all(|d| existing.owner_references.iter().flatten().any(|e| e == d));
    labels_present && owners_present
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
