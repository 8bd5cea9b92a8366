//! `attache-sidecar explain`: what the sidecar would send for one request, without sending it
//! and without reading a Secret. The integration is chosen as the listeners choose it, the
//! request goes through the same checks and preparation as the request path
//! ([`crate::proxy::prepare`], [`crate::proxy::headers`], [`join_upstream_uri`]), and
//! credentials are shown as where they would come from, never as values.

use std::{
    io::{self, Write},
    path::PathBuf,
};

use attache_api::{
    config::AuthConfig,
    manifest::read_integrations,
    render::{render, RenderOptions, SecretSource, SourceError},
    spec::{AuthSpec, ExternalIntegration},
    SecretBytes, SidecarConfig,
};
use clap::Args;
use http::{
    header::{HeaderName, HOST},
    uri::{Authority, Scheme},
    HeaderValue, Method, Request, Uri,
};

use crate::{
    config::{manifest_files, read, LoadError},
    integration::{join_upstream_uri, PathOrigin},
    proxy::{headers::strip_hop_by_hop, prepare},
};

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// ExternalIntegration manifests (files, or directories of *.yaml / *.yml).
    #[arg(
        short = 'f',
        long = "manifest",
        value_name = "FILE|DIR",
        required = true
    )]
    pub manifest: Vec<PathBuf>,
    /// First integration listener port, as given to `run` (integrations sorted by name).
    #[arg(long, value_name = "PORT", default_value_t = 15001)]
    pub first_port: u16,
    /// A request header the app would send, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// The request method, e.g. GET or POST.
    pub method: String,
    /// The URL the app would call: `http://127.0.0.1:PORT/path` (an integration's listener) or
    /// the third party's own `http://host/path` (through the proxy listener).
    pub url: String,
}

/// Why nothing could be explained: the inputs, named.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Input(String),
    #[error("no integration would take {url}: {why}")]
    NoIntegration { url: String, why: String },
    #[error("the sidecar would refuse this request (400 bad_request): {0}")]
    Refused(#[from] prepare::CheckError),
    #[error("cannot print: {0}")]
    Output(#[from] io::Error),
}

/// One integration as `run` would serve it, with the spec it came from.
struct Known {
    spec: ExternalIntegration,
    config: SidecarConfig,
    port: u16,
}

/// Prints the explanation of `args` on `out`.
pub fn run(args: &ExplainArgs, out: &mut dyn Write) -> Result<(), ExplainError> {
    let known = load(args)?;
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| ExplainError::Input(format!("{:?} is not an HTTP method", args.method)))?;
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e| ExplainError::Input(format!("URL {:?}: {e}", args.url)))?;
    if uri.scheme() != Some(&Scheme::HTTP) || uri.authority().is_none() {
        return Err(ExplainError::Input(format!(
            "URL {:?}: the app calls the sidecar with an absolute http:// URL",
            args.url
        )));
    }
    let (ig, origin, via) = choose(&known, &uri)?;

    let mut req = Request::builder().method(method.clone()).uri(uri.clone());
    if let Some(a) = uri.authority() {
        req = req.header(HOST, a.as_str());
    }
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| ExplainError::Input(format!("header {h:?}: expected `Name: value`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ExplainError::Input(format!("header {h:?}: invalid name")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| ExplainError::Input(format!("header {h:?}: invalid value")))?;
        req = req.header(name, value);
    }
    let (mut parts, ()) = req
        .body(())
        .map_err(|e| ExplainError::Input(format!("request: {e}")))?
        .into_parts();
    prepare::check(&parts)?;
    strip_hop_by_hop(&mut parts.headers);

    let cfg = &ig.config;
    let base = match origin {
        PathOrigin::Relative => cfg.upstream.base_path.as_str(),
        PathOrigin::Absolute => "",
    };
    let scheme: Scheme = match cfg.upstream.scheme {
        attache_api::config::Scheme::Http => Scheme::HTTP,
        attache_api::config::Scheme::Https => Scheme::HTTPS,
    };
    let authority: Authority = cfg
        .upstream
        .authority()
        .parse()
        .map_err(|e| ExplainError::Input(format!("upstream authority: {e}")))?;
    let target = join_upstream_uri(&scheme, &authority, base, parts.uri.path_and_query())
        .map_err(|e| ExplainError::Input(format!("request path: {e}")))?;
    let mut target = target.to_string();
    parts.headers.insert(
        HOST,
        HeaderValue::from_str(authority.as_str())
            .map_err(|e| ExplainError::Input(format!("upstream host: {e}")))?,
    );

    let mut lines: Vec<String> = parts
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<binary>")))
        .collect();
    let credential = credential(&ig.spec.spec.auth, &cfg.auth);
    match &cfg.auth {
        AuthConfig::QueryParam { name } => {
            let sep = if target.contains('?') { '&' } else { '?' };
            target.push_str(&format!("{sep}{name}={credential}"));
        }
        AuthConfig::None => {}
        AuthConfig::ApiKey { header, prefix } => {
            lines.retain(|l| !starts_with_header(l, header));
            lines.push(format!(
                "{}: {prefix}{credential}",
                header.to_ascii_lowercase()
            ));
        }
        AuthConfig::Bearer | AuthConfig::OAuth2ClientCredentials { .. } => {
            lines.retain(|l| !starts_with_header(l, "authorization"));
            lines.push(format!("authorization: Bearer {credential}"));
        }
        AuthConfig::Basic => {
            lines.retain(|l| !starts_with_header(l, "authorization"));
            lines.push(format!("authorization: Basic {credential}"));
        }
    }
    let retry = &cfg.retry;
    let idem = retry.idempotency_header.to_ascii_lowercase();
    let has_key = parts.headers.contains_key(idem.as_str());
    if !has_key
        && retry.generate_idempotency_key
        && (method == Method::POST || method == Method::PATCH)
    {
        lines.push(format!("{idem}: <a new UUID, the same on every attempt>"));
    }

    writeln!(out, "integration: {} (via {via})", cfg.name)?;
    writeln!(out, "upstream:    {method} {target}")?;
    writeln!(out, "headers sent:")?;
    for l in &lines {
        writeln!(out, "  {l}")?;
    }
    writeln!(out, "tls:         {}", tls(&ig.spec))?;
    writeln!(out, "policies:")?;
    let t = &cfg.timeouts;
    writeln!(
        out,
        "  timeouts: connect {}, per try {}, request {}, idle {}",
        t.connect, t.per_try, t.request, t.idle
    )?;
    let resend = retry::resendable(&method, has_key || retry.generate_idempotency_key);
    writeln!(
        out,
        "  retry: up to {} attempts on {}, backoff {}..{}, Retry-After {} (at most {}), budget {}% + {}/s; this request {}",
        retry.max_attempts,
        serde_json::to_string(&retry.retry_on).unwrap_or_default(),
        retry.backoff_base,
        retry.backoff_max,
        if retry.respect_retry_after { "respected" } else { "ignored" },
        retry.max_retry_after,
        retry.budget_ratio * 100.0,
        retry.budget_min_per_second,
        if resend { "may be resent after it reached the upstream" } else { "is resent only if it never reached the upstream (not idempotent, no key)" },
    )?;
    for (name, value) in [
        (
            "circuit breaker",
            serde_json::to_string(&cfg.circuit_breaker),
        ),
        ("rate limit", serde_json::to_string(&cfg.rate_limit)),
        ("concurrency", serde_json::to_string(&cfg.concurrency)),
    ] {
        writeln!(out, "  {name}: {}", value.unwrap_or_else(|e| e.to_string()))?;
    }
    if !cfg.upstream.failover.is_empty() {
        let endpoints: Vec<String> = cfg
            .upstream
            .failover
            .iter()
            .map(|e| {
                let scheme = match e.scheme {
                    attache_api::config::Scheme::Http => "http",
                    attache_api::config::Scheme::Https => "https",
                };
                format!("{scheme}://{}{}", e.authority(), e.base_path)
            })
            .collect();
        writeln!(
            out,
            "  failover (after a connect failure, a retryOn status or an open circuit): {}",
            endpoints.join(", ")
        )?;
    }
    if let Some(llm) = &cfg.llm {
        let value = serde_json::to_string(llm).unwrap_or_else(|e| e.to_string());
        writeln!(out, "  llm (tokens counted, limit headers obeyed): {value}")?;
    }
    Ok(())
}

/// What resending after the request reached the upstream depends on (DESIGN's retry rules,
/// as the README states them): an idempotent method, or a POST/PATCH with a key.
mod retry {
    use http::Method;

    pub fn resendable(method: &Method, keyed: bool) -> bool {
        method.is_idempotent() || (keyed && (method == Method::POST || method == Method::PATCH))
    }
}

fn starts_with_header(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The integrations of the manifests, sorted by name with their listener ports, rendered
/// without reading any Secret.
fn load(args: &ExplainArgs) -> Result<Vec<Known>, ExplainError> {
    let mut errors = Vec::new();
    let files = manifest_files(&args.manifest, &mut errors);
    let mut specs = Vec::new();
    for path in &files {
        let text = match read(path).and_then(|b| {
            String::from_utf8(b).map_err(|_| LoadError::Invalid {
                path: path.clone(),
                message: "not UTF-8 text".into(),
            })
        }) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let (found, problems) = read_integrations(&path.display().to_string(), &text);
        errors.extend(problems.into_iter().map(LoadError::Manifest));
        specs.extend(found);
    }
    if let Some(e) = LoadError::all(errors) {
        return Err(e.into());
    }
    let mut known = Vec::new();
    for spec in specs {
        // The TLS material is described from the spec; only its shape matters here.
        let mut shape = spec.clone();
        if let Some(tls) = shape.spec.tls.as_mut() {
            tls.client_certificate = None;
            tls.ca_bundle_ref = None;
        }
        let rendered = render(&shape, &Placeholders, RenderOptions::default()).map_err(|e| {
            ExplainError::Input(format!(
                "integration {:?}: {e}",
                spec.metadata.name.as_deref().unwrap_or("")
            ))
        })?;
        known.push((spec, rendered.config));
    }
    if known.is_empty() {
        return Err(ExplainError::Input(
            "no ExternalIntegration in the manifests".into(),
        ));
    }
    known.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    let mut out = Vec::new();
    for (i, (spec, config)) in known.into_iter().enumerate() {
        let port = u16::try_from(i)
            .ok()
            .and_then(|i| args.first_port.checked_add(i))
            .ok_or_else(|| ExplainError::Input("--first-port leaves no room".into()))?;
        out.push(Known { spec, config, port });
    }
    Ok(out)
}

/// The integration a listener would give `uri` to, and how.
fn choose<'a>(
    known: &'a [Known],
    uri: &Uri,
) -> Result<(&'a Known, PathOrigin, String), ExplainError> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = matches!(host, "127.0.0.1" | "localhost" | "::1");
    if local {
        let port = uri.port_u16().unwrap_or(80);
        return match known.iter().find(|k| k.port == port) {
            Some(k) => Ok((
                k,
                PathOrigin::Relative,
                format!("its listener 127.0.0.1:{port}, base path added"),
            )),
            None => Err(ExplainError::NoIntegration {
                url: uri.to_string(),
                why: format!(
                    "no integration listens on port {port} (ports: {})",
                    known
                        .iter()
                        .map(|k| format!("{} {}", k.config.name, k.port))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        };
    }
    match known
        .iter()
        .find(|k| k.config.upstream.host.eq_ignore_ascii_case(host))
    {
        Some(k) => Ok((
            k,
            PathOrigin::Absolute,
            "the proxy listener (ATTACHE_PROXY_URL), path as sent".into(),
        )),
        None => Err(ExplainError::NoIntegration {
            url: uri.to_string(),
            why: format!(
                "the proxy listener knows only {} (403 unknown_destination)",
                known
                    .iter()
                    .map(|k| k.config.upstream.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Where the credential comes from, in place of its value.
fn credential(auth: &Option<AuthSpec>, config: &AuthConfig) -> String {
    let Some(a) = auth else {
        return String::new();
    };
    let from = |name: &str, key: &str| format!("<redacted from Secret {name}/{key}>");
    if let Some(k) = &a.api_key {
        return from(&k.secret_key_ref.name, &k.secret_key_ref.key);
    }
    if let Some(b) = &a.bearer {
        return from(&b.secret_key_ref.name, &b.secret_key_ref.key);
    }
    if let Some(q) = &a.query_param {
        return from(&q.secret_key_ref.name, &q.secret_key_ref.key);
    }
    if let Some(b) = &a.basic {
        return format!(
            "<redacted: base64 of username:password from Secret {}>",
            b.secret_ref.name
        );
    }
    if let (Some(o), AuthConfig::OAuth2ClientCredentials { token_url, .. }) =
        (&a.oauth2_client_credentials, config)
    {
        return format!(
            "<redacted: access token from {token_url}, client {} with the secret from Secret {}/{}>",
            o.client_id, o.client_secret_ref.name, o.client_secret_ref.key
        );
    }
    String::new()
}

fn tls(x: &ExternalIntegration) -> String {
    let Some(t) = &x.spec.tls else {
        return "system roots (Mozilla), no client certificate".into();
    };
    let roots = match &t.ca_bundle_ref {
        Some(c) => format!(
            "CAs from {} {}/{}",
            match c.kind {
                Some(attache_api::spec::CaBundleKind::ConfigMap) => "ConfigMap",
                _ => "Secret",
            },
            c.name,
            c.key.as_deref().unwrap_or("ca.crt")
        ),
        None => "system roots (Mozilla)".into(),
    };
    let client = match &t.client_certificate {
        Some(c) => format!("client certificate from Secret {}", c.secret_name),
        None => "no client certificate".into(),
    };
    format!("{roots}, {client}")
}

/// Stands in for every Secret: explain never reads one.
struct Placeholders;

impl SecretSource for Placeholders {
    fn secret_key(&self, _: &str, _: &str) -> Result<SecretBytes, SourceError> {
        Ok(SecretBytes::new(b"placeholder".to_vec()))
    }

    fn config_map_key(&self, _: &str, _: &str) -> Result<SecretBytes, SourceError> {
        Ok(SecretBytes::new(b"placeholder".to_vec()))
    }
}
