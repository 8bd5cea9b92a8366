//! A [`SecretSource`] over a directory, standing in for the cluster's Secrets and ConfigMaps:
//! `DIR/<name>/<key>` holds key `<key>` of the Secret (or ConfigMap) `<name>`, the layout of a
//! Secret volume. A `kubernetes.io/tls` Secret is `DIR/<name>/tls.crt` + `DIR/<name>/tls.key`.
//!
//! Behind the `fs` feature because it is the one piece of this crate that touches the disk:
//! whoever needs only the types, validation and the pure renderer (the controller, a code
//! generator) gets no file access with them. `attache-operator render` and the sidecar's local
//! mode turn it on, so both read a secrets folder the same way and fail with the same messages.
//!
//! - Secrets and ConfigMaps share the namespace of directory names, so a CA bundle in
//!   ConfigMap `ca` and a Secret `ca` cannot be told apart; that is the price of a layout
//!   people can write by hand.
//! - Names and keys must follow Kubernetes' rules ([`crate::names`]): what works here works in
//!   a cluster, and no name or key can walk out of the directory (`..`, `/`).
//! - Symlinks are followed, so a mounted Secret volume (whose keys are symlinks through
//!   `..data`) or a folder of links to one can be used as it is.
//! - A file may hold at most [`MAX_FILE_BYTES`].

use std::{
    fs, io,
    io::Read,
    path::{Path, PathBuf},
};

use crate::{names, SecretBytes, SecretSource, SourceError};

/// The largest file read: Kubernetes caps a Secret's or ConfigMap's data at 1 MiB, so nothing
/// bigger can stand for one, and a path given by mistake (`/dev/zero`, an image) is refused
/// instead of read whole.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads `ROOT/<name>/<key>`.
#[derive(Debug, Clone)]
pub struct DirSecretSource {
    /// `None` in the sidecar's local mode without `--secrets-dir`: a manifest that needs no
    /// secret still serves, one that needs a secret fails naming the missing flag.
    root: Option<PathBuf>,
}

/// Why a file could not stand in for a Secret's or ConfigMap's key. The two "not found" cases
/// become [`SourceError::ObjectNotFound`] and [`SourceError::KeyNotFound`], so the renderer
/// names the missing Secret or key; the others become [`SourceError::Unavailable`].
#[derive(Debug, thiserror::Error)]
pub enum DirSourceError {
    #[error("no --secrets-dir given")]
    NoDirectory,
    #[error("{name:?} is not a valid object name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("{key:?} is not a valid key: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{} not found", .0.display())]
    ObjectNotFound(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} not found", .0.display())]
    KeyNotFound(PathBuf),
    #[error("{} is larger than {MAX_FILE_BYTES} bytes, the most a Secret or ConfigMap holds", .0.display())]
    TooLarge(PathBuf),
    #[error("{} is not a regular file (a FIFO, device or directory is never read)", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

// === impl DirSecretSource ===

impl DirSecretSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: Some(root.into()),
        }
    }

    /// A source with no directory: every lookup fails with [`DirSourceError::NoDirectory`].
    pub fn without_dir() -> Self {
        Self { root: None }
    }

    /// Where object `name` lives; `None` without a directory or when the name is not a valid
    /// object name (it could escape the directory). For messages that say where a file belongs.
    pub fn object_dir(&self, name: &str) -> Option<PathBuf> {
        let root = self.root.as_ref()?;
        names::dns_subdomain(name).ok().map(|()| root.join(name))
    }

    /// The bytes of `ROOT/<name>/<key>`.
    pub fn read(&self, name: &str, key: &str) -> Result<SecretBytes, DirSourceError> {
        let root = self.root.as_ref().ok_or(DirSourceError::NoDirectory)?;
        names::dns_subdomain(name).map_err(|reason| DirSourceError::InvalidName {
            name: name.into(),
            reason,
        })?;
        names::data_key(key).map_err(|reason| DirSourceError::InvalidKey {
            key: key.into(),
            reason,
        })?;
        let dir = root.join(name);
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(DirSourceError::NotADirectory(dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DirSourceError::ObjectNotFound(dir))
            }
            Err(source) => return Err(DirSourceError::Io { path: dir, source }),
        }
        read_capped(&dir.join(key))
    }
}

impl SecretSource for DirSecretSource {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        Ok(self.read(name, key)?)
    }

    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        Ok(self.read(name, key)?)
    }
}

fn read_capped(file: &Path) -> Result<SecretBytes, DirSourceError> {
    read_regular_capped(file).map(SecretBytes::new)
}

/// The bytes of a regular file (symlinks followed) of at most [`MAX_FILE_BYTES`], as
/// Kubernetes caps a Secret or ConfigMap: anything else is refused before it is opened (a FIFO
/// would block the open, `/dev/zero` would never end). Reads at most one byte more than the
/// cap, to tell "at the limit" from "over".
pub fn read_regular_capped(file: &Path) -> Result<Vec<u8>, DirSourceError> {
    let io_error = |source| DirSourceError::Io {
        path: file.to_path_buf(),
        source,
    };
    match fs::metadata(file) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(DirSourceError::NotAFile(file.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirSourceError::KeyNotFound(file.to_path_buf()))
        }
        Err(e) => return Err(io_error(e)),
    }
    let f = match fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirSourceError::KeyNotFound(file.to_path_buf()))
        }
        Err(e) => return Err(io_error(e)),
    };
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(DirSourceError::TooLarge(file.to_path_buf()));
    }
    Ok(bytes)
}

// === impl DirSourceError ===

impl From<DirSourceError> for SourceError {
    fn from(e: DirSourceError) -> Self {
        match e {
            DirSourceError::ObjectNotFound(_) => SourceError::ObjectNotFound,
            DirSourceError::KeyNotFound(_) => SourceError::KeyNotFound,
            other => SourceError::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
