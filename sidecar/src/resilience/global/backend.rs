//! The connection to Redis: built lazily from the rendered config (the password and CA come
//! from the integration's Secret files), kept by redis-rs's connection manager, which
//! reconnects by itself. Every call is bounded by [`REDIS_TIMEOUT`]: past it the limiter
//! falls back rather than make the app wait.

use std::time::Duration;

use attache_api::{
    config::{files, RedisConfig},
    SecretBytes,
};
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, IntoConnectionInfo, TlsCertificates,
};

/// How long one Redis call may take before the limiter treats Redis as away.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// Why the Redis settings of a config cannot be used. Carries no password.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("redis URL is invalid: {0}")]
    Url(String),
    #[error("secret file {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("redis client: {0}")]
    Client(String),
}

/// A lazily connected, self-reconnecting Redis connection.
pub fn connect(
    cfg: &RedisConfig,
    secret: impl Fn(&'static str) -> Option<SecretBytes>,
) -> Result<ConnectionManager, RedisSetupError> {
    let mut info = cfg
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| RedisSetupError::Url(format!("{:?}", e.kind())))?;
    if cfg.password {
        let pw = secret(files::REDIS_PASSWORD).unwrap_or_default();
        let pw = pw
            .expose_trimmed_str()
            .map_err(|_| RedisSetupError::NotUtf8(files::REDIS_PASSWORD))?;
        let settings = info.redis_settings().clone().set_password(pw);
        info = info.set_redis_settings(settings);
    }
    let client = match (cfg.ca, secret(files::REDIS_CA)) {
        (true, Some(ca)) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.expose().to_vec()),
            },
        ),
        _ => Client::open(info),
    }
    .map_err(|e| RedisSetupError::Client(format!("{:?}", e.kind())))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT))
        // Reconnects are the prober's business: fail a call at once rather than retry inside.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| RedisSetupError::Client(format!("{:?}", e.kind())))
}
