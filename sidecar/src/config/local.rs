//! Local mode: ExternalIntegration manifests + `DIR/<secret-name>/<key>` files.

use std::path::{Path, PathBuf};

use attache_api::{
    manifest::parse_integrations, render, RenderOptions, SecretBytes, SecretSource, SourceError,
};

use super::{read, LoadError, LoadedIntegration};

/// Secrets (and CA ConfigMaps) as files: `DIR/<object-name>/<key>`, the way a Kubernetes
/// Secret volume lays them out.
pub struct DirSecretSource {
    dir: Option<PathBuf>,
}

impl DirSecretSource {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn lookup(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let Some(dir) = &self.dir else {
            return Err(SourceError::Unavailable(
                "no --secrets-dir given".to_string(),
            ));
        };
        // Names come from manifests: refuse anything that could walk out of the folder.
        let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
        if !safe(name) || !safe(key) {
            return Err(SourceError::Unavailable(format!(
                "{name}/{key} is not a valid object name and key"
            )));
        }
        let obj = dir.join(name);
        if !obj.is_dir() {
            return Err(SourceError::ObjectNotFound);
        }
        match std::fs::read(obj.join(key)) {
            Ok(b) => Ok(SecretBytes::new(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SourceError::KeyNotFound),
            Err(e) => Err(SourceError::Unavailable(e.to_string())),
        }
    }
}

impl SecretSource for DirSecretSource {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.lookup(name, key)
    }

    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        self.lookup(name, key)
    }
}

pub(super) fn load(
    manifests: &[PathBuf],
    secrets_dir: Option<&Path>,
) -> Result<Vec<LoadedIntegration>, LoadError> {
    let source = DirSecretSource::new(secrets_dir.map(Path::to_path_buf));
    let mut out = Vec::new();
    for path in manifests {
        let text = String::from_utf8(read(path)?).map_err(|_| LoadError::Invalid {
            path: path.clone(),
            message: "not UTF-8 text".into(),
        })?;
        let source_name = path.display().to_string();
        for xint in parse_integrations(&source_name, &text)? {
            // Local mode serves one pod: a shared rate limit's share is the whole limit.
            let rendered = render(&xint, &source, RenderOptions::default()).map_err(|error| {
                LoadError::Render {
                    name: xint.metadata.name.clone().unwrap_or_default(),
                    source_name: source_name.clone(),
                    error: Box::new(error),
                }
            })?;
            out.push(LoadedIntegration {
                config: rendered.config,
                files: rendered.files,
                client_certificate_not_after: rendered.client_certificate_not_after,
            });
        }
    }
    Ok(out)
}
