//! One integration, ready to serve: its config, pooled client, credentials and metric handles.
//!
//! Built whole from a [`LoadedIntegration`] and never mutated: a reload builds a new one and
//! swaps it in, so requests in flight finish with the config they started with.

use std::{sync::Arc, time::Duration};

use attache_api::{
    config::{files, Scheme, TlsConfig, UpstreamConfig},
    SidecarConfig,
};
use http::{uri::PathAndQuery, HeaderName, HeaderValue, Uri};
use rustls_pki_types::ServerName;

use crate::{
    config::LoadedIntegration,
    credentials::{CredentialError, Credentials},
    metrics::{IntegrationMetrics, Metrics},
    resilience::{
        global::{
            backend::{self, RedisSetupError},
            GlobalGauges, GlobalLimiter,
        },
        Policies,
    },
    upstream::{
        tls::{self, TlsMaterial, TlsSetupError},
        Connector, UpstreamClient,
    },
};

/// Why a loaded config could not be turned into a serving integration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("integration {name:?}: {source}")]
    Tls { name: String, source: TlsSetupError },
    #[error("integration {name:?}: {source}")]
    Credentials {
        name: String,
        source: CredentialError,
    },
    #[error("integration {name:?}: upstream {what} is invalid")]
    Upstream { name: String, what: String },
    #[error("integration {name:?}: {source}")]
    Webhooks {
        name: String,
        source: crate::webhooks::EndpointError,
    },
    #[error("integration {name:?}: global rate limit: {source}")]
    Redis {
        name: String,
        source: RedisSetupError,
    },
}

/// The one Redis connection of a `scope: global` integration (its rate limit and its LLM
/// token budget share it); None without Redis.
fn global_redis(
    loaded: &LoadedIntegration,
) -> Result<Option<redis::aio::ConnectionManager>, RedisSetupError> {
    let Some(redis) = loaded
        .config
        .rate_limit
        .as_ref()
        .and_then(|rl| rl.global.as_ref()?.redis.as_ref())
    else {
        return Ok(None);
    };
    backend::connect(redis, |f| loaded.files.get(f).cloned()).map(Some)
}

/// The Redis token bucket of an LLM budget with `scope: global` (None otherwise).
fn global_tokens(
    loaded: &LoadedIntegration,
    conn: Option<&redis::aio::ConnectionManager>,
) -> Option<crate::resilience::global::tokens::RedisTokens> {
    let per_minute = loaded.config.llm.as_ref()?.tokens_per_minute?;
    let global = loaded.config.rate_limit.as_ref()?.global.as_ref()?;
    Some(crate::resilience::global::tokens::RedisTokens::new(
        conn?.clone(),
        &global.key,
        per_minute,
    ))
}

/// The Redis bucket of a `scope: global` limit (None for other scopes).
fn global_limiter(
    loaded: &LoadedIntegration,
    metrics: &Metrics,
    conn: Option<&redis::aio::ConnectionManager>,
) -> Option<GlobalLimiter> {
    let rl = loaded.config.rate_limit.as_ref()?;
    rl.global.as_ref()?;
    let label = Metrics::label(&loaded.config.name);
    let gauges = GlobalGauges {
        backend: metrics.rate_limit_backend.get_or_create(&label).clone(),
        quota_remaining: metrics.quota_remaining.get_or_create(&label).clone(),
    };
    Some(GlobalLimiter::new(rl, conn.cloned(), gauges))
}

/// What an integration's upstream client is made of. A reload that changes none of it (a
/// rotated API key, a new rate limit) keeps the client: its pooled connections and its TLS
/// session cache, so the next call neither reconnects nor pays a full handshake.
#[derive(PartialEq)]
struct ClientInputs {
    upstream: UpstreamConfig,
    tls: TlsConfig,
    connect_timeout: Duration,
    /// SHA-256 over the CA bundle, client chain and key files (not the bytes themselves: the
    /// key stays only where TLS needs it).
    material: [u8; 32],
}

impl ClientInputs {
    fn of(loaded: &LoadedIntegration) -> Self {
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for file in [files::CA_BUNDLE, files::CLIENT_CERT, files::CLIENT_KEY] {
            match loaded.files.get(file) {
                Some(bytes) => {
                    digest.update(&(bytes.expose().len() as u64 + 1).to_be_bytes());
                    digest.update(bytes.expose());
                }
                None => digest.update(&0u64.to_be_bytes()),
            }
        }
        let mut material = [0; 32];
        material.copy_from_slice(digest.finish().as_ref());
        let config = &loaded.config;
        Self {
            upstream: config.upstream.clone(),
            tls: config.tls.clone(),
            connect_timeout: config.timeouts.connect.as_duration(),
            material,
        }
    }
}

/// A new upstream client: TLS settings, SNI, connect timeout.
fn new_client(
    loaded: &LoadedIntegration,
    bad: &dyn Fn(&str) -> BuildError,
) -> Result<UpstreamClient, BuildError> {
    let config = &loaded.config;
    let name = &config.name;
    let up = &config.upstream;
    let tls_config = tls::client_config(
        &config.tls,
        TlsMaterial {
            ca_bundle: loaded.files.get(files::CA_BUNDLE),
            client_chain: loaded.files.get(files::CLIENT_CERT),
            client_key: loaded.files.get(files::CLIENT_KEY),
        },
    )
    .map_err(|source| BuildError::Tls {
        name: name.clone(),
        source,
    })?;
    let sni = match &config.tls.server_name {
        Some(sn) => Some((
            up.host.clone(),
            ServerName::try_from(sn.clone()).map_err(|_| bad("tls.serverName"))?,
        )),
        None => None,
    };
    let connector = Connector::new(
        tls_config,
        config.timeouts.connect.as_duration(),
        sni,
        up.scheme == Scheme::Http,
    );
    Ok(UpstreamClient::new(connector))
}

/// How the app named a request's path, which decides whether the base path is added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathOrigin {
    /// On the integration's own listener: `/charges` means `BASE/charges`.
    Relative,
    /// Through the HTTP proxy listener: `http://HOST/v1/charges` is already the full path.
    Absolute,
}

/// A failover endpoint of the same API: where an attempt goes instead of the primary.
pub struct Endpoint {
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// `Host` sent to this endpoint.
    pub host_header: HeaderValue,
    base_path: String,
}

pub struct Integration {
    pub name: String,
    pub config: SidecarConfig,
    /// `Host` sent upstream.
    pub host_header: HeaderValue,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    pub client: UpstreamClient,
    /// What `client` was made of, to keep it across a reload that changes none of it.
    client_inputs: ClientInputs,
    /// `upstream.failover`, in order (endpoint `i + 1`); the client keeps a pool for each.
    pub failover: Vec<Endpoint>,
    pub credentials: Credentials,
    pub policies: Arc<Policies>,
    /// The header carrying the idempotency key (`retry.idempotencyKey.header`).
    pub idempotency_header: HeaderName,
    /// Every series of this integration, typed (counts on the hot path hash nothing).
    pub metrics: IntegrationMetrics,
    pub client_certificate_not_after: Option<i64>,
    /// The inbound webhook endpoint, when the integration has `webhooks`.
    pub webhook: Option<Arc<crate::webhooks::Endpoint>>,
}

impl Integration {
    /// Builds an integration; `previous` (the one being replaced on reload) lends its policy
    /// state when the policy config is unchanged.
    pub fn build(
        loaded: &LoadedIntegration,
        metrics: &Metrics,
        previous: Option<&Integration>,
    ) -> Result<Self, BuildError> {
        let config = loaded.config.clone();
        let name = config.name.clone();
        let up = &config.upstream;
        let client_inputs = ClientInputs::of(loaded);
        let bad = |what: &str| BuildError::Upstream {
            name: name.clone(),
            what: what.to_string(),
        };
        let client = match previous {
            Some(p) if p.client_inputs == client_inputs => p.client.clone(),
            _ => new_client(loaded, &bad)?,
        };
        let credentials =
            Credentials::from_config(&config.auth, &loaded.files, &client).map_err(|source| {
                BuildError::Credentials {
                    name: name.clone(),
                    source,
                }
            })?;
        let authority = up.host_port().parse().map_err(|_| bad("host"))?;
        let host_header = HeaderValue::try_from(up.authority()).map_err(|_| bad("host"))?;
        let scheme = uri_scheme(up.scheme);
        let failover = up
            .failover
            .iter()
            .map(|e| {
                Ok(Endpoint {
                    scheme: uri_scheme(e.scheme),
                    authority: e.host_port().parse().map_err(|_| bad("failover host"))?,
                    host_header: HeaderValue::try_from(e.authority())
                        .map_err(|_| bad("failover host"))?,
                    base_path: e.base_path.clone(),
                })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let idempotency_header = HeaderName::try_from(config.retry.idempotency_header.as_str())
            .map_err(|_| bad("retry.idempotencyKey.header"))?;
        let series = IntegrationMetrics::new(metrics, &name);
        let policies = match previous {
            Some(p) if p.policies.built_from(&config) => p.policies.clone(),
            _ => {
                let redis = global_redis(loaded).map_err(|source| BuildError::Redis {
                    name: name.clone(),
                    source,
                })?;
                let mut policies = Policies::new(&config, series.circuit.clone());
                if let Some(limiter) = global_limiter(loaded, metrics, redis.as_ref()) {
                    policies = policies.with_global(limiter);
                }
                if let Some(remote) = global_tokens(loaded, redis.as_ref()) {
                    policies = policies.with_global_tokens(remote);
                }
                Arc::new(policies)
            }
        };
        series.circuit.set(policies.breaker.state() as i64);
        if let Some(t) = loaded.client_certificate_not_after {
            series.client_certificate_expiry(t);
        }
        let webhook =
            crate::webhooks::Endpoint::build(loaded, previous.and_then(|p| p.webhook.as_deref()))
                .map_err(|source| BuildError::Webhooks {
                    name: name.clone(),
                    source,
                })?
                .map(Arc::new);
        Ok(Self {
            webhook,
            name,
            host_header,
            scheme,
            authority,
            client,
            client_inputs,
            failover,
            credentials,
            policies,
            idempotency_header,
            metrics: series,
            client_certificate_not_after: loaded.client_certificate_not_after,
            config,
        })
    }

    /// The upstream URI for the app's path and query: on the integration's own listener the
    /// path is relative to the upstream URL's base path; through the proxy listener the app
    /// named the third party's full URL, base path included, so it is sent as it is.
    pub fn upstream_uri(
        &self,
        pq: Option<&PathAndQuery>,
        origin: PathOrigin,
    ) -> Result<Uri, http::Error> {
        let base = match origin {
            PathOrigin::Relative => self.config.upstream.base_path.as_str(),
            PathOrigin::Absolute => "",
        };
        join_upstream_uri(&self.scheme, &self.authority, base, pq)
    }

    /// The URI of a request to failover endpoint `i` (1-based, as in `x-attache-endpoint`):
    /// the app's path after the primary's base path, under the endpoint's own base path.
    pub fn endpoint_uri(&self, i: usize, primary: &Uri) -> Option<(Uri, &HeaderValue)> {
        let e = self.failover.get(i.checked_sub(1)?)?;
        let pq = primary.path_and_query().map_or("/", PathAndQuery::as_str);
        let base = self.config.upstream.base_path.as_str();
        let relative = match pq.strip_prefix(base) {
            Some(rest) if rest.is_empty() || rest.starts_with(['/', '?']) => rest,
            _ => pq,
        };
        let relative: PathAndQuery = if relative.is_empty() {
            PathAndQuery::from_static("/")
        } else {
            relative.parse().ok()?
        };
        let uri = join_upstream_uri(&e.scheme, &e.authority, &e.base_path, Some(&relative)).ok()?;
        Some((uri, &e.host_header))
    }

    pub fn per_try_timeout(&self) -> Duration {
        self.config.timeouts.per_try.as_duration()
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.timeouts.request.as_duration()
    }

    /// Longest pause between two chunks of a response body.
    pub fn idle_timeout(&self) -> Duration {
        self.config.timeouts.idle.as_duration()
    }
}

fn uri_scheme(s: Scheme) -> http::uri::Scheme {
    match s {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    }
}

/// `scheme://authority` + `base` + the app's path and query (`/` when it sent none).
pub fn join_upstream_uri(
    scheme: &http::uri::Scheme,
    authority: &http::uri::Authority,
    base: &str,
    pq: Option<&PathAndQuery>,
) -> Result<Uri, http::Error> {
    let pq = pq.map(PathAndQuery::as_str).unwrap_or("/");
    let full = if base.is_empty() {
        pq.to_string()
    } else {
        format!("{base}{pq}")
    };
    Uri::builder()
        .scheme(scheme.clone())
        .authority(authority.clone())
        .path_and_query(full)
        .build()
}

/// Every integration being served, by name and by upstream host; swapped whole on reload.
#[derive(Default)]
pub struct Snapshot {
    /// Sorted by name: index `i` listens on `first_port + i`.
    pub integrations: Vec<Arc<Integration>>,
}

impl Snapshot {
    pub fn build(
        loaded: &[LoadedIntegration],
        metrics: &Metrics,
        previous: Option<&Snapshot>,
    ) -> Result<Self, BuildError> {
        let integrations = loaded
            .iter()
            .map(|l| {
                let prev = previous.and_then(|p| p.by_name(&l.config.name));
                Integration::build(l, metrics, prev.map(|a| a.as_ref())).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { integrations })
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Integration>> {
        self.integrations.iter().find(|i| i.name == name)
    }

    /// The integration whose upstream host is `host` (case-insensitive, port ignored).
    pub fn by_host(&self, host: &str) -> Option<&Arc<Integration>> {
        self.integrations
            .iter()
            .find(|i| i.config.upstream.host.eq_ignore_ascii_case(host))
    }

    pub fn names(&self) -> Vec<&str> {
        self.integrations.iter().map(|i| i.name.as_str()).collect()
    }
}
