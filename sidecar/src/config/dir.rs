//! In-cluster mode: `DIR/NAME/config.json` plus the secret files it names.
//!
//! Kubernetes updates projected volumes by writing a new `..<timestamp>` folder and swapping
//! the `..data` symlink; the visible files are symlinks through it. Entries whose names start
//! with `.` are those internals and are skipped; reading through the symlinks always sees one
//! consistent generation.

use std::{collections::BTreeMap, path::Path};

use attache_api::{
    config::{files, CONFIG_API_VERSION, CONFIG_FILE},
    SecretBytes, SidecarConfig,
};

use super::{chain_not_after, read, LoadError, LoadedIntegration};

pub(super) fn load(dir: &Path) -> Result<Vec<LoadedIntegration>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    // Every integration is read, so that one run names the problems of all of them.
    let mut errors = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        match load_one(&path) {
            Ok(loaded) => out.push(loaded),
            Err(e) => errors.push(e),
        }
    }
    match LoadError::all(errors) {
        None => Ok(out),
        Some(e) => Err(e),
    }
}

fn load_one(dir: &Path) -> Result<LoadedIntegration, LoadError> {
    let config_path = dir.join(CONFIG_FILE);
    let raw = read(&config_path)?;
    let version: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| LoadError::Invalid {
            path: config_path.clone(),
            message: format!("not JSON: {e}"),
        })?;
    let api_version = version.get("apiVersion").and_then(|v| v.as_str());
    if api_version != Some(CONFIG_API_VERSION) {
        return Err(LoadError::Invalid {
            path: config_path,
            message: format!(
                "apiVersion {api_version:?} is not {CONFIG_API_VERSION:?}: is this sidecar older than the operator?"
            ),
        });
    }
    let config: SidecarConfig =
        serde_json::from_value(version).map_err(|e| LoadError::Invalid {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
    let folder = dir.file_name().map(|n| n.to_string_lossy().to_string());
    if folder.as_deref() != Some(config.name.as_str()) {
        return Err(LoadError::Invalid {
            path: config_path,
            message: format!(
                "config is for integration {:?} but sits in folder {folder:?}",
                config.name
            ),
        });
    }
    let mut needed: Vec<&str> = config.auth.secret_files().to_vec();
    if config.tls.custom_ca {
        needed.push(files::CA_BUNDLE);
    }
    if config.tls.client_certificate {
        needed.extend([files::CLIENT_CERT, files::CLIENT_KEY]);
    }
    if config.webhooks.is_some() {
        needed.push(attache_api::webhooks::config::SECRETS_FILE);
    }
    if let Some(redis) = config
        .rate_limit
        .as_ref()
        .and_then(|r| r.global.as_ref())
        .and_then(|g| g.redis.as_ref())
    {
        needed.extend(redis.secret_files());
    }
    let mut secret_files = BTreeMap::new();
    for f in needed {
        let p = dir.join(f);
        let bytes = read(&p).map_err(|e| LoadError::Invalid {
            path: p.clone(),
            message: format!("secret file needed by the config is unusable: {e}"),
        })?;
        secret_files.insert(f.to_string(), SecretBytes::new(bytes));
    }
    let not_after = secret_files
        .get(files::CLIENT_CERT)
        .and_then(chain_not_after);
    Ok(LoadedIntegration {
        config,
        files: secret_files,
        client_certificate_not_after: not_after,
    })
}
