//! Local mode: ExternalIntegration manifests + `DIR/<secret-name>/<key>` files, read by
//! [`DirSecretSource`], the reader `attache-operator render` uses too.

use std::path::{Path, PathBuf};

use attache_api::{fs::DirSecretSource, manifest::read_integrations, render, RenderOptions};

use super::{read, redis::RedisArgs, LoadError, LoadedIntegration};

/// Every manifest is read and every integration rendered, so that one run names the problems
/// of all of them.
pub(super) fn load(
    manifests: &[PathBuf],
    secrets_dir: Option<&Path>,
    redis: &RedisArgs,
) -> Result<Vec<LoadedIntegration>, LoadError> {
    let source = secrets_dir.map_or_else(DirSecretSource::without_dir, DirSecretSource::new);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let redis = redis.settings().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let files = manifest_files(manifests, &mut errors);
    for path in &files {
        let text = match read(path).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| LoadError::Invalid {
                path: path.clone(),
                message: "not UTF-8 text".into(),
            })
        }) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let source_name = path.display().to_string();
        let (integrations, problems) = read_integrations(&source_name, &text);
        errors.extend(problems.into_iter().map(LoadError::Manifest));
        for xint in integrations {
            // Local mode serves one pod: a shared rate limit's share is the whole limit.
            match render(&xint, &source, RenderOptions::default()) {
                Ok(mut rendered) => {
                    if let Some(redis) = &redis {
                        attache_api::global::with_redis(&mut rendered, redis);
                    }
                    out.push(LoadedIntegration {
                        config: rendered.config,
                        files: rendered.files,
                        client_certificate_not_after: rendered.client_certificate_not_after,
                    })
                }
                Err(error) => {
                    errors.extend(error.problems().into_iter().map(|p| LoadError::Render {
                        name: xint.metadata.name.clone().unwrap_or_default(),
                        source_name: source_name.clone(),
                        error: Box::new(p.clone()),
                    }))
                }
            }
        }
    }
    match LoadError::all(errors) {
        None => Ok(out),
        Some(e) => Err(e),
    }
}

/// The manifest files named: a directory stands for every `*.yaml` and `*.yml` file in it
/// (not its subdirectories, not hidden files), in name order. A directory that cannot be read
/// goes to `errors`.
pub(crate) fn manifest_files(named: &[PathBuf], errors: &mut Vec<LoadError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in named {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(source) => {
                errors.push(LoadError::Io {
                    path: path.clone(),
                    source,
                });
                continue;
            }
        };
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
    files
}
