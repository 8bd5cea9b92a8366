//! `rateLimit.scope: global`: what the rendered config says about the Redis bucket, and how
//! the operator's Redis settings reach an integration's sidecars.
//!
//! The address goes into `config.json` (ConfigMap); the password and the CA only into the
//! generated Secret, as files the config names. A URL that carries a password itself is
//! refused, so the password has exactly one way in.

use crate::{
    config::{files, GlobalLimitConfig, QuotaConfig, RedisConfig},
    render::Rendered,
    secret::SecretBytes,
    spec::RateLimitSpec,
};

/// The key prefix of one integration's bucket and quota: `attache:{NAMESPACE/NAME}`. The braces
/// are a Redis Cluster hash tag, so both keys of an integration live on one node.
pub fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("attache:{{{ns}/{name}}}"),
        None => format!("attache:{{{name}}}"),
    }
}

pub(crate) fn limit_config(key: String, burst: u32, r: &RateLimitSpec) -> GlobalLimitConfig {
    GlobalLimitConfig {
        burst: burst.max(1),
        key,
        quota: r.quota.as_ref().map(|q| QuotaConfig {
            requests: q.requests,
            per: q.per,
        }),
        redis: None,
    }
}

/// The operator's Redis (`--redis-url`, plus the password and CA of
/// `globalRateLimits.redis.existingSecret`).
#[derive(Clone, Debug, PartialEq)]
pub struct RedisSettings {
    url: String,
    password: Option<SecretBytes>,
    ca: Option<SecretBytes>,
}

/// Why Redis settings were refused. Never contains the password.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RedisSettingsError {
    #[error("the Redis URL is not a URL ({0})")]
    NotAUrl(String),
    #[error("the Redis URL must start with redis:// or rediss://, not {0}://")]
    Scheme(String),
    #[error("the Redis URL has no host")]
    NoHost,
    #[error("the Redis URL must not carry a password: give it as a file (the Helm chart's globalRateLimits.redis.existingSecret, key password)")]
    PasswordInUrl,
    #[error("a Redis CA was given but the URL is redis:// (plain TCP): use rediss://")]
    CaWithoutTls,
    #[error("the Redis password is empty")]
    EmptyPassword,
}

impl RedisSettings {
    pub fn new(
        url: &str,
        password: Option<SecretBytes>,
        ca: Option<SecretBytes>,
    ) -> Result<Self, RedisSettingsError> {
        let parsed =
            url::Url::parse(url).map_err(|e| RedisSettingsError::NotAUrl(e.to_string()))?;
        let scheme = parsed.scheme();
        if scheme != "redis" && scheme != "rediss" {
            return Err(RedisSettingsError::Scheme(scheme.to_string()));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(RedisSettingsError::NoHost);
        }
        if parsed.password().is_some() {
            return Err(RedisSettingsError::PasswordInUrl);
        }
        if ca.is_some() && scheme != "rediss" {
            return Err(RedisSettingsError::CaWithoutTls);
        }
        let password = match password {
            Some(p) if p.expose_trimmed_str().map_or(true, str::is_empty) => {
                return Err(RedisSettingsError::EmptyPassword)
            }
            p => p,
        };
        Ok(Self {
            url: url.to_string(),
            password,
            ca,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn password(&self) -> Option<&SecretBytes> {
        self.password.as_ref()
    }

    pub fn ca(&self) -> Option<&SecretBytes> {
        self.ca.as_ref()
    }
}

/// Adds the Redis settings to a rendered integration with `scope: global` (others are left as
/// they are): the address into the config, the password and CA into the Secret's files.
pub fn with_redis(rendered: &mut Rendered, redis: &RedisSettings) {
    let Some(global) = rendered
        .config
        .rate_limit
        .as_mut()
        .and_then(|r| r.global.as_mut())
    else {
        return;
    };
    global.redis = Some(RedisConfig {
        url: redis.url.clone(),
        password: redis.password.is_some(),
        ca: redis.ca.is_some(),
    });
    if let Some(p) = &redis.password {
        rendered
            .files
            .insert(files::REDIS_PASSWORD.to_string(), p.clone());
    }
    if let Some(ca) = &redis.ca {
        rendered
            .files
            .insert(files::REDIS_CA.to_string(), ca.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_namespace_and_integration_in_one_hash_tag() {
        assert_eq!(key(Some("shop"), "stripe"), "attache:{shop/stripe}");
        assert_eq!(key(None, "stripe"), "attache:{stripe}");
    }

    #[test]
    fn settings_refuse_what_would_leak_or_cannot_work() {
        let pw = || Some(SecretBytes::new("s3cret"));
        assert!(RedisSettings::new("redis://r:6379", pw(), None).is_ok());
        assert!(
            RedisSettings::new("rediss://r:6380/2", pw(), Some(SecretBytes::new("pem"))).is_ok()
        );
        let e = RedisSettings::new("redis://:s3cret@r:6379", None, None).unwrap_err();
        assert_eq!(e, RedisSettingsError::PasswordInUrl);
        assert!(!e.to_string().contains("s3cret"));
        assert_eq!(
            RedisSettings::new("http://r", None, None).unwrap_err(),
            RedisSettingsError::Scheme("http".into())
        );
        assert_eq!(
            RedisSettings::new("redis://r", None, Some(SecretBytes::new("pem"))).unwrap_err(),
            RedisSettingsError::CaWithoutTls
        );
        assert_eq!(
            RedisSettings::new("redis://r", Some(SecretBytes::new("\n")), None).unwrap_err(),
            RedisSettingsError::EmptyPassword
        );
        assert!(matches!(
            RedisSettings::new("r:6379", None, None).unwrap_err(),
            RedisSettingsError::Scheme(_) | RedisSettingsError::NotAUrl(_)
        ));
    }
}
