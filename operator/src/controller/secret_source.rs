//! The Secrets and ConfigMaps an integration references, as the renderer reads them.
//!
//! The controller keeps reflector stores of the cluster's Secrets and ConfigMaps (all but the
//! ones it generates). A reconciliation takes a [`Snapshot`] of exactly the objects its spec
//! names before rendering, so a Secret rotated halfway through cannot pair a new certificate
//! with an old key. The reverse lookup, which integrations must re-render when a given Secret or
//! ConfigMap changes, is [`super::references`].

use std::{collections::BTreeMap, sync::Arc};

use attache_api::{
    render::referenced_objects, ExternalIntegration, SecretBytes, SecretSource, SourceError,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};

/// A kind of object an integration can reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    Secret,
    ConfigMap,
}

/// The referenced objects of one integration, frozen at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    secrets: BTreeMap<String, Arc<Secret>>,
    config_maps: BTreeMap<String, Arc<ConfigMap>>,
}

// === impl Snapshot ===

impl Snapshot {
    /// Looks up, in `namespace`, every Secret and ConfigMap that `xint`'s spec names.
    pub fn take(
        xint: &ExternalIntegration,
        namespace: &str,
        secrets: &Store<Secret>,
        config_maps: &Store<ConfigMap>,
    ) -> Self {
        let (secret_names, config_map_names) = referenced_objects(&xint.spec);
        Self {
            secrets: secret_names
                .into_iter()
                .filter_map(|n| {
                    let found = secrets.get(&ObjectRef::new(&n).within(namespace));
                    found.map(|s| (n, s))
                })
                .collect(),
            config_maps: config_map_names
                .into_iter()
                .filter_map(|n| {
                    let found = config_maps.get(&ObjectRef::new(&n).within(namespace));
                    found.map(|c| (n, c))
                })
                .collect(),
        }
    }

    /// A snapshot of the given objects (names from their metadata), for tests and tools.
    pub fn from_objects(
        secrets: impl IntoIterator<Item = Secret>,
        config_maps: impl IntoIterator<Item = ConfigMap>,
    ) -> Self {
        Self {
            secrets: secrets
                .into_iter()
                .filter_map(|s| Some((s.metadata.name.clone()?, Arc::new(s))))
                .collect(),
            config_maps: config_maps
                .into_iter()
                .filter_map(|c| Some((c.metadata.name.clone()?, Arc::new(c))))
                .collect(),
        }
    }
}

impl SecretSource for Snapshot {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let secret = self.secrets.get(name).ok_or(SourceError::ObjectNotFound)?;
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| SecretBytes::new(v.0.clone()))
            .ok_or(SourceError::KeyNotFound)
    }

    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let cm = self
            .config_maps
            .get(name)
            .ok_or(SourceError::ObjectNotFound)?;
        if let Some(v) = cm.data.as_ref().and_then(|d| d.get(key)) {
            return Ok(SecretBytes::new(v.as_bytes()));
        }
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| SecretBytes::new(v.0.clone()))
            .ok_or(SourceError::KeyNotFound)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::ObjectMeta, ByteString};

    use super::*;
    use crate::controller::fixtures::api_key_secret;

    #[test]
    fn reads_keys_from_secrets_and_config_maps() {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("ca".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("a".to_string(), "text".to_string())])),
            binary_data: Some(BTreeMap::from([(
                "b".to_string(),
                ByteString(b"bin".to_vec()),
            )])),
            ..Default::default()
        };
        let s = Snapshot::from_objects([api_key_secret("stripe-key", "sk_1")], [cm]);
        assert_eq!(
            s.secret_key("stripe-key", "api-key").unwrap().expose(),
            b"sk_1"
        );
        assert_eq!(
            s.secret_key("stripe-key", "nope").unwrap_err(),
            SourceError::KeyNotFound
        );
        assert_eq!(
            s.secret_key("other", "api-key").unwrap_err(),
            SourceError::ObjectNotFound
        );
        assert_eq!(s.config_map_key("ca", "a").unwrap().expose(), b"text");
        assert_eq!(s.config_map_key("ca", "b").unwrap().expose(), b"bin");
        assert_eq!(
            s.config_map_key("ca", "c").unwrap_err(),
            SourceError::KeyNotFound
        );
        // Secrets and ConfigMaps are different namespaces of names.
        assert_eq!(
            s.secret_key("ca", "a").unwrap_err(),
            SourceError::ObjectNotFound
        );
    }
}
