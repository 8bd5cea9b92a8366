//! Local mode: ExternalIntegration manifests + `DIR/<secret-name>/<key>` files, read by
//! [`DirSecretSource`], the reader `attache-operator render` uses too.

use std::path::{Path, PathBuf};

use attache_api::{fs::DirSecretSource, manifest::parse_integrations, render, RenderOptions};

use super::{read, LoadError, LoadedIntegration};

pub(super) fn load(
    manifests: &[PathBuf],
    secrets_dir: Option<&Path>,
) -> Result<Vec<LoadedIntegration>, LoadError> {
    let source = secrets_dir.map_or_else(DirSecretSource::without_dir, DirSecretSource::new);
    let mut out = Vec::new();
    for path in &manifest_files(manifests)? {
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

/// The manifest files named: a directory stands for every `*.yaml` and `*.yml` file in it
/// (not its subdirectories, not hidden files), in name order.
fn manifest_files(named: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for path in named {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                !name.starts_with('.')
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && p.is_file()
            })
            .collect();
        found.sort();
        files.extend(found);
    }
    Ok(files)
}
