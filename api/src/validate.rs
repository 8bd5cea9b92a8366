//! Semantic validation of a spec: every rule the CRD's schema and CEL rules enforce at
//! `kubectl apply`, checked again here so offline tools and the sidecar's local mode refuse the
//! same manifests with the same field names.
//!
//! A rule added here needs its twin in [`crate::spec`] (a CEL rule or a schema constraint);
//! the operator's `crd_agrees_with_validate` test holds a table of bad manifests that both
//! must refuse.

use std::fmt;

use url::Url;

use crate::{
    config::RetryOn,
    spec::{ExternalIntegrationSpec, OAuth2ClientCredentials},
};

/// One problem, named by its field path (`spec.retry.backoff.base`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec that passed validation, with what validation had to parse kept parsed: rendering
/// reads these instead of parsing the strings again.
#[derive(Debug, Clone)]
pub struct CheckedSpec<'a> {
    pub spec: &'a ExternalIntegrationSpec,
    /// `spec.upstream.url`: `https` (or `http` with `allowInsecure`), with a host, without
    /// credentials, query or fragment.
    pub upstream: Url,
    /// `spec.upstream.failover[].url`, in order, each checked like `upstream`.
    pub failover: Vec<Url>,
    /// `spec.auth.oauth2ClientCredentials` with its parsed `tokenUrl`, when that is the auth
    /// method.
    pub oauth2: Option<OAuth2<'a>>,
    /// `spec.retry.retryOn`, every entry known; `None` when the spec leaves it to the default.
    pub retry_on: Option<Vec<RetryOn>>,
}

/// The OAuth2 client-credentials method and its parsed `tokenUrl`.
pub type OAuth2<'a> = (&'a OAuth2ClientCredentials, Url);

/// The spec, checked: every rule of the CRD's schema and CEL rules. Fails with all problems at
/// once.
pub fn check_spec(spec: &ExternalIntegrationSpec) -> Result<CheckedSpec<'_>, Vec<FieldError>> {
    let mut errs = Errors::default();
    let upstream = upstream(spec, &mut errs);
    let failover = failover(spec, &mut errs);
    let oauth2 = auth(spec, &mut errs);
    tls(spec, &mut errs);
    timeouts(spec, &mut errs);
    let retry_on = retry(spec, &mut errs);
    breaker(spec, &mut errs);
    rate_limit(spec, &mut errs);
    llm(spec, &mut errs);
    if let Some(c) = &spec.concurrency {
        if c.max_in_flight == Some(0) {
            errs.push("spec.concurrency.maxInFlight", "must be at least 1");
        }
    }
    if let Some(w) = &spec.webhooks {
        crate::webhooks::validate::check(w, &mut errs.0);
    }
    match (upstream, oauth2, retry_on) {
        (Some(upstream), Some(oauth2), Some(retry_on)) if errs.0.is_empty() => Ok(CheckedSpec {
            spec,
            upstream,
            failover,
            oauth2,
            retry_on,
        }),
        _ => Err(errs.0),
    }
}

/// All problems of a spec; empty when it is valid.
pub fn validate_spec(spec: &ExternalIntegrationSpec) -> Vec<FieldError> {
    check_spec(spec).err().unwrap_or_default()
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }
}

/// The parsed URL, or `None` with the reason in `errs`.
fn upstream(spec: &ExternalIntegrationSpec, errs: &mut Errors) -> Option<Url> {
    let allow_insecure = spec.upstream.allow_insecure == Some(true);
    endpoint_url(
        "spec.upstream.url",
        &spec.upstream.url,
        allow_insecure,
        errs,
    )
}

/// The failover endpoints' parsed URLs (those that parse; the others are reported).
fn failover(spec: &ExternalIntegrationSpec, errs: &mut Errors) -> Vec<Url> {
    let allow_insecure = spec.upstream.allow_insecure == Some(true);
    let endpoints = spec.upstream.failover.as_deref().unwrap_or_default();
    if endpoints.len() > 8 {
        errs.push("spec.upstream.failover", "at most 8 endpoints");
    }
    endpoints
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let field = format!("spec.upstream.failover[{i}].url");
            endpoint_url(&field, &e.url, allow_insecure, errs)
        })
        .collect()
}

/// One endpoint's URL: `https` (or `http` with `allowInsecure`), with a host, without
/// credentials, query or fragment.
fn endpoint_url(field: &str, raw: &str, allow_insecure: bool, errs: &mut Errors) -> Option<Url> {
    let shape_ok = url_shape(field, raw, errs);
    let url = match Url::parse(raw) {
        Ok(u) => u,
        Err(_) if !shape_ok => return None,
        Err(e) => {
            errs.push(field, format!("not a valid URL ({e})"));
            return None;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        "http" => errs.push(
            field,
            "plain http:// sends credentials in clear text: use https:// or set spec.upstream.allowInsecure: true",
        ),
        other => errs.push(field, format!("scheme {other:?} is not supported: use https://")),
    }
    if shape_ok && url.host_str().is_none_or(str::is_empty) {
        errs.push(field, "has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        errs.push(field, "must not carry credentials: use spec.auth");
    }
    if url.query().is_some() || url.fragment().is_some() {
        errs.push(field, "must not have a query or fragment");
    }
    Some(url)
}

/// The CRD's CEL rules on URL strings, checked on the text as written: the `url` crate alone is
/// more forgiving (it percent-encodes spaces and skips the extra slashes of `https:///x`), so
/// without this a URL could pass here and be refused at `kubectl apply`, or the reverse.
/// Returns false when the string is not even shaped like an absolute URL.
fn url_shape(field: &str, raw: &str, errs: &mut Errors) -> bool {
    let mut ok = true;
    if raw.chars().any(|c| c.is_ascii_control() || c == ' ') {
        errs.push(field, "must not contain spaces or control characters");
        ok = false;
    }
    // `scheme://authority`, the authority ending at the first `/`, `?` or `#`.
    let authority = raw
        .split_once("://")
        .filter(|(scheme, _)| {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        })
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let host_char = |c: Option<char>| c.is_some_and(|c| !"/?#@:".contains(c));
    let has_host = authority.is_some_and(|a| {
        host_char(a.chars().next())
            || a.split_once('@')
                .is_some_and(|(_, host)| host_char(host.chars().next()))
    });
    if !has_host {
        errs.push(
            field,
            "must be an absolute URL with a host, like https://api.example.com",
        );
        ok = false;
    }
    ok
}

/// The OAuth2 method with its parsed token URL (`Some(None)` when the spec has none), or
/// `None` with the reason in `errs`.
fn auth<'a>(spec: &'a ExternalIntegrationSpec, errs: &mut Errors) -> Option<Option<OAuth2<'a>>> {
    let Some(a) = &spec.auth else {
        return Some(None);
    };
    let set = [
        a.api_key.is_some(),
        a.bearer.is_some(),
        a.basic.is_some(),
        a.query_param.is_some(),
        a.oauth2_client_credentials.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if set > 1 {
        errs.push(
            "spec.auth",
            "set at most one of apiKey, bearer, basic, queryParam, oauth2ClientCredentials",
        );
    }
    if let Some(k) = &a.api_key {
        if let Some(h) = &k.header {
            if http_header_name_invalid(h) {
                errs.push(
                    "spec.auth.apiKey.header",
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
        secret_key_ref("spec.auth.apiKey.secretKeyRef", &k.secret_key_ref, errs);
    }
    if let Some(b) = &a.bearer {
        secret_key_ref("spec.auth.bearer.secretKeyRef", &b.secret_key_ref, errs);
    }
    if let Some(b) = &a.basic {
        if b.secret_ref.name.is_empty() {
            errs.push("spec.auth.basic.secretRef.name", "must not be empty");
        }
    }
    if let Some(q) = &a.query_param {
        if q.name.is_empty() {
            errs.push("spec.auth.queryParam.name", "must not be empty");
        }
        secret_key_ref("spec.auth.queryParam.secretKeyRef", &q.secret_key_ref, errs);
    }
    let Some(o) = &a.oauth2_client_credentials else {
        return Some(None);
    };
    let field = "spec.auth.oauth2ClientCredentials.tokenUrl";
    let shape_ok = url_shape(field, &o.token_url, errs);
    let token_url = match Url::parse(&o.token_url) {
        Err(_) if !shape_ok => None,
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(u) if u.scheme() == "http" && spec.upstream.allow_insecure == Some(true) => Some(u),
        Ok(_) => {
            errs.push(
                field,
                "must be https:// (http:// only with spec.upstream.allowInsecure: true)",
            );
            None
        }
        Err(e) => {
            errs.push(field, format!("not a valid URL ({e})"));
            None
        }
    };
    if o.client_id.is_empty() {
        errs.push(
            "spec.auth.oauth2ClientCredentials.clientId",
            "must not be empty",
        );
    }
    secret_key_ref(
        "spec.auth.oauth2ClientCredentials.clientSecretRef",
        &o.client_secret_ref,
        errs,
    );
    token_url.map(|u| Some((o, u)))
}

fn secret_key_ref(field: &str, r: &crate::spec::SecretKeyRef, errs: &mut Errors) {
    if r.name.is_empty() {
        errs.push(&format!("{field}.name"), "must not be empty");
    }
    if r.key.is_empty() {
        errs.push(&format!("{field}.key"), "must not be empty");
    }
}

fn http_header_name_invalid(h: &str) -> bool {
    h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn tls(spec: &ExternalIntegrationSpec, errs: &mut Errors) {
    let Some(t) = &spec.tls else { return };
    if let Some(v) = &t.min_version {
        if v != "1.2" && v != "1.3" {
            errs.push(
                "spec.tls.minVersion",
                format!("{v:?} is not supported: use \"1.2\" or \"1.3\""),
            );
        }
    }
    if let Some(sn) = &t.server_name {
        if rustls_pki_types::ServerName::try_from(sn.as_str()).is_err() {
            errs.push(
                "spec.tls.serverName",
                format!("{sn:?} is not a valid DNS name or IP address"),
            );
        }
    }
    if let Some(ca) = &t.ca_bundle_ref {
        if ca.name.is_empty() {
            errs.push("spec.tls.caBundleRef.name", "must not be empty");
        }
    }
    if let Some(cc) = &t.client_certificate {
        if cc.secret_name.is_empty() {
            errs.push("spec.tls.clientCertificate.secretName", "must not be empty");
        }
    }
}

fn timeouts(spec: &ExternalIntegrationSpec, errs: &mut Errors) {
    let Some(t) = &spec.timeouts else { return };
    for (field, d) in [
        ("spec.timeouts.connect", t.connect),
        ("spec.timeouts.perTry", t.per_try),
        ("spec.timeouts.request", t.request),
        ("spec.timeouts.idle", t.idle),
    ] {
        if d.is_some_and(|d| d.is_zero()) {
            errs.push(field, "must be greater than 0");
        }
    }
}

/// The parsed `retryOn` list (`Some(None)` when the spec has none), or `None` with the reasons
/// in `errs`.
fn retry(spec: &ExternalIntegrationSpec, errs: &mut Errors) -> Option<Option<Vec<RetryOn>>> {
    let Some(r) = &spec.retry else {
        return Some(None);
    };
    if r.max_attempts == Some(0) {
        errs.push(
            "spec.retry.maxAttempts",
            "must be at least 1 (1 disables retries)",
        );
    }
    if r.max_attempts.is_some_and(|n| n > 10) {
        errs.push("spec.retry.maxAttempts", "must be at most 10");
    }
    if let Some(b) = &r.backoff {
        if b.base.is_some_and(|d| d.is_zero()) {
            errs.push("spec.retry.backoff.base", "must be greater than 0");
        }
        if b.max.is_some_and(|d| d.is_zero()) {
            errs.push("spec.retry.backoff.max", "must be greater than 0");
        }
        if let (Some(base), Some(max)) = (b.base, b.max) {
            if base > max {
                errs.push(
                    "spec.retry.backoff.base",
                    "must not exceed spec.retry.backoff.max",
                );
            }
        }
    }
    let retry_on = match &r.retry_on {
        None => Some(None),
        Some(list) => {
            let mut parsed = Vec::with_capacity(list.len());
            for (i, entry) in list.iter().enumerate() {
                match RetryOn::parse(entry) {
                    Some(on) => parsed.push(on),
                    None => errs.push(
                        &format!("spec.retry.retryOn[{i}]"),
                        format!("unknown value {entry:?}: use connect-failure, reset, timeout, 5xx or a status code 400-599"),
                    ),
                }
            }
            (parsed.len() == list.len()).then_some(Some(parsed))
        }
    };
    if let Some(k) = &r.idempotency_key {
        if let Some(h) = &k.header {
            if http_header_name_invalid(h) {
                errs.push(
                    "spec.retry.idempotencyKey.header",
                    format!("{h:?} is not a valid header name"),
                );
            }
        }
    }
    if let Some(b) = &r.budget {
        if let Some(ratio) = b.ratio {
            if !(0.0..=10.0).contains(&ratio) || ratio.is_nan() {
                errs.push("spec.retry.budget.ratio", "must be between 0 and 10");
            }
        }
    }
    retry_on
}

fn breaker(spec: &ExternalIntegrationSpec, errs: &mut Errors) {
    let Some(b) = &spec.circuit_breaker else {
        return;
    };
    if b.consecutive_failures.is_some() && b.failure_rate.is_some() {
        errs.push(
            "spec.circuitBreaker",
            "set either consecutiveFailures or failureRate, not both",
        );
    }
    if b.consecutive_failures == Some(0) {
        errs.push(
            "spec.circuitBreaker.consecutiveFailures",
            "must be at least 1",
        );
    }
    if let Some(fr) = &b.failure_rate {
        if !(1..=100).contains(&fr.percent) {
            errs.push(
                "spec.circuitBreaker.failureRate.percent",
                "must be between 1 and 100",
            );
        }
        if fr.window.is_some_and(|d| d.is_zero()) {
            errs.push(
                "spec.circuitBreaker.failureRate.window",
                "must be greater than 0",
            );
        }
        if fr.minimum_requests == Some(0) {
            errs.push(
                "spec.circuitBreaker.failureRate.minimumRequests",
                "must be at least 1",
            );
        }
    }
    if b.open_duration.is_some_and(|d| d.is_zero()) {
        errs.push("spec.circuitBreaker.openDuration", "must be greater than 0");
    }
    if b.max_open_duration.is_some_and(|d| d.is_zero()) {
        errs.push(
            "spec.circuitBreaker.maxOpenDuration",
            "must be greater than 0",
        );
    }
    if let (Some(open), Some(max)) = (b.open_duration, b.max_open_duration) {
        if open > max {
            errs.push(
                "spec.circuitBreaker.openDuration",
                "must not exceed spec.circuitBreaker.maxOpenDuration",
            );
        }
    }
    if b.half_open_requests == Some(0) {
        errs.push("spec.circuitBreaker.halfOpenRequests", "must be at least 1");
    }
}

fn rate_limit(spec: &ExternalIntegrationSpec, errs: &mut Errors) {
    let Some(r) = &spec.rate_limit else { return };
    if r.requests == 0 {
        errs.push("spec.rateLimit.requests", "must be at least 1");
    }
    if r.per.is_some_and(|d| d.is_zero()) {
        errs.push("spec.rateLimit.per", "must be greater than 0");
    }
    if r.burst == Some(0) {
        errs.push("spec.rateLimit.burst", "must be at least 1");
    }
    if let Some(q) = &r.quota {
        if r.scope != Some(crate::spec::RateLimitScope::Global) {
            errs.push(
                "spec.rateLimit",
                "spec.rateLimit.quota needs spec.rateLimit.scope: global (its counter lives in Redis)",
            );
        }
        if q.requests == 0 {
            errs.push("spec.rateLimit.quota.requests", "must be at least 1");
        }
        if q.per.as_duration() < std::time::Duration::from_secs(1) {
            errs.push("spec.rateLimit.quota.per", "must be at least 1s");
        }
    }
}

fn llm(spec: &ExternalIntegrationSpec, errs: &mut Errors) {
    let Some(l) = &spec.llm else { return };
    if l.tokens_per_minute == Some(0) {
        errs.push("spec.llm.tokensPerMinute", "must be at least 1");
    }
    if l.default_max_tokens == Some(0) {
        errs.push("spec.llm.defaultMaxTokens", "must be at least 1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AuthSpec, OAuth2ClientCredentials, SecretKeyRef, UpstreamSpec};

    fn spec(url: &str) -> ExternalIntegrationSpec {
        ExternalIntegrationSpec {
            upstream: UpstreamSpec {
                url: url.into(),
                allow_insecure: None,
                failover: None,
            },
            auth: None,
            tls: None,
            timeouts: None,
            retry: None,
            circuit_breaker: None,
            rate_limit: None,
            llm: None,
            concurrency: None,
            cache: None,
            webhooks: None,
            telemetry: None,
        }
    }

    fn fields(s: &ExternalIntegrationSpec) -> Vec<String> {
        validate_spec(s).into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn urls_are_judged_as_written_like_the_crd_does() {
        for good in [
            "https://api.example.com",
            "HTTPS://API.EXAMPLE.COM/v1/",
            "https://[2001:db8::1]:8443",
        ] {
            assert!(validate_spec(&spec(good)).is_empty(), "{good}");
        }
        // The url crate alone would accept these: it encodes the space and skips the slash.
        for bad in [
            "https://api.example.com/v 1",
            "https:///api.example.com",
            "https://:443/v1",
            "https://api.example.com\t",
            "api.example.com",
        ] {
            assert_eq!(fields(&spec(bad))[0], "spec.upstream.url", "{bad}");
        }
        let errs = validate_spec(&spec("https://user@api.example.com"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("credentials"));
    }

    #[test]
    fn token_urls_get_the_same_shape_checks() {
        let mut s = spec("https://api.example.com");
        s.auth = Some(AuthSpec {
            oauth2_client_credentials: Some(OAuth2ClientCredentials {
                token_url: "https:// auth.example.com/token".into(),
                client_id: "c".into(),
                client_secret_ref: SecretKeyRef {
                    name: "s".into(),
                    key: "k".into(),
                },
                scopes: vec![],
                audience: None,
            }),
            ..AuthSpec::default()
        });
        let errs = validate_spec(&s);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.auth.oauth2ClientCredentials.tokenUrl");
        assert!(errs[0].message.contains("spaces"), "{errs:?}");
    }

    #[test]
    fn a_checked_spec_carries_what_validation_parsed() {
        let s: ExternalIntegrationSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"url": "https://api.example.com/v1/"},
            "auth": {"oauth2ClientCredentials": {
                "tokenUrl": "https://auth.example.com/oauth/token", "clientId": "c",
                "clientSecretRef": {"name": "s", "key": "k"}}},
            "retry": {"retryOn": ["5xx", "429", "reset"]}
        }))
        .unwrap();
        let c = check_spec(&s).unwrap();
        assert_eq!(c.upstream.host_str(), Some("api.example.com"));
        assert_eq!(c.upstream.path(), "/v1/");
        let (o, token_url) = c.oauth2.unwrap();
        assert_eq!(o.client_id, "c");
        assert_eq!(token_url.path(), "/oauth/token");
        assert_eq!(
            c.retry_on,
            Some(vec![RetryOn::Any5xx, RetryOn::Status(429), RetryOn::Reset])
        );

        // Defaults are left to the renderer; no auth, no OAuth2.
        let plain = spec("https://api.example.com");
        let c = check_spec(&plain).unwrap();
        assert!(c.oauth2.is_none() && c.retry_on.is_none());
    }

    #[test]
    fn an_unknown_retry_on_entry_is_refused_not_dropped() {
        let s: ExternalIntegrationSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"url": "https://api.example.com"},
            "retry": {"retryOn": ["5xx", "teapot", "429"]}
        }))
        .unwrap();
        let errs = check_spec(&s).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.retry.retryOn[1]");
        assert!(errs[0].message.contains("teapot"), "{errs:?}");
    }

    #[test]
    fn upper_bounds_of_durations_must_be_positive_too() {
        let s: ExternalIntegrationSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"url": "https://api.example.com"},
            "retry": {"backoff": {"max": "0s"}},
            "circuitBreaker": {"maxOpenDuration": "0ms"}
        }))
        .unwrap();
        assert_eq!(
            fields(&s),
            [
                "spec.retry.backoff.max",
                "spec.circuitBreaker.maxOpenDuration"
            ]
        );
    }
}
