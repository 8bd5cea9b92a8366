//! The README's configuration reference cannot drift: every field of the CRD's schema has a
//! row, every row names a real field, and the defaults it states are the code's.

use std::{collections::BTreeMap, path::Path};

use attache_api::{config::RetryOn, defaults as d};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Dotted paths of every leaf field under `spec` (`[]` marks list items).
fn schema_paths() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("crds/externalintegrations.attache.dev.yaml"))
        .expect("crds/ holds the CRD");
    let crd: Value = serde_saphyr::from_str(&text).expect("CRD is YAML");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut out = Vec::new();
    walk(spec, "spec".to_string(), &mut out);
    out.sort();
    out
}

fn walk(node: &Value, path: String, out: &mut Vec<String>) {
    if node["type"] == "array" {
        return walk(&node["items"], format!("{path}[]"), out);
    }
    match node["properties"].as_object() {
        Some(props) => {
            for (k, v) in props {
                walk(v, format!("{path}.{k}"), out);
            }
        }
        None => out.push(path),
    }
}

/// `field → default column` of the README table.
fn readme_rows() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with("| `spec."))
        .map(|l| {
            let cols: Vec<&str> = l.split(" | ").collect();
            let field = cols[0]
                .trim_start_matches("| ")
                .trim_matches('`')
                .to_string();
            (field, cols.get(2).copied().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn every_schema_field_has_exactly_one_row() {
    let schema = schema_paths();
    let rows = readme_rows();
    let documented: Vec<String> = rows.keys().cloned().collect();
    let missing: Vec<_> = schema.iter().filter(|p| !rows.contains_key(*p)).collect();
    let stale: Vec<_> = documented.iter().filter(|p| !schema.contains(p)).collect();
    assert!(missing.is_empty(), "README lacks rows for {missing:?}");
    assert!(
        stale.is_empty(),
        "README documents fields the CRD does not have: {stale:?}"
    );
    assert!(schema.len() > 40, "schema walk found only {schema:?}");
}

#[test]
fn stated_defaults_are_the_codes() {
    let rows = readme_rows();
    let q = |s: String| format!("`{s}`");
    let retry_on = d::RETRY_ON
        .iter()
        .map(RetryOn::as_string)
        .collect::<Vec<_>>()
        .join(", ");
    let expected: Vec<(&str, String)> = vec![
        ("spec.auth.apiKey.header", q(d::API_KEY_HEADER.into())),
        ("spec.tls.caBundleRef.key", q(d::CA_BUNDLE_KEY.into())),
        ("spec.timeouts.connect", q(d::CONNECT_TIMEOUT.to_string())),
        ("spec.timeouts.perTry", q(d::PER_TRY_TIMEOUT.to_string())),
        ("spec.timeouts.idle", q(d::IDLE_TIMEOUT.to_string())),
        ("spec.timeouts.request", q(d::REQUEST_TIMEOUT.to_string())),
        ("spec.retry.maxAttempts", q(d::MAX_ATTEMPTS.to_string())),
        ("spec.retry.backoff.base", q(d::BACKOFF_BASE.to_string())),
        ("spec.retry.backoff.max", q(d::BACKOFF_MAX.to_string())),
        ("spec.retry.retryOn[]", q(retry_on)),
        (
            "spec.retry.respectRetryAfter",
            q(d::RESPECT_RETRY_AFTER.to_string()),
        ),
        (
            "spec.retry.maxRetryAfter",
            q(d::MAX_RETRY_AFTER.to_string()),
        ),
        (
            "spec.retry.idempotencyKey.header",
            q(d::IDEMPOTENCY_HEADER.into()),
        ),
        (
            "spec.retry.idempotencyKey.generate",
            q(d::GENERATE_IDEMPOTENCY_KEY.to_string()),
        ),
        ("spec.retry.budget.ratio", q(d::BUDGET_RATIO.to_string())),
        (
            "spec.retry.budget.minPerSecond",
            q(d::BUDGET_MIN_PER_SECOND.to_string()),
        ),
        (
            "spec.circuitBreaker.consecutiveFailures",
            q(d::CONSECUTIVE_FAILURES.to_string()),
        ),
        (
            "spec.circuitBreaker.failureRate.window",
            q(d::FAILURE_RATE_WINDOW.to_string()),
        ),
        (
            "spec.circuitBreaker.failureRate.minimumRequests",
            q(d::FAILURE_RATE_MINIMUM_REQUESTS.to_string()),
        ),
        (
            "spec.circuitBreaker.openDuration",
            q(d::OPEN_DURATION.to_string()),
        ),
        (
            "spec.circuitBreaker.maxOpenDuration",
            q(d::MAX_OPEN_DURATION.to_string()),
        ),
        (
            "spec.circuitBreaker.halfOpenRequests",
            q(d::HALF_OPEN_REQUESTS.to_string()),
        ),
        ("spec.rateLimit.per", q(d::RATE_LIMIT_PER.to_string())),
        (
            "spec.webhooks.verify.tolerance",
            q(d::WEBHOOK_TOLERANCE.to_string()),
        ),
        (
            "spec.webhooks.replayWindow",
            q(d::WEBHOOK_REPLAY_WINDOW.to_string()),
        ),
        (
            "spec.webhooks.maxBodyBytes",
            q(d::WEBHOOK_MAX_BODY_BYTES.to_string()),
        ),
        (
            "spec.rateLimit.maxQueueWait",
            q(d::MAX_QUEUE_WAIT.to_string()),
        ),
        (
            "spec.concurrency.maxInFlight",
            q(d::MAX_IN_FLIGHT.to_string()),
        ),
    ];
    for (field, want) in expected {
        let got = rows
            .get(field)
            .unwrap_or_else(|| panic!("no README row for {field}"));
        assert_eq!(got, &want, "README default of {field}");
    }
    // Enum defaults, spelled as the CRD spells them.
    let enum_json = |v: &dyn erased::Json| v.json();
    assert_eq!(
        rows["spec.rateLimit.scope"],
        q(enum_json(&d::RATE_LIMIT_SCOPE))
    );
    assert_eq!(rows["spec.rateLimit.onLimit"], q(enum_json(&d::ON_LIMIT)));
}

mod erased {
    /// A serializable value's JSON string form, without quotes.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_value(self)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }
    }
}
