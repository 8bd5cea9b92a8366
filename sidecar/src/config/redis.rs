//! Local mode's Redis for `rateLimit.scope: global` (`attache-sidecar run --manifest ...
//! --redis-url ...`): in a pod the operator renders the same settings into the config folder.
//! The password and CA files are read at every (re)load, so a rotated password applies like a
//! rotated credential.

use std::path::PathBuf;

use attache_api::{global::RedisSettings, SecretBytes};
use clap::Args;

use super::{read, LoadError};

/// The Redis flags of `attache-sidecar run` (local mode).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct RedisArgs {
    /// Redis of `rateLimit.scope: global` in local mode: redis://HOST:PORT[/DB] or rediss://
    /// (TLS); no password in the URL (use --redis-password-file).
    #[arg(
        long,
        value_name = "URL",
        env = "ATTACHE_REDIS_URL",
        requires = "manifest"
    )]
    pub redis_url: Option<String>,
    /// File holding the Redis password.
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the Redis server's certificate (rediss://).
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The settings, files read now; None without `--redis-url`.
    pub(super) fn settings(&self) -> Result<Option<RedisSettings>, LoadError> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let file = |p: &Option<PathBuf>| -> Result<Option<SecretBytes>, LoadError> {
            p.as_ref()
                .map(|p| read(p).map(SecretBytes::new))
                .transpose()
        };
        let password = file(&self.redis_password_file)?;
        let ca = file(&self.redis_ca_file)?;
        RedisSettings::new(url, password, ca)
            .map(Some)
            .map_err(|e| LoadError::Invalid {
                path: PathBuf::from("--redis-url"),
                message: e.to_string(),
            })
    }
}
