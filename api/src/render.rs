//! Spec + resolved secret material → the sidecar's config and the generated Secret's files.
//!
//! Pure: secret material comes through [`SecretSource`], so the operator (reading Kubernetes
//! Secrets), `attache-operator render` and the sidecar's local mode (reading files) all produce
//! the same bytes from the same inputs.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_openapi::jiff::Timestamp;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::{
    config::{self, files, *},
    defaults as d,
    secret::SecretBytes,
    spec::{
        CaBundleKind, CaBundleRef, ClientCertificateRef, ExternalIntegration,
        ExternalIntegrationSpec, RateLimitScope,
    },
    validate::{check_spec, CheckedSpec, FieldError},
};

/// Where Secrets and ConfigMaps referenced by a spec are looked up.
pub trait SecretSource {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError>;
    fn config_map_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError>;
}

/// Why a [`SecretSource`] could not answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("not found")]
    ObjectNotFound,
    #[error("has no key")]
    KeyNotFound,
    #[error("{0}")]
    Unavailable(String),
}

/// Inputs that are not part of the spec.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Pods currently using the integration; a `scope: shared` rate limit is divided by it.
    pub pods_sharing: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self { pods_sharing: 1 }
    }
}

/// The result: what ConfigMap `attache-NAME` and Secret `attache-NAME` hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub config: SidecarConfig,
    /// Secret file name → contents; exactly the material this integration needs.
    pub files: BTreeMap<String, SecretBytes>,
    /// `notAfter` of the client certificate (leaf), Unix seconds.
    pub client_certificate_not_after: Option<i64>,
}

impl Rendered {
    /// The ConfigMap's data: `config.json`, stable formatting so unchanged input gives no diff.
    pub fn config_map_data(&self) -> BTreeMap<String, String> {
        let json = serde_json::to_string_pretty(&self.config).expect("config serializes");
        BTreeMap::from([(CONFIG_FILE.to_string(), json + "\n")])
    }
}

/// A spec that is valid but cannot be served; `reason()` is the status condition reason.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("invalid spec: {}", join(.0))]
    Invalid(Vec<FieldError>),
    #[error("{field}: Secret {name:?} not found")]
    SecretNotFound { field: String, name: String },
    #[error("{field}: ConfigMap {name:?} not found")]
    ConfigMapNotFound { field: String, name: String },
    #[error("{field}: {kind} {name:?} has no key {key:?}")]
    KeyNotFound {
        field: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{field}: {kind} {name:?} key {key:?} is not usable: {reason}")]
    CertificateInvalid {
        field: String,
        kind: &'static str,
        name: String,
        key: String,
        reason: String,
    },
    #[error("{field}: {kind} {name:?} key {key:?} is empty")]
    EmptyCredential {
        field: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{field}: could not read {kind} {name:?}: {message}")]
    SourceUnavailable {
        field: String,
        kind: &'static str,
        name: String,
        message: String,
    },
    /// Several of the above at once, each once: one run names everything there is to fix.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<RenderError>),
}

fn join(errs: &[FieldError]) -> String {
    errs.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl RenderError {
    /// One error for `problems` (at least one), duplicates dropped.
    fn all(problems: Vec<RenderError>) -> RenderError {
        let mut unique: Vec<RenderError> = Vec::with_capacity(problems.len());
        for p in problems.into_iter().flat_map(RenderError::into_problems) {
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        if unique.len() == 1 {
            unique.remove(0)
        } else {
            RenderError::Several(unique)
        }
    }

    fn into_problems(self) -> Vec<RenderError> {
        match self {
            RenderError::Several(list) => list,
            one => vec![one],
        }
    }

    /// Each problem on its own (one, unless this is [`RenderError::Several`]).
    pub fn problems(&self) -> Vec<&RenderError> {
        match self {
            RenderError::Several(list) => list.iter().collect(),
            one => vec![one],
        }
    }

    /// The `Ready=False` reason this error maps to (the first problem's, for several).
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Several(list) => list.first().map_or("InvalidSpec", RenderError::reason),
            RenderError::Invalid(_) => "InvalidSpec",
            RenderError::SecretNotFound { .. } => "SecretNotFound",
            RenderError::ConfigMapNotFound { .. } => "ConfigMapNotFound",
            RenderError::KeyNotFound { .. } => "KeyNotFound",
            RenderError::CertificateInvalid { .. } => "CertificateInvalid",
            RenderError::EmptyCredential { .. } => "EmptyCredential",
            RenderError::SourceUnavailable { .. } => "SecretUnavailable",
        }
    }
}

/// A client certificate whose `notBefore` is at most this far ahead of our clock is accepted:
/// one just issued by a clock slightly ahead of ours is not "not yet valid" for long.
pub const NOT_BEFORE_LEEWAY_SECS: i64 = 60;

/// Renders one integration, checking certificate dates against the system clock.
pub fn render(
    xint: &ExternalIntegration,
    source: &dyn SecretSource,
    opts: RenderOptions,
) -> Result<Rendered, RenderError> {
    render_at(xint, source, opts, SystemTime::now())
}

/// [`render`] with the clock given: a client certificate must be valid at `now`.
pub fn render_at(
    xint: &ExternalIntegration,
    source: &dyn SecretSource,
    opts: RenderOptions,
    now: SystemTime,
) -> Result<Rendered, RenderError> {
    let name = xint.metadata.name.clone().unwrap_or_default();
    let spec = &xint.spec;
    let checked = match check_spec(spec) {
        Ok(checked) if !name.is_empty() => checked,
        result => {
            let mut problems = result.err().unwrap_or_default();
            if name.is_empty() {
                problems.insert(
                    0,
                    FieldError {
                        field: "metadata.name".into(),
                        message: "must be set".into(),
                    },
                );
            }
            return Err(RenderError::Invalid(problems));
        }
    };
    let mut files = BTreeMap::new();
    let mut upstream = upstream_config(&checked.upstream);
    upstream.failover = checked.failover.iter().map(upstream_config).collect();
    let auth = auth_config(&checked, source, &mut files);
    let tls = tls_config(spec, source, unix_secs(now), &mut files);
    let l = Lookup { source };
    let webhooks = spec
        .webhooks
        .as_ref()
        .map(|w| crate::webhooks::render::render(&name, w, |f, n, k| l.secret(f, n, k)))
        .transpose();
    let (auth, (tls, not_after), webhooks) = match (auth, tls, webhooks) {
        (Ok(auth), Ok(tls), Ok(webhooks)) => (auth, tls, webhooks),
        (auth, tls, webhooks) => {
            return Err(RenderError::all(
                [auth.err(), tls.err(), webhooks.err()]
                    .into_iter()
                    .flatten()
                    .collect(),
            ))
        }
    };
    let webhooks = webhooks.map(|(config, (file, secrets))| {
        files.insert(file, secrets);
        config
    });
    let key = crate::global::key(xint.metadata.namespace.as_deref(), &name);
    let config = SidecarConfig {
        api_version: CONFIG_API_VERSION.to_string(),
        name,
        namespace: xint.metadata.namespace.clone(),
        upstream,
        auth,
        tls,
        timeouts: timeouts_config(spec),
        retry: retry_config(&checked),
        circuit_breaker: breaker_config(spec),
        rate_limit: rate_limit_config(spec, opts, key),
        concurrency: concurrency_config(spec),
        llm: llm_config(spec, opts),
        webhooks,
        cache: spec.cache.as_ref().map(|c| CacheConfig {
            max_bytes: c.max_bytes.bytes(),
            stale_if_error: c.stale_if_error.unwrap_or_default(),
        }),
        telemetry: TelemetryConfig {
            propagate_trace_context: spec
                .telemetry
                .as_ref()
                .and_then(|t| t.propagate_trace_context)
                .unwrap_or(false),
        },
    };
    Ok(Rendered {
        config,
        files,
        client_certificate_not_after: not_after,
    })
}

/// Names of the Secrets and ConfigMaps a spec reads, for watches and "who uses this Secret".
pub fn referenced_objects(spec: &ExternalIntegrationSpec) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut config_maps = Vec::new();
    if let Some(a) = &spec.auth {
        if let Some(k) = &a.api_key {
            secrets.push(k.secret_key_ref.name.clone());
        }
        if let Some(b) = &a.bearer {
            secrets.push(b.secret_key_ref.name.clone());
        }
        if let Some(b) = &a.basic {
            secrets.push(b.secret_ref.name.clone());
        }
        if let Some(q) = &a.query_param {
            secrets.push(q.secret_key_ref.name.clone());
        }
        if let Some(o) = &a.oauth2_client_credentials {
            secrets.push(o.client_secret_ref.name.clone());
        }
    }
    if let Some(t) = &spec.tls {
        if let Some(ca) = &t.ca_bundle_ref {
            match ca.kind.unwrap_or(CaBundleKind::Secret) {
                CaBundleKind::Secret => secrets.push(ca.name.clone()),
                CaBundleKind::ConfigMap => config_maps.push(ca.name.clone()),
            }
        }
        if let Some(cc) = &t.client_certificate {
            secrets.push(cc.secret_name.clone());
        }
    }
    if let Some(w) = &spec.webhooks {
        secrets.push(w.verify.secret_key_ref.name.clone());
    }
    secrets.sort();
    secrets.dedup();
    config_maps.sort();
    config_maps.dedup();
    (secrets, config_maps)
}

/// From the checked upstream URL: http or https, with a host.
fn upstream_config(url: &url::Url) -> UpstreamConfig {
    let scheme = if url.scheme() == "http" {
        Scheme::Http
    } else {
        Scheme::Https
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => String::new(),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let base_path = url.path().trim_end_matches('/').to_string();
    UpstreamConfig {
        scheme,
        host,
        port,
        base_path,
        failover: Vec::new(),
    }
}

struct Lookup<'a> {
    source: &'a dyn SecretSource,
}

impl Lookup<'_> {
    fn secret(&self, field: &str, name: &str, key: &str) -> Result<SecretBytes, RenderError> {
        self.get(field, "Secret", name, key)
    }

    fn get(
        &self,
        field: &str,
        kind: &'static str,
        name: &str,
        key: &str,
    ) -> Result<SecretBytes, RenderError> {
        let got = if kind == "Secret" {
            self.source.secret_key(name, key)
        } else {
            self.source.config_map_key(name, key)
        };
        match got {
            Ok(v) => Ok(v),
            Err(SourceError::ObjectNotFound) if kind == "Secret" => {
                Err(RenderError::SecretNotFound {
                    field: field.into(),
                    name: name.into(),
                })
            }
            Err(SourceError::ObjectNotFound) => Err(RenderError::ConfigMapNotFound {
                field: field.into(),
                name: name.into(),
            }),
            Err(SourceError::KeyNotFound) => Err(RenderError::KeyNotFound {
                field: field.into(),
                kind,
                name: name.into(),
                key: key.into(),
            }),
            Err(SourceError::Unavailable(message)) => Err(RenderError::SourceUnavailable {
                field: field.into(),
                kind,
                name: name.into(),
                message,
            }),
        }
    }

    /// A credential: must be non-empty UTF-8 once trimmed (header values are text).
    fn credential(&self, field: &str, name: &str, key: &str) -> Result<SecretBytes, RenderError> {
        let v = self.secret(field, name, key)?;
        match v.expose_trimmed_str() {
            Ok(s) if !s.is_empty() => Ok(SecretBytes::new(s.as_bytes())),
            _ => Err(RenderError::EmptyCredential {
                field: field.into(),
                kind: "Secret",
                name: name.into(),
                key: key.into(),
            }),
        }
    }
}

fn auth_config(
    checked: &CheckedSpec<'_>,
    source: &dyn SecretSource,
    out: &mut BTreeMap<String, SecretBytes>,
) -> Result<AuthConfig, RenderError> {
    let l = Lookup { source };
    let Some(a) = &checked.spec.auth else {
        return Ok(AuthConfig::None);
    };
    if let Some(k) = &a.api_key {
        let r = &k.secret_key_ref;
        let v = l.credential("spec.auth.apiKey.secretKeyRef", &r.name, &r.key)?;
        out.insert(files::AUTH_CREDENTIAL.into(), v);
        return Ok(AuthConfig::ApiKey {
            header: k.header.clone().unwrap_or_else(|| d::API_KEY_HEADER.into()),
            prefix: k.prefix.clone().unwrap_or_else(|| d::API_KEY_PREFIX.into()),
        });
    }
    if let Some(b) = &a.bearer {
        let r = &b.secret_key_ref;
        let v = l.credential("spec.auth.bearer.secretKeyRef", &r.name, &r.key)?;
        out.insert(files::AUTH_CREDENTIAL.into(), v);
        return Ok(AuthConfig::Bearer);
    }
    if let Some(b) = &a.basic {
        let n = &b.secret_ref.name;
        let user = l.credential("spec.auth.basic.secretRef", n, d::BASIC_USERNAME_KEY);
        let pass = l.credential("spec.auth.basic.secretRef", n, d::BASIC_PASSWORD_KEY);
        let (user, pass) = both(user, pass)?;
        out.insert(files::AUTH_USERNAME.into(), user);
        out.insert(files::AUTH_PASSWORD.into(), pass);
        return Ok(AuthConfig::Basic);
    }
    if let Some(q) = &a.query_param {
        let r = &q.secret_key_ref;
        let v = l.credential("spec.auth.queryParam.secretKeyRef", &r.name, &r.key)?;
        out.insert(files::AUTH_CREDENTIAL.into(), v);
        return Ok(AuthConfig::QueryParam {
            name: q.name.clone(),
        });
    }
    if let Some((o, token_url)) = &checked.oauth2 {
        let r = &o.client_secret_ref;
        let v = l.credential(
            "spec.auth.oauth2ClientCredentials.clientSecretRef",
            &r.name,
            &r.key,
        )?;
        out.insert(files::OAUTH2_CLIENT_SECRET.into(), v);
        return Ok(AuthConfig::OAuth2ClientCredentials {
            token_url: token_url.to_string(),
            client_id: o.client_id.clone(),
            scopes: o.scopes.clone(),
            audience: o.audience.clone(),
        });
    }
    Ok(AuthConfig::None)
}

fn tls_config(
    spec: &ExternalIntegrationSpec,
    source: &dyn SecretSource,
    now: i64,
    out: &mut BTreeMap<String, SecretBytes>,
) -> Result<(TlsConfig, Option<i64>), RenderError> {
    let l = Lookup { source };
    let t = spec.tls.clone().unwrap_or_default();
    // Both looked at, so that one run names every problem.
    let ca = t.ca_bundle_ref.as_ref().map(|ca| ca_bundle(&l, ca, out));
    let client = t
        .client_certificate
        .as_ref()
        .map(|cc| client_certificate(&l, cc, now, out));
    let (ca, not_after) = both(ca.transpose(), client.transpose())?;
    let min_version = match t.min_version.as_deref() {
        Some("1.3") => TlsVersion::V1_3,
        _ => TlsVersion::V1_2,
    };
    Ok((
        TlsConfig {
            custom_ca: ca.is_some(),
            client_certificate: not_after.is_some(),
            min_version,
            server_name: t.server_name.clone(),
        },
        not_after,
    ))
}

/// `spec.tls.caBundleRef`: a PEM bundle of X.509 certificates, into `out`.
fn ca_bundle(
    l: &Lookup<'_>,
    ca: &CaBundleRef,
    out: &mut BTreeMap<String, SecretBytes>,
) -> Result<(), RenderError> {
    let field = "spec.tls.caBundleRef";
    let key = ca.key.as_deref().unwrap_or(d::CA_BUNDLE_KEY);
    let kind = match ca.kind.unwrap_or(CaBundleKind::Secret) {
        CaBundleKind::Secret => "Secret",
        CaBundleKind::ConfigMap => "ConfigMap",
    };
    let pem = l.get(field, kind, &ca.name, key)?;
    let bad = |reason: String| RenderError::CertificateInvalid {
        field: field.into(),
        kind,
        name: ca.name.clone(),
        key: key.into(),
        reason,
    };
    let certs = parse_certs(pem.expose()).map_err(bad)?;
    for c in &certs {
        leaf_not_after(c).map_err(bad)?;
    }
    out.insert(files::CA_BUNDLE.into(), pem);
    Ok(())
}

/// `spec.tls.clientCertificate`: a chain and its key, usable at `now`, into `out`; returns the
/// leaf's `notAfter`.
fn client_certificate(
    l: &Lookup<'_>,
    cc: &ClientCertificateRef,
    now: i64,
    out: &mut BTreeMap<String, SecretBytes>,
) -> Result<i64, RenderError> {
    let field = "spec.tls.clientCertificate";
    let name = &cc.secret_name;
    let (chain, key) = both(
        l.secret(field, name, d::TLS_CERT_KEY),
        l.secret(field, name, d::TLS_KEY_KEY),
    )?;
    let bad = |k: &str, reason: String| RenderError::CertificateInvalid {
        field: field.into(),
        kind: "Secret",
        name: name.clone(),
        key: k.into(),
        reason,
    };
    let certs = parse_certs(chain.expose()).map_err(|r| bad(d::TLS_CERT_KEY, r))?;
    let not_after = leaf_not_after(&certs[0]).map_err(|r| bad(d::TLS_CERT_KEY, r))?;
    let private_key = PrivateKeyDer::from_pem_slice(key.expose())
        .map_err(|e| bad(d::TLS_KEY_KEY, format!("no PEM private key ({e})")))?;
    check_client_pair(&certs[0], &private_key, now).map_err(|(k, r)| bad(k, r))?;
    out.insert(files::CLIENT_CERT.into(), chain);
    out.insert(files::CLIENT_KEY.into(), key);
    Ok(not_after)
}

/// What the sidecar and the third party would refuse, found where the Secret can be named: a
/// certificate outside its validity at `now` (Unix seconds), or a key that is not the
/// certificate's. The error names the key (`tls.crt` or `tls.key`) at fault.
fn check_client_pair(
    leaf: &CertificateDer<'_>,
    key: &PrivateKeyDer<'_>,
    now: i64,
) -> Result<(), (&'static str, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| (d::TLS_CERT_KEY, format!("not an X.509 certificate ({e})")))?;
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now > not_after {
        return Err((
            d::TLS_CERT_KEY,
            format!("the certificate expired at {}", rfc3339(not_after)),
        ));
    }
    if not_before > now + NOT_BEFORE_LEEWAY_SECS {
        return Err((
            d::TLS_CERT_KEY,
            format!(
                "the certificate is not valid before {}",
                rfc3339(not_before)
            ),
        ));
    }
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| {
        (
            d::TLS_KEY_KEY,
            format!("unsupported private key ({e}): RSA, ECDSA P-256/P-384 or Ed25519 expected"),
        )
    })?;
    // A key type whose public half cannot be derived is left to the TLS handshake.
    if let Some(public) = signing_key.public_key() {
        if public.as_ref() != cert.public_key().raw {
            return Err((
                d::TLS_KEY_KEY,
                format!(
                    "the private key does not belong to the certificate in {} (a key pair \
                     from another certificate?)",
                    d::TLS_CERT_KEY
                ),
            ));
        }
    }
    Ok(())
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// `2027-03-01T00:00:00Z`, or the raw seconds outside the years 0000-9999.
fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map_or_else(|_| format!("{secs} (Unix seconds)"), |t| t.to_string())
}

/// Both values, or every problem of the two.
fn both<A, B>(a: Result<A, RenderError>, b: Result<B, RenderError>) -> Result<(A, B), RenderError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(RenderError::all(
            [a.err(), b.err()].into_iter().flatten().collect(),
        )),
    }
}

/// Parses a PEM bundle into DER certificates; at least one is required.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("malformed PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// `notAfter` of a DER certificate in Unix seconds; fails if it is not X.509.
pub fn leaf_not_after(der: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    Ok(cert.validity().not_after.timestamp())
}

fn timeouts_config(spec: &ExternalIntegrationSpec) -> TimeoutsConfig {
    let t = spec.timeouts.clone().unwrap_or_default();
    TimeoutsConfig {
        connect: t.connect.unwrap_or(d::CONNECT_TIMEOUT),
        per_try: t.per_try.unwrap_or(d::PER_TRY_TIMEOUT),
        request: t.request.unwrap_or(d::REQUEST_TIMEOUT),
        idle: t.idle.unwrap_or(d::IDLE_TIMEOUT),
    }
}

fn retry_config(checked: &CheckedSpec<'_>) -> RetryConfig {
    let r = checked.spec.retry.clone().unwrap_or_default();
    let backoff = r.backoff.clone().unwrap_or_default();
    let key = r.idempotency_key.clone().unwrap_or_default();
    let budget = r.budget.clone().unwrap_or_default();
    let backoff_base = backoff.base.unwrap_or(d::BACKOFF_BASE);
    RetryConfig {
        max_attempts: r.max_attempts.unwrap_or(d::MAX_ATTEMPTS),
        backoff_base,
        backoff_max: backoff.max.unwrap_or(d::BACKOFF_MAX).max(backoff_base),
        retry_on: checked
            .retry_on
            .clone()
            .unwrap_or_else(|| d::RETRY_ON.to_vec()),
        respect_retry_after: r.respect_retry_after.unwrap_or(d::RESPECT_RETRY_AFTER),
        max_retry_after: r.max_retry_after.unwrap_or(d::MAX_RETRY_AFTER),
        idempotency_header: key.header.unwrap_or_else(|| d::IDEMPOTENCY_HEADER.into()),
        generate_idempotency_key: key.generate.unwrap_or(d::GENERATE_IDEMPOTENCY_KEY),
        budget_ratio: budget.ratio.unwrap_or(d::BUDGET_RATIO),
        budget_min_per_second: budget.min_per_second.unwrap_or(d::BUDGET_MIN_PER_SECOND),
        replay_buffer_bytes: d::REPLAY_BUFFER_BYTES,
    }
}

fn breaker_config(spec: &ExternalIntegrationSpec) -> CircuitBreakerConfig {
    let b = spec.circuit_breaker.clone().unwrap_or_default();
    let trip = match (&b.failure_rate, b.consecutive_failures) {
        (Some(fr), None) => BreakerMode::FailureRate {
            percent: fr.percent,
            window: fr.window.unwrap_or(d::FAILURE_RATE_WINDOW),
            minimum_requests: fr
                .minimum_requests
                .unwrap_or(d::FAILURE_RATE_MINIMUM_REQUESTS),
        },
        (_, n) => BreakerMode::ConsecutiveFailures {
            failures: n.unwrap_or(d::CONSECUTIVE_FAILURES),
        },
    };
    let open_duration = b.open_duration.unwrap_or(d::OPEN_DURATION);
    CircuitBreakerConfig {
        trip,
        open_duration,
        max_open_duration: b
            .max_open_duration
            .unwrap_or(d::MAX_OPEN_DURATION)
            .max(open_duration),
        half_open_requests: b.half_open_requests.unwrap_or(d::HALF_OPEN_REQUESTS),
    }
}

fn rate_limit_config(
    spec: &ExternalIntegrationSpec,
    opts: RenderOptions,
    key: String,
) -> Option<RateLimitConfig> {
    let r = spec.rate_limit.as_ref()?;
    let scope = r.scope.unwrap_or(d::RATE_LIMIT_SCOPE);
    let pods = match scope {
        RateLimitScope::Pod => 1,
        RateLimitScope::Shared | RateLimitScope::Global => opts.pods_sharing.max(1),
    };
    let burst = r.burst.unwrap_or(r.requests);
    let global =
        (scope == RateLimitScope::Global).then(|| crate::global::limit_config(key, burst, r));
    Some(RateLimitConfig {
        requests: r.requests,
        per: r.per.unwrap_or(d::RATE_LIMIT_PER),
        burst: (burst / pods).max(1),
        scope,
        on_limit: r.on_limit.unwrap_or(d::ON_LIMIT),
        max_queue_wait: r.max_queue_wait.unwrap_or(d::MAX_QUEUE_WAIT),
        pods,
        global,
    })
}

/// The token budget is shared among pods exactly as the request rate is (`rateLimit.scope`),
/// and over budget it queues or rejects as the rate limit does.
fn llm_config(spec: &ExternalIntegrationSpec, opts: RenderOptions) -> Option<LlmConfig> {
    let l = spec.llm.as_ref()?;
    let rl = spec.rate_limit.as_ref();
    let pods = match rl.and_then(|r| r.scope).unwrap_or(d::RATE_LIMIT_SCOPE) {
        RateLimitScope::Pod => 1,
        _ => opts.pods_sharing.max(1),
    };
    Some(LlmConfig {
        provider: l.provider,
        tokens_per_minute: l.tokens_per_minute,
        pods,
        default_max_tokens: l.default_max_tokens.unwrap_or(d::LLM_DEFAULT_MAX_TOKENS),
        on_limit: rl.and_then(|r| r.on_limit).unwrap_or(d::ON_LIMIT),
        max_queue_wait: rl
            .and_then(|r| r.max_queue_wait)
            .unwrap_or(d::MAX_QUEUE_WAIT),
    })
}

fn concurrency_config(spec: &ExternalIntegrationSpec) -> ConcurrencyConfig {
    let rl = spec.rate_limit.as_ref();
    ConcurrencyConfig {
        max_in_flight: spec
            .concurrency
            .as_ref()
            .and_then(|c| c.max_in_flight)
            .unwrap_or(d::MAX_IN_FLIGHT),
        // With a rate limit the bulkhead follows its onLimit (default queue); without one a
        // full bulkhead rejects at once.
        on_limit: rl.map_or(config::default_concurrency_on_limit(), |r| {
            r.on_limit.unwrap_or(d::ON_LIMIT)
        }),
        max_queue_wait: rl
            .and_then(|r| r.max_queue_wait)
            .unwrap_or(d::MAX_QUEUE_WAIT),
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
