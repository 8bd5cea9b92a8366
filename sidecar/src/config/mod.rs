//! Where the sidecar's configuration comes from, and how it is reloaded.
//!
//! Two sources produce the same thing, a list of [`LoadedIntegration`]s:
//! - [`ConfigSource::ConfigDir`]: the folders the operator renders (ConfigMap + Secret
//!   projected per integration; layout documented in `attache_api::config`);
//! - [`ConfigSource::Local`]: ExternalIntegration manifests plus a folder of secret files,
//!   rendered here with the same renderer the operator uses.

mod dir;
mod local;
pub mod redis;

pub(crate) use local::manifest_files;
pub mod watch;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use attache_api::{SecretBytes, SidecarConfig};

/// One integration's config and secret files, as read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedIntegration {
    pub config: SidecarConfig,
    pub files: BTreeMap<String, SecretBytes>,
    pub client_certificate_not_after: Option<i64>,
}

/// Why a configuration could not be loaded; names the file or integration at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Manifest(#[from] attache_api::manifest::ManifestError),
    #[error("integration {name:?} (from {source_name}): {error}")]
    Render {
        name: String,
        source_name: String,
        error: Box<attache_api::RenderError>,
    },
    #[error("integration {0:?} is defined more than once")]
    Duplicate(String),
    #[error("no integrations found in {0}")]
    Empty(String),
    /// Several of the above, each once, one line each.
    #[error("{} problems:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<LoadError>),
}

// === impl LoadError ===

impl LoadError {
    /// One error for `errors`: none, the only one, or [`LoadError::Several`], each once.
    pub(crate) fn all(errors: Vec<LoadError>) -> Option<LoadError> {
        let mut unique: Vec<LoadError> = Vec::with_capacity(errors.len());
        for e in errors {
            if !unique.iter().any(|u| u.to_string() == e.to_string()) {
                unique.push(e);
            }
        }
        match unique.len() {
            0 => None,
            1 => unique.pop(),
            _ => Some(LoadError::Several(unique)),
        }
    }
}

/// What `attache-sidecar run` serves.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    ConfigDir(PathBuf),
    Local {
        manifests: Vec<PathBuf>,
        secrets_dir: Option<PathBuf>,
        /// Redis of `scope: global` limits (`--redis-url`).
        redis: redis::RedisArgs,
    },
}

impl ConfigSource {
    /// Loads every integration, sorted by name (the order listener ports are given in).
    pub fn load(&self) -> Result<Vec<LoadedIntegration>, LoadError> {
        let mut out = match self {
            ConfigSource::ConfigDir(dir) => dir::load(dir)?,
            ConfigSource::Local {
                manifests,
                secrets_dir,
                redis,
            } => local::load(manifests, secrets_dir.as_deref(), redis)?,
        };
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        for w in out.windows(2) {
            if w[0].config.name == w[1].config.name {
                return Err(LoadError::Duplicate(w[0].config.name.clone()));
            }
        }
        if out.is_empty() {
            return Err(LoadError::Empty(self.describe()));
        }
        Ok(out)
    }

    /// The files whose content decides the configuration, for change detection.
    pub fn watched_roots(&self) -> Vec<PathBuf> {
        match self {
            ConfigSource::ConfigDir(dir) => vec![dir.clone()],
            ConfigSource::Local {
                manifests,
                secrets_dir,
                redis,
            } => manifests
                .iter()
                .cloned()
                .chain(secrets_dir.clone())
                .chain(redis.redis_password_file.clone())
                .chain(redis.redis_ca_file.clone())
                .collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ConfigSource::ConfigDir(d) => d.display().to_string(),
            ConfigSource::Local { manifests, .. } => manifests
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// A manifest or config file: a regular file of at most 1 MiB (as Kubernetes caps a
/// ConfigMap); a FIFO, a device or a huge file is refused with a message, never read.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    use attache_api::fs::{read_regular_capped, DirSourceError};
    // The operating system's own words for a missing or unreadable path.
    std::fs::metadata(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_regular_capped(path).map_err(|e| match e {
        DirSourceError::Io { source, .. } => LoadError::Io {
            path: path.to_path_buf(),
            source,
        },
        DirSourceError::KeyNotFound(_) => LoadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        },
        DirSourceError::TooLarge(_) => LoadError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "larger than {} bytes, the most a Secret or ConfigMap holds",
                attache_api::fs::MAX_FILE_BYTES
            ),
        },
        other => LoadError::Invalid {
            path: path.to_path_buf(),
            message: match other {
                DirSourceError::NotAFile(_) => {
                    "not a regular file (a FIFO, device or directory is never read)".into()
                }
                e => e.to_string(),
            },
        },
    })
}

/// `notAfter` of the first certificate in a PEM chain.
fn chain_not_after(pem: &SecretBytes) -> Option<i64> {
    let certs = attache_api::render::parse_certs(pem.expose()).ok()?;
    attache_api::render::leaf_not_after(&certs[0]).ok()
}
