//! Global rate limits (`rateLimit.scope: global`) on the operator's side: the Redis settings
//! (`--redis-url`, the password and CA files the Helm chart mounts from
//! `globalRateLimits.redis.existingSecret`), rendered into each such integration's generated
//! ConfigMap (address) and Secret (password, CA); and the operator's own check that Redis
//! answers, which the integration's `GlobalRateLimit` condition reports.
//!
//! The condition tells what the operator sees, not what each sidecar does: sidecars decide
//! for themselves (metric `attache_rate_limit_backend`) and may differ when the network does.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

use attache_api::{
    global::{RedisSettings, RedisSettingsError},
    SecretBytes,
};
use clap::Args;

pub mod condition;

/// How often the operator checks that Redis answers.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis flags of `attache-operator run`.
#[derive(Debug, Clone, Default, Args)]
pub struct RedisArgs {
    /// Redis (or Valkey) of `rateLimit.scope: global`: redis://HOST:PORT[/DB] or rediss://
    /// (TLS). No password in the URL: see --redis-password-file. Without it, global limits
    /// use the shared split.
    #[arg(long, value_name = "URL", env = "ATTACHE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// File holding the Redis password (Helm: globalRateLimits.redis.existingSecret, key
    /// `password`).
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_password_file: Option<PathBuf>,
    /// PEM CA of the Redis server's certificate, for rediss:// (Helm: existingSecret, key
    /// `ca.crt`).
    #[arg(long, value_name = "FILE", requires = "redis_url")]
    pub redis_ca_file: Option<PathBuf>,
}

/// Why the Redis flags cannot be used. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum RedisArgsError {
    #[error("--redis-url: {0}")]
    Settings(#[from] RedisSettingsError),
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RedisArgs {
    /// The settings, files read now; None without `--redis-url`.
    pub fn settings(&self) -> Result<Option<RedisSettings>, RedisArgsError> {
        let Some(url) = &self.redis_url else {
            return Ok(None);
        };
        let read = |flag, p: &Option<PathBuf>| -> Result<Option<SecretBytes>, RedisArgsError> {
            p.as_ref()
                .map(|path| {
                    std::fs::read(path).map(SecretBytes::new).map_err(|source| {
                        RedisArgsError::Read {
                            flag,
                            path: path.clone(),
                            source,
                        }
                    })
                })
                .transpose()
        };
        let password = read("--redis-password-file", &self.redis_password_file)?;
        let ca = read("--redis-ca-file", &self.redis_ca_file)?;
        Ok(Some(RedisSettings::new(url, password, ca)?))
    }
}

/// What the operator's last check of Redis found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// No `--redis-url`.
    NotConfigured,
    /// Not checked yet.
    Unknown,
    Answers,
    Unreachable,
}

/// The Redis settings and the result of the operator's check, shared with the controller.
#[derive(Debug, Clone)]
pub struct GlobalLimits {
    pub redis: Option<RedisSettings>,
    state: Arc<AtomicU8>,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self::new(None)
    }
}

impl GlobalLimits {
    pub fn new(redis: Option<RedisSettings>) -> Self {
        let initial = if redis.is_some() {
            Reachability::Unknown
        } else {
            Reachability::NotConfigured
        };
        Self {
            redis,
            state: Arc::new(AtomicU8::new(initial as u8)),
        }
    }

    pub fn reachability(&self) -> Reachability {
        match self.state.load(Ordering::Acquire) {
            0 => Reachability::NotConfigured,
            1 => Reachability::Unknown,
            2 => Reachability::Answers,
            _ => Reachability::Unreachable,
        }
    }

    fn set(&self, r: Reachability) {
        self.state.store(r as u8, Ordering::Release);
    }

    /// Checks Redis every [`CHECK_EVERY`] (PING, with the password) until the process ends.
    pub async fn check_forever(self) -> Result<(), String> {
        let Some(redis) = self.redis.clone() else {
            return Ok(());
        };
        let client = match client(&redis) {
            Ok(c) => c,
            Err(e) => {
                self.set(Reachability::Unreachable);
                return Err(format!("cannot build a Redis client: {:?}", e.kind()));
            }
        };
        loop {
            let answered = tokio::time::timeout(CHECK_TIMEOUT, async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
            let now = match answered {
                Ok(Ok(_)) => Reachability::Answers,
                Ok(Err(e)) => {
                    tracing::warn!(error_kind = ?e.kind(), "global rate limits: Redis did not answer PING");
                    Reachability::Unreachable
                }
                Err(_) => Reachability::Unreachable,
            };
            if now != self.reachability() {
                tracing::info!(reachability = ?now, "global rate limits: Redis reachability changed");
            }
            self.set(now);
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }
}

fn client(s: &RedisSettings) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = s.url().into_connection_info()?;
    if let Some(pw) = s.password() {
        let pw = pw.expose_trimmed_str().unwrap_or_default();
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    match s.ca() {
        Some(ca) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.expose().to_vec()),
            },
        ),
        None => redis::Client::open(info),
    }
}
