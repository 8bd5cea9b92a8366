//! A [`SecretSource`] over a directory, standing in for the cluster's Secrets and ConfigMaps:
//! `DIR/<name>/<key>` holds key `<key>` of the Secret (or ConfigMap) `<name>`. A
//! `kubernetes.io/tls` Secret is `DIR/<name>/tls.crt` + `DIR/<name>/tls.key`. Secrets and
//! ConfigMaps share the namespace of directory names, so a CA bundle in ConfigMap `ca` and a
//! Secret `ca` cannot be told apart; that is the price of a layout people can write by hand.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use attache_api::{SecretBytes, SecretSource, SourceError};

use crate::validate::metadata::dns_subdomain;

/// Reads `ROOT/<name>/<key>`.
#[derive(Debug, Clone)]
pub struct DirSecretSource {
    root: PathBuf,
}

// === impl DirSecretSource ===

impl DirSecretSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an object lives; `None` when the name could escape the directory.
    pub fn object_dir(&self, name: &str) -> Option<PathBuf> {
        dns_subdomain(name).ok().map(|()| self.root.join(name))
    }

    fn read(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let dir = self.object_dir(name).ok_or_else(|| {
            SourceError::Unavailable(format!("{name:?} is not a valid object name"))
        })?;
        if !valid_key(key) {
            return Err(SourceError::Unavailable(format!(
                "{key:?} is not a valid key (letters, digits, '-', '_' and '.')"
            )));
        }
        let unavailable = |path: &Path, e: io::Error| {
            SourceError::Unavailable(format!("{}: {e}", path.display()))
        };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Unavailable(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SourceError::ObjectNotFound)
            }
            Err(e) => return Err(unavailable(&dir, e)),
        }
        let file = dir.join(key);
        match fs::read(&file) {
            Ok(bytes) => Ok(SecretBytes::new(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SourceError::KeyNotFound),
            Err(e) => Err(unavailable(&file, e)),
        }
    }
}

impl SecretSource for DirSecretSource {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.read(name, key)
    }

    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.read(name, key)
    }
}

/// Kubernetes' rule for Secret and ConfigMap keys; it also keeps `..` and `/` out of paths.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_and_tells_missing_objects_from_missing_keys() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("stripe-key")).unwrap();
        fs::write(dir.path().join("stripe-key/api-key"), "sk_test_1\n").unwrap();
        let src = DirSecretSource::new(dir.path());
        let v = src.secret_key("stripe-key", "api-key").unwrap();
        assert_eq!(v.expose(), b"sk_test_1\n");
        assert_eq!(src.config_map_key("stripe-key", "api-key").unwrap(), v);
        assert_eq!(
            src.secret_key("stripe-key", "other"),
            Err(SourceError::KeyNotFound)
        );
        assert_eq!(
            src.secret_key("nope", "api-key"),
            Err(SourceError::ObjectNotFound)
        );
    }

    #[test]
    fn refuses_names_and_keys_that_leave_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("ok")).unwrap();
        let src = DirSecretSource::new(dir.path().join("ok"));
        for (name, key) in [
            ("..", "x"),
            ("a/b", "x"),
            ("ok", ".."),
            ("ok", "a/b"),
            ("ok", ""),
        ] {
            assert!(
                matches!(src.secret_key(name, key), Err(SourceError::Unavailable(_))),
                "{name:?} {key:?}"
            );
        }
    }

    #[test]
    fn a_file_where_a_directory_belongs_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("flat"), "x").unwrap();
        let src = DirSecretSource::new(dir.path());
        match src.secret_key("flat", "k") {
            Err(SourceError::Unavailable(m)) => assert!(m.ends_with("is not a directory"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
