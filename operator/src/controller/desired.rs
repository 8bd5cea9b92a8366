//! The generated ConfigMap and Secret `attache-NAME`, computed from a rendered integration.
//!
//! Pure: [`desired`] builds the objects the operator server-side applies, [`ownership`] decides
//! whether an existing object may be written, and [`Seen::up_to_date`] lets a reconciliation
//! skip an apply that would change nothing.

use std::collections::BTreeMap;

use attache_api::{ExternalIntegration, Rendered};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
    ByteString,
};
use kube::Resource;
use sha2::{Digest, Sha256};

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
pub fn ownership(existing: Option<&Seen>, owner_uid: &str) -> Ownership {
    let Some(seen) = existing else {
        return Ownership::Absent;
    };
    match &seen.controller {
        Some(r) if r.uid == owner_uid => Ownership::Ours,
        Some(r) => Ownership::Foreign(format!(
            "it is controlled by {} {} (uid {})",
            r.kind, r.name, r.uid
        )),
        None => Ownership::Foreign("it has no controller".into()),
    }
}

/// A generated object as the controller remembers it: who controls it, and a digest of what
/// the operator sets on it. The cache of generated objects only serves to refuse writing over
/// someone else's object and to skip applies that would change nothing; this tells both at a
/// fifth of a cached object's memory (at 10,000 integrations the cached objects, labels and
/// data maps were a third of the operator's RSS).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// Its controller owner reference (the API server allows at most one).
    pub controller: Option<OwnerReference>,
    /// SHA-256 of its values of the operator's labels, its data and (a Secret) its type.
    pub digest: [u8; 32],
}

/// The kinds the operator generates: what of them [`Seen::digest`] covers.
pub trait GeneratedKind: Resource<DynamicType = ()> {
    /// Feeds the kind's own content (data, type) to the digest.
    fn digest_content(&self, h: &mut Digester);
}

impl GeneratedKind for ConfigMap {
    fn digest_content(&self, h: &mut Digester) {
        h.entries(
            "data",
            self.data.iter().flatten().map(|(k, v)| (k, v.as_bytes())),
        );
        h.entries(
            "binaryData",
            self.binary_data
                .iter()
                .flatten()
                .map(|(k, v)| (k, v.0.as_slice())),
        );
    }
}

impl GeneratedKind for Secret {
    fn digest_content(&self, h: &mut Digester) {
        h.field("type", self.type_.as_deref().map(str::as_bytes));
        h.entries(
            "data",
            self.data.iter().flatten().map(|(k, v)| (k, v.0.as_slice())),
        );
        h.entries(
            "stringData",
            self.string_data
                .iter()
                .flatten()
                .map(|(k, v)| (k, v.as_bytes())),
        );
    }
}

// === impl Seen ===

impl Seen {
    /// What the controller remembers of `obj`.
    pub fn of<K: GeneratedKind>(obj: &K) -> Seen {
        Seen {
            controller: controller_of(obj.meta()).cloned(),
            digest: digest(obj),
        }
    }

    /// Whether applying `desired` over this object would change nothing the operator sets.
    /// Labels and owner references others added do not matter (an apply leaves them).
    pub fn up_to_date<K: GeneratedKind>(&self, desired: &K) -> bool {
        self.controller.as_ref() == controller_of(desired.meta()) && self.digest == digest(desired)
    }
}

/// An object's controller owner reference, if it has one.
fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The labels the operator sets on what it generates (see [`desired`]).
const OPERATOR_LABELS: [&str; 2] = [MANAGED_BY_LABEL, INTEGRATION_LABEL];

fn digest<K: GeneratedKind>(obj: &K) -> [u8; 32] {
    let mut h = Digester(Sha256::new());
    let labels = obj.meta().labels.as_ref();
    for key in OPERATOR_LABELS {
        let value = labels.and_then(|l| l.get(key)).map(String::as_bytes);
        h.field(key, value);
    }
    obj.digest_content(&mut h);
    h.0.finalize().into()
}

/// SHA-256 over named fields and maps, each part length-prefixed and absent values told from
/// empty ones: no two different contents share a digest.
pub struct Digester(Sha256);

impl Digester {
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }

    fn field(&mut self, name: &str, value: Option<&[u8]>) {
        self.bytes(name.as_bytes());
        match value {
            Some(v) => {
                self.0.update([1]);
                self.bytes(v);
            }
            None => self.0.update([0]),
        }
    }

    fn entries<'a>(&mut self, name: &str, entries: impl Iterator<Item = (&'a String, &'a [u8])>) {
        self.bytes(name.as_bytes());
        let mut n = 0u64;
        for (k, v) in entries {
            self.bytes(k.as_bytes());
            self.bytes(v);
            n += 1;
        }
        self.0.update(n.to_be_bytes());
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
