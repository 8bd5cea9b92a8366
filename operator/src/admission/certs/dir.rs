//! cert-manager mode: the serving certificate comes from a mounted Secret (`tls.crt`,
//! `tls.key`) that something else renews.
//!
//! The files are polled rather than watched: Kubernetes updates a Secret volume by swapping a
//! `..data` symlink, which file-change notifications report unreliably, and reading two small
//! files every few seconds costs nothing. A half-updated pair (certificate and key that do not
//! match) is refused and read again at the next tick, so the server never presents it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{CertError, CertResolver, TLS_CERT_KEY, TLS_KEY_KEY};

/// How often the directory is read.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Loads `DIR/tls.crt` and `DIR/tls.key` into the resolver; returns whether they changed.
pub fn load(dir: &Path, resolver: &CertResolver) -> Result<bool, CertError> {
    let read = |name: &str| -> Result<Vec<u8>, CertError> {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let (cert, key) = (read(TLS_CERT_KEY)?, read(TLS_KEY_KEY)?);
    resolver.set_pem(&cert, &key)
}

/// Reloads the directory every `poll` until dropped. Errors are logged and the certificate
/// served so far stays.
pub async fn watch(dir: PathBuf, resolver: Arc<CertResolver>, poll: Duration) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match load(&dir, &resolver) {
            Ok(true) => tracing::info!(dir = %dir.display(), "serving certificate reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "serving certificate not reloaded")
            }
        }
    }
}
