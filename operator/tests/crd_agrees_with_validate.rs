//! `attache-operator validate` and the CRD (OpenAPI schema + CEL rules, evaluated client-side by
//! kube-cel the way the API server evaluates them) must accept and refuse the same manifests,
//! and every refusal must name the field. The api crate's `validate_spec` (what `render`, the
//! controller and the sidecar's local mode use) must refuse them too whenever serde can read
//! the manifest at all.

use attache_api::{validate_spec, ExternalIntegration, FieldError};
use attache_operator::{crd, validate};
use serde_json::Value;

/// Which part of the CRD refuses a case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layer {
    /// An `x-kubernetes-validations` rule.
    Cel,
    /// An OpenAPI value constraint (minimum, maxLength, pattern, enum, type).
    Schema,
    /// The object's structure (unknown or missing fields): serde alone cannot see these.
    Structure,
}

use Layer::*;

/// (what is wrong, the field a message must name, who refuses it, the spec). Specs without
/// an `upstream` get `upstream: {url: "https://api.example.com"}`.
#[rustfmt::skip]
const BAD: &[(&str, &str, Layer, &str)] = &[
    // CEL rules.
    ("two auth methods", "spec.auth", Cel, r#"{auth: {apiKey: {secretKeyRef: {name: k, key: k}}, bearer: {secretKeyRef: {name: k, key: k}}}}"#),
    ("three auth methods", "spec.auth", Cel, r#"{auth: {basic: {secretRef: {name: k}}, queryParam: {name: api_key, secretKeyRef: {name: k, key: k}}, oauth2ClientCredentials: {tokenUrl: "https://a.example/t", clientId: c, clientSecretRef: {name: k, key: k}}}}"#),
    ("plain http", "spec.upstream.url", Cel, r#"{upstream: {url: "http://api.example.com"}}"#),
    ("plain http, allowInsecure false", "spec.upstream.url", Cel, r#"{upstream: {url: "http://api.example.com", allowInsecure: false}}"#),
    ("ftp scheme", "spec.upstream.url", Cel, r#"{upstream: {url: "ftp://files.example.com", allowInsecure: true}}"#),
    ("no scheme", "spec.upstream.url", Cel, r#"{upstream: {url: api.example.com}}"#),
    ("credentials in the URL", "spec.upstream.url", Cel, r#"{upstream: {url: "https://user:secret@api.example.com"}}"#),
    ("query in the URL", "spec.upstream.url", Cel, r#"{upstream: {url: "https://api.example.com/v1?key=1"}}"#),
    ("fragment in the URL", "spec.upstream.url", Cel, r#"{upstream: {url: "https://api.example.com/#top"}}"#),
    ("space in the URL", "spec.upstream.url", Cel, r#"{upstream: {url: "https://api.example.com/v 1"}}"#),
    ("URL without a host", "spec.upstream.url", Cel, r#"{upstream: {url: "https:///v1"}}"#),
    ("URL with only a port", "spec.upstream.url", Cel, r#"{upstream: {url: "https://:443/v1"}}"#),
    ("plain http failover", "spec.upstream.failover", Cel, r#"{upstream: {url: "https://api.example.com", failover: [{url: "http://eu.api.example.com"}]}}"#),
    ("failover URL with credentials", "spec.upstream.failover[", Cel, r#"{upstream: {url: "https://api.example.com", failover: [{url: "https://u:p@eu.api.example.com"}]}}"#),
    ("failover URL with a query", "spec.upstream.failover[", Cel, r#"{upstream: {url: "https://api.example.com", failover: [{url: "https://eu.api.example.com"}, {url: "https://us.api.example.com/?x=1"}]}}"#),
    ("failover URL without a host", "spec.upstream.failover[", Cel, r#"{upstream: {url: "https://api.example.com", failover: [{url: "https:///v1"}]}}"#),
    ("invalid apiKey header", "spec.auth.apiKey.header", Cel, r#"{auth: {apiKey: {header: "X Api Key", secretKeyRef: {name: k, key: k}}}}"#),
    ("plain http token URL", "spec.auth.oauth2ClientCredentials.tokenUrl", Cel, r#"{auth: {oauth2ClientCredentials: {tokenUrl: "http://auth.example.com/token", clientId: c, clientSecretRef: {name: k, key: k}}}}"#),
    ("token URL is not a URL", "spec.auth.oauth2ClientCredentials.tokenUrl", Cel, r#"{auth: {oauth2ClientCredentials: {tokenUrl: token, clientId: c, clientSecretRef: {name: k, key: k}}}}"#),
    ("TLS 1.1", "spec.tls.minVersion", Cel, r#"{tls: {minVersion: "1.1"}}"#),
    ("serverName with spaces", "spec.tls.serverName", Cel, r#"{tls: {serverName: "bank api"}}"#),
    ("serverName label ending in a hyphen", "spec.tls.serverName", Cel, r#"{tls: {serverName: api-.bank.example}}"#),
    ("zero connect timeout", "spec.timeouts.connect", Cel, r#"{timeouts: {connect: "0s"}}"#),
    ("zero perTry timeout", "spec.timeouts.perTry", Cel, r#"{timeouts: {perTry: "0ms"}}"#),
    ("zero request timeout", "spec.timeouts.request", Cel, r#"{timeouts: {request: "0m"}}"#),
    ("zero backoff base", "spec.retry.backoff.base", Cel, r#"{retry: {backoff: {base: "0s"}}}"#),
    ("zero backoff max", "spec.retry.backoff.max", Cel, r#"{retry: {backoff: {max: "0s"}}}"#),
    ("backoff base above max", "spec.retry.backoff.base", Cel, r#"{retry: {backoff: {base: "1m", max: "10s"}}}"#),
    ("backoff base above max, mixed units", "spec.retry.backoff.base", Cel, r#"{retry: {backoff: {base: "1h1m1s", max: "61m"}}}"#),
    ("unknown retryOn", "spec.retry.retryOn", Cel, r#"{retry: {retryOn: [reset, teapot]}}"#),
    ("retryOn a 3xx", "spec.retry.retryOn", Cel, r#"{retry: {retryOn: ["302"]}}"#),
    ("retryOn 600", "spec.retry.retryOn", Cel, r#"{retry: {retryOn: ["503", "600"]}}"#),
    ("retryOn 4xx (only 5xx has a class)", "spec.retry.retryOn", Cel, r#"{retry: {retryOn: ["4xx"]}}"#),
    ("invalid idempotency header", "spec.retry.idempotencyKey.header", Cel, r#"{retry: {idempotencyKey: {header: "Idempotency:Key"}}}"#),
    ("both breaker modes", "spec.circuitBreaker", Cel, r#"{circuitBreaker: {consecutiveFailures: 5, failureRate: {percent: 50}}}"#),
    ("openDuration above maxOpenDuration", "spec.circuitBreaker.openDuration", Cel, r#"{circuitBreaker: {openDuration: "10m", maxOpenDuration: "5m"}}"#),
    ("zero openDuration", "spec.circuitBreaker.openDuration", Cel, r#"{circuitBreaker: {openDuration: "0s"}}"#),
    ("zero maxOpenDuration", "spec.circuitBreaker.maxOpenDuration", Cel, r#"{circuitBreaker: {maxOpenDuration: "0s"}}"#),
    ("zero failure-rate window", "spec.circuitBreaker.failureRate.window", Cel, r#"{circuitBreaker: {failureRate: {percent: 50, window: "0s"}}}"#),
    ("zero rate-limit period", "spec.rateLimit.per", Cel, r#"{rateLimit: {requests: 10, per: "0s"}}"#),
    ("quota without scope global", "spec.rateLimit", Cel, r#"{rateLimit: {requests: 10, quota: {requests: 1000, per: 24h}}}"#),
    ("quota with scope shared", "spec.rateLimit", Cel, r#"{rateLimit: {requests: 10, scope: shared, quota: {requests: 1000, per: 24h}}}"#),
    ("quota window under a second", "spec.rateLimit.quota.per", Cel, r#"{rateLimit: {requests: 10, scope: global, quota: {requests: 1000, per: 500ms}}}"#),
    // OpenAPI value constraints.
    ("zero maxAttempts", "spec.retry.maxAttempts", Schema, r#"{retry: {maxAttempts: 0}}"#),
    ("eleven maxAttempts", "spec.retry.maxAttempts", Schema, r#"{retry: {maxAttempts: 11}}"#),
    ("negative maxAttempts", "spec.retry.maxAttempts", Schema, r#"{retry: {maxAttempts: -1}}"#),
    ("retry budget ratio above 10", "spec.retry.budget.ratio", Schema, r#"{retry: {budget: {ratio: 10.5}}}"#),
    ("negative retry budget ratio", "spec.retry.budget.ratio", Schema, r#"{retry: {budget: {ratio: -0.1}}}"#),
    ("zero consecutiveFailures", "spec.circuitBreaker.consecutiveFailures", Schema, r#"{circuitBreaker: {consecutiveFailures: 0}}"#),
    ("zero failure percent", "spec.circuitBreaker.failureRate.percent", Schema, r#"{circuitBreaker: {failureRate: {percent: 0}}}"#),
    ("failure percent above 100", "spec.circuitBreaker.failureRate.percent", Schema, r#"{circuitBreaker: {failureRate: {percent: 101}}}"#),
    ("zero minimumRequests", "spec.circuitBreaker.failureRate.minimumRequests", Schema, r#"{circuitBreaker: {failureRate: {percent: 50, minimumRequests: 0}}}"#),
    ("zero halfOpenRequests", "spec.circuitBreaker.halfOpenRequests", Schema, r#"{circuitBreaker: {halfOpenRequests: 0}}"#),
    ("zero rate-limit requests", "spec.rateLimit.requests", Schema, r#"{rateLimit: {requests: 0}}"#),
    ("zero burst", "spec.rateLimit.burst", Schema, r#"{rateLimit: {requests: 10, burst: 0}}"#),
    ("zero maxInFlight", "spec.concurrency.maxInFlight", Schema, r#"{concurrency: {maxInFlight: 0}}"#),
    ("zero tokensPerMinute", "spec.llm.tokensPerMinute", Schema, r#"{llm: {provider: openai, tokensPerMinute: 0}}"#),
    ("zero defaultMaxTokens", "spec.llm.defaultMaxTokens", Schema, r#"{llm: {provider: anthropic, defaultMaxTokens: 0}}"#),
    ("maxInFlight beyond u32", "spec.concurrency.maxInFlight", Schema, r#"{concurrency: {maxInFlight: 5000000000}}"#),
    ("empty secret name", "spec.auth.apiKey.secretKeyRef.name", Schema, r#"{auth: {apiKey: {secretKeyRef: {name: "", key: k}}}}"#),
    ("empty secret key", "spec.auth.bearer.secretKeyRef.key", Schema, r#"{auth: {bearer: {secretKeyRef: {name: k, key: ""}}}}"#),
    ("empty basic secret", "spec.auth.basic.secretRef.name", Schema, r#"{auth: {basic: {secretRef: {name: ""}}}}"#),
    ("empty query parameter", "spec.auth.queryParam.name", Schema, r#"{auth: {queryParam: {name: "", secretKeyRef: {name: k, key: k}}}}"#),
    ("empty client id", "spec.auth.oauth2ClientCredentials.clientId", Schema, r#"{auth: {oauth2ClientCredentials: {tokenUrl: "https://a.example/t", clientId: "", clientSecretRef: {name: k, key: k}}}}"#),
    ("empty CA bundle name", "spec.tls.caBundleRef.name", Schema, r#"{tls: {caBundleRef: {name: ""}}}"#),
    ("empty client certificate secret", "spec.tls.clientCertificate.secretName", Schema, r#"{tls: {clientCertificate: {secretName: ""}}}"#),
    ("empty URL", "spec.upstream.url", Schema, r#"{upstream: {url: ""}}"#),
    ("English duration", "spec.timeouts.connect", Schema, r#"{timeouts: {connect: "5 seconds"}}"#),
    ("fractional duration", "spec.retry.maxRetryAfter", Schema, r#"{retry: {maxRetryAfter: "1.5s"}}"#),
    ("day duration", "spec.rateLimit.maxQueueWait", Schema, r#"{rateLimit: {requests: 1, maxQueueWait: "1d"}}"#),
    ("unknown CA bundle kind", "spec.tls.caBundleRef.kind", Schema, r#"{tls: {caBundleRef: {kind: Pod, name: ca}}}"#),
    ("unknown rate-limit scope", "spec.rateLimit.scope", Schema, r#"{rateLimit: {requests: 10, scope: cluster}}"#),
    ("zero quota requests", "spec.rateLimit.quota.requests", Schema, r#"{rateLimit: {requests: 10, scope: global, quota: {requests: 0, per: 24h}}}"#),
    ("unknown onLimit", "spec.rateLimit.onLimit", Schema, r#"{rateLimit: {requests: 10, onLimit: drop}}"#),
    ("nine failover endpoints", "spec.upstream.failover", Schema, r#"{upstream: {url: "https://a.example.com", failover: [{url: "https://b1.example.com"}, {url: "https://b2.example.com"}, {url: "https://b3.example.com"}, {url: "https://b4.example.com"}, {url: "https://b5.example.com"}, {url: "https://b6.example.com"}, {url: "https://b7.example.com"}, {url: "https://b8.example.com"}, {url: "https://b9.example.com"}]}}"#),
    ("zero cache size", "spec.cache.maxBytes", Schema, r#"{cache: {maxBytes: 0}}"#),
    ("negative cache size", "spec.cache.maxBytes", Schema, r#"{cache: {maxBytes: -1}}"#),
    ("cache size in MB", "spec.cache.maxBytes", Schema, r#"{cache: {maxBytes: 16MB}}"#),
    ("cache without a size", "spec.cache.maxBytes", Schema, r#"{cache: {staleIfError: 10m}}"#),
    ("unknown LLM provider", "spec.llm.provider", Schema, r#"{llm: {provider: gemini}}"#),
    ("LLM without a provider", "spec.llm.provider", Schema, r#"{llm: {tokensPerMinute: 1000}}"#),
    ("minVersion as a number", "spec.tls.minVersion", Schema, r#"{tls: {minVersion: 1.3}}"#),
    ("maxAttempts as a string", "spec.retry.maxAttempts", Schema, r#"{retry: {maxAttempts: "3"}}"#),
    ("allowInsecure as a string", "spec.upstream.allowInsecure", Schema, r#"{upstream: {url: "http://api.example.com", allowInsecure: "true"}}"#),
    ("retryOn not a list", "spec.retry.retryOn", Schema, r#"{retry: {retryOn: "5xx"}}"#),
    // Inbound webhooks.
    ("webhook forwardTo off the pod", "spec.webhooks.forwardTo", Cel, r#"{webhooks: {forwardTo: "http://10.0.0.7:8080/x", verify: {provider: github, secretKeyRef: {name: wh, key: k}}}}"#),
    ("webhook forwardTo over https", "spec.webhooks.forwardTo", Cel, r#"{webhooks: {forwardTo: "https://127.0.0.1:8080/x", verify: {provider: github, secretKeyRef: {name: wh, key: k}}}}"#),
    ("webhook forwardTo to a look-alike host", "spec.webhooks.forwardTo", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1.evil.example/x", verify: {provider: github, secretKeyRef: {name: wh, key: k}}}}"#),
    ("webhook path without a slash", "spec.webhooks.path", Cel, r#"{webhooks: {path: hooks, forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}}}}"#),
    ("webhook path with a query", "spec.webhooks.path", Cel, r#"{webhooks: {path: "/hooks?x=1", forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}}}}"#),
    ("twilio without publicUrl", "spec.webhooks.verify.publicUrl", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: twilio, secretKeyRef: {name: wh, key: k}}}}"#),
    ("publicUrl for github", "spec.webhooks.verify.publicUrl", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}, publicUrl: "https://hooks.example.com/x"}}}"#),
    ("twilio publicUrl without a host", "spec.webhooks.verify.publicUrl", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: twilio, secretKeyRef: {name: wh, key: k}, publicUrl: "https:///x"}}}"#),
    ("hmac-sha256 without header", "spec.webhooks.verify.header", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: hmac-sha256, secretKeyRef: {name: wh, key: k}}}}"#),
    ("invalid hmac-sha256 header", "spec.webhooks.verify.header", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: hmac-sha256, secretKeyRef: {name: wh, key: k}, header: "X Sig"}}}"#),
    ("encoding for stripe", "spec.webhooks.verify", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: stripe, secretKeyRef: {name: wh, key: k}, encoding: base64}}}"#),
    ("tolerance for github", "spec.webhooks.verify.tolerance", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}, tolerance: "5m"}}}"#),
    ("zero tolerance", "spec.webhooks.verify.tolerance", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: stripe, secretKeyRef: {name: wh, key: k}, tolerance: "0s"}}}"#),
    ("zero replayWindow", "spec.webhooks.replayWindow", Cel, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}}, replayWindow: "0s"}}"#),
    ("unknown webhook provider", "spec.webhooks.verify.provider", Schema, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: paypal, secretKeyRef: {name: wh, key: k}}}}"#),
    ("unknown hmac encoding", "spec.webhooks.verify.encoding", Schema, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: hmac-sha256, secretKeyRef: {name: wh, key: k}, header: X-Sig, encoding: base32}}}"#),
    ("webhook body size in MB", "spec.webhooks.maxBodyBytes", Schema, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}}, maxBodyBytes: "1MB"}}"#),
    ("zero webhook body size", "spec.webhooks.maxBodyBytes", Schema, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}}, maxBodyBytes: 0}}"#),
    ("webhook without verify", "spec.webhooks.verify", Structure, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events"}}"#),
    ("webhook verify field misspelt", "spec.webhooks.verify.secretRef", Structure, r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: github, secretKeyRef: {name: wh, key: k}, secretRef: {name: x}}}}"#),
    // Structure.
    ("misspelt field", "spec.retry.maxAttempt", Structure, r#"{retry: {maxAttempt: 3}}"#),
    ("unknown top-level spec field", "spec.timeout", Structure, r#"{timeout: "5s"}"#),
    ("auth method misspelt", "spec.auth.apikey", Structure, r#"{auth: {apikey: {secretKeyRef: {name: k, key: k}}}}"#),
    ("missing url", "spec.upstream.url", Structure, r#"{upstream: {allowInsecure: true}}"#),
    ("null upstream (pruned, so missing)", "spec.upstream", Structure, r#"{upstream: null}"#),
    ("missing secretKeyRef", "spec.auth.bearer.secretKeyRef", Structure, r#"{auth: {bearer: {}}}"#),
    ("missing failure percent", "spec.circuitBreaker.failureRate.percent", Structure, r#"{circuitBreaker: {failureRate: {window: "30s"}}}"#),
];

/// Specs that everyone must accept.
#[rustfmt::skip]
const GOOD: &[(&str, &str)] = &[
    ("stripe webhooks with every field", r#"{webhooks: {path: /webhooks/stripe, forwardTo: "http://127.0.0.1:8080/events", verify: {provider: stripe, secretKeyRef: {name: wh, key: k}, tolerance: "5m"}, replayWindow: "24h", maxBodyBytes: 1Mi}}"#),
    ("github webhooks, body size as an integer", r#"{webhooks: {forwardTo: "http://localhost:3000", verify: {provider: github, secretKeyRef: {name: wh, key: k}}, maxBodyBytes: 65536}}"#),
    ("twilio webhooks", r#"{webhooks: {forwardTo: "http://[::1]:8080/sms", verify: {provider: twilio, secretKeyRef: {name: wh, key: k}, publicUrl: "https://hooks.example.com/twilio"}}}"#),
    ("standard webhooks", r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: standard, secretKeyRef: {name: wh, key: k}, tolerance: "10m"}}}"#),
    ("hmac-sha256 webhooks", r#"{webhooks: {forwardTo: "http://127.0.0.1:8080/events", verify: {provider: hmac-sha256, secretKeyRef: {name: wh, key: k}, header: X-Signature, prefix: "sha256=", encoding: base64}}}"#),
    ("minimal", r#"{}"#),
    ("the DESIGN.md example, every field", r#"
upstream: {url: "https://api.stripe.com", allowInsecure: false}
auth:
  apiKey: {header: Authorization, prefix: "Bearer ", secretKeyRef: {name: stripe-key, key: api-key}}
tls:
  caBundleRef: {kind: Secret, name: ca, key: ca.crt}
  clientCertificate: {secretName: bank-mtls}
  minVersion: "1.2"
  serverName: api.bank.example
timeouts: {connect: 2s, perTry: 10s, request: 30s}
retry:
  maxAttempts: 3
  backoff: {base: 100ms, max: 10s}
  retryOn: [connect-failure, reset, timeout, "429", "502", "503", "504", "5xx"]
  respectRetryAfter: true
  maxRetryAfter: 30s
  idempotencyKey: {header: Idempotency-Key, generate: true}
  budget: {ratio: 0.2, minPerSecond: 10}
circuitBreaker:
  consecutiveFailures: 5
  openDuration: 30s
  maxOpenDuration: 5m
  halfOpenRequests: 1
rateLimit: {requests: 100, per: 1s, burst: 20, scope: shared, onLimit: queue, maxQueueWait: 5s}
concurrency: {maxInFlight: 100}"#),
    ("plain http when allowed, with an http token URL", r#"
upstream: {url: "http://localhost:8080/api", allowInsecure: true, failover: [{url: "http://localhost:8081/api"}, {url: "https://mirror.example.com"}]}
auth:
  oauth2ClientCredentials:
    tokenUrl: "http://localhost:8080/token"
    clientId: demo
    clientSecretRef: {name: oauth, key: secret}
    scopes: [read, write]
    audience: https://api.example.com"#),
    ("failure-rate breaker, limits at their bounds", r#"
upstream: {url: "https://api.example.com:8443/v1/"}
retry: {maxAttempts: 10, backoff: {base: 1s, max: 1s}, retryOn: ["400", "599"], budget: {ratio: 10, minPerSecond: 0}}
circuitBreaker: {failureRate: {percent: 100, window: 1m, minimumRequests: 1}, openDuration: 5m, maxOpenDuration: 5m}
rateLimit: {requests: 1, per: 1h30m, burst: 1, scope: pod, onLimit: reject, maxQueueWait: 0s}
concurrency: {maxInFlight: 4294967295}
llm: {provider: openai, tokensPerMinute: 4294967295, defaultMaxTokens: 1}
cache: {maxBytes: 16Mi, staleIfError: 10m}"#),
    ("global rate limit with a monthly quota", r#"
rateLimit: {requests: 50, per: 1s, burst: 10, scope: global, quota: {requests: 1000000, per: 720h}}"#),
    ("mTLS bank, CA from a ConfigMap, IP server name, TLS 1.3", r#"
upstream: {url: "https://10.0.0.7:8443"}
auth: {basic: {secretRef: {name: bank-basic}}}
tls:
  caBundleRef: {kind: ConfigMap, name: bank-ca}
  clientCertificate: {secretName: bank-mtls}
  minVersion: "1.3"
  serverName: 10.0.0.7"#),
    ("IPv6 upstream and server name, upper-case scheme", r#"
upstream: {url: "HTTPS://[2001:db8::1]:443/v2"}
tls: {serverName: "2001:db8::1"}"#),
    ("query-parameter auth, server name with underscores", r#"
upstream: {url: "https://maps.example.com"}
auth: {queryParam: {name: key, secretKeyRef: {name: maps, key: key}}}
tls: {serverName: "_api.maps.example.com"}
retry: {idempotencyKey: {header: X-Request-Id}, retryOn: []}"#),
    ("empty auth and empty sections", r#"
upstream: {url: "https://api.example.com"}
auth: {}
tls: {}
timeouts: {}
retry: {}
circuitBreaker: {}
concurrency: {}"#),
];

fn manifest(spec: &str) -> Value {
    let mut spec: Value = serde_saphyr::from_str(spec).expect("test spec is YAML");
    if spec.get("upstream").is_none() {
        // Absent, not null: a null stays, to test the API server's pruning.
        spec["upstream"] = serde_json::json!({"url": "https://api.example.com"});
    }
    serde_json::json!({
        "apiVersion": "attache.dev/v1alpha1",
        "kind": "ExternalIntegration",
        "metadata": {"name": "under-test", "namespace": "default"},
        "spec": spec,
    })
}

fn schema_json() -> Value {
    serde_json::to_value(crd::openapi_schema()).unwrap()
}

/// What the API server's OpenAPI validation says (metadata aside).
fn schema_errors(doc: &Value) -> Vec<FieldError> {
    let mut doc = doc.clone();
    for header in ["apiVersion", "kind", "metadata"] {
        doc.as_object_mut().unwrap().remove(header);
    }
    validate::schema::check(crd::openapi_schema(), "", &mut doc)
}

/// What the API server's CEL rules say.
fn cel_errors(validator: &kube_cel::Validator, schema: &Value, doc: &Value) -> Vec<String> {
    match validator.validate(schema, doc, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .iter()
            .map(|e| format!("{} [{:?}, rule {}]", e.message, e.kind, e.rule))
            .collect(),
    }
}

#[test]
fn validate_and_the_crd_refuse_the_same_manifests() {
    let validator = kube_cel::Validator::new();
    let schema = schema_json();
    let mut failures = Vec::new();
    for (what, field, layer, spec) in BAD {
        let doc = manifest(spec);
        let mut fail = |m: String| failures.push(format!("{what}: {m}"));

        // `attache-operator validate`.
        match validate::check_document(&doc) {
            Ok(_) => fail("validate accepted it".into()),
            Err(errs) => {
                if !errs.iter().any(|e| e.to_string().contains(field)) {
                    fail(format!("validate's messages do not name {field}: {errs:?}"));
                }
            }
        }

        // The CRD.
        let schema_errs = schema_errors(&doc);
        let cel = cel_errors(&validator, &schema, &doc);
        match layer {
            Cel => {
                if !schema_errs.is_empty() {
                    fail(format!("the case should pass the schema: {schema_errs:?}"));
                }
                if cel.is_empty() {
                    fail("no CEL rule refused it".into());
                }
                if !cel.iter().any(|m| m.contains(field)) {
                    fail(format!("no CEL message names {field}: {cel:?}"));
                }
                if let Some(m) = cel.iter().find(|m| !m.starts_with("spec.")) {
                    fail(format!("CEL message does not name its field: {m}"));
                }
            }
            Schema | Structure => {
                if !schema_errs.iter().any(|e| e.to_string().contains(field)) {
                    fail(format!(
                        "the schema did not refuse {field}: {schema_errs:?}"
                    ));
                }
            }
        }

        // The api crate's rules, when serde can read the manifest (unknown fields are
        // invisible to serde, which is why validate checks the schema first).
        if *layer != Structure {
            if let Ok(xint) = serde_json::from_value::<ExternalIntegration>(doc.clone()) {
                let errs = validate_spec(&xint.spec);
                if !errs.iter().any(|e| e.to_string().contains(field)) {
                    fail(format!("validate_spec does not name {field}: {errs:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn good_manifests_pass_validate_and_the_crd() {
    let validator = kube_cel::Validator::new();
    let schema = schema_json();
    let mut docs: Vec<(String, Value)> = GOOD
        .iter()
        .map(|(what, spec)| (what.to_string(), manifest(spec)))
        .collect();
    docs.extend(example_integrations());
    let mut failures = Vec::new();
    for (what, doc) in &docs {
        if let Err(errs) = validate::check_document(doc) {
            failures.push(format!("{what}: validate refused it: {errs:?}"));
        }
        let schema_errs = schema_errors(doc);
        if !schema_errs.is_empty() {
            failures.push(format!("{what}: the schema refused it: {schema_errs:?}"));
        }
        let cel = cel_errors(&validator, &schema, doc);
        if !cel.is_empty() {
            failures.push(format!("{what}: CEL refused it: {cel:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_cel_rule_compiles_uses_only_self_and_fits_the_cost_budget() {
    let mut nodes = Vec::new();
    collect_rule_nodes("", &schema_json(), &mut nodes);
    assert!(
        nodes.len() >= 15,
        "only {} schema nodes carry rules",
        nodes.len()
    );
    let macro_var =
        regex::Regex::new(r"\b(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")
            .unwrap();
    let mut problems = Vec::new();
    for (path, node) in nodes {
        let compiled = kube_cel::compile_schema(&node);
        for e in compiled.compilation_errors() {
            problems.push(format!("{path}: {e:?}"));
        }
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = rule["rule"].as_str().unwrap_or_default();
            // The analysis does not know macros: `self.all(x, ...)` binds `x`.
            let bound: Vec<String> = macro_var
                .captures_iter(rule)
                .map(|c| format!("'{}'", &c[1]))
                .collect();
            for w in kube_cel::analyze_rule(rule, &compiled, kube_cel::ScopeContext::CrdValidation)
            {
                let macro_bound = w.kind == kube_cel::WarningKind::WrongScope
                    && bound.iter().any(|v| w.message.contains(v.as_str()));
                if !macro_bound {
                    problems.push(format!("{path}: {rule}: {:?}: {}", w.kind, w.message));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cost_analysis_is_not_blind() {
    // kube-cel's estimate is a heuristic, not the API server's estimator, but it must at least
    // flag an unbounded list, or the test above proves nothing.
    let unbounded = serde_json::json!({
        "type": "object",
        "properties": {"l": {"type": "array", "items": {"type": "string"}}}
    });
    let compiled = kube_cel::compile_schema(&unbounded);
    let warnings = kube_cel::analyze_rule(
        "self.l.all(x, x.size() > 0)",
        &compiled,
        kube_cel::ScopeContext::CrdValidation,
    );
    assert!(warnings
        .iter()
        .any(|w| w.kind == kube_cel::WarningKind::MissingBounds));
}

fn collect_rule_nodes(path: &str, node: &Value, out: &mut Vec<(String, Value)>) {
    if node.get("x-kubernetes-validations").is_some() {
        out.push((path.to_string(), node.clone()));
    }
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        collect_rule_nodes(&format!("{path}.{name}"), child, out);
    }
    if node["items"].is_object() {
        collect_rule_nodes(&format!("{path}[]"), &node["items"], out);
    }
}

/// The ExternalIntegrations of `examples/`, so a broken example fails here.
fn example_integrations() -> Vec<(String, Value)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return out;
    };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for file in files {
        if !matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let source = file.display().to_string();
        for doc in attache_operator::manifests::parse_documents(&source, &text).unwrap() {
            if doc.kind() == Some("ExternalIntegration") {
                out.push((format!("{source} (document {})", doc.index), doc.value));
            }
        }
    }
    out
}
